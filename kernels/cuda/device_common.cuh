// Device helpers shared by the kernels in this folder (private to kernels/cuda).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mamba::kernels::cuda::dev {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// PyTorch semantics, as in the CPU kernels: softplus is the identity above 20.
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// Loads N consecutive elements row[t0 .. t0 + N) as f32; elements at or past `len` read as
// `pad`. When the whole run is in bounds and 16-byte aligned, it is loaded in 16-byte pieces.
template <int N, class T>
__device__ __forceinline__ void load_run(const T* __restrict__ row, int64_t t0, int64_t len, float (&out)[N], float pad) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    const T* src = row + t0;
    if (t0 + N <= len && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
      union { uint4 v[kBytes / 16]; T e[N]; } buf;
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) buf.v[i] = reinterpret_cast<const uint4*>(src)[i];
#pragma unroll
      for (int j = 0; j < N; ++j) out[j] = to_f32(buf.e[j]);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = t0 + j < len ? to_f32(row[t0 + j]) : pad;
}

// Stores the elements of vals that fall before `len` to row[t0 .. t0 + N), 16 bytes at a
// time when the whole run is in bounds and aligned.
template <int N, class T>
__device__ __forceinline__ void store_run(T* __restrict__ row, int64_t t0, int64_t len, const float (&vals)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    T* dst = row + t0;
    if (t0 + N <= len && (reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
      union { uint4 v[kBytes / 16]; T e[N]; } buf;
#pragma unroll
      for (int j = 0; j < N; ++j) buf.e[j] = from_f32<T>(vals[j]);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) reinterpret_cast<uint4*>(dst)[i] = buf.v[i];
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j)
    if (t0 + j < len) row[t0 + j] = from_f32<T>(vals[j]);
}

// ---- fast math for the v2 kernels ------------------------------------------------------------

