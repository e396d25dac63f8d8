// Mamba-2 decode state update on the GPU (see ssd_state_update_cuda.h and NOTES.md
// "Mamba-2 state update").
//   Vector path (dstate = 4 kQ with kQ a power of two <= 32, state and the row strides 16-byte
//   aligned): kQ lanes per state row (p), one float4 of the row per lane, y reduced with xor
//   shuffles in the aligned kQ-lane group. A block of 128 lanes covers kRB = 4 * 128 / kQ rows of
//   one (b, h) (4 float4 per lane, all loads issued before the arithmetic); grid (row blocks x
//   nheads, batch). exp(dt A) once per lane (one MUFU per 4 float4), B / C float4 per lane
//   loaded once (the lane's n-quad is the same for its 4 rows).
//   General path: one thread per (b, h, p) row, the n loop in the thread.
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/ssd_state_update_cuda.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kPieces = 4;  // float4 pieces per lane

template <class T>
__device__ __forceinline__ void load4(const T* p, float (&v)[4]) {
  if constexpr (sizeof(T) == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
  } else {
    union { uint2 u; T e[4]; } q;
    q.u = *reinterpret_cast<const uint2*>(p);
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = dev::to_f32(q.e[k]);
  }
}

__device__ __forceinline__ float dt_of(float v, bool softplus) { return softplus ? dev::softplus_fast(v) : v; }

// One lane's quad of a state row: s' = dA s + dtx B, and the lane's part of y = s' . C.
__device__ __forceinline__ float4 ssd_quad(float4 s, float dA, float dtx, const float (&Bv)[4], const float (&Cv)[4],
                                           float& y) {
  float4 o;
  o.x = fmaf(dA, s.x, dtx * Bv[0]);
  o.y = fmaf(dA, s.y, dtx * Bv[1]);
  o.z = fmaf(dA, s.z, dtx * Bv[2]);
  o.w = fmaf(dA, s.w, dtx * Bv[3]);
  y = fmaf(o.x, Cv[0], fmaf(o.y, Cv[1], fmaf(o.z, Cv[2], o.w * Cv[3])));
  return o;
}

