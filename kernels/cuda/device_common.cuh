// Device helpers shared by the kernels in this folder (private to kernels/cuda).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mamba::kernels::cuda::dev {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// PyTorch semantics, as in the CPU kernels: softplus is the identity above 20.
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// Loads N consecutive elements row[t0 .. t0 + N) as f32; elements at or past `len` read as
// `pad`. When the whole run is in bounds and 16-byte aligned, it is loaded in 16-byte pieces.
template <int N, class T>
__device__ __forceinline__ void load_run(const T* __restrict__ row, int64_t t0, int64_t len, float (&out)[N], float pad) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    const T* src = row + t0;
    if (t0 + N <= len && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
      union { uint4 v[kBytes / 16]; T e[N]; } buf;
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) buf.v[i] = reinterpret_cast<const uint4*>(src)[i];
#pragma unroll
      for (int j = 0; j < N; ++j) out[j] = to_f32(buf.e[j]);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = t0 + j < len ? to_f32(row[t0 + j]) : pad;
}

// Stores the elements of vals that fall before `len` to row[t0 .. t0 + N), 16 bytes at a
// time when the whole run is in bounds and aligned.
template <int N, class T>
__device__ __forceinline__ void store_run(T* __restrict__ row, int64_t t0, int64_t len, const float (&vals)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    T* dst = row + t0;
    if (t0 + N <= len && (reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
      union { uint4 v[kBytes / 16]; T e[N]; } buf;
#pragma unroll
      for (int j = 0; j < N; ++j) buf.e[j] = from_f32<T>(vals[j]);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) reinterpret_cast<uint4*>(dst)[i] = buf.v[i];
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (t0 + j < len) row[t0 + j] = from_f32<T>(vals[j]);
}

}  // namespace mamba::kernels::cuda::dev
