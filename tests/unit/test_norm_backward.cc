// rms_norm / gated_rms_norm backward: fast vs reference at awkward sizes (1 row, odd dims,
// groups, z or not, both norm_before_gate forms) with 1 and 2 threads; dweight has the
// same bits for any thread count; central finite differences of the references for every
// element of x, z and weight.
#include <gtest/gtest.h>

#include <cmath>

#include "mamba/kernels/parallel.h"
#include "mamba/ops/ssm.h"
#include "util/compare.h"
#include "util/gradcheck.h"

using mamba::Tensor;
using mamba::ops::Impl;

namespace {

Tensor rnd(const mamba::Shape& s, uint32_t seed, float scale = 1.f, float shift = 0.f) {
  return Tensor::from_vector(mamba::testing::randn(static_cast<size_t>(mamba::shape_numel(s)), seed, scale, shift), s);
}

struct Case {
  int64_t rows, dim, group;  // group 0: plain rms_norm
  bool z, norm_before_gate;
};

void same(const Tensor& a, const Tensor& b, const char* name, bool exact = false) {
  SCOPED_TRACE(name);
  ASSERT_EQ(a.defined(), b.defined());
  if (!a.defined()) return;
  ASSERT_EQ(a.shape(), b.shape());
  if (exact)
    EXPECT_EQ(a.to_vector_f32(), b.to_vector_f32());
  else
    EXPECT_CLOSE(a.to_vector_f32(), b.to_vector_f32(), 1e-4);
}

mamba::ops::NormGrads run(const Case& c, const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& dy,
                          Impl impl) {
  if (c.group == 0) return mamba::ops::rms_norm_backward(x, w, 1e-5, dy, impl);
  return mamba::ops::gated_rms_norm_backward(x, c.z ? z : Tensor(), w, c.group, 1e-5, c.norm_before_gate, dy, impl);
}

class NormBackward : public ::testing::TestWithParam<std::tuple<Case, int>> {};

TEST_P(NormBackward, FastMatchesReference) {
  const auto [c, threads] = GetParam();
  mamba::kernels::set_num_threads(threads);
  const Tensor x = rnd({c.rows, c.dim}, 1), z = rnd({c.rows, c.dim}, 2), w = rnd({c.dim}, 3, 0.5f, 1.f);
  const Tensor dy = rnd({c.rows, c.dim}, 4);
  const auto f = run(c, x, z, w, dy, Impl::fast), r = run(c, x, z, w, dy, Impl::reference);
  same(f.dx, r.dx, "dx");
  same(f.dz, r.dz, "dz");
  same(f.dweight, r.dweight, "dweight");
  mamba::kernels::set_num_threads(0);
}

const Case kCases[] = {
    {1, 1, 0, false, false},    {1, 7, 7, true, false},     {1, 7, 7, true, true},     {5, 33, 0, false, false},
    {9, 12, 4, true, false},    {9, 12, 4, true, true},     {9, 12, 3, false, false},  {1000, 96, 0, false, false},
    {1000, 96, 48, true, false}, {1000, 96, 32, true, true}, {777, 130, 65, false, true},
};

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, NormBackward, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 2)));

TEST(NormBackward, DweightIndependentOfThreadCount) {
  const Case c{1000, 96, 32, true, false};
  const Tensor x = rnd({c.rows, c.dim}, 1), z = rnd({c.rows, c.dim}, 2), w = rnd({c.dim}, 3, 0.5f, 1.f);
  const Tensor dy = rnd({c.rows, c.dim}, 4);
  mamba::kernels::set_num_threads(1);
  const auto one = run(c, x, z, w, dy, Impl::fast);
  mamba::kernels::set_num_threads(2);
  const auto two = run(c, x, z, w, dy, Impl::fast);
  mamba::kernels::set_num_threads(0);
  same(one.dx, two.dx, "dx", true);
  same(one.dz, two.dz, "dz", true);
  same(one.dweight, two.dweight, "dweight", true);
}

// d/d(input) of sum(y * dy) by central differences (h = 1e-2) on every element.
class NormFiniteDifferences : public ::testing::TestWithParam<Case> {};

TEST_P(NormFiniteDifferences, ReferenceMatches) {
  const Case c = GetParam();
  Tensor x = rnd({c.rows, c.dim}, 11), z = rnd({c.rows, c.dim}, 12), w = rnd({c.dim}, 13, 0.5f, 1.f);
  const Tensor dy = rnd({c.rows, c.dim}, 14);
  auto loss = [&] {
    const Tensor y = c.group == 0 ? mamba::ops::rms_norm(x, w, 1e-5, Impl::reference)
                                  : mamba::ops::gated_rms_norm(x, c.z ? z : Tensor(), w, c.group, 1e-5,
                                                               c.norm_before_gate, Impl::reference);
    double s = 0;
    const auto yv = y.to_vector_f32(), wv = dy.to_vector_f32();
    for (size_t i = 0; i < yv.size(); ++i) s += static_cast<double>(yv[i]) * wv[i];
    return s;
  };
  const auto g = run(c, x, z, w, dy, Impl::reference);
  std::vector<std::pair<Tensor*, const Tensor*>> pairs = {{&x, &g.dx}, {&w, &g.dweight}};
  if (c.z && c.group) pairs.push_back({&z, &g.dz});
  int k = 0;
  for (const auto& [t, gt] : pairs) {
    SCOPED_TRACE(k++);
    mamba::testing::expect_matches_finite_differences(*t, *gt, loss);
  }
}

INSTANTIATE_TEST_SUITE_P(Small, NormFiniteDifferences,
                         ::testing::Values(Case{3, 12, 0, false, false}, Case{3, 12, 4, true, false},
                                           Case{3, 12, 4, true, true}, Case{2, 12, 12, true, false},
                                           Case{2, 9, 3, false, false}, Case{1, 1, 1, true, true}));

}  // namespace
