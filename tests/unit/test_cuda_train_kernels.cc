// CUDA training kernels (train_kernels_cuda.h) against the CPU kernels and the CPU AdamW.
// Skipped when no GPU is visible; compiled without any CUDA header when the build has no
// CUDA backend. The full set of checks (awkward sizes, bf16, timings) is mamba-cuda-train-check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/cross_entropy.h"
#include "mamba/kernels/cuda_runtime_info.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/train/optimizer.h"

#ifdef MAMBA_HAVE_CUDA
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "cuda_test_util.h"
#endif

namespace {

namespace k = mamba::kernels;

#define SKIP_WITHOUT_GPU() \
  if (k::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";

TEST(CudaTrainKernels, DeviceCountIsNonNegative) { EXPECT_GE(k::cuda_device_count(), 0); }

#ifdef MAMBA_HAVE_CUDA
namespace kc = mamba::kernels::cuda;
using namespace mamba_cuda_test;

std::vector<float> randn(std::mt19937& g, size_t n, float mean = 0.f, float sd = 1.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
template <class T> double tol() { return std::is_same_v<T, float> ? 1e-4 : 1e-2; }

struct Ws {
  void* p = nullptr;
  size_t n;
  explicit Ws(size_t bytes) : n(bytes) { MAMBA_CUDA_CHECK("test ws", cudaMalloc(&p, bytes ? bytes : 16)); }
  ~Ws() { cudaFree(p); }
};

template <class T>
void rms_case(int64_t rows, int64_t dim, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "rows " << rows << " dim " << dim);
  std::mt19937 g(seed);
  auto r = randn(g, rows * dim), w = randn(g, dim, 1.f, 0.3f), dy = randn(g, rows * dim), da = randn(g, rows * dim);
  Dev<float> dr_(r), dw_(w), dda(da), ddr(rows * dim), ddw(dim);
  Dev<T> ddy(dy);
  Ws ws(kc::rms_norm_bwd_cuda_workspace_bytes(rows, dim));
  kc::rms_norm_bwd_cuda<T>(rows, dim, dr_.ptr, dw_.ptr, 1e-5f, ddy.ptr, dda.ptr, ddr.ptr, ddw.ptr, ws.p, ws.n, nullptr);
  std::vector<float> dx(rows * dim), dwr(dim);
  k::rms_norm_bwd_ref(rows, dim, r.data(), dim, w.data(), 1e-5f, dy.data(), dim, dx.data(), dim, dwr.data());
  for (size_t i = 0; i < dx.size(); ++i) dx[i] += da[i];
  EXPECT_LT(rel_err(ddr.get(), dx), tol<T>());
  EXPECT_LT(rel_err(ddw.get(), dwr), tol<T>());
}

TEST(CudaTrainKernels, RmsNormBackwardMatchesReference) {
  SKIP_WITHOUT_GPU();
  rms_case<float>(1, 1, 1);
  rms_case<float>(37, 4097, 2);
  rms_case<bf16>(1100, 768, 3);
}

template <class T>
void ce_case(int64_t rows, int64_t V, int64_t stride, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "rows " << rows << " V " << V << " stride " << stride);
  std::mt19937 g(seed);
  auto x = randn(g, rows * stride, 0.f, 2.f);
  std::vector<int64_t> tg(rows);
  for (int64_t i = 0; i < rows; ++i) tg[i] = i % 3 == 2 ? -100 : int64_t(g() % V);
  Dev<T> dx(x), dl(rows * stride);
  Dev<float> loss(rows), sum(1);
  int64_t *dtg = nullptr, *dcor = nullptr;
  MAMBA_CUDA_CHECK("test", cudaMalloc(reinterpret_cast<void**>(&dtg), rows * 8));
  MAMBA_CUDA_CHECK("test", cudaMalloc(reinterpret_cast<void**>(&dcor), 8));
  MAMBA_CUDA_CHECK("test", cudaMemcpy(dtg, tg.data(), rows * 8, cudaMemcpyHostToDevice));
  Ws ws(kc::cross_entropy_cuda_workspace_bytes(rows));
  const float scale = 0.25f;
  kc::cross_entropy_fwd_bwd_cuda<T>(rows, V, stride, dx.ptr, dtg, scale, dl.ptr, loss.ptr, sum.ptr, dcor, ws.p, ws.n, nullptr);
  EXPECT_NO_THROW(kc::cross_entropy_check_cuda(ws.p, V, nullptr));
  std::vector<float> dref(rows * stride);
  const auto ref = k::softmax_cross_entropy_ref(rows, V, stride, x.data(), tg.data(), scale, dref.data());
  int64_t cor = -1;
  MAMBA_CUDA_CHECK("test", cudaMemcpy(&cor, dcor, 8, cudaMemcpyDeviceToHost));
  EXPECT_LT(rel_err(dl.get(), dref), tol<T>());
  EXPECT_NEAR(sum.get()[0], ref.loss_sum, 1e-5 * std::fabs(ref.loss_sum));
  EXPECT_EQ(cor, ref.correct);
  // A target >= V is reported by the check.
  tg[0] = V;
  MAMBA_CUDA_CHECK("test", cudaMemcpy(dtg, tg.data(), rows * 8, cudaMemcpyHostToDevice));
  kc::cross_entropy_fwd_bwd_cuda<T>(rows, V, stride, dx.ptr, dtg, scale, dl.ptr, loss.ptr, sum.ptr, dcor, ws.p, ws.n, nullptr);
  try {
    kc::cross_entropy_check_cuda(ws.p, V, nullptr);
    ADD_FAILURE() << "no error for a target >= V";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("targets[0]"), std::string::npos) << e.what();
  }
  cudaFree(dtg);
  cudaFree(dcor);
}

