// The inputs of the data-parallel collective tests, shared by mamba-dist-worker (which
// feeds them to the collectives) and test_distributed.cc (which computes the expected
// results from them): deterministic values of mixed magnitude, so that a different
// summation order would show in the low bits.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace mamba::testing {

inline constexpr std::array<size_t, 10> kDistSizes = {0, 1, 2, 3, 5, 7, 64, 1000, 4099, 100003};
inline constexpr size_t kDistMeanSize = 1001;
inline constexpr size_t kDistBroadcastBytes = 200003;

inline uint64_t dist_mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A value in +-[2^-8, 2^8) for (buffer size or seed, rank, index).
inline double dist_value_d(uint64_t n, int rank, size_t i) {
  const uint64_t h = dist_mix(dist_mix(n * 1000003ull + static_cast<uint64_t>(rank)) ^ (i * 0x2545f4914f6cdd1dull));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // [0, 1)
  const int e = static_cast<int>((h >> 3) % 16) - 8;
  return (u * 2 - 1) * std::ldexp(1.0, e);
}
inline float dist_value_f(uint64_t n, int rank, size_t i) { return static_cast<float>(dist_value_d(n, rank, i)); }
inline unsigned char dist_byte(int root, size_t i) {
  return static_cast<unsigned char>(dist_mix(static_cast<uint64_t>(root) * 7919 + i) & 0xff);
}

}  // namespace mamba::testing