template <class T, int kQ>
__global__ void __launch_bounds__(kThreads) ssd_state_update_vec_kernel(SsdStateUpdateCudaParams<T> p, int row_blocks) {
  constexpr int kRB = kPieces * kThreads / kQ;  // rows per block
  const int h = blockIdx.x / row_blocks;
  const int rb = blockIdx.x % row_blocks;
  const int64_t b = blockIdx.y;
  const int q = threadIdx.x % kQ;                 // this lane's n-quad
  const int r0 = rb * kRB + threadIdx.x / kQ;     // first row; rows r0 + k * (kThreads / kQ)
  const int P = static_cast<int>(p.headdim), N = 4 * kQ;
  const int g = static_cast<int>(h / (p.nheads / p.ngroups));
  float* S = p.state + ((b * p.nheads + h) * P) * int64_t{N};
  float4 s[kPieces];
  float xv[kPieces];
  bool ok[kPieces];
#pragma unroll
  for (int k = 0; k < kPieces; ++k) {
    const int r = r0 + k * (kThreads / kQ);
    ok[k] = r < P;
    const int rr = ok[k] ? r : 0;
    s[k] = reinterpret_cast<const float4*>(S + int64_t{rr} * N)[q];
    xv[k] = dev::to_f32(p.x[b * p.x_sb + int64_t{h} * P + rr]);
  }
  float Bv[4], Cv[4];
  load4<T>(p.B + b * p.B_sb + int64_t{g} * N + 4 * q, Bv);
  load4<T>(p.C + b * p.C_sb + int64_t{g} * N + 4 * q, Cv);
  const float dt = dt_of(dev::to_f32(p.dt[b * p.dt_sb + h]) + (p.dt_bias ? p.dt_bias[h] : 0.f), p.dt_softplus);
  const float dA = dev::ex2_mufu(dt * p.A[h] * dev::kLog2e);
  const float Dh = p.D ? p.D[h] : 0.f;
#pragma unroll
  for (int k = 0; k < kPieces; ++k) {
    float y;
    const float4 o = ssd_quad(s[k], dA, dt * xv[k], Bv, Cv, y);
    const int r = r0 + k * (kThreads / kQ);
    if (ok[k]) reinterpret_cast<float4*>(S + int64_t{r} * N)[q] = o;
#pragma unroll
    for (int off = kQ / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
    if (ok[k] && q == 0) p.y[b * p.y_sb + int64_t{h} * P + r] = dev::from_f32<T>(fmaf(Dh, xv[k], y));
  }
}

// Flat variant (branch bw80; the default when headdim < the kRB rows of a block, e.g. p 64 with
// n 16: the vector kernel left half of its lanes idle there, 79% of copy at b256 h48 p64 n16): the
// block's kRB rows are consecutive rows of the flattened (h, p) index of one batch row (the state,
// x and y rows of consecutive heads are contiguous), so a block may span several heads; each piece
// takes its own head's dt, A, D, exp(dt A) and group's B / C (L1 hits). Default for bf16 only: f32
// measured faster on the vector kernel (bw81, b256 h48 p64 n16: 29.7 us against 31.7 / 32.2 flat).
// MAMBA_SSD_UPD_FLAT=0 forces the vector kernel, =1 the flat one (where it applies).
// Since branch bw81 A[h] and D[h] of every piece are loaded with the other inputs (before, they were
// read after the previous piece's state store, which a load may not pass: kPieces dependent L2 round
// trips per block with nothing in flight; bf16 b256 h48 p64 n16: 30.8 -> 29.9 us back-to-back).
template <class T, int kQ>
__global__ void __launch_bounds__(kThreads) ssd_state_update_flat_kernel(SsdStateUpdateCudaParams<T> p) {
  constexpr int kRB = kPieces * kThreads / kQ;  // rows per block
  const int64_t b = blockIdx.y;
  const int q = threadIdx.x % kQ;
  const int P = static_cast<int>(p.headdim), N = 4 * kQ;
  const int rows = static_cast<int>(p.nheads) * P;
  const int hpg = static_cast<int>(p.nheads / p.ngroups);
  const int r0 = blockIdx.x * kRB + threadIdx.x / kQ;  // flattened rows r0 + k * (kThreads / kQ)
  float* S = p.state + b * rows * int64_t{N};
  float4 s[kPieces];
  float xv[kPieces], dtv[kPieces], Bv[kPieces][4], Cv[kPieces][4], Av[kPieces], Dv[kPieces];
  bool ok[kPieces];
#pragma unroll
  for (int k = 0; k < kPieces; ++k) {
    const int r = r0 + k * (kThreads / kQ);
    ok[k] = r < rows;
    const int rr = ok[k] ? r : 0;
    const int h = rr / P;
    const int g = h / hpg;
    s[k] = reinterpret_cast<const float4*>(S + int64_t{rr} * N)[q];
    xv[k] = dev::to_f32(p.x[b * p.x_sb + rr]);
    dtv[k] = dev::to_f32(p.dt[b * p.dt_sb + h]) + (p.dt_bias ? p.dt_bias[h] : 0.f);
    load4<T>(p.B + b * p.B_sb + int64_t{g} * N + 4 * q, Bv[k]);
    load4<T>(p.C + b * p.C_sb + int64_t{g} * N + 4 * q, Cv[k]);
    Av[k] = __ldg(p.A + h);
    Dv[k] = p.D ? __ldg(p.D + h) : 0.f;
  }
#pragma unroll
  for (int k = 0; k < kPieces; ++k) {
    const float dt = dt_of(dtv[k], p.dt_softplus);
    const float dA = dev::ex2_mufu(dt * Av[k] * dev::kLog2e);
    float y;
    const float4 o = ssd_quad(s[k], dA, dt * xv[k], Bv[k], Cv[k], y);
    const int r = r0 + k * (kThreads / kQ);
    if (ok[k]) reinterpret_cast<float4*>(S + int64_t{r} * N)[q] = o;
#pragma unroll
    for (int off = kQ / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
    if (ok[k] && q == 0) p.y[b * p.y_sb + r] = dev::from_f32<T>(fmaf(Dv[k], xv[k], y));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) ssd_state_update_kernel(SsdStateUpdateCudaParams<T> p) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;  // flattened (b, h, p)
  if (i >= p.batch * p.nheads * p.headdim) return;
  const int64_t P = p.headdim, N = p.dstate;
  const int64_t r = i % P, h = (i / P) % p.nheads, b = i / (P * p.nheads);
  const int64_t g = h / (p.nheads / p.ngroups);
  const float dt = dt_of(dev::to_f32(p.dt[b * p.dt_sb + h]) + (p.dt_bias ? p.dt_bias[h] : 0.f), p.dt_softplus);
  const float dA = expf(dt * p.A[h]);
  const float x = dev::to_f32(p.x[b * p.x_sb + h * P + r]);
  const float dtx = dt * x;
  float* s = p.state + ((b * p.nheads + h) * P + r) * N;
  const T* Bv = p.B + b * p.B_sb + g * N;
  const T* Cv = p.C + b * p.C_sb + g * N;
  float acc = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float v = fmaf(dA, s[n], dtx * dev::to_f32(Bv[n]));
    s[n] = v;
    acc = fmaf(v, dev::to_f32(Cv[n]), acc);
  }
  p.y[b * p.y_sb + h * P + r] = dev::from_f32<T>(acc + (p.D ? p.D[h] : 0.f) * x);
}

template <class T, int kQ>
void launch_vec(const SsdStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kRB = kPieces * kThreads / kQ;
  const char* flat_env = std::getenv("MAMBA_SSD_UPD_FLAT");
  const bool want_flat = flat_env && *flat_env ? flat_env[0] == '1' : sizeof(T) == 2;
  if (want_flat && p.headdim < kRB && p.nheads > 1 && p.nheads * p.headdim <= 0x3fffffff) {
    const int64_t blocks = (p.nheads * p.headdim + kRB - 1) / kRB;
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.batch));
    ssd_state_update_flat_kernel<T, kQ><<<grid, kThreads, 0, stream>>>(p);
    MAMBA_CUDA_CHECK_LAUNCH("ssd_state_update_cuda (flat)");
    return;
  }
  const int64_t row_blocks = (p.headdim + kRB - 1) / kRB;
  if (row_blocks * p.nheads > 0x7fffffff) throw std::invalid_argument("ssd_state_update_cuda: nheads x headdim too large");
  const dim3 grid(static_cast<unsigned>(row_blocks * p.nheads), static_cast<unsigned>(p.batch));
  ssd_state_update_vec_kernel<T, kQ><<<grid, kThreads, 0, stream>>>(p, static_cast<int>(row_blocks));
  MAMBA_CUDA_CHECK_LAUNCH("ssd_state_update_cuda (vector)");
}

}  // namespace