TEST(CudaTrainKernels, CrossEntropyMatchesReference) {
  SKIP_WITHOUT_GPU();
  ce_case<float>(5, 3, 8, 4);
  ce_case<float>(4, 50280, 50288, 5);
  ce_case<bf16>(7, 50280, 50280, 6);
}

template <class T>
void conv_case(int64_t B, int64_t L, int64_t C, int64_t K, unsigned seed) {
  SCOPED_TRACE(testing::Message() << "b " << B << " l " << L << " c " << C << " k " << K);
  std::mt19937 g(seed);
  auto x = randn(g, B * L * C), w = randn(g, C * K, 0.f, 0.5f), bias = randn(g, C), h0 = randn(g, B * C * (K - 1));
  auto dout = randn(g, B * L * C);
  Dev<T> dx_(x), ddout(dout), ddx(B * L * C);
  Dev<float> dw_(w), db_(bias), dh0(h0), ddw(C * K), ddb(C), ddh(B * C * (K - 1));
  kc::CausalConv1dCudaParams<T> p;
  p.batch = B; p.seqlen = L; p.channels = C; p.width = K; p.x = dx_.ptr; p.x_sb = L * C; p.x_st = C;
  p.weight = dw_.ptr; p.bias = db_.ptr; p.initial_state = K > 1 ? dh0.ptr : nullptr; p.silu = true;
  kc::CausalConv1dCudaParams<float> s;
  s.batch = B; s.seqlen = L; s.channels = C; s.width = K;
  Ws ws(kc::causal_conv1d_bwd_cuda_workspace_bytes(s));
  kc::causal_conv1d_bwd_cuda<T>(p, ddout.ptr, ddx.ptr, L * C, C, ddw.ptr, ddb.ptr, K > 1 ? ddh.ptr : nullptr, ws.p, ws.n, nullptr);
  k::CausalConv1dParams q;
  q.batch = B; q.seqlen = L; q.channels = C; q.width = K; q.x = x.data(); q.x_sb = L * C; q.x_st = C;
  q.weight = w.data(); q.bias = bias.data(); q.initial_state = K > 1 ? h0.data() : nullptr; q.silu = true;
  std::vector<float> rdx(B * L * C), rdw(C * K), rdb(C), rdh(B * C * (K - 1));
  k::causal_conv1d_bwd_ref(q, dout.data(), rdx.data(), L * C, C, rdw.data(), rdb.data(), rdh.data());
  EXPECT_LT(rel_err(ddx.get(), rdx), tol<T>());
  EXPECT_LT(rel_err(ddw.get(), rdw), tol<T>());
  EXPECT_LT(rel_err(ddb.get(), rdb), tol<T>());
  if (K > 1) EXPECT_LT(rel_err(ddh.get(), rdh), tol<T>());
}

TEST(CudaTrainKernels, CausalConv1dBackwardMatchesReference) {
  SKIP_WITHOUT_GPU();
  conv_case<float>(1, 1, 4, 4, 7);
  conv_case<float>(2, 131, 7, 3, 8);
  conv_case<bf16>(2, 200, 64, 4, 9);
  conv_case<float>(1, 9, 8, 1, 10);
}

