// selective_scan backward: the checkpointing fast path against the reference (which
// matches ../shared/golden's gradients in mamba-golden), at awkward sizes, 1 and 2
// threads; plus a finite-difference spot check of the reference.
#include <gtest/gtest.h>

#include "mamba/kernels/cpu_isa.h"
#include "mamba/kernels/parallel.h"
#include "mamba/kernels/selective_scan.h"
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
  int64_t b, d, l, n, g;
  bool z, init, softplus;
};

class ScanBackward : public ::testing::TestWithParam<std::tuple<Case, int>> {};

TEST_P(ScanBackward, FastMatchesReference) {
  const auto [c, threads] = GetParam();
  mamba::kernels::set_num_threads(threads);
  // Without softplus, delta is the step size itself: keep it positive, as a model's is
  // (a negative step makes exp(delta * A) > 1 and the state overflows on long sequences).
  const Tensor u = rnd({c.b, c.d, c.l}, 1);
  const Tensor delta = c.softplus ? rnd({c.b, c.d, c.l}, 2, 0.5f, -1.f)
                                  : Tensor::from_vector(mamba::testing::uniform(static_cast<size_t>(c.b * c.d * c.l), 2, 0.01f, 0.3f),
                                                        {c.b, c.d, c.l});
  const Tensor A = Tensor::from_vector(mamba::testing::uniform(static_cast<size_t>(c.d * c.n), 3, -2.f, -0.1f), {c.d, c.n});
  const mamba::Shape bs = c.g == 0 ? mamba::Shape{c.b, c.n, c.l} : mamba::Shape{c.b, c.g, c.n, c.l};
  const Tensor B = rnd(bs, 4), C = rnd(bs, 5), D = rnd({c.d}, 6), bias = c.softplus ? rnd({c.d}, 7, 0.2f) : Tensor();
  const Tensor z = c.z ? rnd({c.b, c.d, c.l}, 8) : Tensor(), h0 = c.init ? rnd({c.b, c.d, c.n}, 9) : Tensor();
  const Tensor dy = rnd({c.b, c.d, c.l}, 10), dlast = rnd({c.b, c.d, c.n}, 11);
  const auto f = mamba::ops::selective_scan_backward(u, delta, A, B, C, D, z, bias, c.softplus, h0, dy, dlast, Impl::fast);
  const auto r = mamba::ops::selective_scan_backward(u, delta, A, B, C, D, z, bias, c.softplus, h0, dy, dlast,
                                                     Impl::reference);
  auto same = [](const Tensor& a, const Tensor& b) {
    ASSERT_EQ(a.defined(), b.defined());
    if (!a.defined()) return;
    ASSERT_EQ(a.shape(), b.shape());
    EXPECT_CLOSE(a.to_vector_f32(), b.to_vector_f32(), 1e-4);
  };
  same(f.du, r.du);
  same(f.ddelta, r.ddelta);
  same(f.dA, r.dA);
  same(f.dB, r.dB);
  same(f.dC, r.dC);
  same(f.dD, r.dD);
  same(f.dz, r.dz);
  same(f.ddelta_bias, r.ddelta_bias);
  same(f.dinitial_state, r.dinitial_state);
  mamba::kernels::set_num_threads(0);
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, ScanBackward,
                         ::testing::Combine(::testing::Values(Case{1, 1, 1, 1, 0, false, false, true},
                                                              Case{2, 13, 67, 16, 0, true, true, true},
                                                              Case{1, 12, 130, 5, 3, true, false, false},
                                                              Case{3, 9, 64, 8, 1, false, true, true},
                                                              Case{2, 40, 150, 16, 2, true, true, true}),
                                            ::testing::Values(1, 2)));

