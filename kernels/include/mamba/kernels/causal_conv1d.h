// Depthwise causal 1-D convolution over time, the short convolution in front of every
// Mamba scan:  out[b, t, c] = act(bias[c] + sum_k w[c, k] * x[b, t - (K - 1) + k, c])
// where x at negative times comes from `initial_state` (b, c, K - 1) or is zero.
// Layouts: x [b, t, c] with strides (x_sb, x_st) and c contiguous (so a slice of an in_proj
// output is passed without a copy); out [b, t, c] contiguous; weight (c, K) contiguous.
#pragma once
#include <cstdint>

namespace mamba::kernels {

template <class T>
struct CausalConv1dParamsT {
  int64_t batch = 0, seqlen = 0, channels = 0, width = 4;
  const T* x = nullptr;     int64_t x_sb = 0, x_st = 0;
  const T* weight = nullptr;
  const T* bias = nullptr;               // optional
  const T* initial_state = nullptr;      // (batch, channels, width - 1), optional
  bool silu = true;
  T* out = nullptr;
};
using CausalConv1dParams = CausalConv1dParamsT<float>;

// The plain loops, in f32 or f64 (gradient checks).
void causal_conv1d_ref(const CausalConv1dParams& p);
void causal_conv1d_ref(const CausalConv1dParamsT<double>& p);
// OpenMP over (batch, blocks of channels); time is the outer loop and channels the vector lanes.
void causal_conv1d(const CausalConv1dParams& p);

// Backward: given dout (b, l, c) contiguous — the gradient of `out` (after the SiLU when
// p.silu) — writes dx [b, t, c] (strides dx_sb, dx_st; c contiguous), dweight (c, K),
// dbias (c, optional) and dinitial_state (b, c, K - 1, optional). Overwrites; sums over
// batch and time are taken per channel in a fixed order.
void causal_conv1d_bwd_ref(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                           float* dweight, float* dbias, float* dinitial_state);
void causal_conv1d_bwd_ref(const CausalConv1dParamsT<double>& p, const double* dout, double* dx, int64_t dx_sb,
                           int64_t dx_st, double* dweight, double* dbias, double* dinitial_state);
void causal_conv1d_bwd(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                       float* dweight, float* dbias, float* dinitial_state);

// One decoding step: conv_state (batch, channels, width) holds the last `width` inputs,
// oldest first; it is shifted by one and x appended, then out = act(bias + <w, state>).
// x: [b, c] with row stride x_sb; out: [b, c] contiguous.
void causal_conv1d_update(int64_t batch, int64_t channels, int64_t width, float* conv_state, const float* x,
                          int64_t x_sb, const float* weight, const float* bias, bool silu, float* out);

}  // namespace mamba::kernels