TEST(CudaTrainKernels, EmbeddingBackwardAccumulates) {
  SKIP_WITHOUT_GPU();
  std::mt19937 g(11);
  const int64_t rows = 300, dim = 36, vocab = 50;
  auto dy = randn(g, rows * dim), tab = randn(g, vocab * dim);
  std::vector<int64_t> ids(rows);
  for (auto& i : ids) i = int64_t(g() % vocab);
  Dev<float> ddy(dy), dtab(tab);
  int64_t* dids = nullptr;
  MAMBA_CUDA_CHECK("test", cudaMalloc(reinterpret_cast<void**>(&dids), rows * 8));
  MAMBA_CUDA_CHECK("test", cudaMemcpy(dids, ids.data(), rows * 8, cudaMemcpyHostToDevice));
  kc::embedding_bwd_accumulate_cuda<float>(rows, dim, vocab, dids, ddy.ptr, dtab.ptr, nullptr);
  EXPECT_NO_THROW(kc::embedding_bwd_check_cuda(nullptr));
  std::vector<float> ref = tab;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < dim; ++c) ref[ids[r] * dim + c] += dy[r * dim + c];
  EXPECT_LT(rel_err(dtab.get(), ref), 1e-5);
  ids[5] = vocab;
  MAMBA_CUDA_CHECK("test", cudaMemcpy(dids, ids.data(), rows * 8, cudaMemcpyHostToDevice));
  kc::embedding_bwd_accumulate_cuda<float>(rows, dim, vocab, dids, ddy.ptr, dtab.ptr, nullptr);
  EXPECT_THROW(kc::embedding_bwd_check_cuda(nullptr), std::invalid_argument);
  cudaFree(dids);
}

// Two steps of the GPU AdamW against the CPU AdamW of shared-core (decoupled decay).
TEST(CudaTrainKernels, AdamWMatchesCpuAdamW) {
  SKIP_WITHOUT_GPU();
  using mamba::Tensor;
  std::mt19937 g(12);
  auto w0 = randn(g, 1003), b0 = randn(g, 17);
  Tensor w = Tensor::from_vector(w0, {1003}), b = Tensor::from_vector(b0, {17});
  std::vector<Tensor> grads;
  auto params = mamba::train::make_params({{"layer.weight", &w}, {"layer.bias", &b}}, grads);
  mamba::train::AdamWOptions opt;
  opt.beta1 = 0.9; opt.beta2 = 0.95; opt.eps = 1e-8; opt.weight_decay = 0.1;
  mamba::train::AdamW cpu(params, opt);
  Dev<float> dw(w0), db(b0), gw(1003), gb(17), mw(1003), mb(17), vw(1003), vb(17);
  for (auto* d : {&mw, &mb, &vw, &vb}) MAMBA_CUDA_CHECK("test", cudaMemset(d->ptr, 0, d->n * 4));
  for (int step = 1; step <= 2; ++step) {
    auto g1 = randn(g, 1003, 0.f, 0.1f), g2 = randn(g, 17, 0.f, 0.1f);
    std::copy(g1.begin(), g1.end(), grads[0].data<float>());
    std::copy(g2.begin(), g2.end(), grads[1].data<float>());
    MAMBA_CUDA_CHECK("test", cudaMemcpy(gw.ptr, g1.data(), g1.size() * 4, cudaMemcpyHostToDevice));
    MAMBA_CUDA_CHECK("test", cudaMemcpy(gb.ptr, g2.data(), g2.size() * 4, cudaMemcpyHostToDevice));
    const double lr = 1e-2;
    cpu.step(lr);
    kc::AdamWTensorCuda t[2];
    t[0].param = dw.ptr; t[0].grad = gw.ptr; t[0].exp_avg = mw.ptr; t[0].exp_avg_sq = vw.ptr; t[0].n = 1003;
    t[0].weight_decay = 0.1f;
    t[1].param = db.ptr; t[1].grad = gb.ptr; t[1].exp_avg = mb.ptr; t[1].exp_avg_sq = vb.ptr; t[1].n = 17;
    kc::AdamWHyperCuda h;
    h.lr = float(lr); h.beta1 = 0.9f; h.beta2 = 0.95f; h.eps = 1e-8f; h.step = step;
    kc::adamw_step_cuda(t, 2, h, nullptr, nullptr);
    const auto gwv = dw.get(), gbv = db.get();
    const auto cw = w.to_vector_f32(), cb = b.to_vector_f32();
    for (size_t i = 0; i < cw.size(); ++i) ASSERT_NEAR(gwv[i], cw[i], 1e-6 * std::max(1.f, std::fabs(cw[i]))) << "w[" << i << "] step " << step;
    for (size_t i = 0; i < cb.size(); ++i) ASSERT_NEAR(gbv[i], cb[i], 1e-6 * std::max(1.f, std::fabs(cb[i]))) << "b[" << i << "] step " << step;
  }
}
#endif

}  // namespace
