// Fused kernels for decoding a Mamba-1 language model at small batch (one token per sequence),
// where a step is a chain of tiny GEMVs and the cost is kernel count, not arithmetic:
//
//   norm_in_proj_conv: residual_out = hidden + residual_in (residual_in optional);
//                      normed = RMSNorm(residual_out) * norm_w (rounded to T, as the unfused
//                      path stores it); xz = normed W_in^T; for the x half, the one-token conv
//                      update (conv_state shifted, the new xz value appended, SiLU) -> xc.
//                      Replaces add_rms_norm + in_proj GEMM + causal_conv1d_update.
//   dt_state_update:   dt = xdbl[:, :R] W_dt^T (rounded to T), then the selective state update
//                      (softplus(dt + dt_bias), exp2-based decay, D skip, SiLU(z) gate) -> y.
//                      Replaces the dt_proj GEMM + selective_state_update.
// Same mathematics and roundings as the unfused kernels (Mamba1::step_into), so the results
// agree to f32 rounding. All pointers DEVICE pointers; T = float or __nv_bfloat16; norm
// weights, conv weights / states, A, D, dt bias, ssm states f32. Asynchronous on `stream`;
// launch errors throw std::runtime_error.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// Limits: 1 <= batch <= 8, batch * d_model <= 12288 (the normalised rows sit in shared memory),
// d_conv <= 4. residual_out must not alias residual_in (the rows are read by every block).
template <class T>
struct NormInProjConvParams {
  int64_t batch = 0, d_model = 0, d_inner = 0, d_conv = 4;
  const T* hidden = nullptr;          // (batch, d_model)
  const float* residual_in = nullptr; // (batch, d_model), optional
  float* residual_out = nullptr;      // (batch, d_model)
  const float* norm_w = nullptr;      // (d_model)
  float eps = 1e-5f;
  const T* w_in = nullptr;            // (2 * d_inner, d_model)
  float* conv_state = nullptr;        // (batch, d_inner, d_conv), updated in place
  const float* conv_w = nullptr;      // (d_inner, d_conv)
  const float* conv_b = nullptr;      // (d_inner), optional
  T* xz = nullptr;                    // (batch, 2 * d_inner)
  T* xc = nullptr;                    // (batch, d_inner)
};
template <class T>
void norm_in_proj_conv_cuda(const NormInProjConvParams<T>& p, cudaStream_t stream);
// Whether norm_in_proj_conv_cuda takes this shape.
bool norm_in_proj_conv_supported(int64_t batch, int64_t d_model, int64_t d_conv);

// xdbl (batch, R + 2N) = [dt_in (R), B (N), C (N)]; xc, z (z = xz[:, d_inner:], row stride
// 2 * d_inner), y: (batch, d_inner). dstate <= 256.
template <class T>
struct DtStateUpdateParams {
  int64_t batch = 0, d_inner = 0, dstate = 16, dt_rank = 0;
  const T* xdbl = nullptr;
  const T* w_dt = nullptr;          // (d_inner, dt_rank)
  const float* dt_bias = nullptr;   // (d_inner)
  const T* xc = nullptr;
  const T* z = nullptr;
  int64_t z_stride = 0;
  const float* A = nullptr;         // (d_inner, dstate)
  const float* D = nullptr;         // (d_inner), optional
  float* state = nullptr;           // (batch, d_inner, dstate)
  T* y = nullptr;
};
template <class T>
void dt_state_update_cuda(const DtStateUpdateParams<T>& p, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
