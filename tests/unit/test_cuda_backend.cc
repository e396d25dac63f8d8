// The CUDA backend: caching allocator, copies, cuBLASLt GEMM, Mamba1 / Mamba2 / MambaLM on the GPU,
// each against the CPU path. Every GPU test skips (GTEST_SKIP) without a usable GPU; the
// error-path tests run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>
#include <random>

#include "mamba/kernels/gemm.h"
#include "mamba/nn/cuda_decode_graph.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/ops/linear_cuda.h"
#include "mamba/ops/ssm.h"
#include "mamba/tensor/cuda.h"
#include "mamba/train/modules.h"

namespace {

using mamba::Device;
using mamba::DType;
using mamba::Tensor;

#define REQUIRE_GPU() \
  if (!mamba::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or built without CUDA)"

Tensor randn(const mamba::Shape& s, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

double rel_err(const Tensor& got, const Tensor& ref) {
  const auto g = got.to_vector_f32(), r = ref.to_vector_f32();
  EXPECT_EQ(g.size(), r.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < r.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += (double(g[i]) - r[i]) * (double(g[i]) - r[i]);
    den += double(r[i]) * r[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(CudaBackend, ClearErrorWithoutDevice) {
  if (mamba::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  try {
    Tensor::empty({4}, DType::f32, Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("no CUDA device") != std::string::npos || m.find("built without CUDA") != std::string::npos) << m;
  }
  EXPECT_THROW(Tensor::zeros({2, 2}).to(Device::cuda(0)), mamba::Error);
  EXPECT_EQ(mamba::cuda::allocator_stats(0).cuda_malloc_calls, 0u);
}

TEST(CudaBackend, DeviceIndexOutOfRangeNamesTheDevices) {
  REQUIRE_GPU();
  try {
    Tensor::empty({4}, DType::f32, Device::cuda(99));
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:99"), std::string::npos) << e.what();
  }
}

TEST(CudaBackend, AllocatorReusesBlocksAndCounts) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  auto pass = [&] {
    std::vector<Tensor> live;
    for (int64_t n : {1, 255, 4096, 300000, 1 << 20, 5 << 20}) live.push_back(Tensor::empty({n}, DType::f32, dev));
  };
  pass();
  const auto a = mamba::cuda::allocator_stats(0);
  for (int i = 0; i < 20; ++i) pass();
  const auto b = mamba::cuda::allocator_stats(0);
  EXPECT_EQ(b.cuda_malloc_calls, a.cuda_malloc_calls);  // nothing new from the driver
  EXPECT_GE(b.cache_hits, a.cache_hits + 20 * 6);
  EXPECT_EQ(b.bytes_in_use, a.bytes_in_use);
  EXPECT_GE(b.peak_bytes_in_use, 6u << 20);
  EXPECT_EQ(b.bytes_reserved, b.bytes_in_use + b.bytes_cached);
  mamba::cuda::release_cache(0);
  const auto c = mamba::cuda::allocator_stats(0);
  EXPECT_LE(c.bytes_reserved, b.bytes_reserved);
  EXPECT_EQ(c.bytes_reserved, c.bytes_in_use + c.bytes_cached);
  const std::string prom = mamba::cuda::allocator_stats_prometheus();
  EXPECT_NE(prom.find("mamba_cuda_allocator_bytes_in_use{device=\"0\"}"), std::string::npos);
}

TEST(CudaBackend, CopiesRoundTrip) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  const Tensor h = randn({5, 7, 3}, 1);
  const Tensor d = h.to(dev);
  EXPECT_TRUE(d.is_cuda());
  EXPECT_EQ(d.to(Device::cpu()).to_vector_f32(), h.to_vector_f32());
  // Strided device -> device, device -> strided host, dtype conversion on the device.
  EXPECT_EQ(d.permute({2, 0, 1}).contiguous().to_vector_f32(), h.permute({2, 0, 1}).contiguous().to_vector_f32());
  Tensor host_t = Tensor::zeros({7, 5, 3});
  host_t.transpose(0, 1).copy_from(d);
  EXPECT_EQ(host_t.transpose(0, 1).contiguous().to_vector_f32(), h.to_vector_f32());
  EXPECT_EQ(d.to(DType::bf16).to_vector_f32(), h.to(DType::bf16).to_vector_f32());
  Tensor z = Tensor::zeros({3, 4}, DType::f32, dev);
  z.slice(1, 1, 3).fill(2.5);
  EXPECT_EQ(z.to_vector_f32(), std::vector<float>({0, 2.5, 2.5, 0, 0, 2.5, 2.5, 0, 0, 2.5, 2.5, 0}));
  EXPECT_DOUBLE_EQ(d.select(0, 4).select(0, 6).select(0, 2).item(), h.select(0, 4).select(0, 6).select(0, 2).item());
  // Asynchronous on a stream: pageable (staged) and pinned.
  const auto s = mamba::cuda::Stream::create(dev);
  Tensor d2 = Tensor::empty(h.shape(), DType::f32, dev), back = Tensor::empty(h.shape());
  Tensor pin = mamba::cuda::pinned_empty(h.shape());
  mamba::cuda::copy_async(d2, h, s);
  mamba::cuda::copy_async(back, d2, s);
  mamba::cuda::copy_async(pin, d2, s);
  s.synchronize();
  EXPECT_EQ(back.to_vector_f32(), h.to_vector_f32());
  EXPECT_EQ(pin.to_vector_f32(), h.to_vector_f32());
}

struct GemmCase {
  int64_t m, n, k;
};

TEST(CudaBackend, GemmMatchesCpuAtAwkwardSizes) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  for (const GemmCase c : {GemmCase{1, 1, 1}, GemmCase{3, 17, 5}, GemmCase{17, 3, 1000}, GemmCase{1000, 1001, 17},
                           GemmCase{8, 300, 129}, GemmCase{9, 64, 64}}) {
    const Tensor x = randn({c.m, c.k}, c.m * 7 + c.k), w = randn({c.n, c.k}, c.n * 3 + 1), b = randn({c.n}, 5);
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      for (bool tf32 : {false, true}) {
        if (tf32 && dt != DType::f32) continue;
        const Tensor xr = x.to(dt).to(DType::f32), wr = w.to(dt).to(DType::f32), br = b.to(dt).to(DType::f32);
        Tensor ref = Tensor::empty({c.m, c.n});
        mamba::kernels::sgemm(false, true, c.m, c.n, c.k, 1.f, xr.data<float>(), c.k, wr.data<float>(), c.k, 0.f,
                              ref.data<float>(), c.n);
        for (int64_t i = 0; i < c.m; ++i)
          for (int64_t j = 0; j < c.n; ++j) ref.data<float>()[i * c.n + j] += br.data<float>()[j];
        for (int path : {0, 1, 3}) {
          mamba::ops::LinearCudaOptions o;
          o.tf32 = tf32;
          o.force_path = path;
          const char* taken = "";
          o.path_taken = &taken;
          Tensor y;
          try {
            y = mamba::ops::linear_cuda(x.to(dt).to(dev), w.to(dt).to(dev), b.to(dt).to(dev), o);
          } catch (const mamba::Error& e) {
            // cuBLASLt may have no algorithm for a layout (forced path 1 only): that is what the fallback is for.
            ASSERT_EQ(path, 1) << e.what();
            continue;
          }
          const double tol = dt == DType::f32 ? (tf32 ? 1e-3 : 1e-5) : 1e-2;
          EXPECT_LT(rel_err(y, ref), tol) << "m " << c.m << " n " << c.n << " k " << c.k << " " << mamba::dtype_name(dt)
                                          << (tf32 ? " tf32" : "") << " path " << taken;
        }
      }
    }
  }
}

TEST(CudaBackend, GemmRejectsBadArguments) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  const Tensor x = Tensor::zeros({3, 4}, DType::f32, dev), w = Tensor::zeros({5, 6}, DType::f32, dev);
  EXPECT_THROW(mamba::ops::linear_cuda(x, w), mamba::Error);
  EXPECT_THROW(mamba::ops::linear_cuda(x, Tensor::zeros({5, 4}, DType::bf16, dev)), mamba::Error);
  EXPECT_THROW(mamba::ops::linear_cuda(x, Tensor::zeros({5, 4})), mamba::Error);
}

mamba::nn::Mamba1 random_mamba1(int64_t d_model, uint64_t seed) {
  mamba::nn::Mamba1Config cfg;
  cfg.d_model = d_model;
  cfg.d_state = 16;
  mamba::nn::Mamba1 m(cfg);
  std::mt19937_64 rng(seed);
  for (auto& [name, t] : m.parameters()) mamba::train::reference_init(name, *t, rng);
  m.refresh_derived();
  return m;
}

TEST(CudaBackend, Mamba1ForwardAndStepMatchCpu) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  for (DType dt : {DType::f32, DType::bf16}) {
    const double tol = dt == DType::f32 ? 1e-4 : 3e-2;
    mamba::nn::Mamba1 cpu = random_mamba1(40, 3), gpu = random_mamba1(40, 3);
    gpu.to(dev, dt);
    const Tensor x = randn({2, 13, 40}, 9);
    const Tensor xg = x.to(dt).to(dev);
    EXPECT_LT(rel_err(gpu.forward(xg), cpu.forward(x)), tol) << mamba::dtype_name(dt);
    auto sc = cpu.init_state(2);
    auto sg = gpu.init_state(2);
    EXPECT_TRUE(sg.ssm_state.is_cuda());
    cpu.forward(x.slice(1, 0, 7), &sc);
    gpu.forward(xg.slice(1, 0, 7), &sg);
    EXPECT_LT(rel_err(sg.ssm_state, sc.ssm_state), tol);
    EXPECT_LT(rel_err(sg.conv_state, sc.conv_state), tol);
    for (int64_t t = 7; t < 13; ++t) {
      const Tensor yc = cpu.step(x.select(1, t).contiguous(), sc);
      const Tensor yg = gpu.step(xg.select(1, t), sg);
      EXPECT_LT(rel_err(yg, yc), tol) << "step " << t << " " << mamba::dtype_name(dt);
    }
    EXPECT_LT(rel_err(sg.ssm_state, sc.ssm_state), tol);
    EXPECT_THROW(gpu.forward(x), mamba::Error);  // a CPU input to a GPU layer
  }
}

