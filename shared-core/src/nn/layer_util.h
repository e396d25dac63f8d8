// Helpers shared by the Mamba layers (internal to shared-core/src/nn).
#pragma once

#include <cmath>
#include <cstring>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/gemm.h"
#include "mamba/nn/mixer.h"
#include "mamba/tensor/tensor.h"

namespace mamba::nn::detail {

// y[r, :] = W x[r, :] for `rows` rows; W is (out, in) row-major (the reference layout).
inline void linear_rows(const float* x, int64_t rows, int64_t x_stride, const Tensor& w, float* y, int64_t y_stride) {
  const int64_t out = w.size(0), in = w.size(1);
  if (rows == 1) {
    kernels::sgemv(false, out, in, 1.f, w.data<float>(), in, x, 0.f, y);
    return;
  }
  kernels::sgemm(false, true, rows, out, in, 1.f, x, x_stride, w.data<float>(), in, 0.f, y, y_stride);
}

// A = -exp(A_log), elementwise, on A_log's device (computed on the CPU).
inline Tensor neg_exp(const Tensor& a_log) {
  if (!a_log.device().is_cpu()) return neg_exp(a_log.to(Device::cpu())).to(a_log.device());
  Tensor a = Tensor::empty(a_log.shape());
  const float* s = a_log.data<float>();
  float* d = a.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) d[i] = -std::exp(s[i]);
  return a;
}

// The last d_conv - 1 inputs of a conv_state (batch, c, d_conv), as a contiguous
// (batch, c, d_conv - 1) tensor: the initial state of the causal convolution.
inline Tensor conv_history(const Tensor& conv_state) {
  return conv_state.slice(2, 1, conv_state.size(2)).contiguous();
}

// After running the convolution over `seqlen` new inputs x[b, t, c] (row stride x_st,
// batch stride x_sb), conv_state becomes the last d_conv inputs of old state + x.
inline void conv_state_advance(Tensor& conv_state, const float* x, int64_t x_sb, int64_t x_st, int64_t seqlen) {
  const int64_t B = conv_state.size(0), Cc = conv_state.size(1), K = conv_state.size(2);
  float* s = conv_state.data<float>();
  std::vector<float> old(s, s + conv_state.numel());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < Cc; ++c)
      for (int64_t j = 0; j < K; ++j) {
        const int64_t t = seqlen - K + j;  // time of slot j relative to the new inputs
        s[(b * Cc + c) * K + j] = t >= 0 ? x[b * x_sb + t * x_st + c] : old[(b * Cc + c) * K + (K + t)];
      }
}

// The short causal convolution + SiLU of a Mamba layer over x[b, t, c] (row stride x_st,
// batch stride x_sb): returns (b, l, c). With a state, starts from its history and
// leaves the last d_conv inputs in it.
inline Tensor short_conv(const float* x, int64_t b, int64_t l, int64_t c, int64_t x_sb, int64_t x_st, const Tensor& w,
                         const Tensor& bias, LayerState* state) {
  Tensor out = Tensor::empty({b, l, c});
  Tensor hist;
  kernels::CausalConv1dParams cp;
  cp.batch = b; cp.seqlen = l; cp.channels = c; cp.width = w.size(-1);
  cp.x = x; cp.x_sb = x_sb; cp.x_st = x_st;
  cp.weight = w.data<float>(); cp.bias = bias.data<float>(); cp.silu = true;
  if (state) {
    hist = conv_history(state->conv_state);
    cp.initial_state = hist.data<float>();
  }
  cp.out = out.data<float>();
  kernels::causal_conv1d(cp);
  if (state) conv_state_advance(state->conv_state, x, x_sb, x_st, l);
  return out;
}

// forward_train for a layer whose forward_impl(x, state, keep) fills an `Acts` record.
template <class Acts, class Impl>
Tensor forward_keeping(std::unique_ptr<SavedActivations>& saved, Impl&& forward_impl) {
  auto acts = std::make_unique<Acts>();
  Tensor out = forward_impl(acts.get());
  saved = std::move(acts);
  return out;
}

inline void check_input(const Tensor& x, int64_t rank, int64_t d_model, const char* op) {
  check_dtype(x, DType::f32, op);
  if (x.dim() != rank || x.size(-1) != d_model)
    fail(op, "input has shape " + shape_str(x.shape()) + ", expected " + (rank == 3 ? "(batch, seqlen, " : "(batch, ") +
                 std::to_string(d_model) + ")");
}

// A GPU layer's input: on the layer's device, in its compute dtype.
inline void check_input_device(const Tensor& x, int64_t rank, int64_t d_model, Device device, DType dtype,
                               const char* op) {
  if (!x.defined()) fail(op, "input is undefined");
  if (x.device() != device) fail(op, "input is on " + x.device().str() + ", the layer on " + device.str());
  if (x.dtype() != dtype)
    fail(op, std::string("input is ") + x.str() + ", the layer computes in " + dtype_name(dtype));
  if (x.dim() != rank || x.size(-1) != d_model)
    fail(op, "input has shape " + shape_str(x.shape()) + ", expected " + (rank == 3 ? "(batch, seqlen, " : "(batch, ") +
                 std::to_string(d_model) + ")");
}

inline void check_state(const Tensor& t, const Shape& want, const char* op, const char* name) {
  check_dtype(t, DType::f32, op);
  check_shape(t, want, op, name);
  if (!t.is_contiguous()) fail(op, std::string(name) + " must be contiguous");
}

}  // namespace mamba::nn::detail
