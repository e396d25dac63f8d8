// Backward and training kernels on the GPU: the norms' backward, LayerNorm, softmax
// cross-entropy over large vocabularies, causal conv1d backward, embedding backward and the
// AdamW step with global-norm clipping. The CPU kernels in mamba/kernels/*.h are the
// definition of the mathematics (rms_norm.h, norm.h, cross_entropy.h, causal_conv1d.h,
// embedding.h, train/optimizer.h).
//
// Conventions: all pointers are DEVICE pointers. T is float or __nv_bfloat16 for activations
// and their gradients; weights, weight gradients, residual streams, statistics and optimiser
// state are f32; all arithmetic is f32. Everything is asynchronous on `stream`; bad arguments
// throw std::invalid_argument naming the argument and the limit; launch errors throw.
// Weight gradients (dw, db, dweight, dbias, dtable) are OVERWRITTEN unless the name says
// "accumulate". Reductions over rows are deterministic (fixed order, no float atomics) except
// where noted.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "mamba/kernels/cuda/causal_conv1d_cuda.h"

namespace mamba::kernels::cuda {

// ---- RMSNorm backward -----------------------------------------------------------------------
// Forward (add_rms_norm_cuda): r = x + residual_in, y = r * rstd * w, rstd = rsqrt(mean(r^2) + eps).
// Backward, given r (the stored residual_out, f32), dy, and dr_add (the gradient reaching the
// residual stream from above; nullable = 0):
//   dr = dr_add + rstd * (w * dy - r * rstd^2 * mean(w * dy * r)),  dw = sum_rows dy * r * rstd.
// The caller passes dr on as the gradient of both x and residual_in. dr may alias dr_add.
size_t rms_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim);
template <class T>
void rms_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, const T* dy,
                       const float* dr_add, float* dr, float* dw, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream);

// Gated, grouped RMSNorm backward (forward: gated_rms_norm_cuda). Writes dx, dz (z nullable:
// then dz is ignored), dw. Row strides as in the forward; columns contiguous.
size_t gated_rms_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim);
template <class T>
void gated_rms_norm_bwd_cuda(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride,
                             const T* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                             const T* dy, int64_t dy_stride, T* dx, int64_t dx_stride, T* dz, int64_t dz_stride,
                             float* dw, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- LayerNorm with residual add -------------------------------------------------------------
// r = x + residual_in (residual_in nullable: r = x), stored to residual_out (f32, may alias
// residual_in); y = (r - mean) * rstd * w + b (b nullable); mean and rstd (rows, f32) stored
// when non-null, for the backward.
template <class T>
void add_layer_norm_cuda(int64_t rows, int64_t dim, const T* x, const float* residual_in, float* residual_out,
                         const float* w, const float* b, float eps, T* y, float* mean, float* rstd,
                         cudaStream_t stream);
// Backward: dr = dr_add + d(layer norm)/dr given dy; dw, db (db nullable) over rows.
size_t layer_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim);
template <class T>
void layer_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* mean, const float* rstd,
                         const float* w, const T* dy, const float* dr_add, float* dr, float* dw, float* db,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- Softmax cross-entropy over large vocabularies --------------------------------------------
// Rows of `row_stride` logits of which the first V count. For rows with target >= 0:
//   loss_r = logsumexp(logits_r) - logits_r[target_r]; rows with target < 0 are ignored (loss 0).
// dlogits (nullable) = (softmax(logits_r) - onehot(target_r)) * scale, zero for ignored rows
// and padding columns; dlogits may ALIAS logits (in place: the logits of a 50k vocabulary at
// length 2048 are the largest activation of an LM, so training overwrites them). loss_rows
// (rows, f32) gets the per-row loss; if loss_sum is non-null it gets sum_r loss_r (f32,
// deterministic) and correct (nullable) the number of rows whose argmax equals the target.
// targets are checked on the device: a target >= V raises an error at the next
// cross_entropy_check_cuda call (the flag lives in `workspace`).
// (Implementation note) The flag reflects the most recent call with this workspace (each call
// rewrites it, so no initialisation is needed); bad-target rows get loss 0 and zero dlogits.
size_t cross_entropy_cuda_workspace_bytes(int64_t rows);
template <class T>
void cross_entropy_fwd_bwd_cuda(int64_t rows, int64_t V, int64_t row_stride, const T* logits,
                                const int64_t* targets, float scale, T* dlogits, float* loss_rows, float* loss_sum,
                                int64_t* correct, void* workspace, size_t workspace_bytes, cudaStream_t stream);
