// MSE/MAE: streaming over batches equals a plain loop over all elements.
#include "mamba/forecasting/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mamba::forecasting;
using mamba::Tensor;

TEST(Metrics, StreamingMatchesPlainLoop) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t B = 13, H = 7, V = 3;
  std::vector<float> p(B * H * V), t(B * H * V);
  for (auto& x : p) x = nd(rng);
  for (auto& x : t) x = nd(rng);
  double sq = 0, ab = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sq += (double(p[i]) - t[i]) * (double(p[i]) - t[i]);
    ab += std::fabs(double(p[i]) - t[i]);
  }
  const Tensor P = Tensor::from_vector(p, {B, H, V}), T = Tensor::from_vector(t, {B, H, V});
  ErrorAccumulator acc;
  for (int64_t b0 = 0; b0 < B; b0 += 5) {  // batches of 5, 5, 3
    const int64_t b1 = std::min(B, b0 + 5);
    acc.add(P.slice(0, b0, b1), T.slice(0, b0, b1));
  }
  EXPECT_EQ(acc.count(), B * H * V);
  EXPECT_NEAR(acc.mse(), sq / double(p.size()), 1e-12);
  EXPECT_NEAR(acc.mae(), ab / double(p.size()), 1e-12);
  EXPECT_NEAR(mse(P, T), acc.mse(), 1e-12);
  EXPECT_NEAR(mae(P, T), acc.mae(), 1e-12);

  // Non-contiguous views and merge().
  ErrorAccumulator a, b;
  a.add(P.transpose(1, 2).slice(0, 0, 6), T.transpose(1, 2).slice(0, 0, 6));
  b.add(P.slice(0, 6, B), T.slice(0, 6, B));
  a.merge(b);
  EXPECT_NEAR(a.mse(), acc.mse(), 1e-12);
  EXPECT_NEAR(a.mae(), acc.mae(), 1e-12);
}

TEST(Metrics, Errors) {
  ErrorAccumulator acc;
  EXPECT_THROW(acc.mse(), mamba::Error);
  EXPECT_THROW(acc.add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), mamba::Error);
  acc.add(Tensor::full({2}, 1.0), Tensor::full({2}, -1.0));
  EXPECT_DOUBLE_EQ(acc.mse(), 4.0);
  EXPECT_DOUBLE_EQ(acc.mae(), 2.0);
}
