// Mamba-1 decode step on the GPU (state (b, d, n) f32 updated in place, each state row read and
// written once). Plain kernel: one thread per (b, d) row with the n loop in the thread (any dstate,
// any alignment). Lane-group kernels (dstate 4 .. 128, 16-byte aligned state and A): v11 (short
// blocks, every load issued first) at small batch, v10 (2 pieces per lane sharing B / C) at large
// batch; see each kernel's comment and NOTES.md.
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;

template <class T>
__global__ void __launch_bounds__(kThreads) selective_state_update_kernel(SelectiveStateUpdateCudaParams<T> p) {
  const int64_t d = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (d >= p.dim) return;
  const int64_t b = blockIdx.y, N = p.dstate;
  const int64_t g = d / (p.dim / p.n_groups);
  const float x = dev::to_f32(p.x[b * p.x_stride + d]);
  float dt = dev::to_f32(p.delta[b * p.delta_stride + d]) + (p.delta_bias ? p.delta_bias[d] : 0.f);
  if (p.delta_softplus) dt = dev::softplus(dt);
  const T* Bv = p.B + b * p.B_stride + g * N;
  const T* Cv = p.C + b * p.C_stride + g * N;
  const float* A = p.A + d * N;
  float* h = p.state + (b * p.dim + d) * N;
  const float dtx = dt * x, dt2 = dt * dev::kLog2e;
  float y = 0.f;
#pragma unroll 4
  for (int64_t n = 0; n < N; ++n) {
    const float hn = exp2f(dt2 * A[n]) * h[n] + dtx * dev::to_f32(Bv[n]);
    h[n] = hn;
    y += hn * dev::to_f32(Cv[n]);
  }
  if (p.D) y += p.D[d] * x;
  if (p.z) y *= dev::silu(dev::to_f32(p.z[b * p.z_stride + d]));
  p.y[b * p.y_stride + d] = dev::from_f32<T>(y);
}

// Lanes: kG lanes per (b, d) channel (N = 4 kG, kG a power of two <= 32), a float4 of 4 consecutive
// states per lane, so a warp reads and writes 32 / kG whole state rows as one contiguous run of
// 16-byte pieces; y is reduced with xor shuffles among the kG lanes of a channel.
constexpr int kVecThreads = 256;

// x, dt, z, B, C of one (batch row, channel) as f32 (the state h only in the kernels that load it
// into registers).
struct SsuRow {
  float4 h;
  float x, dt, z;
  float B[4], C[4];
};


// x, dt (without delta_bias), z and the lane's 4 B / C values of batch row b (channel d, group g,
// state quad q); B / C as one 8-byte (bf16) / 16-byte (f32) vector each when kBC.
template <class T, int kG, bool kBC>
__device__ __forceinline__ void ssu_row_inputs(const SelectiveStateUpdateCudaParams<T>& p, int64_t b, int d, int g,
                                                  int q, SsuRow& r) {
  constexpr int kN = 4 * kG;
  r.x = dev::to_f32(p.x[b * p.x_stride + d]);
  r.dt = dev::to_f32(p.delta[b * p.delta_stride + d]);
  r.z = p.z ? dev::to_f32(p.z[b * p.z_stride + d]) : 0.f;
  const T* Bp = p.B + b * p.B_stride + g * kN + 4 * q;
  const T* Cp = p.C + b * p.C_stride + g * kN + 4 * q;
  if constexpr (kBC && sizeof(T) == 2) {
    union { uint2 u; T e[4]; } bb, cb;
    bb.u = *reinterpret_cast<const uint2*>(Bp);
    cb.u = *reinterpret_cast<const uint2*>(Cp);
#pragma unroll
    for (int k = 0; k < 4; ++k) { r.B[k] = dev::to_f32(bb.e[k]); r.C[k] = dev::to_f32(cb.e[k]); }
  } else if constexpr (kBC) {
    union { float4 u; T e[4]; } bb, cb;
    bb.u = *reinterpret_cast<const float4*>(Bp);
    cb.u = *reinterpret_cast<const float4*>(Cp);
#pragma unroll
    for (int k = 0; k < 4; ++k) { r.B[k] = dev::to_f32(bb.e[k]); r.C[k] = dev::to_f32(cb.e[k]); }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) { r.B[k] = dev::to_f32(Bp[k]); r.C[k] = dev::to_f32(Cp[k]); }
  }
}

