// The fused Mamba kernels' backward passes in f64: selective scan, SSD, causal conv1d,
// RMSNorm, gated RMSNorm and softmax cross-entropy.
//   1. The f64 reference backward (the kernels' plain loops, templated over the element
//      type) against central finite differences of the f64 reference forward (h = 1e-6)
//      for every input, at awkward sizes: relative error ~1e-9, required < 1e-7.
//   2. The fast f32 backward (OpenMP, vector lanes, checkpointed recomputation) against the
//      f64 reference gradients on the same inputs: the difference must be f32 rounding
//      (~1e-6 of the tensor's scale), which is what proves the fast backward correct.
//   3. A deliberately wrong gradient (one element off by 1e-6 of the scale) fails check 1.
// Each check prints its error (`ctest -R GradF64 -V` shows the figures).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "mamba/kernels/cross_entropy.h"
#include "mamba/ops/ssm.h"
#include "util/compare.h"
#include "util/gradcheck.h"

using mamba::DType;
using mamba::Shape;
using mamba::Tensor;
using mamba::ops::Impl;
using mamba::testing::dot;
using mamba::testing::finite_differences64;
using mamba::testing::randn64;
using mamba::testing::rel_error;
using mamba::testing::uniform64;

namespace {

constexpr double kFdTol = 1e-7;   // f64 analytic vs finite differences, relative to the tensor's scale
constexpr double kF32Tol = 2e-6;  // fast f32 vs f64 reference: ~30 f32 ulps (2^-24) of the tensor's scale

// One input of an op with its analytic gradient.
struct Checked {
  std::string name;
  Tensor* input;
  Tensor grad;
};

// Finite differences of loss() for every input against its gradient; returns the worst
// relative error.
double expect_fd(const std::string& what, const std::vector<Checked>& items, const std::function<double()>& loss) {
  double worst = 0;
  for (const Checked& it : items) {
    if (!it.input->defined()) continue;
    SCOPED_TRACE(what + " " + it.name);
    EXPECT_TRUE(it.grad.defined());
    if (!it.grad.defined()) continue;
    EXPECT_EQ(it.grad.dtype(), DType::f64);
    EXPECT_EQ(it.grad.shape(), it.input->shape());
    const Tensor fd = finite_differences64(*it.input, loss);
    const double e = rel_error(it.grad, fd);
    std::printf("  %-28s %-15s f64 analytic vs finite differences: %.2e\n", what.c_str(), it.name.c_str(), e);
    EXPECT_LT(e, kFdTol);
    worst = std::max(worst, e);
  }
  return worst;
}

// The fast f32 gradients against the f64 reference ones (same inputs).
void expect_f32_close(const std::string& what, const char* name, const Tensor& g32, const Tensor& g64, double tol) {
  SCOPED_TRACE(what + " " + name);
  ASSERT_EQ(g32.defined(), g64.defined());
  if (!g32.defined()) return;
  ASSERT_EQ(g32.dtype(), DType::f32);
  ASSERT_EQ(g64.dtype(), DType::f64);
  ASSERT_EQ(g32.shape(), g64.shape());
  const double e = rel_error(g32, g64);
  std::printf("  %-28s %-15s fast f32 vs f64 reference:          %.2e\n", what.c_str(), name, e);
  EXPECT_LT(e, tol);
}

Tensor f32(const Tensor& t) { return t.defined() ? t.to(DType::f32) : t; }

// ---- selective scan (Mamba-1) ------------------------------------------------------------

struct ScanCase {
  int64_t b, d, l, n, g;  // g = 0: B, C given as (b, n, l)
  bool z, D, bias, init, softplus;
};

struct ScanProblem {
  Tensor u, delta, A, B, C, D, z, bias, h0, wy, wl;
  bool softplus = true;
};

ScanProblem make_scan(const ScanCase& c, uint32_t seed) {
  ScanProblem p;
  p.softplus = c.softplus;
  p.u = randn64({c.b, c.d, c.l}, seed + 1);
  // A positive step either way (softplus of ~N(-1, 0.5), or a small positive delta).
  p.delta = c.softplus ? randn64({c.b, c.d, c.l}, seed + 2, 0.5f, -1.f) : uniform64({c.b, c.d, c.l}, seed + 2, 0.01f, 0.3f);
  p.A = uniform64({c.d, c.n}, seed + 3, -2.f, -0.1f);
  const Shape bs = c.g == 0 ? Shape{c.b, c.n, c.l} : Shape{c.b, c.g, c.n, c.l};
  p.B = randn64(bs, seed + 4);
  p.C = randn64(bs, seed + 5);
  if (c.D) p.D = randn64({c.d}, seed + 6);
  if (c.z) p.z = randn64({c.b, c.d, c.l}, seed + 7);
  if (c.bias) p.bias = randn64({c.d}, seed + 8, 0.2f);
  if (c.init) p.h0 = randn64({c.b, c.d, c.n}, seed + 9);
  p.wy = randn64({c.b, c.d, c.l}, seed + 10);
  p.wl = randn64({c.b, c.d, c.n}, seed + 11);
  return p;
}

double scan_loss(const ScanProblem& p) {
  const auto r = mamba::ops::selective_scan(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias, p.softplus, p.h0,
                                            Impl::reference);
  return dot(r.y, p.wy) + dot(r.last_state, p.wl);
}

mamba::ops::ScanGrads scan_grads(const ScanProblem& p, Impl impl, bool as_f32) {
  auto c = [as_f32](const Tensor& t) { return as_f32 ? f32(t) : t; };
  return mamba::ops::selective_scan_backward(c(p.u), c(p.delta), c(p.A), c(p.B), c(p.C), c(p.D), c(p.z), c(p.bias),
                                             p.softplus, c(p.h0), c(p.wy), c(p.wl), impl);
}

class GradF64Scan : public ::testing::TestWithParam<ScanCase> {};

TEST_P(GradF64Scan, ReferenceMatchesFiniteDifferences) {
  const ScanCase c = GetParam();
  ScanProblem p = make_scan(c, 100);
  const auto g = scan_grads(p, Impl::reference, false);
  EXPECT_EQ(mamba::ops::selective_scan(p.u, p.delta, p.A, p.B, p.C, p.D, p.z, p.bias, p.softplus, p.h0).y.dtype(),
            DType::f64);
  const std::string what = "scan d" + std::to_string(c.d) + " l" + std::to_string(c.l);
  expect_fd(what,
            {{"u", &p.u, g.du}, {"delta", &p.delta, g.ddelta}, {"A", &p.A, g.dA}, {"B", &p.B, g.dB},
             {"C", &p.C, g.dC}, {"D", &p.D, g.dD}, {"z", &p.z, g.dz}, {"delta_bias", &p.bias, g.ddelta_bias},
             {"initial_state", &p.h0, g.dinitial_state}},
            [&] { return scan_loss(p); });
}

const ScanCase kScanCases[] = {
    {1, 1, 1, 1, 0, false, false, false, false, true},   // everything 1
    {1, 11, 67, 3, 0, true, true, true, true, true},     // a partial lane block, past one 64-step chunk
    {2, 6, 5, 4, 2, false, true, false, true, false},    // groups, no softplus, no z
    {2, 9, 13, 2, 3, true, false, true, false, true},    // 3 groups of 3 channels
};
INSTANTIATE_TEST_SUITE_P(AwkwardSizes, GradF64Scan, ::testing::ValuesIn(kScanCases));

TEST(GradF64Scan, FastF32MatchesF64Reference) {
  for (const ScanCase& c : {ScanCase{2, 19, 200, 16, 0, true, true, true, true, true},
                            ScanCase{1, 12, 130, 5, 4, false, true, false, true, false}}) {
    const ScanProblem p = make_scan(c, 200);
    const auto r = scan_grads(p, Impl::reference, false);
    const auto f = scan_grads(p, Impl::fast, true);
    const std::string what = "scan d" + std::to_string(c.d) + " l" + std::to_string(c.l) + " n" + std::to_string(c.n);
    constexpr double tol = kF32Tol;
    expect_f32_close(what, "u", f.du, r.du, tol);
    expect_f32_close(what, "delta", f.ddelta, r.ddelta, tol);
    expect_f32_close(what, "A", f.dA, r.dA, tol);
    expect_f32_close(what, "B", f.dB, r.dB, tol);
    expect_f32_close(what, "C", f.dC, r.dC, tol);
    expect_f32_close(what, "D", f.dD, r.dD, tol);
    expect_f32_close(what, "z", f.dz, r.dz, tol);
    expect_f32_close(what, "delta_bias", f.ddelta_bias, r.ddelta_bias, tol);
    expect_f32_close(what, "initial_state", f.dinitial_state, r.dinitial_state, tol);
  }
}

// ---- SSD (Mamba-2) ------------------------------------------------------------------------

struct SsdCase {
  int64_t b, l, h, p, g, n, chunk;
  bool D, bias, init, softplus;
};

struct SsdProblem {
  Tensor x, dt, A, B, C, D, bias, h0, wy, wl;
  bool softplus = true;
  int64_t chunk = 64;
};

SsdProblem make_ssd(const SsdCase& c, uint32_t seed) {
  SsdProblem q;
  q.softplus = c.softplus;
  q.chunk = c.chunk;
  q.x = randn64({c.b, c.l, c.h, c.p}, seed + 1);
  q.dt = c.softplus ? randn64({c.b, c.l, c.h}, seed + 2, 0.5f, -1.f) : uniform64({c.b, c.l, c.h}, seed + 2, 0.01f, 0.3f);
  q.A = uniform64({c.h}, seed + 3, -2.f, -0.1f);
  q.B = randn64({c.b, c.l, c.g, c.n}, seed + 4);
  q.C = randn64({c.b, c.l, c.g, c.n}, seed + 5);
  if (c.D) q.D = randn64({c.h}, seed + 6);
  if (c.bias) q.bias = randn64({c.h}, seed + 7, 0.2f);
  if (c.init) q.h0 = randn64({c.b, c.h, c.p, c.n}, seed + 8);
  q.wy = randn64({c.b, c.l, c.h, c.p}, seed + 9);
  q.wl = randn64({c.b, c.h, c.p, c.n}, seed + 10);
  return q;
}

double ssd_loss(const SsdProblem& q) {
  const auto r = mamba::ops::ssd_scan(q.x, q.dt, q.A, q.B, q.C, q.D, q.bias, q.softplus, q.chunk, q.h0, Impl::reference);
  return dot(r.y, q.wy) + dot(r.last_state, q.wl);
}

mamba::ops::SsdScanGrads ssd_grads(const SsdProblem& q, Impl impl, bool as_f32) {
  auto c = [as_f32](const Tensor& t) { return as_f32 ? f32(t) : t; };
  return mamba::ops::ssd_scan_backward(c(q.x), c(q.dt), c(q.A), c(q.B), c(q.C), c(q.D), c(q.bias), q.softplus,
                                       q.chunk, c(q.h0), c(q.wy), c(q.wl), impl);
}

class GradF64Ssd : public ::testing::TestWithParam<SsdCase> {};

TEST_P(GradF64Ssd, ReferenceMatchesFiniteDifferences) {
  const SsdCase c = GetParam();
  SsdProblem q = make_ssd(c, 300);
  const auto g = ssd_grads(q, Impl::reference, false);
  const std::string what = "ssd l" + std::to_string(c.l) + " h" + std::to_string(c.h) + " p" + std::to_string(c.p);
  expect_fd(what,
            {{"x", &q.x, g.dx}, {"dt", &q.dt, g.ddt}, {"A", &q.A, g.dA}, {"B", &q.B, g.dB}, {"C", &q.C, g.dC},
             {"D", &q.D, g.dD}, {"dt_bias", &q.bias, g.ddt_bias}, {"initial_state", &q.h0, g.dinitial_state}},
            [&] { return ssd_loss(q); });
}

const SsdCase kSsdCases[] = {
    {1, 1, 1, 1, 1, 1, 1, false, false, false, true},  // everything 1
    {2, 67, 4, 3, 2, 5, 16, true, true, true, true},   // 2 groups, past one 64-step chunk
    {1, 9, 3, 1, 1, 4, 4, false, true, false, false},  // headdim 1, no softplus
};
INSTANTIATE_TEST_SUITE_P(AwkwardSizes, GradF64Ssd, ::testing::ValuesIn(kSsdCases));

TEST(GradF64Ssd, FastF32MatchesF64Reference) {
  for (const SsdCase& c : {SsdCase{2, 150, 4, 8, 2, 16, 32, true, true, true, true},
                           SsdCase{1, 129, 3, 5, 1, 7, 64, false, false, true, false}}) {
    const SsdProblem q = make_ssd(c, 400);
    const auto r = ssd_grads(q, Impl::reference, false);
    const auto f = ssd_grads(q, Impl::fast, true);
    const std::string what = "ssd l" + std::to_string(c.l) + " h" + std::to_string(c.h) + " p" + std::to_string(c.p) +
                             " n" + std::to_string(c.n);
    constexpr double tol = kF32Tol;
    expect_f32_close(what, "x", f.dx, r.dx, tol);
    expect_f32_close(what, "dt", f.ddt, r.ddt, tol);
    expect_f32_close(what, "A", f.dA, r.dA, tol);
    expect_f32_close(what, "B", f.dB, r.dB, tol);
    expect_f32_close(what, "C", f.dC, r.dC, tol);
    expect_f32_close(what, "D", f.dD, r.dD, tol);
    expect_f32_close(what, "dt_bias", f.ddt_bias, r.ddt_bias, tol);
    expect_f32_close(what, "initial_state", f.dinitial_state, r.dinitial_state, tol);
  }
}

// ---- causal conv1d ------------------------------------------------------------------------

TEST(GradF64Conv1d, ReferenceMatchesFiniteDifferences) {
  struct C {
    int64_t b, l, c, k;
    bool bias, silu;
  };
  for (const C c : {C{1, 1, 1, 1, false, false}, C{2, 13, 70, 4, true, true}, C{1, 3, 5, 4, false, true},
                    C{2, 9, 3, 2, true, false}}) {
    Tensor x = randn64({c.b, c.l, c.c}, 11), w = randn64({c.c, c.k}, 12, 0.5f);
    Tensor bias = c.bias ? randn64({c.c}, 13) : Tensor();
    const Tensor wy = randn64({c.b, c.l, c.c}, 14);
    const auto g = mamba::ops::causal_conv1d_backward(x, w, bias, c.silu, wy, Impl::reference);
    EXPECT_EQ(mamba::ops::causal_conv1d(x, w, bias, c.silu).dtype(), DType::f64);
    expect_fd("conv1d l" + std::to_string(c.l) + " c" + std::to_string(c.c) + (c.silu ? " silu" : ""),
              {{"x", &x, g.dx}, {"weight", &w, g.dweight}, {"bias", &bias, g.dbias}},
              [&] { return dot(mamba::ops::causal_conv1d(x, w, bias, c.silu, Impl::reference), wy); });
  }
}

TEST(GradF64Conv1d, FastF32MatchesF64Reference) {
  for (const bool silu : {true, false}) {
    const Tensor x = randn64({3, 77, 130}, 21), w = randn64({130, 4}, 22, 0.5f), bias = randn64({130}, 23),
                 wy = randn64({3, 77, 130}, 24);
    const auto r = mamba::ops::causal_conv1d_backward(x, w, bias, silu, wy, Impl::reference);
    const auto f = mamba::ops::causal_conv1d_backward(f32(x), f32(w), f32(bias), silu, f32(wy), Impl::fast);
    const std::string what = std::string("conv1d l77 c130") + (silu ? " silu" : "");
    expect_f32_close(what, "x", f.dx, r.dx, kF32Tol);
    expect_f32_close(what, "weight", f.dweight, r.dweight, kF32Tol);
    expect_f32_close(what, "bias", f.dbias, r.dbias, kF32Tol);
  }
}

// ---- RMSNorm and gated RMSNorm -------------------------------------------------------------

TEST(GradF64Norm, RmsNormReferenceMatchesFiniteDifferences) {
  for (const Shape& s : {Shape{1, 2}, Shape{7, 37}, Shape{2, 3, 5}}) {
    Tensor x = randn64(s, 31), w = randn64({s.back()}, 32, 0.3f, 1.f);
    const Tensor wy = randn64(s, 33);
    const auto g = mamba::ops::rms_norm_backward(x, w, 1e-5, wy, Impl::reference);
    expect_fd("rms_norm " + mamba::shape_str(s), {{"x", &x, g.dx}, {"weight", &w, g.dweight}},
              [&] { return dot(mamba::ops::rms_norm(x, w, 1e-5, Impl::reference), wy); });
  }
}

TEST(GradF64Norm, GatedRmsNormReferenceMatchesFiniteDifferences) {
  struct C {
    int64_t rows, d, group;
    bool z, before;
  };
  // (Not groups of 1: a lone element normalises to +-1, whose derivative is O(eps), below
  // what finite differences of an O(1) loss resolve.)
  for (const C c : {C{5, 24, 8, true, false}, C{5, 24, 8, true, true}, C{3, 9, 9, true, false}, C{4, 10, 5, false, false},
                    C{1, 3, 3, true, true}}) {
    Tensor x = randn64({c.rows, c.d}, 41), z = c.z ? randn64({c.rows, c.d}, 42) : Tensor();
    Tensor w = randn64({c.d}, 43, 0.3f, 1.f);
    const Tensor wy = randn64({c.rows, c.d}, 44);
    const auto g = mamba::ops::gated_rms_norm_backward(x, z, w, c.group, 1e-5, c.before, wy, Impl::reference);
    expect_fd("gated_rms_norm d" + std::to_string(c.d) + " g" + std::to_string(c.group) + (c.before ? " before" : ""),
              {{"x", &x, g.dx}, {"z", &z, g.dz}, {"weight", &w, g.dweight}},
              [&] { return dot(mamba::ops::gated_rms_norm(x, z, w, c.group, 1e-5, c.before, Impl::reference), wy); });
  }
}

TEST(GradF64Norm, FastF32MatchesF64Reference) {
  const Tensor x = randn64({300, 96}, 51), z = randn64({300, 96}, 52), w = randn64({96}, 53, 0.3f, 1.f),
               wy = randn64({300, 96}, 54);
  {
    const auto r = mamba::ops::rms_norm_backward(x, w, 1e-5, wy, Impl::reference);
    const auto f = mamba::ops::rms_norm_backward(f32(x), f32(w), 1e-5, f32(wy), Impl::fast);
    expect_f32_close("rms_norm 300x96", "x", f.dx, r.dx, kF32Tol);
    expect_f32_close("rms_norm 300x96", "weight", f.dweight, r.dweight, kF32Tol);
  }
  for (const bool before : {false, true}) {
    const auto r = mamba::ops::gated_rms_norm_backward(x, z, w, 32, 1e-5, before, wy, Impl::reference);
    const auto f = mamba::ops::gated_rms_norm_backward(f32(x), f32(z), f32(w), 32, 1e-5, before, f32(wy), Impl::fast);
    const std::string what = std::string("gated_rms_norm 300x96 g32") + (before ? " before" : "");
    expect_f32_close(what, "x", f.dx, r.dx, kF32Tol);
    expect_f32_close(what, "z", f.dz, r.dz, kF32Tol);
    expect_f32_close(what, "weight", f.dweight, r.dweight, kF32Tol);
  }
}

// ---- softmax cross-entropy ----------------------------------------------------------------

TEST(GradF64CrossEntropy, ReferenceMatchesFiniteDifferences) {
  const int64_t rows = 6, V = 37;
  Tensor logits = randn64({rows, V}, 61, 2.f);
  const std::vector<int64_t> targets{3, -1, 0, 36, 17, -1};
  auto loss = [&](Tensor* dlogits) {
    return mamba::kernels::softmax_cross_entropy_ref(rows, V, V, logits.data<double>(), targets.data(), 1.0,
                                                     dlogits ? dlogits->data<double>() : nullptr)
        .loss_sum;
  };
  Tensor g = Tensor::empty({rows, V}, DType::f64);
  const double total = loss(&g);
  EXPECT_GT(total, 0);
  expect_fd("cross_entropy 6x37", {{"logits", &logits, g}}, [&] { return loss(nullptr); });
}

TEST(GradF64CrossEntropy, FastF32MatchesF64Reference) {
  const int64_t rows = 64, V = 1001;
  const Tensor logits = randn64({rows, V}, 71, 3.f);
  std::vector<int64_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = r % 5 == 4 ? -1 : (r * 37) % V;
  Tensor g64 = Tensor::empty({rows, V}, DType::f64), g32 = Tensor::empty({rows, V});
  const Tensor l32 = f32(logits);
  const auto r64 = mamba::kernels::softmax_cross_entropy_ref(rows, V, V, logits.data<double>(), targets.data(), 0.5,
                                                             g64.data<double>());
  const auto r32 = mamba::kernels::softmax_cross_entropy(rows, V, V, l32.data<float>(), targets.data(), 0.5f,
                                                         g32.data<float>());
  EXPECT_EQ(r32.counted, r64.counted);
  EXPECT_NEAR(r32.loss_sum, r64.loss_sum, 1e-5 * r64.loss_sum);
  expect_f32_close("cross_entropy 64x1001", "logits", g32, g64, kF32Tol);
}

// ---- the check catches a wrong gradient ----------------------------------------------------

// One element of the f64 reference gradient off by 1e-6 of the tensor's scale (an error
// far below what the f32 finite-difference checks could see) fails the f64 check.
TEST(GradF64, WrongGradientIsCaught) {
  ScanProblem p = make_scan({1, 5, 9, 3, 0, true, true, true, true, true}, 500);
  auto g = scan_grads(p, Impl::reference, false);
  const Tensor fd = finite_differences64(p.A, [&] { return scan_loss(p); });
  const double ok = rel_error(g.dA, fd);
  EXPECT_LT(ok, kFdTol);
  double scale = 0;
  for (double v : mamba::testing::to_vector_f64(g.dA)) scale = std::max(scale, std::fabs(v));
  g.dA.data<double>()[7] += 1e-6 * scale;
  const double bad = rel_error(g.dA, fd);
  std::printf("  wrong dA[7] (+1e-6 of scale): error %.2e (correct: %.2e)\n", bad, ok);
  EXPECT_GT(bad, kFdTol);
}

TEST(GradF64, F64InputsGiveF64Results) {
  const Tensor x = randn64({2, 3, 4}, 81), w = randn64({4}, 82);
  EXPECT_EQ(mamba::ops::rms_norm(x, w, 1e-5).dtype(), DType::f64);
  EXPECT_EQ(mamba::ops::rms_norm(f32(x), f32(w), 1e-5).dtype(), DType::f32);
  // The f64 path is the reference loop whatever impl says.
  const auto a = mamba::testing::to_vector_f64(mamba::ops::rms_norm(x, w, 1e-5, Impl::fast));
  const auto b = mamba::testing::to_vector_f64(mamba::ops::rms_norm(x, w, 1e-5, Impl::reference));
  EXPECT_EQ(a, b);
}

}  // namespace
