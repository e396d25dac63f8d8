// Mamba-2 SSD: the chunked scan against the sequential reference, in the layout the Mamba2
// layer passes: x, B, C are column ranges of the conv output rows (x | B | C), dt is a
// column range of the in_proj output rows. Args: seqlen, nheads (batch 1, headdim 64,
// d_state 128, ngroups 1, chunk 256).
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "mamba/kernels/ssd.h"

namespace mamba::bench {
namespace {

constexpr int64_t kHeadDim = 64, kDState = 128, kChunk = 256;

struct SsdInputs {
  int64_t l, H, P = kHeadDim, N = kDState, di, cd, dp;
  std::vector<float> xbc, zxbcdt, A, D, dt_bias, y;
  SsdInputs(int64_t seqlen, int64_t nheads) : l(seqlen), H(nheads) {
    di = H * P;
    cd = di + 2 * N;
    dp = 2 * di + 2 * N + H;
    xbc = random_vector(l * cd, -1.f, 1.f, 11);
    zxbcdt = random_vector(l * dp, -0.5f, 0.5f, 12);
    Rng rng(13);
    A.resize(static_cast<size_t>(H));
    for (auto& a : A) a = -rng.uniform(1.f, 16.f);
    D.assign(static_cast<size_t>(H), 1.f);
    dt_bias.resize(static_cast<size_t>(H));
    for (auto& b : dt_bias) b = inverse_softplus(rng.uniform(0.001f, 0.1f));
    y.resize(static_cast<size_t>(l * di));
  }
  kernels::SsdParams params() {
    kernels::SsdParams p;
    p.batch = 1; p.seqlen = l; p.nheads = H; p.headdim = P; p.dstate = N; p.ngroups = 1; p.chunk_size = kChunk;
    p.x = xbc.data(); p.x_sb = l * cd; p.x_st = cd; p.x_sh = P;
    p.B = xbc.data() + di; p.B_sb = l * cd; p.B_st = cd; p.B_sg = N;
    p.C = xbc.data() + di + N; p.C_sb = l * cd; p.C_st = cd; p.C_sg = N;
    p.dt = zxbcdt.data() + di + cd; p.dt_sb = l * dp; p.dt_st = dp; p.dt_sh = 1;
    p.dt_bias = dt_bias.data(); p.dt_softplus = true;
    p.A = A.data(); p.D = D.data();
    p.y = y.data(); p.y_sb = l * di; p.y_st = di; p.y_sh = P;
    return p;
  }
  // x read and y written per (t, h, p); B, C per (t, n); dt per (t, h).
  int64_t bytes() const { return 4 * (2 * l * di + 2 * l * N + l * H); }
};

template <void (*Scan)(const kernels::SsdParams&)>
void BM_Ssd(benchmark::State& state) {
  SsdInputs in(state.range(0), state.range(1));
  const kernels::SsdParams p = in.params();
  for (auto _ : state) {
    Scan(p);
    benchmark::DoNotOptimize(in.y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * in.l * in.di);
  state.SetBytesProcessed(state.iterations() * in.bytes());
  state.counters["states/s"] =  // state-element updates of the recurrence: one per (t, h, p, n)
      benchmark::Counter(static_cast<double>(in.l * in.di * in.N), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Ssd<kernels::ssd_chunk_scan>)
    ->Name("BM_SsdChunkScan")
    ->ArgNames({"seqlen", "nheads"})
    ->Args({2048, 24})
    ->Args({512, 4})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Ssd<kernels::ssd_scan_ref>)
    ->Name("BM_SsdScanRef")
    ->ArgNames({"seqlen", "nheads"})
    ->Args({512, 4})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace mamba::bench
