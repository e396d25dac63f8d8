// ssd_scan backward: the checkpointing fast path against the reference at awkward sizes
// (length 1, lengths around multiples of 64, ngroups 1 and 2, headdim 1 and odd, with and
// without initial state / d final state), with 1 and 2 threads; the fast path gives the
// same bits for any thread count; central finite differences of the reference for every
// element of every input.
#include <gtest/gtest.h>

#include <cmath>

#include "mamba/kernels/parallel.h"
#include "mamba/kernels/ssd.h"
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
  int64_t b, l, h, p, n, g;
  bool init, dfinal, softplus, opt;  // opt: D and dt_bias given
};

// Inputs of one SSD problem: x (b, l, h, p), dt (b, l, h), A (h), B/C (b, l, g, n), D/dt_bias (h),
// h0 (b, h, p, n); upstream dy (b, l, h, p), dlast (b, h, p, n).
struct Problem {
  Tensor x, dt, A, B, C, D, bias, h0, dy, dlast;
  bool softplus;
};

Problem make(const Case& c) {
  Problem q;
  q.x = rnd({c.b, c.l, c.h, c.p}, 1);
  q.dt = c.softplus ? rnd({c.b, c.l, c.h}, 2, 0.5f, -1.f)
                    : Tensor::from_vector(mamba::testing::uniform(static_cast<size_t>(c.b * c.l * c.h), 2, 0.05f, 0.6f),
                                          {c.b, c.l, c.h});
  q.A = Tensor::from_vector(mamba::testing::uniform(static_cast<size_t>(c.h), 3, -2.f, -0.2f), {c.h});
  q.B = rnd({c.b, c.l, c.g, c.n}, 4);
  q.C = rnd({c.b, c.l, c.g, c.n}, 5);
  if (c.opt) {
    q.D = rnd({c.h}, 6);
    q.bias = rnd({c.h}, 7, 0.2f, c.softplus ? 0.f : 0.1f);
  }
  if (c.init) q.h0 = rnd({c.b, c.h, c.p, c.n}, 8);
  q.dy = rnd({c.b, c.l, c.h, c.p}, 9);
  if (c.dfinal) q.dlast = rnd({c.b, c.h, c.p, c.n}, 10);
  q.softplus = c.softplus;
  return q;
}

mamba::ops::SsdScanGrads backward(const Problem& q, Impl impl) {
  return mamba::ops::ssd_scan_backward(q.x, q.dt, q.A, q.B, q.C, q.D, q.bias, q.softplus, 64, q.h0, q.dy, q.dlast,
                                       impl);
}

void expect_all(const mamba::ops::SsdScanGrads& f, const mamba::ops::SsdScanGrads& r, double tol, bool exact) {
  auto same = [&](const Tensor& a, const Tensor& b, const char* name) {
    SCOPED_TRACE(name);
    ASSERT_EQ(a.defined(), b.defined());
    if (!a.defined()) return;
    ASSERT_EQ(a.shape(), b.shape());
    if (exact)
      EXPECT_EQ(a.to_vector_f32(), b.to_vector_f32());
    else
      EXPECT_CLOSE(a.to_vector_f32(), b.to_vector_f32(), tol);
  };
  same(f.dx, r.dx, "dx");
  same(f.ddt, r.ddt, "ddt");
  same(f.dA, r.dA, "dA");
  same(f.dB, r.dB, "dB");
  same(f.dC, r.dC, "dC");
  same(f.dD, r.dD, "dD");
  same(f.ddt_bias, r.ddt_bias, "ddt_bias");
  same(f.dinitial_state, r.dinitial_state, "dinitial_state");
}

class SsdBackward : public ::testing::TestWithParam<std::tuple<Case, int>> {};

TEST_P(SsdBackward, FastMatchesReference) {
  const auto [c, threads] = GetParam();
  mamba::kernels::set_num_threads(threads);
  const Problem q = make(c);
  const auto f = backward(q, Impl::fast);
  const auto r = backward(q, Impl::reference);
  expect_all(f, r, 1e-4, false);
  mamba::kernels::set_num_threads(0);
}

