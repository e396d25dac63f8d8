// Memory read bandwidth: the yardstick for the decode benchmarks, which read every weight
// once per token. One iteration sums a 512 MiB f32 array (far larger than any cache).
#include <benchmark/benchmark.h>

#include "bench_util.h"

namespace mamba::bench {
namespace {

void BM_MemoryReadBandwidth(benchmark::State& state) {
  const int64_t n = kBandwidthArrayBytes / static_cast<int64_t>(sizeof(float));
  const std::unique_ptr<float[]> a = bandwidth_array(n);
  for (auto _ : state) benchmark::DoNotOptimize(parallel_sum(a.get(), n));
  state.SetBytesProcessed(state.iterations() * kBandwidthArrayBytes);
  // The median-of-7 figure the decode rows divide by (measured once per process).
  state.counters["cached_GB/s"] = memory_read_bandwidth() * 1e-9;
}
BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace mamba::bench
