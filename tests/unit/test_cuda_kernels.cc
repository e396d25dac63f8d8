// CUDA kernels against the CPU references (small sizes). Skipped when no GPU is visible,
// and compiled without any CUDA header when the build has no CUDA backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <random>
#include <vector>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/cuda_runtime_info.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/kernels/ssd.h"

#ifdef MAMBA_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#include "mamba/kernels/cuda/ssd_state_update_cuda.h"
#include "cuda_test_util.h"
#endif

namespace {

namespace k = mamba::kernels;

#define SKIP_WITHOUT_GPU()                                                 \
  if (k::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";

TEST(CudaKernels, DeviceCountIsNonNegative) { EXPECT_GE(k::cuda_device_count(), 0); }

#ifdef MAMBA_HAVE_CUDA
namespace kc = mamba::kernels::cuda;

using namespace mamba_cuda_test;

std::vector<float> randn(std::mt19937& g, size_t n, float mean = 0.f, float sd = 1.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
std::vector<float> randu(std::mt19937& g, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
template <class T> double tol() { return std::is_same_v<T, float> ? 1e-3 : 1e-2; }

template <class T>
// segments >= 0: the sequence split (SelectiveScanCudaParams::segments) with a seg_workspace of the
// queried size; -1: no workspace.
void scan_case(int b, int d, int l, int n, int g, bool with_z, bool with_h0, unsigned seed, int version = 0,
               int segments = -1) {
  SCOPED_TRACE(testing::Message() << "v" << version << " b" << b << " d" << d << " l" << l << " n" << n << " g" << g
                                  << " segments " << segments);
  std::mt19937 gen(seed);
  const size_t nbdl = size_t(b) * d * l, nbc = size_t(b) * g * n * l, nst = size_t(b) * d * n;
  auto u = randn(gen, nbdl), delta = randn(gen, nbdl, -2.f, 1.f), z = randn(gen, with_z ? nbdl : 0);
  auto B = randn(gen, nbc), C = randn(gen, nbc), A = randu(gen, size_t(d) * n, -12.f, -0.3f);
  auto D = randn(gen, d), bias = randu(gen, d, -1.f, 0.5f), h0 = randn(gen, with_h0 ? nst : 0);
  Dev<T> du(u), ddelta(delta), dz(z), dB(B), dC(C), dy(nbdl);
  Dev<float> dA(A), dD(D), dbias(bias), dh0(h0), dhT(nst);

  std::vector<float> y_ref(nbdl), hT_ref(nst);
  k::SelectiveScanParams p;
  p.batch = b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
  const int64_t L = l;
  p.u = {u.data(), d * L, L, 1};
  p.delta = {delta.data(), d * L, L, 1};
  if (with_z) p.z = {z.data(), d * L, L, 1};
  p.B = {B.data(), g * n * L, n * L, L, 1};
  p.C = {C.data(), g * n * L, n * L, L, 1};
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
  p.initial_state = with_h0 ? h0.data() : nullptr;
  p.y = {y_ref.data(), d * L, L, 1};
  p.final_state = hT_ref.data();
  k::selective_scan_ref(p);

  kc::SelectiveScanCudaParams<T> q;
  q.batch = b; q.dim = d; q.seqlen = l; q.dstate = n; q.n_groups = g;
  q.u = du.ptr; q.delta = ddelta.ptr; q.z = with_z ? dz.ptr : nullptr; q.B = dB.ptr; q.C = dC.ptr;
  q.A = dA.ptr; q.D = dD.ptr; q.delta_bias = dbias.ptr; q.delta_softplus = true;
  q.initial_state = with_h0 ? dh0.ptr : nullptr; q.y = dy.ptr; q.final_state = dhT.ptr;
  q.version = version;
  size_t seg_bytes = 0;
  if (segments >= 0) {
    q.segments = segments;
    seg_bytes = kc::selective_scan_fwd_cuda_seg_workspace_bytes<T>(q);
  }
  Dev<float> seg(segments >= 0 ? std::max<size_t>(seg_bytes / sizeof(float), 4) : 0);  // NaN-poisoned
  if (segments >= 0) {
    if ((segments >= 2 && l > 64) || (segments == 0 && b * d <= 64 && l >= 1000)) {  // forced; automatic on a tiny grid
      EXPECT_GT(seg_bytes, 0u);
    }
    q.seg_workspace = seg.ptr;
    q.seg_workspace_bytes = std::max<size_t>(seg_bytes, 16);
  }
  kc::selective_scan_fwd_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(dy.get(), y_ref), tol<T>());
  EXPECT_LT(rel_err(dhT.get(), hT_ref), 1e-3);
}

TEST(CudaKernels, SelectiveScanMatchesReference) {
  SKIP_WITHOUT_GPU();
  scan_case<float>(1, 3, 1, 16, 1, true, false, 1);
  scan_case<float>(2, 4, 7, 1, 2, false, true, 2);
  scan_case<float>(1, 4, 2049, 16, 2, true, true, 3);
  scan_case<bf16>(1, 4, 300, 64, 1, true, true, 4);
  scan_case<bf16>(2, 2, 2049, 16, 2, false, false, 5);
}

TEST(CudaKernels, SelectiveScanV6MatchesReference) {  // scan forward v6 (64-byte tiles)
  SKIP_WITHOUT_GPU();
  scan_case<float>(1, 3, 1, 16, 1, true, false, 11, 6);
  scan_case<float>(2, 4, 7, 1, 2, false, true, 12, 6);
  scan_case<float>(1, 70, 2049, 16, 2, true, true, 13, 6);
  scan_case<bf16>(1, 4, 300, 64, 1, true, true, 14, 6);
  scan_case<bf16>(2, 130, 33, 16, 2, true, true, 15, 6);
  scan_case<bf16>(1, 4, 2049, 5, 1, false, false, 16, 6);
}

TEST(CudaKernels, SelectiveScanSequenceSplitMatchesReference) {  // v6 with its sequences cut into segments
  SKIP_WITHOUT_GPU();
  scan_case<float>(1, 3, 1, 16, 1, true, true, 21, 0, 4);
  scan_case<float>(1, 70, 2049, 16, 2, true, true, 22, 0, 5);
  scan_case<bf16>(2, 130, 700, 16, 2, true, true, 23, 0, 3);
  scan_case<bf16>(1, 4, 300, 64, 1, true, false, 24, 0, 2);
  scan_case<float>(1, 50, 1000, 5, 1, false, true, 25, 0, 0);  // automatic: a tiny grid splits
  scan_case<bf16>(1, 64, 129, 8, 1, true, true, 26, 0, 16);
}

// Backward against the plain CPU backward; every output poisoned (NaN) by Dev's constructor.
// fwd_ckpt: the checkpoints come from a v6 forward (bwd_workspace), pass A skipped.
template <class T>
void scan_bwd_case(int b, int d, int l, int n, int g, bool with_z, bool with_h0, bool with_dfinal, unsigned seed,
                   int version = 0, bool fwd_ckpt = false, int v4_layout = 0) {
  SCOPED_TRACE(testing::Message() << "bwd v" << version << " L" << v4_layout << (fwd_ckpt ? " fwd-ckpt" : "") << " b" << b << " d" << d
                                  << " l" << l << " n" << n << " g" << g);
  std::mt19937 gen(seed);
  const size_t nbdl = size_t(b) * d * l, nbc = size_t(b) * g * n * l, nst = size_t(b) * d * n;
  auto u = randn(gen, nbdl), delta = randn(gen, nbdl, -2.f, 1.f), z = randn(gen, with_z ? nbdl : 0);
  auto B = randn(gen, nbc), C = randn(gen, nbc), A = randu(gen, size_t(d) * n, -12.f, -0.3f);
  auto D = randn(gen, d), bias = randu(gen, d, -1.f, 0.5f), h0 = randn(gen, with_h0 ? nst : 0);
  auto dy = randn(gen, nbdl), dhT = randn(gen, with_dfinal ? nst : 0);
  Dev<T> du(u), ddelta(delta), dz(z), dB(B), dC(C), ddy(dy);
  Dev<float> dA(A), dD(D), dbias(bias), dh0(h0), ddhT(dhT);
  Dev<T> o_du(nbdl), o_ddelta(nbdl), o_dz(with_z ? nbdl : 0);
  Dev<float> o_dB(nbc), o_dC(nbc), o_dA(size_t(d) * n), o_dD(d), o_dbias(d), o_dh0(nst);

  const int64_t L = l;
  k::SelectiveScanParams p;
  p.batch = b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
  p.u = {u.data(), d * L, L, 1};
  p.delta = {delta.data(), d * L, L, 1};
  if (with_z) p.z = {z.data(), d * L, L, 1};
  p.B = {B.data(), g * n * L, n * L, L, 1};
  p.C = {C.data(), g * n * L, n * L, L, 1};
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
  p.initial_state = with_h0 ? h0.data() : nullptr;
  std::vector<float> r_du(nbdl), r_ddelta(nbdl), r_dz(with_z ? nbdl : 0), r_dB(nbc), r_dC(nbc), r_dA(size_t(d) * n),
      r_dD(d), r_dbias(d), r_dh0(nst);
  k::SelectiveScanGrads gr;
  gr.du = {r_du.data(), d * L, L, 1};
  gr.ddelta = {r_ddelta.data(), d * L, L, 1};
  if (with_z) gr.dz = {r_dz.data(), d * L, L, 1};
  gr.dB = {r_dB.data(), g * n * L, n * L, L, 1};
  gr.dC = {r_dC.data(), g * n * L, n * L, L, 1};
  gr.dA = r_dA.data(); gr.dD = r_dD.data(); gr.ddelta_bias = r_dbias.data(); gr.dinitial_state = r_dh0.data();
  k::selective_scan_bwd_ref(p, {dy.data(), d * L, L, 1}, with_dfinal ? dhT.data() : nullptr, gr);

  kc::SelectiveScanBwdCudaParams<T> q;
  q.version = version;
  q.v4_layout = v4_layout;
  q.batch = b; q.dim = d; q.seqlen = l; q.dstate = n; q.n_groups = g;
  q.u = du.ptr; q.delta = ddelta.ptr; q.z = with_z ? dz.ptr : nullptr; q.B = dB.ptr; q.C = dC.ptr;
  q.A = dA.ptr; q.D = dD.ptr; q.delta_bias = dbias.ptr; q.delta_softplus = true;
  q.initial_state = with_h0 ? dh0.ptr : nullptr;
  q.dout = ddy.ptr; q.dfinal_state = with_dfinal ? ddhT.ptr : nullptr;
  q.du = o_du.ptr; q.ddelta = o_ddelta.ptr; q.dz = with_z ? o_dz.ptr : nullptr;
  q.dA = o_dA.ptr; q.dB = o_dB.ptr; q.dC = o_dC.ptr; q.dD = o_dD.ptr; q.ddelta_bias = o_dbias.ptr;
  q.dinitial_state = o_dh0.ptr;
  const size_t wsb = kc::selective_scan_bwd_cuda_workspace_bytes<T>(q);
  Dev<float> ws((wsb + 3) / 4);
  q.workspace = ws.ptr; q.workspace_bytes = wsb;
  if (fwd_ckpt) {
    Dev<T> y(nbdl);
    kc::SelectiveScanCudaParams<T> f;
    f.batch = b; f.dim = d; f.seqlen = l; f.dstate = n; f.n_groups = g;
    f.u = q.u; f.delta = q.delta; f.z = q.z; f.B = q.B; f.C = q.C; f.A = q.A; f.D = q.D; f.delta_bias = q.delta_bias;
    f.delta_softplus = true; f.initial_state = q.initial_state; f.y = y.ptr;
    f.version = 6; f.bwd_workspace = ws.ptr;
    kc::selective_scan_fwd_cuda<T>(f, nullptr);
    q.checkpoints_from_forward = true;
  }
  kc::selective_scan_bwd_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(o_du.get(), r_du), tol<T>());
  EXPECT_LT(rel_err(o_ddelta.get(), r_ddelta), tol<T>());
  if (with_z) {
    EXPECT_LT(rel_err(o_dz.get(), r_dz), tol<T>());
  }
  EXPECT_LT(rel_err(o_dB.get(), r_dB), tol<T>());
  EXPECT_LT(rel_err(o_dC.get(), r_dC), tol<T>());
  EXPECT_LT(rel_err(o_dA.get(), r_dA), tol<T>());
  EXPECT_LT(rel_err(o_dD.get(), r_dD), tol<T>());
  EXPECT_LT(rel_err(o_dbias.get(), r_dbias), tol<T>());
  EXPECT_LT(rel_err(o_dh0.get(), r_dh0), tol<T>());
}

TEST(CudaKernels, SelectiveScanBackwardMatchesReference) {
  SKIP_WITHOUT_GPU();
  scan_bwd_case<float>(1, 3, 1, 16, 1, true, false, true, 41);
  scan_bwd_case<float>(2, 4, 7, 1, 2, false, true, false, 42);
  scan_bwd_case<float>(1, 70, 301, 16, 2, true, true, true, 43);
  scan_bwd_case<float>(1, 4, 100, 64, 1, true, true, false, 44);
  scan_bwd_case<bf16>(1, 4, 300, 5, 1, true, true, true, 45);
  scan_bwd_case<bf16>(2, 66, 129, 16, 2, false, false, true, 46);
  for (int v : {1, 2}) {  // each kernel version
    scan_bwd_case<float>(1, 70, 301, 16, 2, true, true, true, 47, v);
    scan_bwd_case<bf16>(2, 66, 129, 32, 1, true, false, true, 48, v);
  }
}

TEST(CudaKernels, SelectiveScanBackwardWithForwardCheckpoints) {
  SKIP_WITHOUT_GPU();
  scan_bwd_case<float>(1, 3, 1, 16, 1, true, false, true, 51, 0, true);
  scan_bwd_case<float>(1, 70, 301, 16, 2, true, true, true, 52, 0, true);
  scan_bwd_case<bf16>(2, 66, 129, 8, 2, false, true, false, 53, 0, true);
  scan_bwd_case<bf16>(1, 4, 300, 5, 1, true, true, true, 54, 0, true);
}

// Scan backward v4's lane layouts (v4_layout 1: 2 channels per lane, 64 per block; 2: 1, 32),
// several blocks per group with a partial last one, a partial last chunk, alone and with the
// forward's checkpoints.
TEST(CudaKernels, SelectiveScanBackwardV4Layouts) {
  SKIP_WITHOUT_GPU();
  for (int lay : {1, 2}) {
    scan_bwd_case<float>(1, 70, 301, 16, 2, true, true, true, 60 + lay, 4, false, lay);
    scan_bwd_case<bf16>(2, 100, 129, 12, 1, true, false, true, 70 + lay, 4, true, lay);
  }
}

template <class T>
void conv_case(int b, int l, int c, int kw, bool with_init, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "b" << b << " l" << l << " c" << c << " k" << kw);
  std::mt19937 gen(seed);
  auto x = randn(gen, size_t(b) * l * c), w = randn(gen, size_t(c) * kw, 0.f, 0.5f), bias = randn(gen, c);
  auto s0 = randn(gen, with_init ? size_t(b) * c * (kw - 1) : 0);
  Dev<T> dx(x), dout(x.size());
  Dev<float> dw(w), dbias(bias), ds0(s0);
  std::vector<float> ref(x.size());
  k::CausalConv1dParams p;
  p.batch = b; p.seqlen = l; p.channels = c; p.width = kw;
  p.x = x.data(); p.x_sb = int64_t(l) * c; p.x_st = c;
  p.weight = w.data(); p.bias = bias.data(); p.initial_state = with_init ? s0.data() : nullptr; p.out = ref.data();
  k::causal_conv1d_ref(p);
  kc::CausalConv1dCudaParams<T> q;
  q.batch = b; q.seqlen = l; q.channels = c; q.width = kw;
  q.x = dx.ptr; q.x_sb = p.x_sb; q.x_st = p.x_st;
  q.weight = dw.ptr; q.bias = dbias.ptr; q.initial_state = with_init ? ds0.ptr : nullptr; q.out = dout.ptr;
  kc::causal_conv1d_fwd_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(dout.get(), ref), tol<T>());
}

