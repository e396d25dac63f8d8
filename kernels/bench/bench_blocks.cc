// Block forward at batch 1, seqlen 2048, d_model 768, random weights:
//   Mamba1: d_state 16, d_conv 4, expand 2, dt_rank 48;
//   Mamba2: d_state 128, headdim 64, ngroups 1, chunk 256.
// Each block is set beside its projection GEMMs alone — the same sgemm calls, shapes and
// weights the layer's forward makes (Mamba1: in_proj, x_proj, dt_proj, out_proj; Mamba2:
// in_proj, out_proj) — so `block/gemm` says how much the scan, conv and glue cost on top
// of the matrix products that any implementation must do.
#include <benchmark/benchmark.h>

#include <chrono>

#include "bench_util.h"
#include "mamba/kernels/gemm.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"

namespace mamba::bench {
namespace {

constexpr int64_t kDModel = 768;

Tensor random_input(int64_t l, uint64_t seed) {
  Tensor x = Tensor::empty({1, l, kDModel});
  Rng rng(seed);
  fill_uniform(x.data<float>(), x.numel(), -1.f, 1.f, rng);
  return x;
}

// y (rows, out) = x (rows, in) @ W^T, W (out, in): what the layers' linear_rows does for rows > 1.
void linear(const float* x, int64_t rows, int64_t x_stride, const Tensor& w, float* y, int64_t y_stride) {
  kernels::sgemm(false, true, rows, w.size(0), w.size(1), 1.f, x, x_stride, w.data<float>(), w.size(1), 0.f, y,
                 y_stride);
}
double linear_flops(int64_t rows, const Tensor& w) { return 2.0 * rows * w.size(0) * w.size(1); }

Tensor param(nn::Mixer& m, const std::string& name) {
  for (auto& [n, t] : m.parameters())
    if (n == name) return *t;
  fail("bench", "no parameter " + name);
}

// ---- Mamba1 -----------------------------------------------------------------------------

nn::Mamba1Config mamba1_config() {
  nn::Mamba1Config c;
  c.d_model = kDModel; c.d_state = 16; c.d_conv = 4; c.expand = 2; c.dt_rank = 0;  // auto: 48
  return c;
}

struct Mamba1Gemms {
  int64_t l, di, R, xd;
  Tensor in_proj, x_proj, dt_proj, out_proj;
  std::vector<float> x, xz, xc, xdbl, dt, y, out;
  Mamba1Gemms(nn::Mamba1& m, int64_t seqlen) : l(seqlen) {
    const auto& c = m.config();
    di = c.d_inner(); R = c.rank(); xd = R + 2 * c.d_state;
    in_proj = param(m, "in_proj.weight"); x_proj = param(m, "x_proj.weight");
    dt_proj = param(m, "dt_proj.weight"); out_proj = param(m, "out_proj.weight");
    x = random_vector(l * kDModel, -1.f, 1.f, 51);
    xz.resize(static_cast<size_t>(l * 2 * di));
    xc = random_vector(l * di, -1.f, 1.f, 52);
    xdbl.resize(static_cast<size_t>(l * xd));
    dt.resize(static_cast<size_t>(l * di));
    y = random_vector(l * di, -1.f, 1.f, 53);
    out.resize(static_cast<size_t>(l * kDModel));
  }
  void run() {
    linear(x.data(), l, kDModel, in_proj, xz.data(), 2 * di);
    linear(xc.data(), l, di, x_proj, xdbl.data(), xd);
    linear(xdbl.data(), l, xd, dt_proj, dt.data(), di);
    linear(y.data(), l, di, out_proj, out.data(), kDModel);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  double flops() const {
    return linear_flops(l, in_proj) + linear_flops(l, x_proj) + linear_flops(l, dt_proj) + linear_flops(l, out_proj);
  }
};

// GEMMs + conv (2 * d_conv per output) + selective scan (8 per (t, d, n): delta*A, exp,
// decay-multiply, delta*B*u, add, C*h accumulate — an estimate, exp counted as one).
double mamba1_flops(const nn::Mamba1Config& c, int64_t l, const Mamba1Gemms& g) {
  return g.flops() + 2.0 * c.d_conv * l * c.d_inner() + 8.0 * l * c.d_inner() * c.d_state;
}

// Times layer.forward at (1, l, d_model), then the same layer's projection GEMMs alone,
// and reports block/gemm. Shared by the Mamba1 and Mamba2 rows.
template <class Layer, class Gemms, class Flops>
void time_block(benchmark::State& state, Layer& m, Gemms& g, const Tensor& x, Flops flops) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Tensor y = m.forward(x);
    benchmark::DoNotOptimize(y.raw_data());
  }
  const double block_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(state.iterations());
  const double gemm_s = mean_seconds(3, [&] { g.run(); });
  state.SetItemsProcessed(state.iterations() * x.size(1));  // tokens
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_ms"] = gemm_s * 1e3;
  state.counters["block/gemm"] = block_s / gemm_s;
}

template <class Layer, class Gemms>
void time_gemms(benchmark::State& state, uint32_t seed, const typename Layer::Config& cfg) {
  Layer m(cfg);
  init_mixer_params(m, seed);
  Gemms g(m, state.range(0));
  for (auto _ : state) g.run();
  state.counters["FLOP/s"] = benchmark::Counter(g.flops(), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Mamba1ProjGemms(benchmark::State& state) { time_gemms<nn::Mamba1, Mamba1Gemms>(state, 41, mamba1_config()); }
BENCHMARK(BM_Mamba1ProjGemms)->ArgName("seqlen")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Mamba1Forward(benchmark::State& state) {
  const nn::Mamba1Config cfg = mamba1_config();
  nn::Mamba1 m(cfg);
  init_mixer_params(m, 41);
  const int64_t l = state.range(0);
  Mamba1Gemms g(m, l);
  time_block(state, m, g, random_input(l, 42), mamba1_flops(cfg, l, g));
}
BENCHMARK(BM_Mamba1Forward)->ArgName("seqlen")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- Mamba2 -----------------------------------------------------------------------------

nn::Mamba2Config mamba2_config() {
  nn::Mamba2Config c;
  c.d_model = kDModel; c.d_state = 128; c.d_conv = 4; c.expand = 2; c.headdim = 64; c.ngroups = 1; c.chunk_size = 256;
  return c;
}

struct Mamba2Gemms {
  int64_t l, di, dp;
  Tensor in_proj, out_proj;
  std::vector<float> x, zxbcdt, y, out;
  Mamba2Gemms(nn::Mamba2& m, int64_t seqlen) : l(seqlen) {
    di = m.config().d_inner(); dp = m.config().d_in_proj();
    in_proj = param(m, "in_proj.weight"); out_proj = param(m, "out_proj.weight");
    x = random_vector(l * kDModel, -1.f, 1.f, 61);
    zxbcdt.resize(static_cast<size_t>(l * dp));
    y = random_vector(l * di, -1.f, 1.f, 62);
    out.resize(static_cast<size_t>(l * kDModel));
  }
  void run() {
    linear(x.data(), l, kDModel, in_proj, zxbcdt.data(), dp);
    linear(y.data(), l, di, out_proj, out.data(), kDModel);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  double flops() const { return linear_flops(l, in_proj) + linear_flops(l, out_proj); }
};

// GEMMs + conv + chunked SSD as the algorithm does it (per chunk of Q: C B^T 2 Q^2 N per
// group; per head (L o CB) X 2 Q^2 P, chunk state 2 Q P N, carried-state output 2 Q P N)
// + gated RMSNorm (about 8 per element).
double mamba2_flops(const nn::Mamba2Config& c, int64_t l, const Mamba2Gemms& g) {
  const double Q = static_cast<double>(std::min(c.chunk_size, l)), N = static_cast<double>(c.d_state),
               P = static_cast<double>(c.headdim);
  const double chunks = static_cast<double>((l + c.chunk_size - 1) / c.chunk_size);
  const double ssd = chunks * (2 * Q * Q * N * c.ngroups + c.nheads() * (2 * Q * Q * P + 4 * Q * P * N));
  return g.flops() + 2.0 * c.d_conv * l * c.conv_dim() + ssd + 8.0 * l * c.d_inner();
}

void BM_Mamba2ProjGemms(benchmark::State& state) { time_gemms<nn::Mamba2, Mamba2Gemms>(state, 43, mamba2_config()); }
BENCHMARK(BM_Mamba2ProjGemms)->ArgName("seqlen")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Mamba2Forward(benchmark::State& state) {
  const nn::Mamba2Config cfg = mamba2_config();
  nn::Mamba2 m(cfg);
  init_mixer_params(m, 43);
  const int64_t l = state.range(0);
  Mamba2Gemms g(m, l);
  time_block(state, m, g, random_input(l, 44), mamba2_flops(cfg, l, g));
}
BENCHMARK(BM_Mamba2Forward)->ArgName("seqlen")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace mamba::bench
