// Fast Mamba kernels against their plain references on random inputs at awkward sizes,
// with 1 and 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/cpu_isa.h"
#include "mamba/kernels/parallel.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/kernels/ssd.h"
#include "util/compare.h"

using namespace mamba::kernels;
using mamba::testing::randn;
using mamba::testing::uniform;

namespace {

struct ScanCase {
  int64_t b, d, l, n, g;
  bool z, softplus, init, bld_layout;
};

class SelectiveScanTest : public ::testing::TestWithParam<std::tuple<ScanCase, int>> {};

TEST_P(SelectiveScanTest, FastMatchesReference) {
  const auto [c, threads] = GetParam();
  set_num_threads(threads);
  const int64_t G = c.g;
  auto u = randn(c.b * c.d * c.l, 1), delta = randn(c.b * c.d * c.l, 2, 0.5f, -1.f), z = randn(c.b * c.d * c.l, 3);
  auto A = uniform(c.d * c.n, 4, -2.f, -0.1f), D = randn(c.d, 5), bias = randn(c.d, 6, 0.2f);
  auto B = randn(c.b * G * c.n * c.l, 7), C = randn(c.b * G * c.n * c.l, 8), h0 = randn(c.b * c.d * c.n, 9);
  std::vector<float> y_ref(u.size(), -7.f), y_fast(u.size(), 123.f), s_ref(c.b * c.d * c.n), s_fast(s_ref.size(), 5.f);
  SelectiveScanParams p;
  p.batch = c.b; p.dim = c.d; p.seqlen = c.l; p.dstate = c.n; p.n_groups = G;
  // [b, d, t] either as (b, d, l) memory or as (b, l, d) memory (the layer's layout).
  const int64_t s0 = c.d * c.l, s1 = c.bld_layout ? 1 : c.l, s2 = c.bld_layout ? c.d : 1;
  p.u = {u.data(), s0, s1, s2};
  p.delta = {delta.data(), s0, s1, s2};
  if (c.z) p.z = {z.data(), s0, s1, s2};
  // B, C as [b, g, n, t]: either (b, g, n, l) memory or (b, l, g, n) memory.
  if (c.bld_layout) {
    p.B = {B.data(), c.l * G * c.n, c.n, 1, G * c.n};
    p.C = {C.data(), c.l * G * c.n, c.n, 1, G * c.n};
  } else {
    p.B = {B.data(), G * c.n * c.l, c.n * c.l, c.l, 1};
    p.C = {C.data(), G * c.n * c.l, c.n * c.l, c.l, 1};
  }
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = c.softplus;
  p.initial_state = c.init ? h0.data() : nullptr;
  p.y = {y_ref.data(), s0, s1, s2};
  p.final_state = s_ref.data();
  selective_scan_ref(p);
  p.y.ptr = y_fast.data();
  p.final_state = s_fast.data();
  selective_scan(p);  // the run-time choice
  EXPECT_CLOSE(y_fast, y_ref, 2e-5);
  EXPECT_CLOSE(s_fast, s_ref, 2e-5);
  // Every path this build and CPU can run, the fallbacks included.
  for (const CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
    if (!cpu_isa_available(isa)) continue;
    SCOPED_TRACE(cpu_isa_name(isa));
    std::fill(y_fast.begin(), y_fast.end(), 123.f);
    std::fill(s_fast.begin(), s_fast.end(), 5.f);
    selective_scan(p, isa);
    EXPECT_CLOSE(y_fast, y_ref, 2e-5);
    EXPECT_CLOSE(s_fast, s_ref, 2e-5);
  }
  set_num_threads(0);
}

TEST(CpuIsa, BestIsAvailableAndUnavailablePathsAreRefused) {
  EXPECT_TRUE(cpu_isa_available(CpuIsa::scalar));
  EXPECT_TRUE(cpu_isa_available(cpu_isa_best()));
  if (cpu_isa_available(CpuIsa::avx512)) {
    EXPECT_EQ(cpu_isa_best(), CpuIsa::avx512);
  }
  std::vector<float> x(8, 0.f), A(1, -1.f);
  SelectiveScanParams p;
  p.batch = 1; p.dim = 1; p.seqlen = 8; p.dstate = 1; p.n_groups = 1;
  p.u = {x.data(), 8, 8, 1};
  p.delta = {x.data(), 8, 8, 1};
  p.B = {x.data(), 8, 8, 1, 1};
  p.C = {x.data(), 8, 8, 1, 1};
  p.A = A.data();
  std::vector<float> y(8, 1.f);
  p.y = {y.data(), 8, 8, 1};
  for (const CpuIsa isa : {CpuIsa::avx2, CpuIsa::avx512}) {
    if (!cpu_isa_available(isa)) {
      EXPECT_THROW(selective_scan(p, isa), std::invalid_argument) << cpu_isa_name(isa);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AwkwardSizes, SelectiveScanTest,
    ::testing::Combine(::testing::Values(ScanCase{1, 1, 1, 1, 1, false, true, false, false},
                                         ScanCase{1, 5, 1, 16, 1, true, true, true, false},
                                         ScanCase{2, 13, 67, 16, 1, true, true, false, false},
                                         ScanCase{3, 24, 129, 7, 3, true, false, true, true},
                                         ScanCase{1, 40, 200, 64, 2, false, true, true, true},
                                         ScanCase{2, 9, 65, 16, 1, true, true, true, true}),
                       ::testing::Values(1, 2)));

TEST(SelectiveStateUpdate, StepEqualsScanOfOneToken) {
  const int64_t b = 3, d = 19, n = 16, G = 1;
  auto x = randn(b * d, 1), delta = randn(b * d, 2), z = randn(b * d, 3), A = uniform(d * n, 4, -3.f, -0.2f),
       D = randn(d, 5), bias = randn(d, 6), B = randn(b * n, 7), C = randn(b * n, 8), h0 = randn(b * d * n, 9);
  std::vector<float> y_step(b * d), y_scan(b * d), state = h0, s_scan(b * d * n);
  SelectiveStateUpdateParams s;
  s.batch = b; s.dim = d; s.dstate = n; s.n_groups = G; s.state = state.data();
  s.x = x.data(); s.x_stride = d; s.delta = delta.data(); s.delta_stride = d; s.z = z.data(); s.z_stride = d;
  s.B = B.data(); s.B_stride = n; s.C = C.data(); s.C_stride = n; s.A = A.data(); s.D = D.data();
  s.delta_bias = bias.data(); s.delta_softplus = true; s.y = y_step.data(); s.y_stride = d;
  selective_state_update(s);
  SelectiveScanParams p;
  p.batch = b; p.dim = d; p.seqlen = 1; p.dstate = n; p.n_groups = G;
  p.u = {x.data(), d, 1, 1}; p.delta = {delta.data(), d, 1, 1}; p.z = {z.data(), d, 1, 1};
  p.B = {B.data(), n, n, 1, 1}; p.C = {C.data(), n, n, 1, 1};
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
  p.initial_state = h0.data(); p.y = {y_scan.data(), d, 1, 1}; p.final_state = s_scan.data();
  selective_scan_ref(p);
  EXPECT_CLOSE(y_step, y_scan, 1e-5);
  EXPECT_CLOSE(state, s_scan, 1e-5);
}

struct SsdCase {
  int64_t b, l, h, p, n, g;
  bool init;
};

class SsdTest : public ::testing::TestWithParam<std::tuple<SsdCase, int64_t, int>> {};

TEST_P(SsdTest, ChunkedMatchesSequentialForAnyChunkSize) {
  const auto [c, chunk, threads] = GetParam();
  set_num_threads(threads);
  // x: (b, l, h, p) contiguous; B, C: (b, l, g, n); dt: (b, l, h).
  auto x = randn(c.b * c.l * c.h * c.p, 1), dt = randn(c.b * c.l * c.h, 2, 0.5f, -1.f);
  auto B = randn(c.b * c.l * c.g * c.n, 3), C = randn(c.b * c.l * c.g * c.n, 4);
  auto A = uniform(c.h, 5, -2.f, -0.2f), D = randn(c.h, 6), bias = randn(c.h, 7, 0.3f), s0 = randn(c.b * c.h * c.p * c.n, 8);
  std::vector<float> y_ref(x.size(), -3.f), y_fast(x.size(), 77.f), f_ref(s0.size()), f_fast(s0.size(), 9.f);
  SsdParams p;
  p.batch = c.b; p.seqlen = c.l; p.nheads = c.h; p.headdim = c.p; p.dstate = c.n; p.ngroups = c.g; p.chunk_size = chunk;
  p.x = x.data(); p.x_sb = c.l * c.h * c.p; p.x_st = c.h * c.p; p.x_sh = c.p;
  p.dt = dt.data(); p.dt_sb = c.l * c.h; p.dt_st = c.h; p.dt_sh = 1;
  p.B = B.data(); p.B_sb = c.l * c.g * c.n; p.B_st = c.g * c.n; p.B_sg = c.n;
  p.C = C.data(); p.C_sb = p.B_sb; p.C_st = p.B_st; p.C_sg = p.B_sg;
  p.A = A.data(); p.D = D.data(); p.dt_bias = bias.data(); p.dt_softplus = true;
  p.initial_state = c.init ? s0.data() : nullptr;
  p.y = y_ref.data(); p.y_sb = p.x_sb; p.y_st = p.x_st; p.y_sh = p.x_sh;
  p.final_state = f_ref.data();
  ssd_scan_ref(p);
  p.y = y_fast.data();
  p.final_state = f_fast.data();
  ssd_chunk_scan(p);
  EXPECT_CLOSE(y_fast, y_ref, 5e-5);
  EXPECT_CLOSE(f_fast, f_ref, 5e-5);
  set_num_threads(0);
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, SsdTest,
                         ::testing::Combine(::testing::Values(SsdCase{1, 1, 1, 1, 1, 1, false},
                                                              SsdCase{2, 37, 4, 8, 16, 2, true},
                                                              SsdCase{1, 100, 3, 5, 7, 1, false},
                                                              SsdCase{2, 65, 6, 16, 32, 3, true}),
                                            ::testing::Values(int64_t{1}, int64_t{7}, int64_t{16}, int64_t{64}),
                                            ::testing::Values(1, 2)));

TEST(SsdStateUpdate, StepEqualsScanOfOneToken) {
  const int64_t b = 2, h = 4, P = 8, n = 16, g = 2;
  auto x = randn(b * h * P, 1), dt = randn(b * h, 2), B = randn(b * g * n, 3), C = randn(b * g * n, 4);
  auto A = uniform(h, 5, -2.f, -0.2f), D = randn(h, 6), bias = randn(h, 7), s0 = randn(b * h * P * n, 8);
  std::vector<float> y1(b * h * P), y2(b * h * P), st = s0, fin(s0.size());
  SsdParams p;
  p.batch = b; p.seqlen = 1; p.nheads = h; p.headdim = P; p.dstate = n; p.ngroups = g;
  p.x = x.data(); p.x_sb = h * P; p.x_st = h * P; p.x_sh = P;
  p.dt = dt.data(); p.dt_sb = h; p.dt_st = h; p.dt_sh = 1;
  p.B = B.data(); p.B_sb = g * n; p.B_st = g * n; p.B_sg = n;
  p.C = C.data(); p.C_sb = g * n; p.C_st = g * n; p.C_sg = n;
  p.A = A.data(); p.D = D.data(); p.dt_bias = bias.data();
  p.y = y1.data(); p.y_sb = h * P; p.y_st = h * P; p.y_sh = P;
  ssd_state_update(p, st.data());
  p.initial_state = s0.data(); p.final_state = fin.data(); p.y = y2.data();
  ssd_scan_ref(p);
  EXPECT_CLOSE(y1, y2, 1e-5);
  EXPECT_CLOSE(st, fin, 1e-5);
}

class CausalConvTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int>> {};

TEST_P(CausalConvTest, FastMatchesReference) {
  const auto [b, l, c, k, init, threads] = GetParam();
  set_num_threads(threads);
  const int64_t row = c + 3;  // x rows wider than c: the layer passes a slice of in_proj's output
  auto x = randn(b * l * row, 1), w = randn(c * k, 2), bias = randn(c, 3), s0 = randn(b * c * (k - 1), 4);
  std::vector<float> o_ref(b * l * c, 1.f), o_fast(b * l * c, -1.f);
  CausalConv1dParams p;
  p.batch = b; p.seqlen = l; p.channels = c; p.width = k;
  p.x = x.data(); p.x_sb = l * row; p.x_st = row; p.weight = w.data(); p.bias = bias.data();
  p.initial_state = init ? s0.data() : nullptr; p.silu = true;
  p.out = o_ref.data();
  causal_conv1d_ref(p);
  p.out = o_fast.data();
  causal_conv1d(p);
  EXPECT_CLOSE(o_fast, o_ref, 1e-5);
  set_num_threads(0);
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, CausalConvTest,
                         ::testing::Values(std::make_tuple(1, 1, 1, 4, false, 1), std::make_tuple(2, 3, 70, 4, true, 2),
                                           std::make_tuple(3, 33, 129, 4, false, 2),
                                           std::make_tuple(1, 17, 65, 2, true, 1),
                                           std::make_tuple(2, 40, 8, 3, true, 2),
                                           // above the size where the kernel goes multi-threaded
                                           std::make_tuple(2, 301, 131, 4, true, 2)));

TEST(CausalConv1dUpdate, TokenByTokenEqualsFullSequence) {
  const int64_t b = 2, l = 9, c = 11, k = 4;
  auto x = randn(b * l * c, 1), w = randn(c * k, 2), bias = randn(c, 3);
  std::vector<float> full(b * l * c), step(b * c), state(b * c * k, 0.f);
  CausalConv1dParams p;
  p.batch = b; p.seqlen = l; p.channels = c; p.width = k; p.x = x.data(); p.x_sb = l * c; p.x_st = c;
  p.weight = w.data(); p.bias = bias.data(); p.out = full.data();
  causal_conv1d_ref(p);
  for (int64_t t = 0; t < l; ++t) {
    causal_conv1d_update(b, c, k, state.data(), x.data() + t * c, l * c, w.data(), bias.data(), true, step.data());
    for (int64_t bb = 0; bb < b; ++bb)
      for (int64_t cc = 0; cc < c; ++cc) EXPECT_NEAR(step[bb * c + cc], full[(bb * l + t) * c + cc], 1e-5);
  }
}

TEST(RmsNorm, FastMatchesReferenceAndGatedForms) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t dim : {1, 7, 64, 333}) {
      const int64_t rows = 5;
      auto x = randn(rows * dim, 1), w = randn(dim, 2), z = randn(rows * dim, 3);
      std::vector<float> a(rows * dim), r(rows * dim);
      rms_norm(rows, dim, x.data(), dim, w.data(), 1e-5f, a.data(), dim);
      rms_norm_ref(rows, dim, x.data(), dim, w.data(), 1e-5f, r.data(), dim);
      EXPECT_CLOSE(a, r, 1e-5);
      for (bool before : {false, true})
        for (int64_t gs : {dim, dim % 7 == 0 && dim > 7 ? dim / 7 : dim}) {
          gated_rms_norm(rows, dim, gs, x.data(), dim, z.data(), dim, w.data(), 1e-5f, before, a.data(), dim);
          gated_rms_norm_ref(rows, dim, gs, x.data(), dim, z.data(), dim, w.data(), 1e-5f, before, r.data(), dim);
          EXPECT_CLOSE(a, r, 1e-5);
        }
    }
  }
  set_num_threads(0);
}

}  // namespace