TEST(CudaKernels, CausalConv1dMatchesReference) {
  SKIP_WITHOUT_GPU();
  conv_case<float>(1, 1, 5, 4, false, 11);
  conv_case<float>(2, 37, 33, 4, true, 12);
  conv_case<bf16>(1, 300, 130, 3, true, 13);
}

TEST(CudaKernels, CausalConv1dUpdateMatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937 gen(21);
  const int b = 3, c = 130, kw = 4;
  auto x = randn(gen, size_t(b) * c), st = randn(gen, size_t(b) * c * kw), w = randn(gen, size_t(c) * kw);
  auto bias = randn(gen, c);
  Dev<float> dx(x), dst(st), dw(w), dbias(bias), dout(size_t(b) * c);
  std::vector<float> ref(size_t(b) * c), st_ref = st;
  k::causal_conv1d_update(b, c, kw, st_ref.data(), x.data(), c, w.data(), bias.data(), true, ref.data());
  kc::causal_conv1d_update_cuda<float>(b, c, kw, dst.ptr, dx.ptr, c, dw.ptr, dbias.ptr, true, dout.ptr, nullptr);
  EXPECT_LT(rel_err(dout.get(), ref), 1e-5);
  EXPECT_LT(rel_err(dst.get(), st_ref), 1e-6);
}

