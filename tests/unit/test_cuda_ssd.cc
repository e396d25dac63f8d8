// The CUDA SSD scan (forward and backward) against the CPU reference at small awkward sizes;
// the shape checks run without a GPU, the comparisons are skipped when none is visible.
// (The full set of sizes and the timings: kernels/cuda/check_ssd.cu, run by mamba-cuda-check.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "mamba/kernels/cuda_runtime_info.h"
#include "mamba/kernels/ssd.h"

#ifdef MAMBA_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/ssd_cuda.h"
#include "cuda_test_util.h"
#endif

namespace {

#ifdef MAMBA_HAVE_CUDA
namespace k = mamba::kernels;
namespace kc = mamba::kernels::cuda;

using namespace mamba_cuda_test;

std::vector<float> randn(std::mt19937& g, size_t n, float mean, float sd) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Contiguous layouts: x [b, l, h, p], dt [b, l, h], B/C [b, l, g, n].
struct Shape { int b, l, h, p, n, g; };

template <class T>
void compare_forward(const Shape& s, int version, double tol) {
  std::mt19937 gen(1234 + s.l + 7 * s.n + version);
  const size_t nx = size_t(s.b) * s.l * s.h * s.p, nbc = size_t(s.b) * s.l * s.g * s.n, ndt = size_t(s.b) * s.l * s.h;
  std::vector<float> x = randn(gen, nx, 0, 1), dt = randn(gen, ndt, -1, 1), B = randn(gen, nbc, 0, 1),
                     C = randn(gen, nbc, 0, 1), A(s.h), D = randn(gen, s.h, 0, 1), bias = randn(gen, s.h, 0, 0.3f),
                     h0 = randn(gen, size_t(s.b) * s.h * s.p * s.n, 0, 0.5f);
  for (int i = 0; i < s.h; ++i) A[i] = -0.5f - 0.7f * i;
  Dev<T> xd(x), dtd(dt), Bd(B), Cd(C), y(nx);
  Dev<float> Ad(A), Dd(D), biasd(bias), h0d(h0), fin(h0.size());
  k::SsdParams r;
  r.batch = s.b; r.seqlen = s.l; r.nheads = s.h; r.headdim = s.p; r.dstate = s.n; r.ngroups = s.g;
  r.x = x.data(); r.x_sb = int64_t(s.l) * s.h * s.p; r.x_st = int64_t(s.h) * s.p; r.x_sh = s.p;
  r.dt = dt.data(); r.dt_sb = int64_t(s.l) * s.h; r.dt_st = s.h; r.dt_sh = 1;
  r.B = B.data(); r.B_sb = int64_t(s.l) * s.g * s.n; r.B_st = int64_t(s.g) * s.n; r.B_sg = s.n;
  r.C = C.data(); r.C_sb = r.B_sb; r.C_st = r.B_st; r.C_sg = s.n;
  r.A = A.data(); r.D = D.data(); r.dt_bias = bias.data(); r.dt_softplus = true; r.initial_state = h0.data();
  std::vector<float> yref(nx), fref(h0.size());
  r.y = yref.data(); r.y_sb = r.x_sb; r.y_st = r.x_st; r.y_sh = s.p; r.final_state = fref.data();
  k::ssd_scan_ref(r);
  kc::SsdCudaParams<T> q;
  q.batch = s.b; q.seqlen = s.l; q.nheads = s.h; q.headdim = s.p; q.dstate = s.n; q.ngroups = s.g;
  q.x = xd.ptr; q.x_sb = r.x_sb; q.x_st = r.x_st; q.x_sh = s.p;
  q.dt = dtd.ptr; q.dt_sb = r.dt_sb; q.dt_st = s.h; q.dt_sh = 1;
  q.B = Bd.ptr; q.B_sb = r.B_sb; q.B_st = r.B_st; q.B_sg = s.n;
  q.C = Cd.ptr; q.C_sb = r.C_sb; q.C_st = r.C_st; q.C_sg = s.n;
  q.A = Ad.ptr; q.D = Dd.ptr; q.dt_bias = biasd.ptr; q.dt_softplus = true; q.initial_state = h0d.ptr;
  q.y = y.ptr; q.y_sb = r.x_sb; q.y_st = r.x_st; q.y_sh = s.p; q.final_state = fin.ptr;
  q.version = version;
  kc::ssd_chunk_scan_cuda<T>(q, nullptr);
  EXPECT_LT(rel_err(y.get(), yref), tol) << "y, l " << s.l << " n " << s.n << " version " << version;
  EXPECT_LT(rel_err(fin.get(), fref), tol) << "final state, l " << s.l << " n " << s.n << " version " << version;
}

#define SKIP_WITHOUT_GPU() \
  if (k::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";

TEST(CudaSsd, BadShapesThrow) {  // no GPU needed: the checks come before any CUDA call
  kc::SsdCudaParams<bf16> q;
  q.batch = 1; q.seqlen = 4; q.nheads = 3; q.headdim = 200; q.dstate = 16; q.ngroups = 1;
  EXPECT_THROW(kc::ssd_chunk_scan_cuda<bf16>(q, nullptr), std::invalid_argument);  // headdim > 128
  q.headdim = 64; q.ngroups = 2;
  EXPECT_THROW(kc::ssd_chunk_scan_cuda<bf16>(q, nullptr), std::invalid_argument);  // 3 % 2 != 0
  q.ngroups = 1; q.dstate = 300;
  EXPECT_THROW(kc::ssd_chunk_scan_cuda<bf16>(q, nullptr), std::invalid_argument);  // dstate > 256
  kc::SsdBwdCudaParams<float> bf;
  bf.fwd.batch = 1; bf.fwd.seqlen = 4; bf.fwd.nheads = 1; bf.fwd.headdim = 64; bf.fwd.dstate = 16;
  EXPECT_THROW(kc::ssd_chunk_scan_bwd_cuda<float>(bf, nullptr), std::invalid_argument);  // f32: not supported
  kc::SsdBwdCudaParams<bf16> bb;
  bb.fwd.batch = 1; bb.fwd.seqlen = 4; bb.fwd.nheads = 1; bb.fwd.headdim = 32; bb.fwd.dstate = 16;
  EXPECT_THROW(kc::ssd_chunk_scan_bwd_cuda<bf16>(bb, nullptr), std::invalid_argument);  // headdim != 64
  try {
    kc::ssd_chunk_scan_cuda<bf16>(q, nullptr);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("dstate"), std::string::npos) << e.what();
  }
  // A removed kernel version (2-19, 21-23: branch prune) is an error naming the field.
  q.dstate = 16; q.version = 2;
  try {
    kc::ssd_chunk_scan_cuda<bf16>(q, nullptr);
    ADD_FAILURE() << "version 2 did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("version"), std::string::npos) << e.what();
  }
}

TEST(CudaSsd, ForwardMatchesReference) {
  SKIP_WITHOUT_GPU();
  for (const Shape& s : {Shape{1, 1, 1, 64, 128, 1}, Shape{2, 130, 4, 64, 16, 2}, Shape{1, 257, 3, 64, 64, 1},
                         Shape{1, 70, 2, 24, 40, 1}}) {
    compare_forward<float>(s, 1, 1e-3);
    compare_forward<bf16>(s, 1, 1e-2);
    compare_forward<bf16>(s, 0, 1e-2);   // the automatic choice (v20 where the shape allows)
    compare_forward<bf16>(s, 20, 1e-2);  // y / z tile, the next chunk's dt', cs, w computed ahead
  }
}
#endif  // MAMBA_HAVE_CUDA

}  // namespace