const Case kCases[] = {
    {1, 1, 1, 1, 1, 1, false, false, true, false},  // length 1, everything 1
    {1, 1, 2, 3, 4, 2, true, true, true, true},      // length 1 with states
    {2, 67, 4, 3, 5, 2, true, true, true, true},     // just past one checkpoint chunk
    {1, 130, 3, 1, 8, 1, false, true, false, true},  // headdim 1, no softplus
    {2, 64, 2, 5, 4, 1, true, false, true, false},   // exactly one chunk
    {1, 200, 6, 7, 16, 2, true, true, true, true},   // odd headdim, parallel path
    {3, 129, 4, 8, 16, 2, false, false, true, true}, // 2 chunks + 1 step, parallel path
};

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, SsdBackward, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Values(1, 2)));

// The fast path's partial sums are reduced in a fixed order: same bits for 1 and 2 threads.
TEST(SsdBackward, FastIndependentOfThreadCount) {
  const Problem q = make({3, 129, 4, 8, 16, 2, true, true, true, true});
  mamba::kernels::set_num_threads(1);
  const auto one = backward(q, Impl::fast);
  mamba::kernels::set_num_threads(2);
  const auto two = backward(q, Impl::fast);
  mamba::kernels::set_num_threads(0);
  expect_all(one, two, 0, true);
}