template <class T>
void update_case(int b, int d, int n, int g, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "b" << b << " d" << d << " n" << n << " g" << g);
  std::mt19937 gen(seed);
  auto x = randn(gen, size_t(b) * d), dt = randn(gen, size_t(b) * d, -2.f, 1.f), z = randn(gen, size_t(b) * d);
  auto B = randn(gen, size_t(b) * g * n), C = randn(gen, size_t(b) * g * n);
  auto A = randu(gen, size_t(d) * n, -12.f, -0.3f), D = randn(gen, d), bias = randu(gen, d, -1.f, 0.5f);
  auto st = randn(gen, size_t(b) * d * n);
  Dev<T> dx(x), ddt(dt), dz(z), dB(B), dC(C), dy(size_t(b) * d);
  Dev<float> dA(A), dD(D), dbias(bias), dst(st);
  std::vector<float> y_ref(size_t(b) * d), st_ref = st;
  k::SelectiveStateUpdateParams p;
  p.batch = b; p.dim = d; p.dstate = n; p.n_groups = g; p.state = st_ref.data();
  p.x = x.data(); p.x_stride = d; p.delta = dt.data(); p.delta_stride = d; p.z = z.data(); p.z_stride = d;
  p.B = B.data(); p.B_stride = g * n; p.C = C.data(); p.C_stride = g * n;
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
  p.y = y_ref.data(); p.y_stride = d;
  k::selective_state_update(p);
  kc::SelectiveStateUpdateCudaParams<T> q;
  q.batch = b; q.dim = d; q.dstate = n; q.n_groups = g; q.state = dst.ptr;
  q.x = dx.ptr; q.x_stride = d; q.delta = ddt.ptr; q.delta_stride = d; q.z = dz.ptr; q.z_stride = d;
  q.B = dB.ptr; q.B_stride = g * n; q.C = dC.ptr; q.C_stride = g * n;
  q.A = dA.ptr; q.D = dD.ptr; q.delta_bias = dbias.ptr; q.delta_softplus = true;
  q.y = dy.ptr; q.y_stride = d;
  kc::selective_state_update_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(dy.get(), y_ref), tol<T>());
  EXPECT_LT(rel_err(dst.get(), st_ref), 1e-4);
}

