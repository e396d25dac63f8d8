// Mamba-2 one-token state update on the GPU (the decode step of the SSD layer).
// Same mathematics as mamba::kernels::ssd_state_update (mamba/kernels/ssd.h; the CPU code is the
// definition), per batch row b and head h (group g = h / (nheads / ngroups)):
//   dt' = softplus(dt[b, h] + dt_bias[h])   (or dt + dt_bias)
//   S[b, h, p, :] = exp(dt' A[h]) S[b, h, p, :] + dt' x[b, h, p] B[b, g, :]
//   y[b, h, p]    = <S[b, h, p, :], C[b, g, :]> + D[h] x[b, h, p]
// All pointers are DEVICE pointers. T (float or __nv_bfloat16) for x, dt, B, C, y; the state,
// A, D and dt_bias are f32; arithmetic is f32. Asynchronous on `stream`; launch errors throw.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// Layouts: state (batch, nheads, headdim, dstate) f32 contiguous, updated in place;
// x, y: [b, h, p] with (h, p) contiguous and row strides x_sb, y_sb (elements);
// dt: [b, h] with row stride dt_sb; B, C: [b, g, n] with (g, n) contiguous and row strides
// B_sb, C_sb; A (nheads), D (nheads, optional), dt_bias (nheads, optional).
// Limits: nheads % ngroups == 0, batch <= 65535, headdim, dstate >= 1.
template <class T>
struct SsdStateUpdateCudaParams {
  int64_t batch = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 1;
  float* state = nullptr;
  const T* x = nullptr;  int64_t x_sb = 0;
  const T* dt = nullptr; int64_t dt_sb = 0;
  const T* B = nullptr;  int64_t B_sb = 0;
  const T* C = nullptr;  int64_t C_sb = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* dt_bias = nullptr;
  bool dt_softplus = true;
  T* y = nullptr;        int64_t y_sb = 0;
};

template <class T>
void ssd_state_update_cuda(const SsdStateUpdateCudaParams<T>& p, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
