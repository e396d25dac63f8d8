// Vectorisable math for the CPU kernels (internal to kernels/cpu).
//
// exp_f32: branch-free single-precision exp (Cody-Waite range reduction + degree-6
// polynomial, the classic Cephes coefficients); max relative error about 1e-7 over
// [-86.5, 88.7]; returns 0 below -86.5 (true value < 3e-38), inf above, NaN for NaN.
// Unlike std::exp it inlines, so loops calling it vectorise (with -fno-trapping-math).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

namespace mamba::kernels::detail {

inline float exp_f32(float x) {
  constexpr float kHi = 88.72283935546875f, kLo = -86.5f;
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (xc * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2, in two parts
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * z + r + 1.f;
  // 2^n as 2^(n-1) * 2 so that n in [-125, 128] stays a normal float exponent.
  const int32_t bits = (static_cast<int32_t>(n) + 126) << 23;
  const float scale = __builtin_bit_cast(float, bits);
  float res = y * scale * 2.f;
  res = x > kHi ? std::numeric_limits<float>::infinity() : res;
  res = x < kLo ? 0.f : res;
  return x != x ? x : res;
}

// exp for the kernels' element types: the vectorisable one for float, std::exp for double.
inline float vexp(float x) { return exp_f32(x); }
inline double vexp(double x) { return std::exp(x); }

// tanh through exp: 1 - 2 / (e^(2x) + 1); absolute error about 1e-7 in float.
template <class T> inline T vtanh(T x) { return T(1) - T(2) / (vexp(T(2) * x) + T(1)); }

}  // namespace mamba::kernels::detail