TEST(CudaKernels, SelectiveStateUpdateMatchesReference) {
  SKIP_WITHOUT_GPU();
  update_case<float>(1, 5, 1, 1, 31);
  update_case<float>(3, 48, 16, 2, 32);
  update_case<bf16>(2, 64, 64, 1, 33);
}

TEST(CudaKernels, BadSizesThrow) {
  SKIP_WITHOUT_GPU();
  kc::SelectiveScanCudaParams<float> q;
  q.batch = 1; q.dim = 3; q.seqlen = 4; q.dstate = 300;
  EXPECT_THROW(kc::selective_scan_fwd_cuda<float>(q, nullptr), std::invalid_argument);
  kc::SelectiveScanBwdCudaParams<float> qb;
  qb.batch = 1; qb.dim = 3; qb.seqlen = 4; qb.dstate = 300;
  EXPECT_THROW(kc::selective_scan_bwd_cuda<float>(qb, nullptr), std::invalid_argument);
  qb.dstate = 16;  // no workspace
  EXPECT_THROW(kc::selective_scan_bwd_cuda<float>(qb, nullptr), std::invalid_argument);
  kc::CausalConv1dCudaParams<float> c;
  c.batch = 1; c.seqlen = 4; c.channels = 3; c.width = 5;
  EXPECT_THROW(kc::causal_conv1d_fwd_cuda<float>(c, nullptr), std::invalid_argument);
}
// A removed conv1d forward / state update version (branch bw81: conv1d 4, 7, 10; state update 5, 8,
// 9, 12; earlier ones too) is an error naming the field, not a silent fallback.
TEST(CudaKernels, RemovedVersionsThrow) {
  SKIP_WITHOUT_GPU();
  auto expect_version_error = [](const char* env, const char* value, const std::function<void()>& call) {
    setenv(env, value, 1);
    try {
      call();
      ADD_FAILURE() << env << "=" << value << " did not throw";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("version"), std::string::npos) << e.what();
    }
    unsetenv(env);
  };
  Dev<float> x(64), w(32), out(64);  // never read: the version is checked before any launch
  kc::CausalConv1dCudaParams<float> c;
  c.batch = 1; c.seqlen = 8; c.channels = 8; c.width = 4;
  c.x = x.ptr; c.x_sb = 64; c.x_st = 8; c.weight = w.ptr; c.out = out.ptr;
  for (const char* v : {"4", "7", "10"})
    expect_version_error("MAMBA_CONV_VERSION", v, [&] { kc::causal_conv1d_fwd_cuda<float>(c, nullptr); });
  Dev<float> st(64), xv(4), dt(4), B(16), C(16), A(64), y(4);
  kc::SelectiveStateUpdateCudaParams<float> q;
  q.batch = 1; q.dim = 4; q.dstate = 16; q.n_groups = 1;
  q.state = st.ptr; q.x = xv.ptr; q.x_stride = 4; q.delta = dt.ptr; q.delta_stride = 4;
  q.B = B.ptr; q.B_stride = 16; q.C = C.ptr; q.C_stride = 16; q.A = A.ptr; q.y = y.ptr; q.y_stride = 4;
  for (const char* v : {"5", "6", "8", "9", "12"})
    expect_version_error("MAMBA_SSU_VERSION", v, [&] { kc::selective_state_update_cuda<float>(q, nullptr); });
}

