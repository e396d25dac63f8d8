// OpenBLAS sgemm through kernels::sgemm, called as the layers call it: C (M, N) = A (M, K)
// @ W^T with W (N, K) row-major. Args: M, N, K. 2048 x 3072 x 768 is the Mamba1 in_proj at
// d_model 768 and seqlen 2048; 1024^3 is a square reference point.
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "mamba/kernels/gemm.h"

namespace mamba::bench {
namespace {

void BM_Sgemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const std::vector<float> a = random_vector(M * K, -1.f, 1.f, 31);
  const std::vector<float> w = random_vector(N * K, -1.f, 1.f, 32);
  std::vector<float> c(static_cast<size_t>(M * N));
  for (auto _ : state) {
    kernels::sgemm(false, true, M, N, K, 1.f, a.data(), K, w.data(), K, 0.f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Sgemm)
    ->ArgNames({"M", "N", "K"})
    ->Args({2048, 3072, 768})
    ->Args({1024, 1024, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace mamba::bench
