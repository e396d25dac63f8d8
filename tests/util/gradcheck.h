// Central finite differences of a scalar loss against an analytic gradient, element by
// element (the reference backward passes are checked with it).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "mamba/tensor/tensor.h"

namespace mamba::testing {

// For every `stride`-th element i of x (f32): (loss(x + h e_i) - loss(x - h e_i)) / 2h must
// match grad[i] within rtol * max(1, |fd|). `loss` reads x by reference; x is restored.
template <class Loss>
void expect_matches_finite_differences(Tensor& x, const Tensor& grad, Loss&& loss, float h = 1e-2f, double rtol = 2e-2,
                                       int64_t stride = 1) {
  ASSERT_TRUE(grad.defined());
  ASSERT_EQ(grad.shape(), x.shape());
  float* p = x.data<float>();
  const float* g = grad.data<float>();
  for (int64_t i = 0; i < x.numel(); i += stride) {
    const float keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    const double fd = (up - down) / (2.0 * h);
    EXPECT_NEAR(g[i], fd, rtol * std::max(1.0, std::fabs(fd))) << "element " << i;
  }
}

}  // namespace mamba::testing