// Packed variable-length batch (cu_seqlens) against the CPU reference run on each sequence.
template <class T>
void varlen_case(const std::vector<int>& lens, int d, int n, int g, bool with_h0, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "varlen d" << d << " n" << n << " seqs " << lens.size());
  std::mt19937 gen(seed);
  const int ns = static_cast<int>(lens.size());
  std::vector<int> cu(ns + 1, 0);
  for (int i = 0; i < ns; ++i) cu[i + 1] = cu[i] + lens[i];
  const int64_t L = cu[ns];
  const size_t ndl = size_t(d) * L, ngl = size_t(g) * n * L, nst = size_t(ns) * d * n;
  auto u = randn(gen, ndl), delta = randn(gen, ndl, -2.f, 1.f), z = randn(gen, ndl);
  auto B = randn(gen, ngl), C = randn(gen, ngl), A = randu(gen, size_t(d) * n, -12.f, -0.3f);
  auto D = randn(gen, d), bias = randu(gen, d, -1.f, 0.5f), h0 = randn(gen, with_h0 ? nst : 0);
  Dev<T> du(u), ddelta(delta), dz(z), dB(B), dC(C), dy(ndl);
  Dev<float> dA(A), dD(D), dbias(bias), dh0(h0), dhT(nst);
  Dev<int> dcu(size_t(ns + 1));
  MAMBA_CUDA_CHECK("test upload", cudaMemcpy(dcu.ptr, cu.data(), sizeof(int) * (ns + 1), cudaMemcpyHostToDevice));
  std::vector<float> y_ref(ndl), hT_ref(nst);
  for (int s = 0; s < ns; ++s) {
    k::SelectiveScanParams p;
    p.batch = 1; p.dim = d; p.seqlen = lens[s]; p.dstate = n; p.n_groups = g;
    const int64_t o = cu[s];
    p.u = {u.data() + o, d * L, L, 1};
    p.delta = {delta.data() + o, d * L, L, 1};
    p.z = {z.data() + o, d * L, L, 1};
    p.B = {B.data() + o, g * n * L, n * L, L, 1};
    p.C = {C.data() + o, g * n * L, n * L, L, 1};
    p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
    p.initial_state = with_h0 ? h0.data() + size_t(s) * d * n : nullptr;
    p.y = {y_ref.data() + o, d * L, L, 1};
    p.final_state = hT_ref.data() + size_t(s) * d * n;
    k::selective_scan_ref(p);
  }
  kc::SelectiveScanCudaParams<T> q;
  q.batch = 1; q.dim = d; q.seqlen = L; q.dstate = n; q.n_groups = g;
  q.u = du.ptr; q.delta = ddelta.ptr; q.z = dz.ptr; q.B = dB.ptr; q.C = dC.ptr;
  q.A = dA.ptr; q.D = dD.ptr; q.delta_bias = dbias.ptr; q.delta_softplus = true;
  q.initial_state = with_h0 ? dh0.ptr : nullptr; q.y = dy.ptr; q.final_state = dhT.ptr;
  q.cu_seqlens = dcu.ptr; q.n_seqs = ns;
  kc::selective_scan_fwd_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(dy.get(), y_ref), tol<T>());
  EXPECT_LT(rel_err(dhT.get(), hT_ref), 1e-3);
}