// Batch-1 prefill: a grid of one or two blocks, long enough that the scan forward splits each
// sequence into segments (kernels/cuda/NOTES.md "Scan forward: sequence split"; the op path
// hands the kernel a seg_workspace): ops::selective_scan and a Mamba1 layer against the CPU.
TEST(CudaBackend, LongBatch1ScanAndMamba1MatchCpu) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  const int64_t d = 64, n = 16, l = 1000;
  const Tensor u = randn({1, d, l}, 31), delta = randn({1, d, l}, 32, 0.5f), z = randn({1, d, l}, 33);
  const Tensor B = randn({1, n, l}, 34), C = randn({1, n, l}, 35), D = randn({d}, 36), bias = randn({d}, 37, 0.3f);
  const Tensor h0 = randn({1, d, n}, 38);
  Tensor A = randn({d, n}, 39);
  for (int64_t i = 0; i < A.numel(); ++i) A.data<float>()[i] = -std::exp(A.data<float>()[i]);
  const auto ref = mamba::ops::selective_scan(u, delta, A, B, C, D, z, bias, true, h0);
  for (DType dt : {DType::f32, DType::bf16}) {
    auto g = [&](const Tensor& t) { return t.to(dt).to(dev); };
    auto f = [&](const Tensor& t) { return t.to(dev); };
    const auto got = mamba::ops::selective_scan(g(u), g(delta), f(A), g(B), g(C), f(D), g(z), f(bias), true, f(h0));
    EXPECT_LT(rel_err(got.y, ref.y), dt == DType::f32 ? 1e-4 : 1e-2) << mamba::dtype_name(dt);
    EXPECT_LT(rel_err(got.last_state, ref.last_state), dt == DType::f32 ? 1e-4 : 1e-2) << mamba::dtype_name(dt);

    mamba::nn::Mamba1 cpu = random_mamba1(40, 5), gpu = random_mamba1(40, 5);
    gpu.to(dev, dt);
    const Tensor x = randn({1, 800, 40}, 40);
    auto sc = cpu.init_state(1);
    auto sg = gpu.init_state(1);
    const Tensor yc = cpu.forward(x, &sc);
    const Tensor yg = gpu.forward(x.to(dt).to(dev), &sg);
    const double tol = dt == DType::f32 ? 1e-4 : 3e-2;
    EXPECT_LT(rel_err(yg, yc), tol) << mamba::dtype_name(dt);
    EXPECT_LT(rel_err(sg.ssm_state, sc.ssm_state), tol) << mamba::dtype_name(dt);
  }
}