namespace {

class CausalConvBwdTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int>> {};

TEST_P(CausalConvBwdTest, FastMatchesReference) {
  const auto [b, l, c, k, init, threads] = GetParam();
  set_num_threads(threads);
  const int64_t row = c + 5;
  auto x = randn(b * l * row, 1), w = randn(c * k, 2), bias = randn(c, 3), s0 = randn(b * c * (k - 1), 4),
       dout = randn(b * l * c, 5);
  CausalConv1dParams p;
  p.batch = b; p.seqlen = l; p.channels = c; p.width = k;
  p.x = x.data(); p.x_sb = l * row; p.x_st = row; p.weight = w.data(); p.bias = bias.data();
  p.initial_state = init ? s0.data() : nullptr; p.silu = true;
  std::vector<float> dx1(b * l * row, 9.f), dx2(b * l * row, 9.f), dw1(c * k), dw2(c * k), db1(c), db2(c),
      di1(b * c * (k - 1)), di2(b * c * (k - 1));
  causal_conv1d_bwd_ref(p, dout.data(), dx1.data(), l * row, row, dw1.data(), db1.data(), init ? di1.data() : nullptr);
  causal_conv1d_bwd(p, dout.data(), dx2.data(), l * row, row, dw2.data(), db2.data(), init ? di2.data() : nullptr);
  EXPECT_CLOSE(dx2, dx1, 1e-5);
  EXPECT_CLOSE(dw2, dw1, 1e-5);
  EXPECT_CLOSE(db2, db1, 1e-5);
  EXPECT_CLOSE(di2, di1, 1e-5);
  set_num_threads(0);
}

INSTANTIATE_TEST_SUITE_P(AwkwardSizes, CausalConvBwdTest,
                         ::testing::Values(std::make_tuple(1, 1, 1, 4, false, 1), std::make_tuple(2, 3, 70, 4, true, 2),
                                           std::make_tuple(2, 301, 131, 4, true, 2),
                                           std::make_tuple(1, 17, 65, 2, false, 1)));

// Finite differences of the reference conv backward (silu on, initial state on).
TEST(CausalConv1dBwd, ReferenceMatchesFiniteDifferences) {
  const int64_t b = 1, l = 6, c = 3, k = 4;
  auto x = randn(b * l * c, 1), w = randn(c * k, 2), bias = randn(c, 3), s0 = randn(b * c * (k - 1), 4),
       dout = randn(b * l * c, 5);
  CausalConv1dParams p;
  p.batch = b; p.seqlen = l; p.channels = c; p.width = k; p.x = x.data(); p.x_sb = l * c; p.x_st = c;
  p.weight = w.data(); p.bias = bias.data(); p.initial_state = s0.data(); p.silu = true;
  std::vector<float> out(b * l * c), dx(b * l * c), dw(c * k), db(c), di(b * c * (k - 1));
  causal_conv1d_bwd_ref(p, dout.data(), dx.data(), l * c, c, dw.data(), db.data(), di.data());
  auto loss = [&] {
    p.out = out.data();
    causal_conv1d_ref(p);
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += static_cast<double>(out[i]) * dout[i];
    return s;
  };
  for (auto [v, g] : {std::make_pair(&x, &dx), std::make_pair(&w, &dw), std::make_pair(&bias, &db), std::make_pair(&s0, &di)})
    for (size_t i = 0; i < v->size(); ++i) {
      const float keep = (*v)[i], h = 1e-2f;
      (*v)[i] = keep + h;
      const double up = loss();
      (*v)[i] = keep - h;
      const double down = loss();
      (*v)[i] = keep;
      EXPECT_NEAR((*g)[i], (up - down) / (2 * h), 1e-2 * std::max(1.0, std::fabs((up - down) / (2 * h))));
    }
}

}  // namespace