TEST(CudaKernels, SelectiveScanVarlenMatchesPerSequenceReference) {
  SKIP_WITHOUT_GPU();
  varlen_case<float>({5, 0, 1, 300, 16, 77}, 70, 16, 2, true, 41);
  varlen_case<bf16>({128, 256, 64}, 130, 16, 1, false, 42);
  varlen_case<float>({1000, 3, 513}, 33, 64, 1, true, 43);
}

// Mamba-2 decode update against the CPU ssd_state_update.
template <class T>
void ssd_update_case(int b, int h, int P, int n, int g, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "ssd update b" << b << " h" << h << " p" << P << " n" << n << " g" << g);
  std::mt19937 gen(seed);
  auto x = randn(gen, size_t(b) * h * P), dt = randn(gen, size_t(b) * h, -2.f, 1.f);
  auto B = randn(gen, size_t(b) * g * n), C = randn(gen, size_t(b) * g * n);
  auto A = randu(gen, h, -8.f, -0.5f), D = randn(gen, h), bias = randu(gen, h, -1.f, 0.5f);
  auto st = randn(gen, size_t(b) * h * P * n);
  Dev<T> dx(x), ddt(dt), dB(B), dC(C), dy(size_t(b) * h * P);
  Dev<float> dA(A), dD(D), dbias(bias), dst(st);
  std::vector<float> y_ref(size_t(b) * h * P), st_ref = st;
  k::SsdParams p;
  p.batch = b; p.seqlen = 1; p.nheads = h; p.headdim = P; p.dstate = n; p.ngroups = g;
  p.x = x.data(); p.x_sb = int64_t(h) * P; p.x_sh = P;
  p.dt = dt.data(); p.dt_sb = h; p.dt_sh = 1;
  p.B = B.data(); p.B_sb = int64_t(g) * n; p.B_sg = n;
  p.C = C.data(); p.C_sb = int64_t(g) * n; p.C_sg = n;
  p.A = A.data(); p.D = D.data(); p.dt_bias = bias.data(); p.dt_softplus = true;
  p.y = y_ref.data(); p.y_sb = int64_t(h) * P; p.y_sh = P;
  k::ssd_state_update(p, st_ref.data());
  kc::SsdStateUpdateCudaParams<T> q;
  q.batch = b; q.nheads = h; q.headdim = P; q.dstate = n; q.ngroups = g;
  q.state = dst.ptr; q.x = dx.ptr; q.x_sb = int64_t(h) * P; q.dt = ddt.ptr; q.dt_sb = h;
  q.B = dB.ptr; q.B_sb = int64_t(g) * n; q.C = dC.ptr; q.C_sb = int64_t(g) * n;
  q.A = dA.ptr; q.D = dD.ptr; q.dt_bias = dbias.ptr; q.dt_softplus = true; q.y = dy.ptr; q.y_sb = int64_t(h) * P;
  kc::ssd_state_update_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(dy.get(), y_ref), tol<T>());
  EXPECT_LT(rel_err(dst.get(), st_ref), 1e-4);
}

TEST(CudaKernels, SsdStateUpdateMatchesReference) {
  SKIP_WITHOUT_GPU();
  ssd_update_case<float>(3, 6, 64, 128, 2, 51);
  ssd_update_case<bf16>(2, 4, 33, 256, 2, 52);  // general path (dstate 256)
  ssd_update_case<float>(1, 2, 3, 5, 1, 53);
}
#endif  // MAMBA_HAVE_CUDA

}  // namespace
