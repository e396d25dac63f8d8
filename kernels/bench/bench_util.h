// Helpers shared by the mamba-bench files: deterministic random fills, Mamba-style
// parameter initialisation, and the machine's measured memory read bandwidth.
// Internal to kernels/bench; nothing here is part of the library.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mamba/nn/mixer.h"
#include "mamba/tensor/tensor.h"

namespace mamba::bench {

// splitmix64: fast, deterministic, good enough for benchmark inputs.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * 0x1p-24f; }

 private:
  uint64_t s_;
};

inline void fill_uniform(float* p, int64_t n, float lo, float hi, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) p[i] = rng.uniform(lo, hi);
}
inline std::vector<float> random_vector(int64_t n, float lo, float hi, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(seed);
  fill_uniform(v.data(), n, lo, hi, rng);
  return v;
}

// softplus^-1(y) = log(exp(y) - 1): the raw dt that softplus maps to y.
inline float inverse_softplus(float y) { return y + std::log(-std::expm1(-y)); }

// Fills a Mamba1 or Mamba2 mixer's parameters the way the reference initialises them,
// near enough for timing: linears and conv ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in));
// A_log = log(U[1, 16]); dt bias = softplus^-1(U[0.001, 0.1]); D = 1; norm weight = 1.
// Calls refresh_derived().
void init_mixer_params(nn::Mixer& mixer, uint64_t seed);
// The same rule for one tensor, chosen by the end of its (possibly prefixed) name; the
// embedding and any other 2-D weight get U(-1/sqrt(cols), 1/sqrt(cols)).
void init_param(const std::string& name, Tensor& t, Rng& rng);

// Sum of the bytes of every tensor in `params`.
inline int64_t param_bytes(const std::vector<std::pair<std::string, Tensor*>>& params) {
  int64_t b = 0;
  for (const auto& [name, t] : params) b += static_cast<int64_t>(t->nbytes());
  return b;
}

// Memory read bandwidth of this machine in bytes/s: the median of several passes summing a
// 512 MiB f32 array with kernels::num_threads() threads. Measured once per process (about a
// second) and cached, so every benchmark that divides by it uses the same figure.
double memory_read_bandwidth();
constexpr int64_t kBandwidthArrayBytes = int64_t{512} << 20;

// Sum of a[0, n) with kernels::num_threads() threads and many independent partial sums, so
// that it runs at the speed memory delivers the array.
float parallel_sum(const float* a, int64_t n);
// n floats, first touched by the same threads and split parallel_sum uses.
std::unique_ptr<float[]> bandwidth_array(int64_t n);

// Runs `pass` once to warm up, then `reps` times, and returns the mean seconds per pass.
template <class F>
double mean_seconds(int reps, F&& pass) {
  pass();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) pass();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count() / reps;
}

}  // namespace mamba::bench
