// Helpers for the op tests: random tensors, closeness checks, thread-count sweeps.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "mamba/kernels/parallel.h"
#include "mamba/tensor/tensor.h"

namespace optest {

using mamba::DType;
using mamba::Shape;
using mamba::Tensor;

inline Tensor randn(const Shape& shape, uint32_t seed, DType dt = DType::f32, double lo = -2, double hi = 2) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  Tensor t = Tensor::empty(shape, DType::f64);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(g);
  return t.to(dt);
}

inline std::vector<double> values(const Tensor& t) {
  const Tensor c = t.contiguous().to(DType::f64);
  const double* p = c.data<double>();
  return std::vector<double>(p, p + c.numel());
}

// max |a - b| <= tol * max(1, max |b|); NaN must match NaN.
inline ::testing::AssertionResult close(const Tensor& a, const Tensor& b, double tol = 1e-4) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << a.str() << " vs " << b.str();
  const auto va = values(a), vb = values(b);
  double scale = 1, diff = 0;
  size_t worst = 0;
  for (size_t i = 0; i < vb.size(); ++i) {
    if (std::isnan(va[i]) != std::isnan(vb[i]))
      return ::testing::AssertionFailure() << "NaN mismatch at " << i << ": " << va[i] << " vs " << vb[i];
    if (std::isnan(vb[i])) continue;
    if (std::isinf(vb[i]) || std::isinf(va[i])) {
      if (va[i] != vb[i]) return ::testing::AssertionFailure() << "inf mismatch at " << i;
      continue;
    }
    scale = std::max(scale, std::abs(vb[i]));
    if (std::abs(va[i] - vb[i]) > diff) {
      diff = std::abs(va[i] - vb[i]);
      worst = i;
    }
  }
  if (diff <= tol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs diff " << diff << " at " << worst << " (" << va[worst] << " vs "
                                       << vb[worst] << "), limit " << tol * scale << " for " << a.str();
}

inline ::testing::AssertionResult equal_i64(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << a.str() << " vs " << b.str();
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (ca.data<int64_t>()[i] != cb.data<int64_t>()[i])
      return ::testing::AssertionFailure() << "differ at " << i << ": " << ca.data<int64_t>()[i] << " vs "
                                           << cb.data<int64_t>()[i];
  return ::testing::AssertionSuccess();
}

// Runs f with 1 and then 2 kernel threads, restoring the default afterwards.
template <class F> void for_threads(F&& f) {
  for (int n : {1, 2}) {
    SCOPED_TRACE("threads=" + std::to_string(n));
    mamba::kernels::set_num_threads(n);
    f();
  }
  mamba::kernels::set_num_threads(0);
}

// Checks that `call` throws mamba::Error whose message contains every string in `parts`.
template <class F> void expect_error(F&& call, std::vector<std::string> parts) {
  try {
    call();
    ADD_FAILURE() << "no mamba::Error thrown";
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace optest