TEST(CudaBackend, MambaLMGraphDecodeMatchesCpu) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  mamba::nn::MambaLMConfig cfg;
  cfg.d_model = 64;
  cfg.n_layer = 2;
  cfg.vocab_size = 101;
  auto make = [&] {
    mamba::nn::MambaLM lm(cfg);
    std::mt19937_64 rng(11);
    for (auto& [name, t] : lm.parameters()) mamba::train::reference_init(name, *t, rng);
    lm.refresh_derived();
    return lm;
  };
  mamba::nn::MambaLM cpu = make(), gpu = make();
  gpu.to(dev, DType::f32);
  const Tensor prompt = Tensor::from_vector_i64({1, 5, 9, 33, 100, 2, 7, 7, 0, 4}, {2, 5});
  auto cc = cpu.new_cache(2);
  const Tensor lc = cpu.forward(prompt, &cc);
  mamba::nn::CudaDecodeGraph dec(gpu, 2);
  EXPECT_LT(rel_err(dec.prefill(prompt), lc), 1e-4);
  for (int t = 0; t < 4; ++t) {
    const Tensor ids = Tensor::from_vector_i64({(t * 17) % 101, (t * 5 + 3) % 101}, {2});
    const Tensor ref = cpu.step(ids, cc);
    EXPECT_LT(rel_err(dec.step(ids), ref), 1e-4) << "step " << t;
  }
  EXPECT_TRUE(dec.captured());
  EXPECT_THROW(dec.step(Tensor::from_vector_i64({1, 101}, {2})), mamba::Error);  // id out of range
}