// One lane's quad of the update: h' = exp(dt A) h + dt x B (dt = softplus(dt_raw) if asked), and
// the lane's part of y = h' . C (summed over the kG lanes of the channel by the caller).
__device__ __forceinline__ float4 ssu_quad(float4 A4, float4 h4, float dt, float x, const float (&B)[4],
                                           const float (&C)[4], bool softplus, float& y) {
  if (softplus) dt = dev::softplus_fast(dt);
  const float dtx = dt * x, dt2 = dt * dev::kLog2e;
  const float Av[4] = {A4.x, A4.y, A4.z, A4.w}, hv[4] = {h4.x, h4.y, h4.z, h4.w};
  float ho[4];
  y = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    ho[k] = fmaf(dev::ex2_mufu(dt2 * Av[k]), hv[k], dtx * B[k]);
    y = fmaf(ho[k], C[k], y);
  }
  return make_float4(ho[0], ho[1], ho[2], ho[3]);
}

// y[b, d] = (y + D x) * silu(z) from lane q == 0 of the channel (y already summed over its lanes).
template <class T>
__device__ __forceinline__ void ssu_store_y(const SelectiveStateUpdateCudaParams<T>& p, int64_t b, int d, float y,
                                            float Dd, const SsuRow& in) {
  if (p.D) y = fmaf(Dd, in.x, y);
  if (p.z) y *= dev::silu_fast(in.z);
  p.y[b * p.y_stride + d] = dev::from_f32<T>(y);
}

// v5 layout (kept as v11 below): one batch row per
// grid row (blockIdx.y), kR pieces per lane with every load of all kR pieces issued before any
// arithmetic; a block covers kVecThreads * kR consecutive lanes of one batch row (piece r of thread
// t is lane r * kVecThreads + t, so each warp-wide load is one contiguous 512-byte run); the 4 B and
// 4 C values of a lane as one 8-byte (bf16) / 16-byte (f32) vector when the rows allow it (kBC); the
// state read with ld.global.cs and written with st.global.cs (evict-first). Lanes past the row
// mirror lane 0 (valid reads), take part in the shuffles and write nothing.
//
// v11 (branch bw81; the default at small batch; MAMBA_SSU_VERSION=11, MAMBA_SSU_V11_KR=1|2|4): v5 with
// D[d] and delta_bias[d] loaded with the other inputs. v5 read them after the state store (the compiler
// may not move a load above a store that could alias it), so each piece paid one more L2 round trip
// after its store with nothing else in flight; v5 itself was removed once v11 measured faster
// (NOTES.md, bw81: b1 3.9 against 4.5 us, b256 31.6 against 32.2 us).
template <class T, int kG, int kR, bool kBC>
__global__ void __launch_bounds__(kVecThreads, kR == 1 ? 8 : kR == 2 ? 5 : 3) selective_state_update_v11_kernel(SelectiveStateUpdateCudaParams<T> p) {
  constexpr int kN = 4 * kG;
  const int lanes = static_cast<int>(p.dim) * kG;
  const int dpg = static_cast<int>(p.dim / p.n_groups);
  const int64_t b = blockIdx.y;
  float4* st = reinterpret_cast<float4*>(p.state + (b * p.dim) * kN);
  float4 A4[kR];
  SsuRow in[kR];
  float Dv[kR], bv[kR];
  bool ok[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int lane = blockIdx.x * (kVecThreads * kR) + r * kVecThreads + static_cast<int>(threadIdx.x);
    ok[r] = lane < lanes;
    const int l = ok[r] ? lane : 0;
    const int d = l / kG;
    const int g = p.n_groups == 1 ? 0 : d / dpg;
    in[r].h = __ldcs(st + l);
    A4[r] = __ldg(reinterpret_cast<const float4*>(p.A) + l);
    ssu_row_inputs<T, kG, kBC>(p, b, d, g, l % kG, in[r]);
    Dv[r] = p.D ? __ldg(p.D + d) : 0.f;
    bv[r] = p.delta_bias ? __ldg(p.delta_bias + d) : 0.f;
  }
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int lane = blockIdx.x * (kVecThreads * kR) + r * kVecThreads + static_cast<int>(threadIdx.x);
    const int d = (ok[r] ? lane : 0) / kG;
    float y;
    const float4 ho = ssu_quad(A4[r], in[r].h, in[r].dt + bv[r], in[r].x, in[r].B, in[r].C, p.delta_softplus, y);
    if (ok[r]) __stcs(st + lane, ho);
#pragma unroll
    for (int off = kG / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
    if (ok[r] && lane % kG == 0) ssu_store_y(p, b, d, y, Dv[r], in[r]);
  }
}

