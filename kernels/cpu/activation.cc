#include "mamba/kernels/activation.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "vec_math.h"

namespace mamba::kernels {

namespace {

template <class T> inline T act(const ActivationParams& p, T x) {
  switch (p.kind) {
    case Activation::relu: return x > T(0) ? x : T(0);
    case Activation::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case Activation::tanh: return std::tanh(x);
    case Activation::exp: return std::exp(x);
    case Activation::silu: return x / (T(1) + std::exp(-x));
    case Activation::gelu_erf: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case Activation::gelu_tanh: {
      const T k = T(0.79788456080286535588);  // sqrt(2/pi)
      return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
    }
    case Activation::softplus: {
      const T bx = static_cast<T>(p.beta) * x;
      if (bx > static_cast<T>(p.threshold)) return x;
      return std::log1p(std::exp(bx)) / static_cast<T>(p.beta);
    }
    case Activation::leaky_relu: return x >= T(0) ? x : static_cast<T>(p.slope) * x;
  }
  return x;
}

// The fast path: each case is its own loop so the compiler sees a branch-free body per
// activation, with the inlined exp (vec_math.h) so those loops vectorise.
template <class T> void act_block(const ActivationParams& p, int64_t n, const T* x, T* y) {
  using detail::vexp;
  switch (p.kind) {
    case Activation::relu:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
      return;
    case Activation::leaky_relu: {
      const T s = static_cast<T>(p.slope);
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] >= T(0) ? x[i] : s * x[i];
      return;
    }
    case Activation::exp:
      for (int64_t i = 0; i < n; ++i) y[i] = vexp(x[i]);
      return;
    case Activation::sigmoid:
      for (int64_t i = 0; i < n; ++i) y[i] = T(1) / (T(1) + vexp(-x[i]));
      return;
    case Activation::silu:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (T(1) + vexp(-x[i]));
      return;
    case Activation::tanh:
      for (int64_t i = 0; i < n; ++i) y[i] = detail::vtanh(x[i]);
      return;
    case Activation::gelu_tanh: {
      const T k = T(0.79788456080286535588);  // sqrt(2/pi)
      for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        y[i] = T(0.5) * v * (T(1) + detail::vtanh(k * (v + T(0.044715) * v * v * v)));
      }
      return;
    }
    case Activation::gelu_erf:
      if constexpr (std::is_same_v<T, float>) {
        for (int64_t i = 0; i < n; ++i) y[i] = detail::gelu_erf_fast(x[i]);
        return;
      }
      [[fallthrough]];
    default:
      for (int64_t i = 0; i < n; ++i) y[i] = act(p, x[i]);
  }
}

template <class T> void act_fast(const ActivationParams& p, int64_t n, const T* x, T* y) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t s = b * kBlock;
    act_block(p, std::min(kBlock, n - s), x + s, y + s);
  }
}

template <class T> void act_ref(const ActivationParams& p, int64_t n, const T* x, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = act(p, x[i]);
}

}  // namespace

void activation_f32(const ActivationParams& p, int64_t n, const float* x, float* y) { act_fast(p, n, x, y); }
void activation_f64(const ActivationParams& p, int64_t n, const double* x, double* y) { act_fast(p, n, x, y); }
void activation_f32_ref(const ActivationParams& p, int64_t n, const float* x, float* y) { act_ref(p, n, x, y); }
void activation_f64_ref(const ActivationParams& p, int64_t n, const double* x, double* y) { act_ref(p, n, x, y); }

void gelu_erf_backward_f32(int64_t n, const float* x, const float* dy, float* dx) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t e = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < e; ++i) dx[i] = dy[i] * detail::gelu_erf_grad_fast(x[i]);
  }
}

void gelu_erf_backward_f32_ref(int64_t n, const float* x, const float* dy, float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double grad = 0.5 * (1.0 + std::erf(v * 0.70710678118654752440)) +
                        v * 0.39894228040143267794 * std::exp(-0.5 * v * v);
    dx[i] = static_cast<float>(dy[i] * grad);
  }
}

void prelu_f32(int64_t outer, int64_t C, int64_t inner, const float* x, const float* w, int64_t num_weights,
               float* y) {
#pragma omp parallel for schedule(static) if (outer * C * inner > 32768)
  for (int64_t oc = 0; oc < outer * C; ++oc) {
    const float a = num_weights == 1 ? w[0] : w[oc % C];
    const float* xr = x + oc * inner;
    float* yr = y + oc * inner;
    for (int64_t i = 0; i < inner; ++i) yr[i] = xr[i] >= 0.f ? xr[i] : a * xr[i];
  }
}

void prelu_f32_ref(int64_t outer, int64_t C, int64_t inner, const float* x, const float* w, int64_t num_weights,
                   float* y) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t k = (o * C + c) * inner + i;
        const float a = w[num_weights == 1 ? 0 : c];
        y[k] = x[k] >= 0.f ? x[k] : a * x[k];
      }
}

}  // namespace mamba::kernels
