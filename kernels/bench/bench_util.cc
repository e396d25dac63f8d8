#include "bench_util.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "mamba/kernels/parallel.h"

namespace mamba::bench {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void init_param(const std::string& name, Tensor& t, Rng& rng) {
  float* p = t.data<float>();
  const int64_t n = t.numel();
  if (ends_with(name, "A_log")) {
    for (int64_t i = 0; i < n; ++i) p[i] = std::log(rng.uniform(1.f, 16.f));
  } else if (ends_with(name, "dt_proj.bias") || ends_with(name, "dt_bias")) {
    for (int64_t i = 0; i < n; ++i) p[i] = inverse_softplus(rng.uniform(0.001f, 0.1f));
  } else if (ends_with(name, ".D") || name == "D" || ends_with(name, "norm.weight") || ends_with(name, "norm_f.weight")) {
    std::fill(p, p + n, 1.f);
  } else if (ends_with(name, "conv1d.weight")) {  // (channels, 1, d_conv): fan_in d_conv
    const float k = 1.f / std::sqrt(static_cast<float>(t.size(2)));
    fill_uniform(p, n, -k, k, rng);
  } else if (ends_with(name, "conv1d.bias")) {
    fill_uniform(p, n, -0.5f, 0.5f, rng);
  } else if (t.dim() == 2) {  // linears (out, in) and the embedding (vocab, d_model)
    const float k = 1.f / std::sqrt(static_cast<float>(t.size(1)));
    fill_uniform(p, n, -k, k, rng);
  } else {
    fill_uniform(p, n, -0.02f, 0.02f, rng);
  }
}

void init_mixer_params(nn::Mixer& mixer, uint64_t seed) {
  Rng rng(seed);
  for (auto& [name, t] : mixer.parameters()) init_param(name, *t, rng);
  mixer.refresh_derived();
}

float parallel_sum(const float* a, int64_t n) {
  const int threads = kernels::num_threads();
  float total = 0.f;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
  for (int64_t blk = 0; blk < n / 1024; ++blk) {
    float acc[32] = {};  // 32 independent sums: the loop is bounded by memory, not add latency
    const float* p = a + blk * 1024;
    for (int64_t i = 0; i < 1024; i += 32)
      for (int j = 0; j < 32; ++j) acc[j] += p[i + j];
    float s = 0.f;
    for (float v : acc) s += v;
    total += s;
  }
  for (int64_t i = n / 1024 * 1024; i < n; ++i) total += a[i];
  return total;
}

std::unique_ptr<float[]> bandwidth_array(int64_t n) {
  std::unique_ptr<float[]> a(new float[static_cast<size_t>(n)]);
  const int threads = kernels::num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = static_cast<float>(i & 1023) * 1e-3f;  // first touch, same split as the sum
  return a;
}

double memory_read_bandwidth() {
  static const double bw = [] {
    const int64_t n = kBandwidthArrayBytes / static_cast<int64_t>(sizeof(float));
    const std::unique_ptr<float[]> a = bandwidth_array(n);
    volatile float sink = 0.f;
    std::vector<double> secs;
    for (int rep = 0; rep < 7; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      sink = sink + parallel_sum(a.get(), n);
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(secs.begin(), secs.end());
    return static_cast<double>(n) * sizeof(float) / secs[secs.size() / 2];
  }();
  return bw;
}

}  // namespace mamba::bench