// v8 layout (branch bwkern; kept as v10 below): v5's layout (piece r of thread t =
// lane r * 256 + t of the block, all loads issued first) with the B / C values loaded ONCE per
// thread: the kR pieces of a thread are channels of the same batch row with the same state quad
// q (256 is a multiple of kG), so they share B[b, g, 4q .. 4q + 4) and C (v5 kept a copy per
// piece: 8 registers each). kR = 4 at 64 registers (4 blocks of 256 per SM, 64 KB of state in
// flight per SM against v5's 40 KB); requires n_groups == 1 or every block inside one group
// (checked at launch: dim / n_groups a multiple of 256 * kR / kG channels), else v5.
//
// v10 (branch bw81; the default at large batch, kR 2; MAMBA_SSU_VERSION=10, MAMBA_SSU_V10_KR=2|4): v8
// with D[d] loaded with the other inputs (v8 read it after each piece's state store: kR dependent L2
// round trips at the end of every block's life). v8 was removed once v10 measured faster (NOTES.md,
// bw81: b256 bf16 v10 kR2 30.6 us = 83% of copy, v8 kR4 32.5 us).
template <class T, int kG, int kR, bool kBC>
__global__ void __launch_bounds__(kVecThreads, kR <= 2 ? 5 : 4) selective_state_update_v10_kernel(SelectiveStateUpdateCudaParams<T> p) {
  constexpr int kN = 4 * kG;
  const int lanes = static_cast<int>(p.dim) * kG;
  const int dpg = static_cast<int>(p.dim / p.n_groups);
  const int64_t b = blockIdx.y;
  float4* st = reinterpret_cast<float4*>(p.state + (b * p.dim) * kN);
  const int lane0 = blockIdx.x * (kVecThreads * kR) + static_cast<int>(threadIdx.x);
  const int q = lane0 % kG;
  const int g = p.n_groups == 1 ? 0 : (lane0 / kG) / dpg;  // the same for all kR pieces (launch check)
  float4 h4[kR], A4[kR];
  float xv[kR], dtv[kR], zv[kR], Dv[kR];
  bool ok[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int lane = lane0 + r * kVecThreads;
    ok[r] = lane < lanes;
    const int l = ok[r] ? lane : q;
    const int d = l / kG;
    h4[r] = __ldcs(st + l);
    A4[r] = __ldg(reinterpret_cast<const float4*>(p.A) + l);
    xv[r] = dev::to_f32(p.x[b * p.x_stride + d]);
    dtv[r] = dev::to_f32(p.delta[b * p.delta_stride + d]) + (p.delta_bias ? p.delta_bias[d] : 0.f);
    zv[r] = p.z ? dev::to_f32(p.z[b * p.z_stride + d]) : 0.f;
    Dv[r] = p.D ? __ldg(p.D + d) : 0.f;
  }
  float Bv[4], Cv[4];
  {
    const T* Bp = p.B + b * p.B_stride + g * kN + 4 * q;
    const T* Cp = p.C + b * p.C_stride + g * kN + 4 * q;
    if constexpr (kBC && sizeof(T) == 2) {
      union { uint2 u; T e[4]; } bb, cb;
      bb.u = *reinterpret_cast<const uint2*>(Bp);
      cb.u = *reinterpret_cast<const uint2*>(Cp);
#pragma unroll
      for (int k = 0; k < 4; ++k) { Bv[k] = dev::to_f32(bb.e[k]); Cv[k] = dev::to_f32(cb.e[k]); }
    } else if constexpr (kBC) {
      union { float4 u; T e[4]; } bb, cb;
      bb.u = *reinterpret_cast<const float4*>(Bp);
      cb.u = *reinterpret_cast<const float4*>(Cp);
#pragma unroll
      for (int k = 0; k < 4; ++k) { Bv[k] = dev::to_f32(bb.e[k]); Cv[k] = dev::to_f32(cb.e[k]); }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) { Bv[k] = dev::to_f32(Bp[k]); Cv[k] = dev::to_f32(Cp[k]); }
    }
  }
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int lane = lane0 + r * kVecThreads;
    float dt = dtv[r];
    if (p.delta_softplus) dt = dev::softplus_fast(dt);
    const float dtx = dt * xv[r], dt2 = dt * dev::kLog2e;
    const float Av[4] = {A4[r].x, A4[r].y, A4[r].z, A4[r].w}, hv[4] = {h4[r].x, h4[r].y, h4[r].z, h4[r].w};
    float ho[4], y = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      ho[k] = fmaf(dev::ex2_mufu(dt2 * Av[k]), hv[k], dtx * Bv[k]);
      y = fmaf(ho[k], Cv[k], y);
    }
    if (ok[r]) __stcs(st + lane, make_float4(ho[0], ho[1], ho[2], ho[3]));
