// Branch-free scalar math that the compiler vectorises when it sits in a loop over lanes.
// Internal to kernels/cpu.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "mamba/kernels/cpu_isa.h"

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

// ---- erf and the normal CDF (GELU) ----------------------------------------------------------
// Two pieces, both evaluated in every lane and selected (branch-free, so loops vectorise):
//   |z| < 1.2:  erf(z) = z P(z^2), P of degree 6 (relative error of the fit 1.4e-8);
//   |z| >= 1.2: erfc(|z|) = e^(-z^2) Q(u), u = 1 / (1 + |z|), Q of degree 9, fitted on
//               |z| in [1.2, 10] (relative error of the fit 3.8e-9); Q(u) -> u / sqrt(pi)
//               as u -> 0, so the form stays accurate beyond the fitted range, where
//               e^(-z^2) underflows to 0 anyway (|z| > 9.3).
// Both fits are minimax in relative error (Lawson's iteration on 400 Chebyshev nodes,
// against double erf/erfc), the coefficients rounded to float. e^(-z^2) takes z^2 as a
// head + tail pair (the FMA residual) so its relative error does not grow with z^2.
// Measured in f32 (tests/unit/test_vec_math.cc, every float in [-12, 12] and beyond):
// erf_fast within 2 ulp of the correctly rounded erf; normal_cdf_fast and the GELU within
// ~1e-7 relative wherever the result is a normal float (the erfc form keeps the lower tail
// relative, where 1 + erf(x / sqrt2) would cancel).
inline float erf_small_poly(float s) {  // erf(z) / z - 1 for s = z^2 < 1.44
  float p = 6.527324991e-05f;
  p = p * s + -7.562161265e-04f;
  p = p * s + 5.131268653e-03f;
  p = p * s + -2.682016684e-02f;
  p = p * s + 1.128268535e-01f;
  p = p * s + -3.761253761e-01f;
  return p * s + 0.128379152f;  // (the fit's 1.128379152) - 1: z + z p keeps z exact
}

inline float erfc_scaled_poly(float u) {  // erfc(t) e^(t^2) for u = 1 / (1 + t), t >= 1.2
  float q = 2.208393677e+00f;
  q = q * u + -4.920983923e+00f;
  q = q * u + 3.536928150e+00f;
  q = q * u + 2.297128943e-02f;
  q = q * u + -9.429687615e-01f;
  q = q * u + -2.132908218e-01f;
  q = q * u + 2.715910311e-01f;
  q = q * u + 5.651109686e-01f;
  q = q * u + 5.641457793e-01f;
  return q * u + 8.745394037e-07f;
}

// e^(-a v^2) for |v| <= 28 (callers clamp: e^-392 is 0 in float) and a = 1 or 1/2 (exact
// scalings): v^2 as a head + FMA tail, so the error does not grow with v^2.
inline float exp_neg_square(float v, float a) {
  const float hi = v * v;
  const float lo = std::fma(v, v, -hi);
  return exp_fast(-a * hi) * (1.f - a * lo);
}

constexpr float kErfSplit = 1.2f;

// |x| clamped to 20 (erfc(20) = 0 in float; NaN -> 20, callers select NaN themselves).
inline float abs_clamped(float x) {
  const float t = std::fabs(x);
  return t < 20.f ? t : 20.f;
}

// erf(x) in float; NaN for NaN, +-1 at +-inf.
inline float erf_fast(float x) {
  const float t = abs_clamped(x);
  const float small = std::fma(x, erf_small_poly(x * x), x);
  const float tail = exp_neg_square(t, 1.f) * erfc_scaled_poly(1.f / (1.f + t));
  const float big = std::copysign(1.f - tail, x);
  return t < kErfSplit ? small : (x != x ? x : big);
}

// Phi(x) = P(N(0,1) <= x) = (1 + erf(x / sqrt2)) / 2 and, through `pdf`, phi(x)
// = e^(-x^2/2) / sqrt(2 pi) (one exponential for both; the GELU backward needs both).
// e^(-x^2/2) is taken from x itself, not from the rounded x / sqrt2.
inline float normal_cdf_pdf_fast(float x, float& pdf) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f, kInvSqrt2Pi = 0.39894228040143267794f;
  const float z = x * kInvSqrt2;
  const float t = abs_clamped(z);
  const float ax = std::fabs(x);
  const float e = exp_neg_square(ax < 28.f ? ax : 28.f, 0.5f);
  pdf = e * kInvSqrt2Pi;
  const float small = 0.5f + 0.5f * std::fma(z, erf_small_poly(z * z), z);
  const float half_tail = 0.5f * e * erfc_scaled_poly(1.f / (1.f + t));  // Phi(-|x|)
  const float big = x > 0.f ? 1.f - half_tail : half_tail;
  return t < kErfSplit ? small : (x != x ? x : big);
}

