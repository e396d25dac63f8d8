// CPU op kernels, fast path vs reference: `mamba-bench --benchmark_filter=Ops`.
// Sizes are typical of the suite's models (U-Mamba conv blocks, sequence-model rows).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "mamba/kernels/conv.h"
#include "mamba/kernels/elementwise.h"
#include "mamba/kernels/norm.h"
#include "mamba/kernels/reduce.h"
#include "mamba/kernels/softmax.h"
#include "mamba/kernels/topk.h"

namespace k = mamba::kernels;

namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// conv2d 3x3, padding 1: N=1, C_in=C_out=range(0), 32x32.
template <bool Ref> void OpsConv2d(benchmark::State& st) {
  const int64_t C = st.range(0), H = 32;
  k::ConvParams p;
  p.C_in = p.C_out = C;
  p.in[1] = p.in[2] = p.out[1] = p.out[2] = H;
  p.k[1] = p.k[2] = 3;
  p.pad[1] = p.pad[2] = 1;
  auto x = random_vec(static_cast<size_t>(C * H * H), 1), w = random_vec(static_cast<size_t>(C * C * 9), 2);
  std::vector<float> y(static_cast<size_t>(C * H * H));
  for (auto _ : st) {
    (Ref ? k::conv_f32_ref : k::conv_f32)(p, x.data(), w.data(), nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * 2 * C * C * 9 * H * H);  // flops
}
BENCHMARK(OpsConv2d<false>)->Arg(16)->Arg(64);
BENCHMARK(OpsConv2d<true>)->Arg(16);

template <bool Ref> void OpsSoftmaxRows(benchmark::State& st) {
  const int64_t rows = 256, n = st.range(0);
  auto x = random_vec(static_cast<size_t>(rows * n), 3);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    (Ref ? k::softmax_f32_ref : k::softmax_f32)(rows, n, 1, false, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(st.iterations() * rows * n * 8);
}
BENCHMARK(OpsSoftmaxRows<false>)->Arg(1024);
BENCHMARK(OpsSoftmaxRows<true>)->Arg(1024);

template <bool Ref> void OpsLayerNorm(benchmark::State& st) {
  const int64_t rows = 2048, D = st.range(0);
  auto x = random_vec(static_cast<size_t>(rows * D), 4), w = random_vec(static_cast<size_t>(D), 5);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    (Ref ? k::layer_norm_f32_ref : k::layer_norm_f32)(rows, D, x.data(), w.data(), w.data(), 1e-5f, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(st.iterations() * rows * D * 8);
}
BENCHMARK(OpsLayerNorm<false>)->Arg(768);
BENCHMARK(OpsLayerNorm<true>)->Arg(768);

template <bool Ref> void OpsSumInner(benchmark::State& st) {
  k::ReduceParams p{k::ReduceOp::sum, 64, 512, 256, 1};
  auto x = random_vec(static_cast<size_t>(p.outer * p.n * p.inner), 6);
  std::vector<float> y(static_cast<size_t>(p.outer * p.inner));
  for (auto _ : st) {
    (Ref ? k::reduce_f32_ref : k::reduce_f32)(p, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(st.iterations() * p.outer * p.n * p.inner * 4);
}
BENCHMARK(OpsSumInner<false>);
BENCHMARK(OpsSumInner<true>);

template <bool Ref> void OpsAddBroadcast(benchmark::State& st) {
  const int64_t R = 1024, C = 1024;
  auto a = random_vec(static_cast<size_t>(R * C), 7), b = random_vec(static_cast<size_t>(C), 8);
  std::vector<float> o(a.size());
  k::BinaryParams p{k::BinaryOp::add, {R, C}, {C, 1}, {C, 1}, {0, 1}};
  for (auto _ : st) {
    (Ref ? k::binary_f32_ref : k::binary_f32)(p, a.data(), b.data(), o.data());
    benchmark::DoNotOptimize(o.data());
  }
  st.SetBytesProcessed(st.iterations() * R * C * 8);
}
BENCHMARK(OpsAddBroadcast<false>);
BENCHMARK(OpsAddBroadcast<true>);

template <bool Ref> void OpsTopK(benchmark::State& st) {
  const int64_t rows = 32, n = 50000, kk = st.range(0);
  auto x = random_vec(static_cast<size_t>(rows * n), 9);
  std::vector<float> v(static_cast<size_t>(rows * kk));
  std::vector<int64_t> i(v.size());
  for (auto _ : st) {
    (Ref ? k::topk_f32_ref : k::topk_f32)(rows, n, kk, true, x.data(), v.data(), i.data());
    benchmark::DoNotOptimize(v.data());
  }
}
BENCHMARK(OpsTopK<false>)->Arg(10);
BENCHMARK(OpsTopK<true>)->Arg(10);

}  // namespace