// The kernels on strided layouts (x, dt, dy and every gradient inside wider padded rows;
// B and C interleaved in one buffer as in Mamba-2's xBC) and with optional outputs null:
// the same values as the contiguous Tensor adapter, for both paths.
TEST(SsdBackward, StridedLayoutsAndNullOutputs) {
  const Case c{2, 70, 4, 3, 5, 2, true, true, true, true};
  const Problem q = make(c);
  const int64_t b = c.b, l = c.l, h = c.h, p = c.p, n = c.n, g = c.g;
  const int64_t xw = h * p + 3, dtw = h + 2, bcw = 2 * g * n + 1;  // padded row widths
  std::vector<float> x(b * l * xw, 9.f), dt(b * l * dtw, 9.f), bc(b * l * bcw, 9.f), dy(b * l * xw, 9.f);
  const auto xv = q.x.to_vector_f32(), dtv = q.dt.to_vector_f32(), Bv = q.B.to_vector_f32(), Cv = q.C.to_vector_f32(),
             dyv = q.dy.to_vector_f32();
  for (int64_t r = 0; r < b * l; ++r) {
    for (int64_t k = 0; k < h * p; ++k) x[r * xw + k] = xv[r * h * p + k], dy[r * xw + k] = dyv[r * h * p + k];
    for (int64_t k = 0; k < h; ++k) dt[r * dtw + k] = dtv[r * h + k];
    for (int64_t k = 0; k < g * n; ++k) bc[r * bcw + k] = Bv[r * g * n + k], bc[r * bcw + g * n + k] = Cv[r * g * n + k];
  }
  mamba::kernels::SsdParams s;
  s.batch = b; s.seqlen = l; s.nheads = h; s.headdim = p; s.dstate = n; s.ngroups = g;
  s.x = x.data(); s.x_sb = l * xw; s.x_st = xw; s.x_sh = p;
  s.dt = dt.data(); s.dt_sb = l * dtw; s.dt_st = dtw; s.dt_sh = 1;
  s.B = bc.data(); s.B_sb = l * bcw; s.B_st = bcw; s.B_sg = n;
  s.C = bc.data() + g * n; s.C_sb = l * bcw; s.C_st = bcw; s.C_sg = n;
  s.A = q.A.data<float>(); s.D = q.D.data<float>(); s.dt_bias = q.bias.data<float>(); s.dt_softplus = true;
  s.initial_state = q.h0.data<float>();
  const auto want = backward(q, Impl::reference);
  for (const bool fast : {false, true}) {
    SCOPED_TRACE(fast ? "fast" : "reference");
    // Full set of outputs in padded rows.
    std::vector<float> dx(b * l * xw, 7.f), ddt(b * l * dtw, 7.f), dbc(b * l * bcw, 7.f), dA(h), dD(h), dbias(h),
        dh0(b * h * p * n);
    mamba::kernels::SsdGrads gr;
    gr.dx = dx.data(); gr.dx_sb = l * xw; gr.dx_st = xw; gr.dx_sh = p;
    gr.ddt = ddt.data(); gr.ddt_sb = l * dtw; gr.ddt_st = dtw; gr.ddt_sh = 1;
    gr.dB = dbc.data(); gr.dB_sb = l * bcw; gr.dB_st = bcw; gr.dB_sg = n;
    gr.dC = dbc.data() + g * n; gr.dC_sb = l * bcw; gr.dC_st = bcw; gr.dC_sg = n;
    gr.dA = dA.data(); gr.dD = dD.data(); gr.ddt_bias = dbias.data(); gr.dinitial_state = dh0.data();
    auto call = [&](const mamba::kernels::SsdGrads& gg) {
      if (fast)
        mamba::kernels::ssd_scan_bwd(s, dy.data(), l * xw, xw, p, q.dlast.data<float>(), gg);
      else
        mamba::kernels::ssd_scan_bwd_ref(s, dy.data(), l * xw, xw, p, q.dlast.data<float>(), gg);
    };
    call(gr);
    std::vector<float> gdx, gddt, gdB, gdC;
    for (int64_t r = 0; r < b * l; ++r) {
      for (int64_t k = 0; k < h * p; ++k) gdx.push_back(dx[r * xw + k]);
      for (int64_t k = h * p; k < xw; ++k) EXPECT_EQ(dx[r * xw + k], 7.f);  // padding untouched
      for (int64_t k = 0; k < h; ++k) gddt.push_back(ddt[r * dtw + k]);
      for (int64_t k = 0; k < g * n; ++k) gdB.push_back(dbc[r * bcw + k]), gdC.push_back(dbc[r * bcw + g * n + k]);
      EXPECT_EQ(dbc[r * bcw + 2 * g * n], 7.f);
    }
    EXPECT_CLOSE(gdx, want.dx.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(gddt, want.ddt.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(gdB, want.dB.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(gdC, want.dC.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(dA, want.dA.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(dD, want.dD.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(dbias, want.ddt_bias.to_vector_f32(), 1e-4);
    EXPECT_CLOSE(dh0, want.dinitial_state.to_vector_f32(), 1e-4);
    // Only ddt requested: the same ddt, nothing else written.
    std::vector<float> ddt2(b * l * dtw, 7.f);
    mamba::kernels::SsdGrads only;
    only.ddt = ddt2.data(); only.ddt_sb = l * dtw; only.ddt_st = dtw; only.ddt_sh = 1;
    call(only);
    EXPECT_EQ(ddt2, ddt);
  }
}

// d/d(input) of sum(y * dy) + <last_state, dlast> by central differences (h = 1e-2) on
// every element of every input, against the reference backward.
void finite_differences(bool softplus) {
  Problem q = make({1, 9, 4, 3, 4, 2, true, true, softplus, true});
  auto loss = [&] {
    const auto r = mamba::ops::ssd_scan(q.x, q.dt, q.A, q.B, q.C, q.D, q.bias, q.softplus, 4, q.h0, Impl::reference);
    double s = 0;
    const auto y = r.y.to_vector_f32(), w = q.dy.to_vector_f32();
    for (size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * w[i];
    const auto st = r.last_state.to_vector_f32(), ws = q.dlast.to_vector_f32();
    for (size_t i = 0; i < st.size(); ++i) s += static_cast<double>(st[i]) * ws[i];
    return s;
  };
  const auto g = backward(q, Impl::reference);
  const std::pair<Tensor*, const Tensor*> pairs[] = {{&q.x, &g.dx},   {&q.dt, &g.ddt},     {&q.A, &g.dA},
                                                     {&q.B, &g.dB},   {&q.C, &g.dC},       {&q.D, &g.dD},
                                                     {&q.bias, &g.ddt_bias}, {&q.h0, &g.dinitial_state}};
  int k = 0;
  for (const auto& [x, gx] : pairs) {
    SCOPED_TRACE(k++);
    mamba::testing::expect_matches_finite_differences(*x, *gx, loss);
  }
}

TEST(SsdBackward, ReferenceMatchesFiniteDifferencesSoftplus) { finite_differences(true); }
TEST(SsdBackward, ReferenceMatchesFiniteDifferencesLinearDt) { finite_differences(false); }

}  // namespace
