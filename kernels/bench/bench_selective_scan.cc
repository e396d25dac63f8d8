// Mamba-1 selective scan, fast path against the reference, in the (b, l, d) layout the
// Mamba1 layer passes: u, delta, y are (b, l, d) tensors; z is the second half of the
// in_proj output rows (stride 2d); B and C are columns of the x_proj output rows
// (stride dt_rank + 2n). Args: d_inner, seqlen (batch 1, d_state 16, dt_rank 48).
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "mamba/kernels/selective_scan.h"

namespace mamba::bench {
namespace {

constexpr int64_t kDState = 16, kDtRank = 48;

struct ScanInputs {
  int64_t d, l, n = kDState, xd = kDtRank + 2 * kDState;
  std::vector<float> xc, dt, xz, xdbl, A, D, bias, y;
  ScanInputs(int64_t d_inner, int64_t seqlen) : d(d_inner), l(seqlen) {
    xc = random_vector(l * d, -1.f, 1.f, 1);
    dt = random_vector(l * d, -0.5f, 0.5f, 2);
    xz = random_vector(l * 2 * d, -1.f, 1.f, 3);
    xdbl = random_vector(l * xd, -1.f, 1.f, 4);
    A.resize(static_cast<size_t>(d * n));
    Rng rng(5);
    for (auto& a : A) a = -rng.uniform(1.f, 16.f);
    D.assign(static_cast<size_t>(d), 1.f);
    bias.resize(static_cast<size_t>(d));
    for (auto& b : bias) b = inverse_softplus(rng.uniform(0.001f, 0.1f));
    y.resize(static_cast<size_t>(l * d));
  }
  kernels::SelectiveScanParams params() {
    kernels::SelectiveScanParams p;
    p.batch = 1; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = 1;
    p.u = {xc.data(), l * d, 1, d};
    p.delta = {dt.data(), l * d, 1, d};
    p.z = {xz.data() + d, l * 2 * d, 1, 2 * d};
    p.B = {xdbl.data() + kDtRank, l * xd, 0, 1, xd};
    p.C = {xdbl.data() + kDtRank + n, l * xd, 0, 1, xd};
    p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
    p.y = {y.data(), l * d, 1, d};
    return p;
  }
  // u, delta, z read and y written per (t, d); B and C read per (t, n); A, D, bias once.
  int64_t bytes() const { return 4 * (l * d * 4 + l * 2 * n + d * n + 2 * d); }
};

template <void (*Scan)(const kernels::SelectiveScanParams&)>
void BM_SelectiveScan(benchmark::State& state) {
  ScanInputs in(state.range(0), state.range(1));
  const kernels::SelectiveScanParams p = in.params();
  for (auto _ : state) {
    Scan(p);
    benchmark::DoNotOptimize(in.y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * in.l * in.d);
  state.SetBytesProcessed(state.iterations() * in.bytes());
  // Recurrence steps: one per (t, d, n).
  state.counters["states/s"] =
      benchmark::Counter(static_cast<double>(in.l * in.d * in.n), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_SelectiveScan<kernels::selective_scan>)
    ->Name("BM_SelectiveScan")
    ->ArgNames({"d_inner", "seqlen"})
    ->Args({1536, 2048})
    ->Args({384, 512})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// The fast path with its vector ISA named (third arg: 0 scalar, 1 AVX2, 2 AVX-512; the
// run-time default is the widest available), to compare the fallbacks.
void BM_SelectiveScanIsa(benchmark::State& state) {
  const auto isa = static_cast<kernels::CpuIsa>(state.range(2));
  if (!kernels::cpu_isa_available(isa)) {
    state.SkipWithError("this ISA path is not available here");
    return;
  }
  ScanInputs in(state.range(0), state.range(1));
  const kernels::SelectiveScanParams p = in.params();
  for (auto _ : state) {
    kernels::selective_scan(p, isa);
    benchmark::DoNotOptimize(in.y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(kernels::cpu_isa_name(isa));
  state.counters["states/s"] =
      benchmark::Counter(static_cast<double>(in.l * in.d * in.n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SelectiveScanIsa)
    ->ArgNames({"d_inner", "seqlen", "isa"})
    ->ArgsProduct({{384}, {512}, {0, 1, 2}})
    ->ArgsProduct({{128}, {200}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
// The backward (checkpointed fast path), channel-first (b, d, l) inputs as ops::ssm passes
// them. Args: batch, d_inner, seqlen, d_state, isa (0 scalar, 1 AVX2, 2 AVX-512). Shapes: the
// recommendation model's training batch (256 x 128 channels, 50 steps, state 32) and one
// 768-wide MambaLM layer at length 512 (state 16).
void BM_SelectiveScanBwd(benchmark::State& state) {
  const int64_t b = state.range(0), d = state.range(1), l = state.range(2), n = state.range(3);
  const auto isa = static_cast<kernels::CpuIsa>(state.range(4));
  if (!kernels::cpu_isa_available(isa)) {
    state.SkipWithError("this ISA path is not available here");
    return;
  }
  const int64_t x = b * d * l;
  const std::vector<float> u = random_vector(x, -1.f, 1.f, 1), delta = random_vector(x, -3.f, -1.f, 2),
                           z = random_vector(x, -1.f, 1.f, 3), dy = random_vector(x, -1.f, 1.f, 4),
                           B = random_vector(b * n * l, -1.f, 1.f, 5), C = random_vector(b * n * l, -1.f, 1.f, 6),
                           A = random_vector(d * n, -8.f, -0.5f, 7), D = random_vector(d, 0.5f, 1.5f, 8),
                           bias = random_vector(d, -0.5f, 0.5f, 9);
  std::vector<float> du(x), ddelta(x), dz(x), dB(b * n * l), dC(b * n * l), dA(d * n), dD(d), dbias(d);
  kernels::SelectiveScanParams p;
  p.batch = b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = 1;
  p.u = {u.data(), d * l, l, 1};
  p.delta = {delta.data(), d * l, l, 1};
  p.z = {z.data(), d * l, l, 1};
  p.B = {B.data(), n * l, n * l, l, 1};
  p.C = {C.data(), n * l, n * l, l, 1};
  p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = true;
  kernels::SelectiveScanGrads g;
  g.du = {du.data(), d * l, l, 1};
  g.ddelta = {ddelta.data(), d * l, l, 1};
  g.dz = {dz.data(), d * l, l, 1};
  g.dB = {dB.data(), n * l, n * l, l, 1};
  g.dC = {dC.data(), n * l, n * l, l, 1};
  g.dA = dA.data(); g.dD = dD.data(); g.ddelta_bias = dbias.data();
  for (auto _ : state) {
    kernels::selective_scan_bwd(p, {dy.data(), d * l, l, 1}, nullptr, g, isa);
    benchmark::DoNotOptimize(du.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(kernels::cpu_isa_name(isa));
  state.counters["states/s"] =
      benchmark::Counter(static_cast<double>(x * n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SelectiveScanBwd)
    ->ArgNames({"batch", "d_inner", "seqlen", "d_state", "isa"})
    ->ArgsProduct({{256}, {128}, {50}, {32}, {0, 1, 2}})
    ->Args({1, 1536, 512, 16, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_SelectiveScan<kernels::selective_scan_ref>)
    ->Name("BM_SelectiveScanRef")
    ->ArgNames({"d_inner", "seqlen"})
    ->Args({384, 512})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace mamba::bench