// The persistent one-kernel step (versions 2 and 3, chosen with MAMBA_DECODE_VERSION) inside
// CudaDecodeGraph against MambaLM::step on the CPU: f32 and bf16, batch 1 / 3 / 16, several
// steps (eager, capture, replays) so the states carry, logits and every layer's states compared.
// Every parameter is rounded to bf16 first, so the bf16 model holds exactly the CPU's weights.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~EnvGuard() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

void persistent_decode_matches_cpu(const char* version) {
  const Device dev = Device::cuda(0);
  mamba::nn::MambaLMConfig cfg;
  cfg.d_model = 96;  // d_inner 192, dt_rank 6: channel groups that do not divide evenly
  cfg.n_layer = 3;
  cfg.vocab_size = 203;
  auto make = [&] {
    mamba::nn::MambaLM lm(cfg);
    std::mt19937_64 rng(23);
    for (auto& [name, t] : lm.parameters()) {
      mamba::train::reference_init(name, *t, rng);
      *t = t->to(DType::bf16).to(DType::f32);
    }
    lm.refresh_derived();
    return lm;
  };
  {
    EnvGuard env("MAMBA_DECODE_VERSION", version);
    EnvGuard force("MAMBA_DECODE_PERSISTENT", "1");  // batch 16 too (by default only batch <= 8)
    for (DType dt : {DType::f32, DType::bf16}) {
      for (int64_t B : {int64_t{1}, int64_t{3}, int64_t{16}}) {
        const std::string what = std::string("v") + version + " " + mamba::dtype_name(dt) + " batch " + std::to_string(B);
        mamba::nn::MambaLM cpu = make(), gpu = make();
        gpu.to(dev, dt);
        mamba::nn::CudaDecodeGraph dec(gpu, B);
        const int want = std::string(version) == "2" ? (B <= 8 ? 2 : 0) : std::atoi(version);
        EXPECT_EQ(dec.persistent_version(), want) << what;  // v2: batch <= 8 only (the fused path)
        auto cc = cpu.new_cache(B);
        std::vector<int64_t> p0(B * 3);
        for (int64_t i = 0; i < B * 3; ++i) p0[i] = (i * 37 + 5) % cfg.vocab_size;
        const Tensor prompt = Tensor::from_vector_i64(p0, {B, 3});
        cpu.forward(prompt, &cc);
        dec.prefill(prompt);
        const double tol = dt == DType::f32 ? 1e-4 : 3e-2;
        for (int t = 0; t < 5; ++t) {
          std::vector<int64_t> v(B);
          for (int64_t i = 0; i < B; ++i) v[i] = (t * 17 + i * 29 + 1) % cfg.vocab_size;
          const Tensor ids = Tensor::from_vector_i64(v, {B});
          const Tensor ref = cpu.step(ids, cc);
          EXPECT_LT(rel_err(dec.step(ids), ref), tol) << what << " step " << t;
        }
        EXPECT_TRUE(dec.captured()) << what;
        for (size_t l = 0; l < cc.layers.size(); ++l) {
          EXPECT_LT(rel_err(dec.cache().layers[l].ssm_state, cc.layers[l].ssm_state), tol) << what << " layer " << l;
          EXPECT_LT(rel_err(dec.cache().layers[l].conv_state, cc.layers[l].conv_state), tol) << what << " layer " << l;
        }
      }
    }
  }
}

