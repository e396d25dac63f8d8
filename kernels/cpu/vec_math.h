// Branch-free scalar math that the compiler vectorises when it sits in a loop over lanes.
// Internal to kernels/cpu.
#pragma once
#include <cstdint>
#include <cstring>

namespace mamba::kernels::detail {

// 2^x for x in about [-126, 126] (clamped outside), relative error ~2e-7: x = n + f with
// n = round(x), f in [-0.5, 0.5]; 2^f by its degree-7 Taylor polynomial in f*ln2;
// 2^n built in the exponent bits.
inline float exp2_fast(float x) {
  x = x < -126.f ? -126.f : (x > 126.f ? 126.f : x);
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  float t = x + shifter;
  const float n = t - shifter;
  const float f = (x - n) * 0.693147180559945309f;
  float p = 1.f / 5040.f;
  p = p * f + 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  int32_t ti;
  std::memcpy(&ti, &t, 4);
  const int32_t bits = (ti - 0x4B400000 + 127) << 23;  // integer part of t, rebiased
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

constexpr float kLog2e = 1.4426950408889634f;

inline float exp_fast(float x) { return exp2_fast(x * kLog2e); }

}  // namespace mamba::kernels::detail
