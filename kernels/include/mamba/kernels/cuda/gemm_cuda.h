// GEMM on the GPU for the linear layers: y = x W^T (+ bias), row-major, through cuBLASLt.
//
//   x (m, k) with row stride ldx; W (n, k) with row stride ldw (the (out, in) layout of a
//   linear layer), or, with w_kn, W stored (k, n) with row stride ldw (y = x W);
//   bias (n) optional, of y's type; y (m, n) with row stride ldy. Strides in elements.
// Types: in_type f32 / bf16 / f16 for x and W; out_type f32 or in_type; accumulation in f32
// always. f32 inputs run true f32 unless `tf32` (opt-in: TF32 tensor cores, ~1e-3 relative).
//
// Paths (GemmPath): cuBLASLt with a plan (descriptors + the heuristic's algorithm) cached per
// shape / strides / types / pointer alignment; a warp-per-output kernel for m <= 8 when W is
// (n, k) (decoding: reading W once at memory speed is all there is to it); and a plain tiled
// fallback kernel when cuBLASLt has no algorithm for the layout (it returns none for some
// odd leading dimensions / unaligned pointers with 16-bit types). `force` picks a path for
// tests and comparisons.
//
// All pointers are DEVICE pointers; `workspace` (device, >= gemm_cuda_workspace_bytes()) is
// the caller's (the tensor backend gives it from the caching allocator). Asynchronous on
// `stream`; capturable in a CUDA graph once the plan exists (run the shape once first).
// Errors (cuBLASLt status, launch errors, bad arguments) throw std::runtime_error naming the
// op and the shape. Thread-safe (the plan cache is locked).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mamba::kernels::cuda {

enum class GemmType : uint8_t { f32, bf16, f16 };
enum class GemmPath : uint8_t { automatic, cublaslt, small_m, fallback };

struct GemmCudaParams {
  int64_t m = 0, n = 0, k = 0;
  const void* x = nullptr;
  int64_t ldx = 0;
  const void* w = nullptr;
  int64_t ldw = 0;
  bool w_kn = false;
  const void* bias = nullptr;
  void* y = nullptr;
  int64_t ldy = 0;
  GemmType in_type = GemmType::f32;
  GemmType out_type = GemmType::f32;
  bool tf32 = false;
  GemmPath force = GemmPath::automatic;
};

size_t gemm_cuda_workspace_bytes();  // 32 MiB

// Runs the GEMM; returns the path taken.
GemmPath gemm_cuda(const GemmCudaParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

struct GemmPlanStats {
  uint64_t plans = 0;      // distinct cached plans
  uint64_t hits = 0;       // calls that found their plan
  uint64_t misses = 0;     // calls that built one (heuristic query)
  uint64_t fallbacks = 0;  // calls that ran the fallback kernel
  uint64_t small_m = 0;    // calls that ran the m <= 8 kernel
};
GemmPlanStats gemm_cuda_plan_stats();
const char* gemm_path_name(GemmPath p);

}  // namespace mamba::kernels::cuda