TEST(CudaBackend, MambaLMPersistentDecodeVersionsMatchCpu) {
  REQUIRE_GPU();
  persistent_decode_matches_cpu("2");
  persistent_decode_matches_cpu("3");
}

// Reference-style random weights (train::reference_init) plus noise on what it sets constant
// (norm weights, conv bias, D). round_linear: the linear and embedding weights rounded to bf16,
// the copy a bf16 GPU model holds, so that a CPU twin computes with the same weights.
void randomize(const std::vector<std::pair<std::string, Tensor*>>& params, uint64_t seed, bool round_linear) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.2f);
  for (const auto& [name, t] : params) {
    mamba::train::reference_init(name, *t, rng);
    auto has = [&, n = name](const char* s) { return n.find(s) != std::string::npos; };
    if (has("norm") || has("conv1d.bias") || has(".D") || name == "D")
      for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] += nd(rng);
    if (round_linear && (has("proj.weight") || has("embedding") || has("lm_head")))
      *t = t->to(DType::bf16).to(DType::f32);
  }
}

Tensor host_f32(const Tensor& t) { return t.to(Device::cpu()).to(DType::f32); }

// Mamba2 on the GPU against the CPU layer: f32 (the sequential SSD kernel) and bf16 (the
// tensor-core SSD where the shape fits: headdim 64, d_state 32; the sequential one for headdim
// 20, d_state 24), ngroups 2, seqlen 1 / 13 / 101 / 130 (not multiples of the chunk 64), batch
// 1 / 2 / 3; the full forward, prefill of half then one step per token (outputs and states).
TEST(CudaBackend, Mamba2ForwardAndStepMatchCpu) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  struct Case { int64_t d_model, headdim, ngroups, d_state, d_conv; };
  const Case cases[] = {{64, 64, 2, 32, 4}, {40, 20, 2, 24, 3}};
  const std::pair<int64_t, int64_t> sizes[] = {{1, 1}, {3, 13}, {1, 101}, {2, 130}};
  for (const Case& c : cases)
    for (DType dt : {DType::f32, DType::bf16}) {
      const bool bf = dt == DType::bf16;
      const double tol = bf ? 1e-2 : 1e-3;
      mamba::nn::Mamba2Config cfg;
      cfg.d_model = c.d_model; cfg.headdim = c.headdim; cfg.ngroups = c.ngroups; cfg.d_state = c.d_state;
      cfg.d_conv = c.d_conv; cfg.chunk_size = 64;
      mamba::nn::Mamba2 cpu(cfg), gpu(cfg);
      randomize(cpu.parameters(), 21, bf);
      randomize(gpu.parameters(), 21, bf);
      cpu.refresh_derived();
      gpu.refresh_derived();
      gpu.to(dev, dt);
      for (const auto& [b, l] : sizes) {
        const std::string tag = "headdim " + std::to_string(c.headdim) + " " + mamba::dtype_name(dt) + " batch " +
                                std::to_string(b) + " seqlen " + std::to_string(l);
        Tensor x = randn({b, l, c.d_model}, 100 + l);
        if (bf) x = x.to(DType::bf16).to(DType::f32);
        const Tensor xg = x.to(dt).to(dev);
        const Tensor ref = cpu.forward(x), full = gpu.forward(xg);
        EXPECT_EQ(full.dtype(), dt);
        EXPECT_LT(rel_err(full, ref), tol) << tag;

        const int64_t split = l / 2;
        auto sc = cpu.init_state(b);
        auto sg = gpu.init_state(b);
        EXPECT_TRUE(sg.ssm_state.is_cuda() && sg.conv_state.is_cuda());
        Tensor got = Tensor::empty({b, l, c.d_model});
        cpu.forward(x.slice(1, 0, split), &sc);
        const Tensor pre = gpu.forward(xg.slice(1, 0, split), &sg);
        if (split) {
          got.slice(1, 0, split).copy_from(host_f32(pre));
          EXPECT_LT(rel_err(sg.ssm_state, sc.ssm_state), tol) << tag << " prefill state";
        }
        for (int64_t t = split; t < l; ++t) {
          cpu.step(x.select(1, t).contiguous(), sc);
          got.select(1, t).copy_from(host_f32(gpu.step(xg.select(1, t), sg)));
        }
        EXPECT_LT(rel_err(got, ref), tol) << tag << " prefill + steps vs CPU";
        EXPECT_LT(rel_err(got, full), tol) << tag << " prefill + steps vs the full GPU forward";
        EXPECT_LT(rel_err(sg.ssm_state, sc.ssm_state), tol) << tag << " ssm_state";
        EXPECT_LT(rel_err(sg.conv_state, sc.conv_state), tol) << tag << " conv_state";
      }
      EXPECT_THROW(gpu.forward(randn({1, 3, c.d_model}, 1)), mamba::Error);  // a CPU input to a GPU layer
      std::unique_ptr<mamba::nn::SavedActivations> saved;
      EXPECT_THROW(gpu.forward_train(randn({1, 3, c.d_model}, 1).to(dt).to(dev), saved), mamba::Error);
    }
}

