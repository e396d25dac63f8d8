// Branch-free scalar math that the compiler vectorises when it sits in a loop over lanes.
// Internal to kernels/cpu.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace mamba::kernels::detail {

// e^r for |r| <= ln2/2 by its degree-7 Taylor polynomial (truncation error ~5e-9).
inline float expm_poly(float r) {
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  return p * r + 1.f;
}

// 2^(n-1) where t = n + 1.5 * 2^23 holds the integer n in its low mantissa bits
// (the rounding trick below); n - 1 keeps n = 128 finite.
inline float pow2_from_shifted(float t) {
  int32_t ti;
  std::memcpy(&ti, &t, 4);
  const int32_t bits = (ti - 0x4B400000 + 126) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return scale;
}

constexpr float kRoundShifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer

// 2^x for x in about [-125, 126] (clamped outside), relative error ~2e-7: x = n + f with
// n = round(x), f in [-0.5, 0.5]; 2^f = e^(f ln2) by the polynomial; 2^n in the exponent bits.
inline float exp2_fast(float x) {
  x = x < -125.f ? -125.f : (x > 126.f ? 126.f : x);
  const float t = x + kRoundShifter;
  const float n = t - kRoundShifter;
  return expm_poly((x - n) * 0.693147180559945309f) * pow2_from_shifted(t) * 2.f;
}

constexpr float kLog2e = 1.4426950408889634f;

// e^x with Cody-Waite range reduction (x = n ln2 + r, ln2 split in two so n ln2 is exact
// enough), so the relative error stays ~2e-7 over the whole range, not growing with |x|
// as exp2_fast(x * log2e) would. IEEE-like at the edges: 0 below -86.5 (true value
// < 3e-38), inf above 88.72, NaN for NaN.
inline float exp_fast(float x_in) {
  constexpr float kLo = -86.5f, kHi = 88.72283935546875f;
  const float x = x_in < kLo ? kLo : (x_in > kHi ? kHi : x_in);
  const float t = x * kLog2e + kRoundShifter;
  const float n = t - kRoundShifter;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float res = expm_poly(r) * pow2_from_shifted(t) * 2.f;
  res = x_in > kHi ? std::numeric_limits<float>::infinity() : res;
  res = x_in < kLo ? 0.f : res;
  return x_in != x_in ? x_in : res;
}

// exp for the kernels' element types: the vectorisable one for float, std::exp for double.
inline float vexp(float x) { return exp_fast(x); }
inline double vexp(double x) { return std::exp(x); }

// tanh through exp: 1 - 2 / (e^(2x) + 1); absolute error about 1e-7 in float.
template <class T>
inline T vtanh(T x) {
  return T(1) - T(2) / (vexp(T(2) * x) + T(1));
}

// Natural log for finite x > 0 (normal numbers), relative error ~1e-7: x = m * 2^k with
// m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(f), f = (m - 1) / (m + 1), |f| <= 0.172,
// by its odd series to f^9.
inline float log_fast(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  int32_t k = ((bits >> 23) & 0xff) - 127;
  int32_t mbits = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  float m;
  std::memcpy(&m, &mbits, 4);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float f = (m - 1.f) / (m + 1.f), f2 = f * f;
  float p = 1.f / 9.f;
  p = p * f2 + 1.f / 7.f;
  p = p * f2 + 1.f / 5.f;
  p = p * f2 + 1.f / 3.f;
  p = p * f2 + 1.f;
  return static_cast<float>(k) * 0.693147180559945309f + 2.f * f * p;
}

// log(1 + e) for e >= 0 without losing small e: log(u) * e / (u - 1) with u = 1 + e.
inline float log1p_fast(float e) {
  const float u = 1.f + e;
  const float d = u - 1.f;
  return d == 0.f ? e : log_fast(u) * (e / d);
}

// PyTorch semantics: linear above 20.
inline float softplus_fast(float x) { return x > 20.f ? x : log1p_fast(exp_fast(x)); }

inline float silu_fast(float x) { return x / (1.f + exp_fast(-x)); }

inline float sigmoid_fast(float x) { return 1.f / (1.f + exp_fast(-x)); }

#if defined(__AVX2__) && defined(__FMA__)
// 8-lane exp2_fast with the same polynomial and clamps.
inline __m256 exp2_avx2(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(126.f)), _mm256_set1_ps(-126.f));
  const __m256 shifter = _mm256_set1_ps(12582912.f);
  const __m256 t = _mm256_add_ps(x, shifter);
  const __m256 n = _mm256_sub_ps(t, shifter);
  const __m256 f = _mm256_mul_ps(_mm256_sub_ps(x, n), _mm256_set1_ps(0.693147180559945309f));
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000)), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

}  // namespace mamba::kernels::detail
