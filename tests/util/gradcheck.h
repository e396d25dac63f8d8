// Central finite differences of a scalar loss against an analytic gradient, element by
// element. Gradients are checked in f64 (h ~ 1e-6: the truncation error h^2 f''' and the
// rounding error eps |f| / h are both ~1e-9 relative, so a correct backward agrees to
// ~1e-8 and an error of 1e-6 is visible); the f32 form (h ~ 1e-2, a few % tolerance) is
// kept for what exists only in f32 (the Mamba mixers).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "mamba/tensor/tensor.h"
#include "util/compare.h"

namespace mamba::testing {

// For every `stride`-th element i of x (f32 or f64; grad of the same dtype):
// (loss(x + h e_i) - loss(x - h e_i)) / 2h must match grad[i] within rtol * max(1, |fd|).
// `loss` reads x by reference; x is restored.
template <class Loss>
void expect_matches_finite_differences(Tensor& x, const Tensor& grad, Loss&& loss, double h = 1e-2, double rtol = 2e-2,
                                       int64_t stride = 1) {
  ASSERT_TRUE(grad.defined());
  ASSERT_EQ(grad.shape(), x.shape());
  ASSERT_EQ(grad.dtype(), x.dtype());
  ASSERT_TRUE(x.is_contiguous());
  auto run = [&](auto* p, const auto* g) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(p)>>;
    const T step = static_cast<T>(h);
    for (int64_t i = 0; i < x.numel(); i += stride) {
      const T keep = p[i];
      p[i] = keep + step;
      const double up = loss();
      p[i] = keep - step;
      const double down = loss();
      p[i] = keep;
      const double fd = (up - down) / (2.0 * static_cast<double>(step));
      EXPECT_NEAR(g[i], fd, rtol * std::max(1.0, std::fabs(fd))) << "element " << i;
    }
  };
  const Tensor gc = grad.contiguous();
  if (x.dtype() == DType::f64)
    run(x.data<double>(), gc.data<double>());
  else
    run(x.data<float>(), gc.data<float>());
}

// ---- f64 helpers for the fused kernels' checks ----------------------------------------

// Normal(shift, scale) values drawn in f32 (so the same inputs feed the f32 kernels
// exactly), stored as f64.
inline Tensor randn64(const Shape& s, uint32_t seed, float scale = 1.f, float shift = 0.f) {
  return Tensor::from_vector(randn(static_cast<size_t>(shape_numel(s)), seed, scale, shift), s).to(DType::f64);
}
inline Tensor uniform64(const Shape& s, uint32_t seed, float lo, float hi) {
  return Tensor::from_vector(uniform(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s).to(DType::f64);
}

inline std::vector<double> to_vector_f64(const Tensor& t) {
  const Tensor c = t.to(DType::f64).contiguous();
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}

// sum(y * w) in double, y and w of any float dtype.
inline double dot(const Tensor& y, const Tensor& w) {
  const auto a = to_vector_f64(y), b = to_vector_f64(w);
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max |got - ref| / max |ref|: the error relative to the tensor's scale.
inline double rel_error(const Tensor& got, const Tensor& ref) {
  const auto g = to_vector_f64(got), r = to_vector_f64(ref);
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num = std::max(num, std::fabs(g[i] - r[i]));
    den = std::max(den, std::fabs(r[i]));
  }
  return den > 0 ? num / den : num;
}

// The central finite-difference gradient of loss() with respect to every element of the
// f64 tensor x (perturbed in place and restored), as an f64 tensor of x's shape.
template <class Loss>
Tensor finite_differences64(Tensor& x, Loss&& loss, double h = 1e-6) {
  Tensor fd = Tensor::zeros(x.shape(), DType::f64);
  double* p = x.data<double>();
  double* out = fd.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    out[i] = (up - down) / (2 * h);
  }
  return fd;
}

}  // namespace mamba::testing