#pragma unroll
    for (int off = kG / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
    if (ok[r] && q == 0) {
      const int d = lane / kG;
      if (p.D) y = fmaf(Dv[r], xv[r], y);
      if (p.z) y *= dev::silu_fast(zv[r]);
      p.y[b * p.y_stride + d] = dev::from_f32<T>(y);
    }
  }
}

template <class T, int kG, int kR>
bool launch_v10(const SelectiveStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  const int64_t lanes = p.dim * kG;
  // A block's kR * 256 lanes span kR * 256 / kG channels; they must not straddle a group.
  const int64_t dpg = p.dim / p.n_groups;
  if (p.n_groups != 1 && (dpg * kG) % (kR * kVecThreads) != 0) return false;
  const int64_t blocks = (lanes + kR * kVecThreads - 1) / (kR * kVecThreads);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.batch));
  const uintptr_t al = sizeof(T) == 2 ? 8 : 16;
  const bool bc = (reinterpret_cast<uintptr_t>(p.B) % al) == 0 && (reinterpret_cast<uintptr_t>(p.C) % al) == 0 &&
                  (p.B_stride % 4) == 0 && (p.C_stride % 4) == 0;
  if (bc) selective_state_update_v10_kernel<T, kG, kR, true><<<grid, kVecThreads, 0, stream>>>(p);
  else selective_state_update_v10_kernel<T, kG, kR, false><<<grid, kVecThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("selective_state_update_cuda (v10)");
  return true;
}

template <class T, int kG, int kR>
void launch_v11(const SelectiveStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  const int64_t lanes = p.dim * kG;
  const int64_t blocks = (lanes + kR * kVecThreads - 1) / (kR * kVecThreads);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.batch));
  // The vector B / C loads need every lane's 4 values aligned: base pointers and row strides.
  const uintptr_t al = sizeof(T) == 2 ? 8 : 16;
  const bool bc = (reinterpret_cast<uintptr_t>(p.B) % al) == 0 && (reinterpret_cast<uintptr_t>(p.C) % al) == 0 &&
                  (p.B_stride % 4) == 0 && (p.C_stride % 4) == 0;
  if (bc)
    selective_state_update_v11_kernel<T, kG, kR, true><<<grid, kVecThreads, 0, stream>>>(p);
  else
    selective_state_update_v11_kernel<T, kG, kR, false><<<grid, kVecThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("selective_state_update_cuda (v11)");
}

// MAMBA_SSU_VERSION (read per call so that one process can compare): 1 = the plain kernel, 10 = v10
// (MAMBA_SSU_V10_KR=2|4 pieces per lane), 11 = v11 (MAMBA_SSU_V11_KR=1|2|4); unset / 0 = the default
// (launch_vec). The removed versions (2-9, 12: measured slower, NOTES.md) and any other number are an
// error naming the field.
int ssu_version() {
  const char* ssu_env = std::getenv("MAMBA_SSU_VERSION");
  const int version = ssu_env && *ssu_env ? std::atoi(ssu_env) : 0;
  if (version != 0 && version != 1 && version != 10 && version != 11)
    throw std::invalid_argument("selective_state_update_cuda: version (MAMBA_SSU_VERSION) must be 1, 10 or 11 (unset: the "
                                "default), got " + std::string(ssu_env) + " (versions 2-9 and 12 were removed)");
  return version;
}

