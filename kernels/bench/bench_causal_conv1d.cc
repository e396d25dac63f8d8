// Depthwise causal conv1d + SiLU (width 4, batch 1, seqlen 2048). Args: channels, x row
// stride: {3072, 3072} is a contiguous input; {1536, 3072} is the Mamba1 layer at d_model
// 768 (x is the first half of the in_proj rows); {1792, 3352} is the Mamba2 layer (xBC
// columns of the in_proj rows).
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "mamba/kernels/causal_conv1d.h"

namespace mamba::bench {
namespace {

constexpr int64_t kSeqlen = 2048, kWidth = 4;

template <void (*Conv)(const kernels::CausalConv1dParams&)>
void BM_CausalConv1d(benchmark::State& state) {
  const int64_t c = state.range(0), stride = state.range(1), l = kSeqlen;
  const std::vector<float> x = random_vector(l * stride, -1.f, 1.f, 21);
  const std::vector<float> w = random_vector(c * kWidth, -0.5f, 0.5f, 22);
  const std::vector<float> bias = random_vector(c, -0.5f, 0.5f, 23);
  std::vector<float> out(static_cast<size_t>(l * c));
  kernels::CausalConv1dParams p;
  p.batch = 1; p.seqlen = l; p.channels = c; p.width = kWidth;
  p.x = x.data(); p.x_sb = l * stride; p.x_st = stride;
  p.weight = w.data(); p.bias = bias.data(); p.silu = true;
  p.out = out.data();
  for (auto _ : state) {
    Conv(p);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * l * c);
  state.SetBytesProcessed(state.iterations() * 4 * (2 * l * c + c * (kWidth + 1)));  // x in, out, weights
}

BENCHMARK(BM_CausalConv1d<kernels::causal_conv1d>)
    ->Name("BM_CausalConv1d")
    ->ArgNames({"channels", "x_stride"})
    ->Args({3072, 3072})
    ->Args({1536, 3072})
    ->Args({1792, 3352})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_CausalConv1d<kernels::causal_conv1d_ref>)
    ->Name("BM_CausalConv1dRef")
    ->ArgNames({"channels", "x_stride"})
    ->Args({3072, 3072})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace mamba::bench