// 2^x on the SFU (MUFU.EX2, one instruction): relative error ~2^-22, 0 below -126, no range
// scaling (ftz).
__device__ __forceinline__ float ex2_mufu(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 2^x on the FMA pipe (Cody-Waite style): x clamped to [-125, 127]; j = round(x) by the
// 1.5 * 2^23 trick (j lands in the low mantissa bits of t), f = x - j in [-0.5, 0.5],
// 2^f by a degree-5 polynomial (weighted least squares on Chebyshev nodes, max relative error
// 2.2e-7 in f32, like ex2.approx), then j added to the exponent field with an integer add.
// 12 FP32/INT instructions, no MUFU. For x below -125 it returns 2^-125 (~2.4e-38), not 0.
__device__ __forceinline__ float ex2_poly(float x) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23
  x = fminf(fmaxf(x, -125.f), 127.f);
  const float t = __fadd_rn(x, kMagic);  // __fadd_rn: never folded with the subtraction below
  const float j = __fadd_rn(t, -kMagic);
  const float f = __fadd_rn(x, -j);
  float p = 1.326697064e-03f;
  p = fmaf(p, f, 9.675459936e-03f);
  p = fmaf(p, f, 5.550742522e-02f);
  p = fmaf(p, f, 2.402212173e-01f);
  p = fmaf(p, f, 6.931469440e-01f);
  p = fmaf(p, f, 1.000000119e+00f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

// 2^x on the FMA pipe, v4 (scan forward v4; NOTES.md "v4"): x clamped to [-126, 128];
// j = floor(x) by adding 1.5 * 2^23 rounding down (j lands in the low mantissa bits of t),
// f = x - j in [0, 1) (exact), 2^f by a degree-5 minimax polynomial with p(0) = 1 exactly
// (relative error 8.2e-8 in exact arithmetic, 1.4e-7 measured in f32 against exp2 in double),
// then j added to the exponent field with one integer shift-add. 11 FP32/INT instructions
// (2 FMNMX, 3 FADD, 5 FFMA, 1 LEA/IMAD), no MUFU. 2^0 = 1 exactly (identity steps stay exact);
// below -126 it returns 2^-126, above 128 +inf.
// The shared part: clamp, reduction and polynomial; returns 2^f and sets t = 1.5 * 2^23 + floor(x).
__device__ __forceinline__ float ex2_poly_fraction(float x, float& t) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23
  x = fminf(fmaxf(x, -126.f), 128.f);
  t = __fadd_rd(x, kMagic);  // kMagic + floor(x)
  const float j = __fadd_rn(t, -kMagic);
  const float f = __fadd_rn(x, -j);
  float p = 1.867130072e-03f;
  p = fmaf(p, f, 9.017030316e-03f);
  p = fmaf(p, f, 5.579991311e-02f);
  p = fmaf(p, f, 2.401644502e-01f);
  p = fmaf(p, f, 6.931513118e-01f);
  return fmaf(p, f, 1.0f);
}

__device__ __forceinline__ float ex2_poly_fma(float x) {
  float t;
  const float p = ex2_poly_fraction(x, t);
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

// softplus with the SFU: log1p(e) for e = exp(x) <= 0.125 by its series to e^6 (relative error
// < 6e-7), else log(1 + e) (absolute error ~1e-7 on a result >= 0.118). Identity above 20.
__device__ __forceinline__ float softplus_fast(float x) {
  const float e = ex2_mufu(x * kLog2e);
  float s = fmaf(e, -1.f / 6.f, 0.2f);
  s = fmaf(s, e, -0.25f);
  s = fmaf(s, e, 1.f / 3.f);
  s = fmaf(s, e, -0.5f);
  s = fmaf(s, e, 1.f);
  s *= e;
  const float l = __logf(1.f + e);
  const float r = e <= 0.125f ? s : l;
  return x > 20.f ? x : r;
}

// silu with the SFU: x / (1 + exp(-x)) (ex2 + rcp); -0 for x below ~-88.
__device__ __forceinline__ float silu_fast(float x) { return __fdividef(x, 1.f + ex2_mufu(-x * kLog2e)); }

// A row of kN elements of T held raw in registers (16-byte pieces when kN * sizeof(T) % 16 == 0).
template <class T, int kN>
union RawRow {
  static_assert(kN * sizeof(T) % 16 == 0, "RawRow must be a whole number of 16-byte pieces");
  uint4 v[kN * sizeof(T) / 16];
  T e[kN];
};

// row[t0 .. t0 + kN) into r: 16-byte loads when `vec` (row 16-byte aligned; t0 a multiple of
// kN) and the run is in bounds, else element loads with zero past `len`.
template <class T, int kN>
__device__ __forceinline__ void load_raw(const T* __restrict__ row, int64_t t0, int64_t len, bool vec, RawRow<T, kN>& r) {
  if (vec && t0 + kN <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / 16); ++i) r.v[i] = __ldg(reinterpret_cast<const uint4*>(row + t0) + i);
  } else {
#pragma unroll
    for (int j = 0; j < kN; ++j) r.e[j] = t0 + j < len ? row[t0 + j] : from_f32<T>(0.f);
  }
}
template <class T, int kN>
__device__ __forceinline__ void store_raw(T* __restrict__ row, int64_t t0, int64_t len, bool vec, const RawRow<T, kN>& r) {
  if (vec && t0 + kN <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / 16); ++i) reinterpret_cast<uint4*>(row + t0)[i] = r.v[i];
  } else {
#pragma unroll
    for (int j = 0; j < kN; ++j)
      if (t0 + j < len) row[t0 + j] = r.e[j];
  }
}

__host__ __device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// SMs of the current device (132 when the query fails; the error is cleared): launch heuristics.
inline int sm_count() {
  int sms = 0, d = 0;
  if (cudaGetDevice(&d) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d) != cudaSuccess ||
      sms <= 0) {
    cudaGetLastError();
    sms = 132;
  }
  return sms;
}

}  // namespace mamba::kernels::cuda::dev