inline float normal_cdf_fast(float x) {
  float pdf;
  return normal_cdf_pdf_fast(x, pdf);
}

// GELU (exact form) x Phi(x), and its derivative Phi(x) + x phi(x).
inline float gelu_erf_fast(float x) { return x * normal_cdf_fast(x); }
inline float gelu_erf_grad_fast(float x) {
  float pdf;
  const float cdf = normal_cdf_pdf_fast(x, pdf);
  return cdf + x * pdf;
}

inline float sigmoid_fast(float x) { return 1.f / (1.f + exp_fast(-x)); }

// Vector ISAs as traits (one register of kLanes floats and the few operations the kernels
// use), so a kernel body is written once for AVX2 and AVX-512.
#if defined(__AVX2__) && defined(__FMA__)
struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static constexpr bool kScalef = false;  // no VSCALEFPS: 2^n through the exponent bits
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  // 2^n for t = n + 1.5 * 2^23 (the round shifter's integer in the low mantissa bits).
  static V pow2_from_shifted(V t) {
    const __m256i n = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  }
  static float hsum(V v) {  // the sum of the lanes
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
};
#endif
#if defined(__AVX512F__)
struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // The all-lanes masked forms: GCC 12's plain _mm512_min_ps / max / slli pass an
  // _mm512_undefined_* source that -Wmaybe-uninitialized reports; the code is the same.
  static V min(V a, V b) { return _mm512_mask_min_ps(a, 0xFFFF, a, b); }
  static V max(V a, V b) { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
  // x rounded to the nearest integer (ties to even, as the round shifter does) and a 2^n
  // (VSCALEFPS, n integral): exp2_vec's 2^n scaling in two instructions, no integer work.
  static constexpr bool kScalef = true;
  static V round(V x) { return _mm512_mask_roundscale_ps(x, 0xFFFF, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V scalef(V a, V n) { return _mm512_mask_scalef_ps(a, 0xFFFF, a, n); }
  static float hsum(V v) {  // the sum of the lanes (masked extracts: no undefined source, see min)
    const __m512d vd = _mm512_castps_pd(v);
    const __m256 lo = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, vd, 0));
    const __m256 hi = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, vd, 1));
    __m128 x = _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1)),
                          _mm_add_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1)));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
};
#endif

// One float as a register of one lane: the scalar build of a kernel written for the traits.
struct Lane1 {
  using V = float;
  static constexpr int kLanes = 1;
  static constexpr bool kScalef = false;
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V set1(float x) { return x; }
  static V zero() { return 0.f; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static V min(V a, V b) { return a < b ? a : b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static V pow2_from_shifted(V t) { return 2.f * detail::pow2_from_shifted(t); }
  static float hsum(V v) { return v; }
};

// f(S{}) with the traits of `isa` (Avx512, Avx2, or the caller's scalar Fallback): a kernel
// written once for the traits, dispatched at run time. A path this build or CPU lacks is
// refused with std::invalid_argument naming `op`.
template <class Fallback, class F>
decltype(auto) with_isa(CpuIsa isa, const char* op, F&& f) {
  if (!cpu_isa_available(isa))
    throw std::invalid_argument(std::string(op) + ": the " + cpu_isa_name(isa) + " path is not available");
#if defined(__AVX512F__)
  if (isa == CpuIsa::avx512) return f(Avx512{});
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if (isa == CpuIsa::avx2) return f(Avx2{});
#endif
  return f(Fallback{});
}

// exp2_fast in the lanes of one register (the same polynomial; clamped to [-126, 126]).
// With VSCALEFPS (AVX-512) n = round(x) and p 2^n take two instructions; otherwise the
// round shifter and the exponent bits. Both give the same n, f and p, so the same result.
template <class S>
inline typename S::V exp2_vec(typename S::V x) {
  using V = typename S::V;
  x = S::max(S::min(x, S::set1(126.f)), S::set1(-126.f));
  V n, t;
  if constexpr (S::kScalef) {
    n = S::round(x);
  } else {
    t = S::add(x, S::set1(kRoundShifter));
    n = S::sub(t, S::set1(kRoundShifter));
  }
  const V f = S::mul(S::sub(x, n), S::set1(0.693147180559945309f));
  V p = S::set1(1.f / 5040.f);
  p = S::fmadd(p, f, S::set1(1.f / 720.f));
  p = S::fmadd(p, f, S::set1(1.f / 120.f));
  p = S::fmadd(p, f, S::set1(1.f / 24.f));
  p = S::fmadd(p, f, S::set1(1.f / 6.f));
  p = S::fmadd(p, f, S::set1(0.5f));
  p = S::fmadd(p, f, S::set1(1.f));
  p = S::fmadd(p, f, S::set1(1.f));
  if constexpr (S::kScalef) {
    return S::scalef(p, n);
  } else {
    return S::mul(p, S::pow2_from_shifted(t));
  }
}

}  // namespace mamba::kernels::detail