// The kernel's every vector path (and the scalar one) against the reference, on raw arrays:
// a state of 37 pads to 48 lanes (AVX-512) / 40 (AVX2), 130 steps span three chunks.
TEST(ScanBackward, EveryIsaPathMatchesReference) {
  namespace k = mamba::kernels;
  for (const auto& [b, d, l, n, g] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 11, 130, 37, 1},
                                      {1, 16, 64, 16, 2}, {3, 5, 7, 3, 1}}) {
    SCOPED_TRACE("b " + std::to_string(b) + " d " + std::to_string(d) + " l " + std::to_string(l) + " n " +
                 std::to_string(n) + " g " + std::to_string(g));
    const size_t x = static_cast<size_t>(b * d * l), bc = static_cast<size_t>(b * g * n * l);
    const auto u = mamba::testing::randn(x, 1), delta = mamba::testing::randn(x, 2, 0.5f, -1.f),
               z = mamba::testing::randn(x, 3), dy = mamba::testing::randn(x, 4);
    const auto A = mamba::testing::uniform(static_cast<size_t>(d * n), 5, -2.f, -0.1f);
    const auto B = mamba::testing::randn(bc, 6), C = mamba::testing::randn(bc, 7), D = mamba::testing::randn(d, 8),
               bias = mamba::testing::randn(d, 9, 0.2f), h0 = mamba::testing::randn(static_cast<size_t>(b * d * n), 10),
               dlast = mamba::testing::randn(static_cast<size_t>(b * d * n), 11);
    k::SelectiveScanParams p;
    p.batch = b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
    p.u = {u.data(), d * l, l, 1};
    p.delta = {delta.data(), d * l, l, 1};
    p.z = {z.data(), d * l, l, 1};
    p.B = {B.data(), g * n * l, n * l, l, 1};
    p.C = {C.data(), g * n * l, n * l, l, 1};
    p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true; p.initial_state = h0.data();
    struct Out {
      std::vector<float> du, ddelta, dz, dB, dC, dA, dD, dbias, dh0;
    };
    auto run = [&](Out& o, auto&& call) {
      o.du.assign(x, 7.f); o.ddelta.assign(x, 7.f); o.dz.assign(x, 7.f); o.dB.assign(bc, 7.f); o.dC.assign(bc, 7.f);
      o.dA.assign(static_cast<size_t>(d * n), 7.f); o.dD.assign(d, 7.f); o.dbias.assign(d, 7.f);
      o.dh0.assign(static_cast<size_t>(b * d * n), 7.f);
      k::SelectiveScanGrads gr;
      gr.du = {o.du.data(), d * l, l, 1};
      gr.ddelta = {o.ddelta.data(), d * l, l, 1};
      gr.dz = {o.dz.data(), d * l, l, 1};
      gr.dB = {o.dB.data(), g * n * l, n * l, l, 1};
      gr.dC = {o.dC.data(), g * n * l, n * l, l, 1};
      gr.dA = o.dA.data(); gr.dD = o.dD.data(); gr.ddelta_bias = o.dbias.data(); gr.dinitial_state = o.dh0.data();
      call(k::Strided3<const float>{dy.data(), d * l, l, 1}, gr);
    };
    Out ref;
    run(ref, [&](auto dyv, const auto& gr) { k::selective_scan_bwd_ref(p, dyv, dlast.data(), gr); });
    for (const k::CpuIsa isa : {k::CpuIsa::scalar, k::CpuIsa::avx2, k::CpuIsa::avx512}) {
      if (!k::cpu_isa_available(isa)) {
        Out o;
        EXPECT_THROW(run(o, [&](auto dyv, const auto& gr) { k::selective_scan_bwd(p, dyv, dlast.data(), gr, isa); }),
                     std::invalid_argument);
        continue;
      }
      SCOPED_TRACE(k::cpu_isa_name(isa));
      Out o;
      run(o, [&](auto dyv, const auto& gr) { k::selective_scan_bwd(p, dyv, dlast.data(), gr, isa); });
      EXPECT_CLOSE(o.du, ref.du, 1e-4);
      EXPECT_CLOSE(o.ddelta, ref.ddelta, 1e-4);
      EXPECT_CLOSE(o.dz, ref.dz, 1e-4);
      EXPECT_CLOSE(o.dB, ref.dB, 1e-4);
      EXPECT_CLOSE(o.dC, ref.dC, 1e-4);
      EXPECT_CLOSE(o.dA, ref.dA, 1e-4);
      EXPECT_CLOSE(o.dD, ref.dD, 1e-4);
      EXPECT_CLOSE(o.dbias, ref.dbias, 1e-4);
      EXPECT_CLOSE(o.dh0, ref.dh0, 1e-4);
    }
  }
}

// d/dx sum(y * dy) by central differences on a few elements of each input.
TEST(ScanBackward, ReferenceMatchesFiniteDifferences) {
  const int64_t b = 1, d = 3, l = 9, n = 4;
  Tensor u = rnd({b, d, l}, 1), delta = rnd({b, d, l}, 2, 0.5f, -1.f), z = rnd({b, d, l}, 3);
  Tensor A = Tensor::from_vector(mamba::testing::uniform(static_cast<size_t>(d * n), 4, -2.f, -0.2f), {d, n});
  Tensor B = rnd({b, n, l}, 5), C = rnd({b, n, l}, 6), D = rnd({d}, 7), bias = rnd({d}, 8, 0.2f);
  const Tensor dy = rnd({b, d, l}, 9);
  auto loss = [&] {
    const auto r = mamba::ops::selective_scan(u, delta, A, B, C, D, z, bias, true, {}, Impl::reference);
    double s = 0;
    const auto y = r.y.to_vector_f32(), w = dy.to_vector_f32();
    for (size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * w[i];
    return s;
  };
  const auto g = mamba::ops::selective_scan_backward(u, delta, A, B, C, D, z, bias, true, {}, dy, {}, Impl::reference);
  const std::pair<Tensor*, const Tensor*> pairs[] = {{&u, &g.du}, {&delta, &g.ddelta}, {&z, &g.dz}, {&A, &g.dA},
                                                     {&B, &g.dB}, {&C, &g.dC},         {&D, &g.dD}, {&bias, &g.ddelta_bias}};
  for (const auto& [x, gx] : pairs) mamba::testing::expect_matches_finite_differences(*x, *gx, loss, 1e-2f, 2e-2, 3);
}

}  // namespace