template <class T, int kG>
bool launch_vec(const SelectiveStateUpdateCudaParams<T>& p, int version, cudaStream_t stream) {
  const int64_t lanes = p.dim * kG;
  if (lanes > 0x3fffffff) return false;  // the plain kernel
  if (version == 1) return false;
  auto env_int = [](const char* name, int dflt) {
    const char* e = std::getenv(name);
    return e && *e ? std::atoi(e) : dflt;
  };
  if (version == 10) {
    const bool ok = env_int("MAMBA_SSU_V10_KR", 2) == 4 ? launch_v10<T, kG, 4>(p, stream) : launch_v10<T, kG, 2>(p, stream);
    if (ok) return true;
  }
  if (version == 11) {
    const int kr = env_int("MAMBA_SSU_V11_KR", 1);
    if (kr == 2) launch_v11<T, kG, 2>(p, stream);
    else if (kr == 4) launch_v11<T, kG, 4>(p, stream);
    else launch_v11<T, kG, 1>(p, stream);
    return true;
  }
  // Default: v10 with 2 pieces per lane once there are enough lanes to fill every SM twice over (batch
  // 256 at d 3072, when its blocks do not straddle a group), else v11 with 1 piece per lane. Measured on
  // an H200 (NOTES.md, bw81, back-to-back): b256 bf16 v10 kR2 30.6 us (83% of copy), v11 kR1 31.6, v10
  // kR4 31.9, the old v8 kR4 32.5; b1 v11 kR1 3.9 us, b16 5.0 us.
  const bool large = lanes * p.batch >= int64_t{132} * 2048 * 2;
  if (large && launch_v10<T, kG, 2>(p, stream)) return true;
  launch_v11<T, kG, 1>(p, stream);
  return true;
}

}  // namespace

template <class T>
void selective_state_update_cuda(const SelectiveStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  if (p.batch < 0 || p.dim < 0 || p.dstate < 1) throw std::invalid_argument("selective_state_update_cuda: bad sizes");
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_state_update_cuda: dim must be a multiple of n_groups");
  if (p.batch > 65535) throw std::invalid_argument("selective_state_update_cuda: batch > 65535");
  if (p.batch == 0 || p.dim == 0) return;
  if (!p.state || !p.x || !p.delta || !p.B || !p.C || !p.A || !p.y)
    throw std::invalid_argument("selective_state_update_cuda: state, x, delta, B, C, A and y are required");
  // The lane-group kernels (16-byte state accesses) when the state and A are 16-byte aligned and
  // dstate / 4 is a power of two <= 32; the plain kernel (one thread per row) otherwise.
  const int version = ssu_version();
  const bool aligned = (reinterpret_cast<uintptr_t>(p.state) & 15) == 0 && (reinterpret_cast<uintptr_t>(p.A) & 15) == 0;
  if (aligned) {
    switch (p.dstate) {
      case 4: if (launch_vec<T, 1>(p, version, stream)) return; break;
      case 8: if (launch_vec<T, 2>(p, version, stream)) return; break;
      case 16: if (launch_vec<T, 4>(p, version, stream)) return; break;
      case 32: if (launch_vec<T, 8>(p, version, stream)) return; break;
      case 64: if (launch_vec<T, 16>(p, version, stream)) return; break;
      case 128: if (launch_vec<T, 32>(p, version, stream)) return; break;
      default: break;
    }
  }
  const dim3 grid(static_cast<unsigned>((p.dim + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  selective_state_update_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("selective_state_update_cuda");
}

template void selective_state_update_cuda<float>(const SelectiveStateUpdateCudaParams<float>&, cudaStream_t);
template void selective_state_update_cuda<__nv_bfloat16>(const SelectiveStateUpdateCudaParams<__nv_bfloat16>&,
                                                         cudaStream_t);

}  // namespace mamba::kernels::cuda
