// Kernels of the GPU training path of MambaLM (shared-core/src/nn/mamba_lm_train_cuda.cc):
// a general cuBLASLt GEMM with transposes and accumulation (the weight and input gradients),
// and plain CUDA versions of the norm / conv / cross-entropy / embedding backward passes and
// the AdamW step with global-norm clipping. These are this branch's own ("gt" = gputrain)
// plain implementations; train_kernels_cuda.h declares the tuned ones of branch trainkern,
// which were not available when this was written. The CPU kernels (rms_norm.h,
// causal_conv1d.h, cross_entropy.h, train/optimizer.h) define the mathematics.
//
// All pointers are DEVICE pointers; T is float or __nv_bfloat16; arithmetic, statistics,
// weights, weight gradients and optimiser state are f32. Asynchronous on `stream`; launch
// errors and bad arguments throw std::runtime_error / std::invalid_argument naming the op.
// Column sums over rows (dw, dweight, dbias, sum of squares, loss sum) are deterministic:
// fixed chunks, partials in `workspace`, then summed in order. The embedding backward uses
// f32 atomics (not bit-deterministic).
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
};
// Returns true when cuBLASLt ran it, false for the fallback kernel.
bool train_gemm_cuda(const TrainGemmParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- norms --------------------------------------------------------------------------------
// y = r * rsqrt(mean(r^2) + eps) * w from an f32 residual (the first layer's norm).
template <class T>
void gt_rms_norm_fwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, T* y,
                          cudaStream_t stream);
// RMSNorm backward (see train_kernels_cuda.h rms_norm_bwd_cuda): dr = dr_add + rstd * (w dy -
// r rstd^2 mean(w dy r)); dw = sum_rows dy r rstd (overwritten). dr may alias dr_add.
size_t gt_rms_norm_bwd_workspace_bytes(int64_t rows, int64_t dim);
template <class T>
void gt_rms_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, const T* dy,
                          const float* dr_add, float* dr, float* dw, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream);

// ---- causal depthwise conv1d (+ SiLU) backward ----------------------------------------------
// x [b, t, c] strides (x_sb, x_st), weight (c, width), bias (c); dout (b, l, c) contiguous, the
// gradient of the conv output after the SiLU. Writes dx [b, t, c] (strides dx_sb, dx_st),
// dweight (c, width) and dbias (c) (overwritten). Zero initial state. width <= 4.
size_t gt_conv1d_bwd_workspace_bytes(int64_t batch, int64_t seqlen, int64_t channels, int64_t width);
template <class T>
void gt_conv1d_bwd_cuda(int64_t batch, int64_t seqlen, int64_t channels, int64_t width, const T* x, int64_t x_sb,
                        int64_t x_st, const float* weight, const float* bias, const T* dout, T* dx, int64_t dx_sb,
                        int64_t dx_st, float* dweight, float* dbias, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream);

// ---- softmax cross-entropy, in place --------------------------------------------------------
// Rows of row_stride logits, the first V counting; targets (rows) i64 in [-1, V) (the caller
// checks them): loss_r = logsumexp - logit[target]; logits <- (softmax - onehot) * scale for
// counted rows, 0 for ignored rows and padding columns. *loss_sum = sum_r loss_r (f32).
size_t gt_cross_entropy_workspace_bytes(int64_t rows);
template <class T>
void gt_cross_entropy_cuda(int64_t rows, int64_t V, int64_t row_stride, T* logits, const int64_t* targets,
                           float scale, float* loss_sum, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream);

// ---- embedding backward: dtable[ids[r], :] += dy[r, :] (f32, atomics) -------------------------
void gt_embedding_bwd_accumulate_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids,
                                      const float* dy, float* dtable, cudaStream_t stream);

// ---- batched transpose with conversion ------------------------------------------------------
// For each of `batch` matrices: dst[q, p] = src[p, q] (p < P, q < Q); src rows of stride
// src_ld, matrices src_bs apart; dst rows of stride dst_ld, matrices dst_bs apart (elements).
// Types f32 / bf16 (src and dst may differ). 32 x 32 tiles through shared memory.
void gt_transpose_cuda(int64_t batch, int64_t P, int64_t Q, const void* src, bool src_bf16, int64_t src_ld,
                       int64_t src_bs, void* dst, bool dst_bf16, int64_t dst_ld, int64_t dst_bs, cudaStream_t stream);

// ---- elementwise --------------------------------------------------------------------------
void gt_cast_f32_to_bf16_cuda(int64_t n, const float* x, __nv_bfloat16* y, cudaStream_t stream);
void gt_neg_exp_cuda(int64_t n, const float* x, float* y, cudaStream_t stream);            // y = -exp(x)
void gt_mul_cuda(int64_t n, const float* a, const float* b, float* y, cudaStream_t stream);  // y = a * b

// ---- optimiser ----------------------------------------------------------------------------
// *sumsq = sum x^2 over n f32 values (deterministic).
size_t gt_sumsq_workspace_bytes();
void gt_sumsq_cuda(int64_t n, const float* x, float* sumsq, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream);
// AdamW on one tensor (train/optimizer.h's formulation). grad is scaled by
// min(1, max_grad_norm / (sqrt(*grad_sumsq) + 1e-6)) when max_grad_norm > 0 (the scale is
// applied to the gradient in place, as clip_grad_norm does). param_bf16 nullable.
void gt_adamw_cuda(int64_t n, float* param, float* grad, float* exp_avg, float* exp_avg_sq,
                   __nv_bfloat16* param_bf16, float lr, float beta1, float beta2, float eps, float weight_decay,
                   int64_t step, float max_grad_norm, const float* grad_sumsq, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
