// Depthwise causal conv1d on the GPU (forward and the one-token update).
// Same mathematics as mamba/kernels/causal_conv1d.h (the CPU reference is the definition):
//   out[b, t, c] = act(bias[c] + sum_k weight[c, k] * x[b, t - (K - 1) + k, c])
// with x at negative times taken from initial_state (b, c, K - 1) f32, or zero.
// All pointers are DEVICE pointers; T is float or __nv_bfloat16 for x and out; weight, bias
// and conv states are f32; arithmetic is f32. Asynchronous on `stream`; launch errors throw.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// x: [b, t, c] with element strides (x_sb, x_st) and c contiguous; out: (batch, seqlen,
// channels) contiguous; weight: (channels, width) contiguous; bias (channels) optional.
// Limits: 1 <= width <= 4, batch <= 65535.
template <class T>
struct CausalConv1dCudaParams {
  int64_t batch = 0, seqlen = 0, channels = 0, width = 4;
  const T* x = nullptr; int64_t x_sb = 0, x_st = 0;
  const float* weight = nullptr;
  const float* bias = nullptr;
  const float* initial_state = nullptr;  // (batch, channels, width - 1), optional
  bool silu = true;
  T* out = nullptr;
};

template <class T>
void causal_conv1d_fwd_cuda(const CausalConv1dCudaParams<T>& p, cudaStream_t stream);

// One decoding step: conv_state (batch, channels, width) f32 holds the last `width` inputs,
// oldest first; it is shifted by one and x appended (in place), then out = act(bias + <w, state>).
// x: [b, c] with row stride x_sb; out: (batch, channels) contiguous. width >= 1.
template <class T>
void causal_conv1d_update_cuda(int64_t batch, int64_t channels, int64_t width, float* conv_state, const T* x,
                               int64_t x_sb, const float* weight, const float* bias, bool silu, T* out,
                               cudaStream_t stream);

}  // namespace mamba::kernels::cuda