// A two-layer Mamba-2 LM on the GPU against the CPU: logits of the full forward, and of a
// prefill of 20 tokens then 17 steps, f32 and bf16.
TEST(CudaBackend, Mamba2LMForwardAndStepMatchCpu) {
  REQUIRE_GPU();
  const Device dev = Device::cuda(0);
  mamba::nn::MambaLMConfig cfg;
  cfg.d_model = 64;
  cfg.n_layer = 2;
  cfg.vocab_size = 101;
  cfg.layer = "Mamba2";
  cfg.ssm_cfg = {{"d_state", 16}, {"headdim", 64}, {"ngroups", 2}, {"chunk_size", 64}};
  const int64_t b = 2, l = 37, split = 20;
  std::vector<int64_t> idv;
  for (int64_t i = 0; i < b * l; ++i) idv.push_back((i * 37 + 11) % 101);
  const Tensor ids = Tensor::from_vector_i64(idv, {b, l});
  for (DType dt : {DType::f32, DType::bf16}) {
    const bool bf = dt == DType::bf16;
    const double tol = bf ? 1e-2 : 1e-3;
    auto make = [&] {
      mamba::nn::MambaLM lm(cfg);
      randomize(lm.parameters(), 5, bf);
      lm.refresh_derived();
      return lm;
    };
    mamba::nn::MambaLM cpu = make(), gpu = make();
    gpu.to(dev, dt);
    const Tensor ref = cpu.forward(ids);
    EXPECT_LT(rel_err(gpu.forward(ids), ref), tol) << mamba::dtype_name(dt);
    auto cache = gpu.new_cache(b);
    const int64_t V = ref.size(-1);
    Tensor got = Tensor::empty({b, l, V});
    got.slice(1, 0, split).copy_from(host_f32(gpu.forward(ids.slice(1, 0, split).contiguous(), &cache)));
    for (int64_t t = split; t < l; ++t)
      got.select(1, t).copy_from(host_f32(gpu.step(ids.select(1, t).contiguous(), cache)));
    EXPECT_LT(rel_err(got, ref), tol) << mamba::dtype_name(dt) << " prefill + steps";
    EXPECT_THROW(mamba::nn::CudaDecodeGraph(gpu, b), mamba::Error);  // the graph captures Mamba-1 layers only
  }
}

}  // namespace
