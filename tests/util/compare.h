// Small helpers for the randomized fast-vs-reference tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace mamba::testing {

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f, float shift = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = shift + scale * dist(rng);
  return v;
}

inline std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

struct Diff {
  double max_abs = 0, max_ref = 0;
  bool has_nan = false;
  double rel() const { return max_abs / std::max(max_ref, 1e-30); }
};

inline Diff diff(const float* got, const float* ref, size_t n) {
  Diff d;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) d.has_nan = true;
    d.max_abs = std::max(d.max_abs, static_cast<double>(std::fabs(got[i] - ref[i])));
    d.max_ref = std::max(d.max_ref, static_cast<double>(std::fabs(ref[i])));
  }
  return d;
}

inline Diff diff(const std::vector<float>& got, const std::vector<float>& ref) {
  return diff(got.data(), ref.data(), std::min(got.size(), ref.size()));
}

// |got - ref| <= tol * max(1, max|ref|), no NaN where the reference has none.
#define EXPECT_CLOSE(got, ref, tol)                                                                       \
  do {                                                                                                    \
    auto _d = ::mamba::testing::diff(got, ref);                                                           \
    EXPECT_FALSE(_d.has_nan);                                                                             \
    EXPECT_LE(_d.max_abs, (tol) * std::max(1.0, _d.max_ref)) << "max|ref| = " << _d.max_ref;              \
  } while (0)

}  // namespace mamba::testing
