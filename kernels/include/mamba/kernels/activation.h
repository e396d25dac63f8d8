// Pointwise activations on contiguous memory: y[i] = f(x[i]) for i in [0, n).
// x and y may be the same pointer (in place). PyTorch definitions:
//   relu max(x, 0); sigmoid 1/(1+e^-x); tanh; exp; silu x*sigmoid(x);
//   gelu_erf 0.5x(1+erf(x/sqrt2)); gelu_tanh 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)));
//   softplus (1/beta)log(1+e^(beta x)), and x itself where beta*x > threshold;
//   leaky_relu x if x >= 0 else slope*x.
// Threading: OpenMP over fixed-size blocks; thread count does not change results.
#pragma once
#include <cstdint>

namespace mamba::kernels {

enum class Activation : uint8_t { relu, sigmoid, tanh, exp, silu, gelu_erf, gelu_tanh, softplus, leaky_relu };

struct ActivationParams {
  Activation kind = Activation::relu;
  double slope = 0.01;      // leaky_relu
  double beta = 1.0;        // softplus
  double threshold = 20.0;  // softplus
};

void activation_f32(const ActivationParams& p, int64_t n, const float* x, float* y);
void activation_f64(const ActivationParams& p, int64_t n, const double* x, double* y);
void activation_f32_ref(const ActivationParams& p, int64_t n, const float* x, float* y);
void activation_f64_ref(const ActivationParams& p, int64_t n, const double* x, double* y);

// The GELU (gelu_erf) backward: dx[i] = dy[i] * (Phi(x[i]) + x[i] phi(x[i])), Phi and phi
// the standard normal CDF and density. x, dy, dx contiguous; dx may alias dy.
// The f32 fast path of gelu_erf (forward and this backward) evaluates Phi through a
// polynomial erf/erfc (kernels/cpu/vec_math.h: erf within 2 ulp; Phi and the GELU within
// 4e-7 relative or 4e-8 |x| absolute, the lower tail kept relative), vectorised; the
// reference computes in double and rounds.
void gelu_erf_backward_f32(int64_t n, const float* x, const float* dy, float* dx);
void gelu_erf_backward_f32_ref(int64_t n, const float* x, const float* dy, float* dx);

// PReLU on x laid out as [outer, C, inner] (contiguous): y = x if x >= 0 else w[c] * x.
// `num_weights` is C (one per channel) or 1 (shared).
void prelu_f32(int64_t outer, int64_t C, int64_t inner, const float* x, const float* w, int64_t num_weights, float* y);
void prelu_f32_ref(int64_t outer, int64_t C, int64_t inner, const float* x, const float* w, int64_t num_weights,
                   float* y);

}  // namespace mamba::kernels
