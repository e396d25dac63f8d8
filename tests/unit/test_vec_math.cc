// The polynomial exp/log/softplus/silu the CPU kernels vectorise, against libm over a
// wide range including the clamps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "../../kernels/cpu/vec_math.h"

using namespace mamba::kernels::detail;

TEST(VecMath, ExpMatchesLibmToAFewUlp) {
  for (float x = -80.f; x <= 80.f; x += 0.0137f) {
    const float ref = std::exp(x);
    EXPECT_NEAR(exp_fast(x), ref, 4e-7f * ref) << x;
  }
  EXPECT_EQ(exp_fast(0.f), 1.f);
  EXPECT_EQ(exp_fast(-1000.f), 0.f);
  EXPECT_TRUE(std::isinf(exp_fast(1000.f)));
  EXPECT_TRUE(std::isnan(exp_fast(NAN)));
  EXPECT_NEAR(exp_fast(88.7f), std::exp(88.7f), 4e-7f * std::exp(88.7f));
}

TEST(VecMath, LogAndLog1pMatchLibm) {
  for (float x = 1e-30f; x < 1e30f; x *= 1.37f) EXPECT_NEAR(log_fast(x), std::log(x), 2e-7f * std::fabs(std::log(x)) + 1e-7f) << x;
  for (float e = 1e-12f; e < 1e8f; e *= 1.71f) EXPECT_NEAR(log1p_fast(e), std::log1p(e), 3e-7f * std::log1p(e)) << e;
}

TEST(VecMath, SoftplusAndSilu) {
  for (float x = -60.f; x <= 60.f; x += 0.0371f) {
    const float sp = x > 20.f ? x : std::log1p(std::exp(x));
    EXPECT_NEAR(softplus_fast(x), sp, 4e-7f * sp + 1e-30f) << x;
    const float si = x / (1.f + std::exp(-x));
    EXPECT_NEAR(silu_fast(x), si, 4e-7f * std::fabs(si) + 1e-30f) << x;
  }
}

TEST(VecMath, Exp2MatchesLibm) {
  for (float x = -120.f; x <= 120.f; x += 0.0173f) {
    const float ref = std::exp2(x);
    EXPECT_NEAR(exp2_fast(x), ref, 3e-7f * ref) << x;
  }
  EXPECT_GT(exp2_fast(-1000.f), 0.f);
  EXPECT_TRUE(std::isfinite(exp2_fast(1000.f)));
}

namespace {

// One unit in the last place of the float nearest r (the smallest denormal at 0).
double ulp_of(double r) {
  const float f = std::fabs(static_cast<float>(r));
  return f == 0.f ? 1.4e-45 : static_cast<double>(std::nextafter(f, INFINITY) - f);
}

// Every stride-th float of [0, inf), both signs, plus a 1e-3 grid over [-12, 12]: dense in
// the range where erf and Phi change and through both tails.
template <class F>
void for_test_floats(uint32_t stride, F f) {
  for (uint32_t b = 0; b < 0x7f800000u; b += stride)
    for (uint32_t sign : {0u, 0x80000000u}) {
      const uint32_t bits = b | sign;
      float x;
      std::memcpy(&x, &bits, 4);
      f(x);
    }
  for (int i = -12000; i <= 12000; ++i) f(static_cast<float>(i) * 1e-3f);
}

}  // namespace

TEST(VecMath, ErfWithinTwoUlpOfLibm) {
  double worst = 0;
  for_test_floats(4099, [&](float x) {
    const double ref = std::erf(static_cast<double>(x));
    const double ulps = std::fabs(erf_fast(x) - ref) / ulp_of(ref);
    worst = std::max(worst, ulps);
    ASSERT_LE(ulps, 2.0) << x;
  });
  std::printf("erf_fast: max error %.3f ulp\n", worst);
  EXPECT_EQ(erf_fast(0.f), 0.f);
  EXPECT_TRUE(std::signbit(erf_fast(-0.f)));
  EXPECT_EQ(erf_fast(INFINITY), 1.f);
  EXPECT_EQ(erf_fast(-INFINITY), -1.f);
  EXPECT_EQ(erf_fast(1e30f), 1.f);
  EXPECT_TRUE(std::isnan(erf_fast(NAN)));
}

// Phi and the GELU (x Phi(x)) and its derivative Phi(x) + x phi(x) against double libm:
// relative in the lower tail (no 1 + erf cancellation), to f32 rounding elsewhere.
TEST(VecMath, NormalCdfAndGeluIncludingTheLowerTail) {
  double worst_cdf = 0, worst_gelu = 0, worst_grad = 0;
  for_test_floats(4099, [&](float x) {
    if (std::fabs(x) > 40.f) return;
    const double xd = x, cdf = 0.5 * std::erfc(-xd / std::sqrt(2.0));
    const double gelu = xd * cdf, grad = cdf + xd * std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * M_PI);
    if (cdf > 1.2e-38) {  // Phi a normal float
      const double e = std::fabs(normal_cdf_fast(x) - cdf);
      worst_cdf = std::max(worst_cdf, e / (4e-7 * cdf + 3e-8));
      ASSERT_LE(e, 4e-7 * cdf + 3e-8) << x;
    }
    if (cdf > 1.2e-38 && std::fabs(gelu) > 1.2e-38) {  // and x Phi(x) too
      const double eg = std::fabs(gelu_erf_fast(x) - gelu);
      worst_gelu = std::max(worst_gelu, eg / (4e-7 * std::fabs(gelu) + 4e-8 * std::fabs(xd)));
      ASSERT_LE(eg, 4e-7 * std::fabs(gelu) + 4e-8 * std::fabs(xd)) << x;
    }
    const double ed = std::fabs(gelu_erf_grad_fast(x) - grad);
    worst_grad = std::max(worst_grad, ed);
    ASSERT_LE(ed, 2e-7) << x;
  });
  std::printf("Phi: max %.3f of the bound, GELU: %.3f of the bound, GELU': max abs error %.3g\n", worst_cdf,
              worst_gelu, worst_grad);
  EXPECT_EQ(normal_cdf_fast(0.f), 0.5f);
  EXPECT_EQ(normal_cdf_fast(INFINITY), 1.f);
  EXPECT_EQ(normal_cdf_fast(-INFINITY), 0.f);
  EXPECT_EQ(gelu_erf_fast(INFINITY), INFINITY);
  EXPECT_EQ(gelu_erf_fast(-30.f), -0.f);
  EXPECT_TRUE(std::isnan(gelu_erf_fast(NAN)));
  EXPECT_TRUE(std::isnan(gelu_erf_grad_fast(NAN)));
  EXPECT_EQ(gelu_erf_grad_fast(0.f), 0.5f);
}
