// The polynomial exp/log/softplus/silu the CPU kernels vectorise, against libm over a
// wide range including the clamps.
#include <gtest/gtest.h>

#include <cmath>

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
