// Pointwise activations (PyTorch semantics). Input: any shape and strides, f32 or f64.
// Output: a new contiguous tensor of the same shape and dtype.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

enum class Activation : uint8_t { relu, sigmoid, tanh, exp, silu, gelu_erf, gelu_tanh, softplus, leaky_relu };

struct ActivationOptions {
  double slope = 0.01;      // leaky_relu negative slope
  double beta = 1.0;        // softplus: (1/beta) log(1 + exp(beta x))
  double threshold = 20.0;  // softplus: returns x where beta*x > threshold
};

Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor silu(const Tensor& x);  // x * sigmoid(x)
enum class GeluApprox : uint8_t { none, tanh };
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::none);  // none: exact, with erf
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);
Tensor leaky_relu(const Tensor& x, double slope = 0.01);

// PReLU: x is [N, C, ...] (or [C] / any shape when weight has one element); weight is [C]
// (channel dim 1, or dim 0 for 1-D x) or [1]. y = x if x >= 0 else weight[c] * x. f32 only.
Tensor prelu(const Tensor& x, const Tensor& weight);
Tensor prelu_ref(const Tensor& x, const Tensor& weight);

// General entry point and its reference (a plain scalar loop).
Tensor activation(Activation kind, const Tensor& x, const ActivationOptions& opt = {});
Tensor activation_ref(Activation kind, const Tensor& x, const ActivationOptions& opt = {});

}  // namespace mamba::ops