template <class T>
void ssd_state_update_cuda(const SsdStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  if (p.batch < 0 || p.nheads < 0 || p.headdim < 1 || p.dstate < 1)
    throw std::invalid_argument("ssd_state_update_cuda: batch, nheads >= 0 and headdim, dstate >= 1 required");
  if (p.ngroups <= 0 || p.nheads % p.ngroups != 0)
    throw std::invalid_argument("ssd_state_update_cuda: nheads must be a multiple of ngroups, got nheads " +
                                std::to_string(p.nheads) + ", ngroups " + std::to_string(p.ngroups));
  if (p.batch > 65535) throw std::invalid_argument("ssd_state_update_cuda: batch must be <= 65535, got " + std::to_string(p.batch));
  if (p.headdim > 0x7fffffff / 4 || p.dstate > 0x7fffffff / 4)
    throw std::invalid_argument("ssd_state_update_cuda: headdim or dstate too large");
  if (p.batch == 0 || p.nheads == 0) return;
  if (!p.state || !p.x || !p.dt || !p.B || !p.C || !p.A || !p.y)
    throw std::invalid_argument("ssd_state_update_cuda: state, x, dt, B, C, A and y are required");
  const size_t bc_align = sizeof(T) == 4 ? 16 : 8;
  const bool aligned = dev::aligned16(p.state) && (reinterpret_cast<uintptr_t>(p.B) % bc_align) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.C) % bc_align) == 0 && p.B_sb % 4 == 0 && p.C_sb % 4 == 0;
  if (aligned) {
    switch (p.dstate) {
      case 4: launch_vec<T, 1>(p, stream); return;
      case 8: launch_vec<T, 2>(p, stream); return;
      case 16: launch_vec<T, 4>(p, stream); return;
      case 32: launch_vec<T, 8>(p, stream); return;
      case 64: launch_vec<T, 16>(p, stream); return;
      case 128: launch_vec<T, 32>(p, stream); return;
      default: break;
    }
  }
  const int64_t blocks = (p.batch * p.nheads * p.headdim + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) throw std::invalid_argument("ssd_state_update_cuda: batch x nheads x headdim too large");
  ssd_state_update_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_state_update_cuda");
}

template void ssd_state_update_cuda<float>(const SsdStateUpdateCudaParams<float>&, cudaStream_t);
template void ssd_state_update_cuda<__nv_bfloat16>(const SsdStateUpdateCudaParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
