#include "mamba/ops/activation.h"

#include "mamba/kernels/activation.h"
#include "op_util.h"

namespace mamba::ops {

// The ops enum mirrors the kernel enum value for value.
static_assert(static_cast<int>(Activation::relu) == static_cast<int>(kernels::Activation::relu));
static_assert(static_cast<int>(Activation::gelu_tanh) == static_cast<int>(kernels::Activation::gelu_tanh));
static_assert(static_cast<int>(Activation::leaky_relu) == static_cast<int>(kernels::Activation::leaky_relu));

namespace {

Tensor act_impl(Activation kind, const Tensor& x, const ActivationOptions& opt, bool ref) {
  detail::check_float("ops::activation", x, "x");
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  kernels::ActivationParams p{static_cast<kernels::Activation>(kind), opt.slope, opt.beta, opt.threshold};
  if (x.dtype() == DType::f32)
    (ref ? kernels::activation_f32_ref : kernels::activation_f32)(p, x.numel(), xc.data<float>(), y.data<float>());
  else
    (ref ? kernels::activation_f64_ref : kernels::activation_f64)(p, x.numel(), xc.data<double>(), y.data<double>());
  return y;
}

Tensor prelu_impl(const Tensor& x, const Tensor& weight, bool ref) {
  detail::check_float("ops::prelu", x, "x", false);
  detail::check_float("ops::prelu", weight, "weight", false);
  if (weight.dim() > 1) fail("ops::prelu", "weight must be 1-D, got " + weight.str());
  const int64_t nw = weight.numel();
  int64_t outer = 1, C = 1, inner = x.numel();
  if (nw != 1) {
    if (x.dim() == 0) fail("ops::prelu", "x " + x.str() + " has no channel dim for weight " + weight.str());
    const int64_t cd = x.dim() >= 2 ? 1 : 0;
    C = x.size(cd);
    if (C != nw) fail("ops::prelu", "weight " + weight.str() + " does not match the channels of x " + x.str());
    outer = cd == 1 ? x.size(0) : 1;
    inner = C == 0 ? 0 : x.numel() / std::max<int64_t>(1, outer * C);
  }
  const Tensor xc = x.contiguous(), wc = weight.contiguous();
  Tensor y = Tensor::empty(x.shape(), DType::f32);
  (ref ? kernels::prelu_f32_ref : kernels::prelu_f32)(outer, C, inner, xc.data<float>(), wc.data<float>(), nw,
                                                      y.data<float>());
  return y;
}

}  // namespace

Tensor activation(Activation kind, const Tensor& x, const ActivationOptions& opt) {
  return act_impl(kind, x, opt, false);
}
Tensor activation_ref(Activation kind, const Tensor& x, const ActivationOptions& opt) {
  return act_impl(kind, x, opt, true);
}

Tensor relu(const Tensor& x) { return act_impl(Activation::relu, x, {}, false); }
Tensor sigmoid(const Tensor& x) { return act_impl(Activation::sigmoid, x, {}, false); }
Tensor tanh(const Tensor& x) { return act_impl(Activation::tanh, x, {}, false); }
Tensor exp(const Tensor& x) { return act_impl(Activation::exp, x, {}, false); }
Tensor silu(const Tensor& x) { return act_impl(Activation::silu, x, {}, false); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return act_impl(approx == GeluApprox::tanh ? Activation::gelu_tanh : Activation::gelu_erf, x, {}, false);
}
Tensor softplus(const Tensor& x, double beta, double threshold) {
  if (!(beta > 0)) fail("ops::softplus", "beta must be > 0, got " + std::to_string(beta));
  ActivationOptions o;
  o.beta = beta;
  o.threshold = threshold;
  return act_impl(Activation::softplus, x, o, false);
}
Tensor leaky_relu(const Tensor& x, double slope) {
  ActivationOptions o;
  o.slope = slope;
  return act_impl(Activation::leaky_relu, x, o, false);
}

Tensor prelu(const Tensor& x, const Tensor& weight) { return prelu_impl(x, weight, false); }
Tensor prelu_ref(const Tensor& x, const Tensor& weight) { return prelu_impl(x, weight, true); }

}  // namespace mamba::ops
