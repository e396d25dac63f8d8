// Glue kernels of the GPU training path of MambaLM (shared-core/src/nn/mamba_lm_train_cuda.cc):
// a general cuBLASLt GEMM with transposes, accumulation and strided batches (the weight and
// input gradients, and the GEMMs that read or write the scan's (b, d, l) layout directly), a
// batched transpose with conversion, a cast and two elementwise kernels. The norms, the
// cross-entropy, the conv1d backward, the embedding backward, the gradient sum of squares and
// AdamW are the shared training kernels (train_kernels_cuda.h); "gt" = gputrain.
//
// All pointers are DEVICE pointers; arithmetic is f32. Asynchronous on `stream`; launch
// errors and bad arguments throw std::runtime_error / std::invalid_argument naming the op.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "mamba/kernels/cuda/gemm_cuda.h"

namespace mamba::kernels::cuda {

// ---- GEMM: C (m, n) = alpha * op(A) op(B) + beta * C, all row-major ------------------------
// op(A) is (m, k): A stored (m, k) with row stride lda, or with trans_a stored (k, m).
// op(B) is (k, n): B stored (k, n) with row stride ldb, or with trans_b stored (n, k).
// A and B of ab_type (f32 / bf16), C of c_type (f32 or ab_type); f32 accumulation; f32 inputs
// run true f32 (no TF32). cuBLASLt with a cached plan; a tiled kernel when cuBLASLt has no
// algorithm for the layout (odd leading dimensions of 16-bit types). workspace >= 32 MiB.
struct TrainGemmParams {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  const void* b = nullptr;
  int64_t ldb = 0;
  bool trans_b = false;
  void* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.f, beta = 0.f;
  GemmType ab_type = GemmType::f32;
  GemmType c_type = GemmType::f32;
  bool force_fallback = false;
  // Strided batches: batch matrices, batch i at a + i * stride_a, b + i * stride_b,
  // c + i * stride_c (elements; a stride of 0 shares one matrix, e.g. a weight, across the
  // batches; the C batches must not overlap: stride_c >= m * ldc).
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
};
// The workspace train_gemm_cuda's cuBLASLt plans may use (32 MiB); a smaller one only narrows
// the algorithms it chooses from.
size_t train_gemm_cuda_workspace_bytes();
// Returns true when cuBLASLt ran it, false for the fallback kernel.
bool train_gemm_cuda(const TrainGemmParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- batched transpose with conversion ------------------------------------------------------
// For each of `batch` matrices: dst[q, p] = src[p, q] (p < P, q < Q); src rows of stride
// src_ld, matrices src_bs apart; dst rows of stride dst_ld, matrices dst_bs apart (elements).
// Types f32 / bf16 (src and dst may differ). 32 x 32 tiles through shared memory; bf16 to
// bf16 with even sizes and strides and 4-byte aligned pointers: 64 x 64 tiles moved as bf16
// pairs (MAMBA_GT_TRANSPOSE_PAIRS=0 turns that off).
void gt_transpose_cuda(int64_t batch, int64_t P, int64_t Q, const void* src, bool src_bf16, int64_t src_ld,
                       int64_t src_bs, void* dst, bool dst_bf16, int64_t dst_ld, int64_t dst_bs, cudaStream_t stream);

// ---- elementwise --------------------------------------------------------------------------
void gt_cast_f32_to_bf16_cuda(int64_t n, const float* x, __nv_bfloat16* y, cudaStream_t stream);
void gt_neg_exp_cuda(int64_t n, const float* x, float* y, cudaStream_t stream);            // y = -exp(x)
void gt_mul_cuda(int64_t n, const float* a, const float* b, float* y, cudaStream_t stream);  // y = a * b
// out[i] = sum over j < batch of src[j * n + i] (f32, in order of j: deterministic); out is
// overwritten and must not overlap src. Sums the per-batch partials of a batched GEMM.
void gt_sum_batches_cuda(int64_t n, int64_t batch, const float* src, float* out, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