// Synchronises `stream`; throws std::invalid_argument naming the first bad target if one was seen.
void cross_entropy_check_cuda(const void* workspace, int64_t V, cudaStream_t stream);

// ---- Causal depthwise conv1d backward ---------------------------------------------------------
// Forward: causal_conv1d_fwd_cuda with the same params p (p.out unused). Given dout (b, l, c)
// contiguous (the gradient after the SiLU when p.silu), writes dx [b, t, c] (strides dx_sb,
// dx_st; c contiguous), dweight (c, width), dbias (c, nullable) and dinitial_state
// (b, c, width - 1; nullable).
size_t causal_conv1d_bwd_cuda_workspace_bytes(const CausalConv1dCudaParams<float>& shape_only);
template <class T>
void causal_conv1d_bwd_cuda(const CausalConv1dCudaParams<T>& p, const T* dout, T* dx, int64_t dx_sb,
                            int64_t dx_st, float* dweight, float* dbias, float* dinitial_state, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream);

// ---- Embedding backward -------------------------------------------------------------------------
// dtable[ids[r], :] += dy[r, :] for r < rows (dtable (vocab, dim) f32, ACCUMULATES so a tied LM
// head's gradient can be added first). ids outside [0, vocab) are skipped and flagged like the
// cross-entropy targets. Uses f32 atomics: not bit-deterministic.
template <class T>
void embedding_bwd_accumulate_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const T* dy,
                                   float* dtable, cudaStream_t stream);
// (Added) Synchronises `stream`; throws std::invalid_argument naming the first row whose id was
// outside [0, vocab) in any embedding_bwd_accumulate_cuda call since the last check (a flag per
// device), then clears the flag.
void embedding_bwd_check_cuda(cudaStream_t stream);

// ---- AdamW over many tensors, with global-norm clipping ----------------------------------------
struct AdamWTensorCuda {
  float* param = nullptr;             // f32 master weights (n)
  const float* grad = nullptr;        // f32 gradient (n)
  float* exp_avg = nullptr;           // f32 (n)
  float* exp_avg_sq = nullptr;        // f32 (n)
  __nv_bfloat16* param_bf16 = nullptr;  // nullable: also written with the updated weights (autocast copy)
  int64_t n = 0;
  float weight_decay = 0.f;           // 0 for A_log, D, dt biases, norms and biases
};
struct AdamWHyperCuda {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t step = 1;          // 1-based, for the bias corrections
  float max_grad_norm = 0.f; // > 0: clip by the global norm of all grads
};
// Sum of squares of every grad into *sumsq (f32, device), deterministic.
size_t grad_sumsq_cuda_workspace_bytes(int64_t count);
void grad_sumsq_cuda(const AdamWTensorCuda* tensors, int64_t count, float* sumsq, void* workspace,
                     size_t workspace_bytes, cudaStream_t stream);
// One AdamW step (decoupled decay: p -= lr * wd * p; then the Adam update). When
// h.max_grad_norm > 0, grad_sumsq (device, from grad_sumsq_cuda) scales every grad by
// min(1, max_grad_norm / (sqrt(sumsq) + 1e-6)) on the device, without a host round trip.
// `tensors` is a HOST array; its pointers are device pointers.
void adamw_step_cuda(const AdamWTensorCuda* tensors, int64_t count, const AdamWHyperCuda& h,
                     const float* grad_sumsq, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
