// Scan forward v3 (private to kernels/cuda): the kernel (version = 3, the automatic choice for
// dstate <= 64 until v6), the split heuristic and the row-piece helpers v6 (scan_fwd_v6.cuh)
// shares, including the y epilogue. Handles packed variable-length batches (cu_seqlens). Design:
// NOTES.md. (v4, the same kernel with FMA-pipe exponentials, and v5, v3 without the varlen
// prologue, measured slower than v6 and were removed on branch prune.)
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "device_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#ifndef MAMBA_SCAN_POLY_EVERY
#define MAMBA_SCAN_POLY_EVERY 8  // 0: every exponential on the SFU
#endif

namespace mamba::kernels::cuda {
namespace {

// ---- v3: kS lanes per (b, d) channel, kN / kS states per lane in registers -------------------
//   Block = kV3Threads lanes = kV3Threads / kS consecutive channels of one group of one batch
//   row; lane s of a channel owns states [s * kNS, (s + 1) * kNS). Tiles of kT = 32 / sizeof(T)
//   steps as in v2 (B, C tile in shared memory [t][n], double-buffered, next tile's loads issued
//   before the current tile is computed). The per-step scalars are split over the kS lanes:
//   lane s loads, for its own kE = kT / kS consecutive steps, u, delta and z (one 32 / kS-byte
//   piece of each row: the kS lanes of a channel read one 32-byte sector together), computes dt
//   (softplus) and dt * u and publishes them in a per-channel shared-memory row; after a
//   __syncwarp every lane reads the (dt, dt u) pair of each step as a float2 broadcast. After the recurrence
//   each lane writes its kT partial y sums to shared memory, and lane s sums the kS partials of
//   its own kE steps, applies D u and silu(z) and stores its piece of y. So softplus and silu
//   are computed once per (channel, step), as in v2, and the MUFU load stays that of v2.
//   Poly / SFU split: the exponential of (step j, local state i) goes to the FMA-pipe
//   polynomial when (jp * kNS + i) % MAMBA_SCAN_POLY_EVERY == MAMBA_SCAN_POLY_EVERY - 1, jp = j
//   for kS = 1 and j % 4 otherwise (steps are walked in rolled blocks of 4): a compile-time
//   choice, the same in every lane (no divergence), the same fraction as v2 when
//   4 * kNS >= MAMBA_SCAN_POLY_EVERY.
constexpr int kV3Threads = 128;

template <int kS> struct V3MinBlocks { static constexpr int value = kS == 4 ? 6 : kS == 2 ? 3 : 1; };

template <class T, int kE>
union Piece {
  static constexpr int kBytes = kE * int(sizeof(T));
  static_assert(kBytes % 8 == 0, "a piece is a whole number of 8-byte words");
  using V = typename std::conditional<kBytes % 16 == 0, uint4, uint2>::type;
  V v[kBytes / int(sizeof(V))];
  T e[kE];
};

template <class T, int kE>
__device__ __forceinline__ void load_piece(const T* __restrict__ row, int64_t t, int64_t len, bool vec, Piece<T, kE>& r) {
  using V = typename Piece<T, kE>::V;
  if (vec && t + kE <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / sizeof(V)); ++i) r.v[i] = __ldg(reinterpret_cast<const V*>(row + t) + i);
  } else {
#pragma unroll
    for (int j = 0; j < kE; ++j) r.e[j] = t + j < len ? row[t + j] : dev::from_f32<T>(0.f);
  }
}
template <class T, int kE>
__device__ __forceinline__ void store_piece(T* __restrict__ row, int64_t t, int64_t len, bool vec, const Piece<T, kE>& r) {
  using V = typename Piece<T, kE>::V;
  if (vec && t + kE <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / sizeof(V)); ++i) reinterpret_cast<V*>(row + t)[i] = r.v[i];
  } else {
#pragma unroll
    for (int j = 0; j < kE; ++j)
      if (t + j < len) row[t + j] = r.e[j];
  }
}

// kM floats from shared memory at a 16-byte (kM % 4 == 0) or 8-byte aligned address.
template <int kM>
__device__ __forceinline__ void lds_floats(const float* src, float (&out)[kM]) {
  if constexpr (kM % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kM; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      out[i] = v.x; out[i + 1] = v.y; out[i + 2] = v.z; out[i + 3] = v.w;
    }
  } else {
    static_assert(kM % 2 == 0, "even runs only");
#pragma unroll
    for (int i = 0; i < kM; i += 2) {
      const float2 v = *reinterpret_cast<const float2*>(src + i);
      out[i] = v.x; out[i + 1] = v.y;
    }
  }
}
template <int kM>
__device__ __forceinline__ void sts_floats(float* dst, const float (&in)[kM]) {
  if constexpr (kM % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kM; i += 4) *reinterpret_cast<float4*>(dst + i) = make_float4(in[i], in[i + 1], in[i + 2], in[i + 3]);
  } else {
    static_assert(kM % 2 == 0, "even runs only");
#pragma unroll
    for (int i = 0; i < kM; i += 2) *reinterpret_cast<float2*>(dst + i) = make_float2(in[i], in[i + 1]);
  }
}

// y of this lane's kE steps (from `own`) after a tile: the sum of the kS lanes' partial rows.
template <int kS, int kT, int kE>
__device__ __forceinline__ void sum_split_partials(const float* yrow, int64_t own, float (&oy)[kE]) {
  __syncwarp();
  lds_floats<kE>(yrow + own, oy);
#pragma unroll
  for (int r = 1; r < kS; ++r) {
    float part[kE];
    lds_floats<kE>(yrow + r * kT + own, part);
#pragma unroll
    for (int e = 0; e < kE; ++e) oy[e] += part[e];
  }
}

// The recurrence over one tile when kS > 1 lanes share a channel (v3 and v6): blocks of kUB
// steps (a rolled loop: fewer live registers); before each block at_block(j0) (v6: the
// backward checkpoints); the (dt, du) pair of each step read from the channel's shared row
// dtrow (kPair4: two steps' pairs per 16-byte load); each block's partial y sums go to this
// lane's row of yrow, and oy gets the y of this lane's kE steps (kY = false: no y; v6's local
// pass of the sequence split).
template <int kS, int kT, int kUB, int kE, bool kPair4 = false, bool kY = true, class Step, class AtBlock>
__device__ __forceinline__ void split_tile_steps(const float* dtrow, float* yrow, int s, int64_t own, Step& step,
                                                 AtBlock&& at_block, float (&oy)[kE]) {
#pragma unroll 1
  for (int j0 = 0; j0 < kT; j0 += kUB) {
    at_block(j0);
    float yv[kUB];
    if constexpr (kPair4) {
      static_assert(kUB % 2 == 0, "pairs of steps");
#pragma unroll
      for (int jj = 0; jj < kUB; jj += 2) {
        const float4 v = *reinterpret_cast<const float4*>(dtrow + 2 * (j0 + jj));
        yv[jj] = step(j0 + jj, jj, v.x, v.y);
        yv[jj + 1] = step(j0 + jj + 1, jj + 1, v.z, v.w);
      }
    } else {
#pragma unroll
      for (int jj = 0; jj < kUB; ++jj) {
        const float2 v = *reinterpret_cast<const float2*>(dtrow + 2 * (j0 + jj));
        yv[jj] = step(j0 + jj, jj, v.x, v.y);
      }
    }
    if constexpr (kY) sts_floats<kUB>(yrow + s * kT + j0, yv);
  }
  if constexpr (kY) sum_split_partials<kS, kT>(yrow, own, oy);
}

// The exponential of element m of a rolled block (compile-time after unrolling): dev::ex2_poly
// for every MAMBA_SCAN_POLY_EVERY-th element, the rest on MUFU.
__device__ __forceinline__ float scan_exp2(float x, int m) {
  constexpr int kPoly = MAMBA_SCAN_POLY_EVERY;
  return (kPoly > 0 && m % (kPoly > 0 ? kPoly : 1) == (kPoly > 0 ? kPoly : 1) - 1) ? dev::ex2_poly(x) : dev::ex2_mufu(x);
}

// The y epilogue of v3 and v6: y = (D u + sum) [* silu(z)] for a lane's kE steps, rounded to T
// (bf16 in pairs: one F2FP per pair) and stored when the lane's channel is active. kHoistZ: the
// z test as one branch around the kE steps (the same values).
template <class T, int kE, bool kHoistZ = false, class Silu>
__device__ __forceinline__ void store_y_piece(T* __restrict__ y_row, int64_t t, int64_t len, bool vec, bool active, float D,
                                              const Piece<T, kE>& u, const Piece<T, kE>* z, const float (&sum)[kE],
                                              Silu silu) {
  float v[kE];
  if constexpr (kHoistZ) {
#pragma unroll
    for (int e = 0; e < kE; ++e) v[e] = fmaf(D, dev::to_f32(u.e[e]), sum[e]);
    if (z) {
#pragma unroll
      for (int e = 0; e < kE; ++e) v[e] *= silu(dev::to_f32(z->e[e]));
    }
  } else {
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      v[e] = fmaf(D, dev::to_f32(u.e[e]), sum[e]);
      if (z) v[e] *= silu(dev::to_f32(z->e[e]));
    }
  }
  Piece<T, kE> out;
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int e = 0; e < kE; ++e) out.e[e] = v[e];
  } else {
    static_assert(kE % 2 == 0, "bf16 pieces hold pairs");
#pragma unroll
    for (int e = 0; e < kE; e += 2)
      *reinterpret_cast<__nv_bfloat162*>(&out.e[e]) = __floats2bfloat162_rn(v[e], v[e + 1]);
  }
  if (active) store_piece<T, kE>(y_row, t, len, vec, out);
}

// kU: steps per rolled block. kVar = false: the kernel without the varlen prologue (runs when
// cu_seqlens is null; the prologue cost v3 7% on an H200, NOTES.md "ssdfix").
template <class T, int kN, int kS, bool kExact, int kU = 4, bool kVar = true>
__global__ void __launch_bounds__(kV3Threads, V3MinBlocks<kS>::value)
selective_scan_fwd_v3_kernel(SelectiveScanCudaParams<T> p, int blocks_per_group) {
  constexpr int kT = 32 / int(sizeof(T));   // steps per tile
  constexpr int kNS = kN / kS;              // states per lane
  constexpr int kE = kT / kS;               // steps whose scalars this lane loads / stores
  constexpr int kCh = kV3Threads / kS;      // channels per block
  constexpr int kBC = (kN * kT + kV3Threads - 1) / kV3Threads;
  constexpr int kStride = kN + 4;
  constexpr int kDtRow = 2 * kT + 4;        // per channel: (dt, du) pairs of kT steps, pad
  constexpr int kYRow = kS * kT + 4;        // per channel: kS partial y rows, pad
  constexpr int kUB = kU < kT ? kU : kT;    // steps per rolled block
  static_assert(kNS >= 2 && kNS <= 16 && kN % kS == 0, "2..16 states per lane");
  static_assert(kE >= 2 && kT % kS == 0 && kT % kUB == 0, "a lane owns at least two steps");
  __shared__ __align__(16) float sB[2][kT * kStride];
  __shared__ __align__(16) float sC[2][kT * kStride];
  __shared__ __align__(16) float sDt[kS > 1 ? kCh * kDtRow : 4];
  __shared__ __align__(16) float sY[kS > 1 ? kCh * kYRow : 4];

  const int tid = threadIdx.x;
  const int ch = tid / kS, s = tid % kS;
  const int nN = kExact ? kN : static_cast<int>(p.dstate);
  const int myN = kExact ? kNS : min(max(nN - s * kNS, 0), kNS);  // states of this lane that exist
  const int64_t dpg = p.dim / p.n_groups;
  const int64_t g = blockIdx.x / blocks_per_group;
  const int64_t cl = int64_t{blockIdx.x % blocks_per_group} * kCh + ch;
  const bool active = cl < dpg;
  const int64_t d = g * dpg + (active ? cl : 0);  // inactive channels mirror channel 0, write nothing
  // Batch row b, or sequence b of a packed batch (p.cu_seqlens: row 0, steps [start, start + L),
  // the state starting from initial_state[b] or 0; offsets clamped into the row).
  const int64_t b = blockIdx.y;
  const int64_t ld = p.seqlen;  // row length in memory
  int64_t start = 0, L = p.seqlen, brow = b;
  if (kVar && p.cu_seqlens) {
    const int64_t s0 = min(max(int64_t{p.cu_seqlens[b]}, int64_t{0}), ld);
    const int64_t s1 = min(max(int64_t{p.cu_seqlens[b + 1]}, s0), ld);
    start = s0;
    L = s1 - s0;
    brow = 0;
  }
  const int64_t row = (brow * p.dim + d) * ld + start;
  const T* u_row = p.u + row;
  const T* dt_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  T* y_row = p.y + row;
  const T* Bg = p.B + (brow * p.n_groups + g) * nN * ld + start;
  const T* Cg = p.C + (brow * p.n_groups + g) * nN * ld + start;
  const bool vec = dev::aligned16(u_row) && dev::aligned16(dt_row) && dev::aligned16(y_row) &&
                   (!z_row || dev::aligned16(z_row));
  const float D = p.D ? p.D[d] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int64_t state_off = (b * p.dim + d) * nN + s * kNS;
  float* dtrow = sDt + (kS > 1 ? ch * kDtRow : 0);
  float* yrow = sY + (kS > 1 ? ch * kYRow : 0);

  float A2[kNS], h[kNS];
#pragma unroll
  for (int i = 0; i < kNS; ++i) {
    const bool on = kExact || i < myN;
    A2[i] = on ? p.A[d * nN + s * kNS + i] * dev::kLog2e : 0.f;
    h[i] = on && p.initial_state ? p.initial_state[state_off + i] : 0.f;
  }

  using P = Piece<T, kE>;
  P cu, cdt, cz;
  T cB[kBC], cC[kBC];
  auto load_bc = [&](int64_t t0, T (&rb)[kBC], T (&rc)[kBC]) {
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      const int e = tid + i * kV3Threads;
      const int n = e / kT, j = e % kT;
      const bool in = (kN * kT % kV3Threads == 0 || e < kN * kT) && n < nN && t0 + j < L;
      rb[i] = in ? Bg[n * ld + t0 + j] : dev::from_f32<T>(0.f);
      rc[i] = in ? Cg[n * ld + t0 + j] : dev::from_f32<T>(0.f);
    }
  };
  const int64_t own = int64_t{s} * kE;  // offset of this lane's steps within a tile
  if (L > 0) {
    load_piece<T, kE>(u_row, own, L, vec, cu);
    load_piece<T, kE>(dt_row, own, L, vec, cdt);
    if (z_row) load_piece<T, kE>(z_row, own, L, vec, cz);
    load_bc(0, cB, cC);
  }

  int buf = 0;
  for (int64_t t0 = 0; t0 < L; t0 += kT, buf ^= 1) {
    float* sb = sB[buf];
    float* sc = sC[buf];
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      const int e = tid + i * kV3Threads;
      if (kN * kT % kV3Threads == 0 || e < kN * kT) {
        const int n = e / kT, j = e % kT;
        sb[j * kStride + n] = dev::to_f32(cB[i]);
        sc[j * kStride + n] = dev::to_f32(cC[i]);
      }
    }
    __syncthreads();  // B / C of tile t0 visible; also orders last tile's sDt / sY reads before this tile's writes

    const int64_t t1 = t0 + kT;
    P nu, ndt, nz;
    T nB[kBC], nC[kBC];
    if (t1 < L) {
      load_piece<T, kE>(u_row, t1 + own, L, vec, nu);
      load_piece<T, kE>(dt_row, t1 + own, L, vec, ndt);
      if (z_row) load_piece<T, kE>(z_row, t1 + own, L, vec, nz);
      load_bc(t1, nB, nC);
    }

    // dt and dt * u of this lane's kE steps, then of all kT steps.
    float odt[kE], odu[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      float v = dev::to_f32(cdt.e[e]) + bias;
      if (p.delta_softplus) v = dev::softplus_fast(v);
      if (t0 + own + e >= L) v = 0.f;  // identity map past the end: the final state stays exact
      odt[e] = v;
      odu[e] = v * dev::to_f32(cu.e[e]);
    }
    // kS > 1: (dt, du) pairs of all kT steps go through the channel's shared-memory row and are
    // read back one step at a time in the recurrence (fewer live registers); kS == 1: registers.
    float dt[kS > 1 ? 1 : kT], du[kS > 1 ? 1 : kT];
    if constexpr (kS > 1) {
      float pairs[2 * kE];
#pragma unroll
      for (int e = 0; e < kE; ++e) { pairs[2 * e] = odt[e]; pairs[2 * e + 1] = odu[e]; }
      sts_floats<2 * kE>(dtrow + 2 * own, pairs);
      __syncwarp();
    } else {
#pragma unroll
      for (int j = 0; j < kT; ++j) { dt[j] = odt[j]; du[j] = odu[j]; }
    }

    // One step of the recurrence for this lane's states; jp (compile-time after unrolling)
    // picks which exponentials go to the polynomial.
    auto step = [&](int j, int jp, float dtj, float duj) -> float {
      float bv[kNS], cv[kNS];
      lds_floats<kNS>(sb + j * kStride + s * kNS, bv);
      lds_floats<kNS>(sc + j * kStride + s * kNS, cv);
      float y0 = 0.f, y1 = 0.f;
#pragma unroll
      for (int i = 0; i < kNS; ++i) {
        if (kExact || i < myN) {
          const float a = scan_exp2(dtj * A2[i], jp * kNS + i);
          h[i] = fmaf(a, h[i], duj * bv[i]);
          if (i & 1) y1 = fmaf(h[i], cv[i], y1);
          else y0 = fmaf(h[i], cv[i], y0);
        }
      }
      return y0 + y1;
    };

    float oy[kE];
    if constexpr (kS > 1) {
      // Blocks of kU steps (a rolled loop: fewer live registers, so 6 blocks of 128 fit per
      // SM); each block's partial y goes to the channel's shared-memory row as one float4.
      split_tile_steps<kS, kT, kUB>(dtrow, yrow, s, own, step, [](int) {}, oy);
    } else {
#pragma unroll
      for (int j = 0; j < kT; ++j) oy[j] = step(j, j, dt[j], du[j]);
    }

    store_y_piece<T, kE>(y_row, t0 + own, L, vec, active, D, cu, z_row ? &cz : nullptr, oy,
                         [](float x) { return dev::silu_fast(x); });

    cu = nu;
    cdt = ndt;
    if (z_row) cz = nz;
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      cB[i] = nB[i];
      cC[i] = nC[i];
    }
  }

  if (active && p.final_state) {
#pragma unroll
    for (int i = 0; i < kNS; ++i)
      if (kExact || i < myN) p.final_state[state_off + i] = h[i];
  }
}

// v3 dispatch for one (T, kN): split choice (heuristic or forced) and launch.
template <class T, int kN, bool kExact>
struct V3 {
  // One launch; grid.y = the batch rows, or the sequences of a packed batch (cu_seqlens).
  template <int kS>
  static void launch(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
    constexpr int kCh = kV3Threads / kS;
    const int64_t dpg = p.dim / p.n_groups;
    const int64_t bpg = (dpg + kCh - 1) / kCh;
    if (bpg * p.n_groups > 0x7fffffff) throw std::invalid_argument("selective_scan_fwd_cuda: dim too large");
    const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(rows(p)));
    // Without cu_seqlens the kernel built without the varlen prologue: that prologue cost v3 7% on
    // an H200 (404.5 vs 377.6 us, NOTES.md "ssdfix").
    if (p.cu_seqlens)
      selective_scan_fwd_v3_kernel<T, kN, kS, kExact, 4, true><<<grid, kV3Threads, 0, stream>>>(p, static_cast<int>(bpg));
    else
      selective_scan_fwd_v3_kernel<T, kN, kS, kExact, 4, false><<<grid, kV3Threads, 0, stream>>>(p, static_cast<int>(bpg));
    MAMBA_CUDA_CHECK_LAUNCH("selective_scan_fwd_cuda (v3)");
  }
  static int64_t rows(const SelectiveScanCudaParams<T>& p) { return p.cu_seqlens ? p.n_seqs : p.batch; }
  // Resident blocks per SM of the kS variant (cached per process; 0 on error).
  template <int kS>
  static int occupancy() {
    static const int v = [] {
      int n = 0;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, selective_scan_fwd_v3_kernel<T, kN, kS, kExact>,
                                                        kV3Threads, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
      }
      return n;
    }();
    return v;
  }
  static constexpr int kMinS = kN / 16 > 1 ? kN / 16 : 1;   // at most 16 states per lane
  static constexpr int kMaxS = kN / 2 < 4 ? kN / 2 : 4;     // at least 2 states per lane
  static constexpr int kMaxST = (32 / int(sizeof(T))) / 2;  // at least 2 steps per lane
  template <int S>
  static constexpr bool kOk = S >= kMinS && S <= kMaxS && S <= kMaxST;
  static int blocks_of(const SelectiveScanCudaParams<T>& p, int S) {
    const int64_t ch = kV3Threads / S;
    const int64_t dpg = p.dim / p.n_groups;
    return static_cast<int>(std::min<int64_t>(((dpg + ch - 1) / ch) * p.n_groups * rows(p), 0x7fffffff));
  }
  static int occupancy_of(int S) {
    if constexpr (kOk<4>) if (S == 4) return occupancy<4>();
    if constexpr (kOk<2>) if (S == 2) return occupancy<2>();
    if constexpr (kOk<1>) if (S == 1) return occupancy<1>();
    return 0;
  }
  static bool allowed(int S) { return (S == 4 && kOk<4>) || (S == 2 && kOk<2>) || (S == 1 && kOk<1>); }
  // Split heuristic: the most lanes per channel whose grid still fits in one wave of resident
  // blocks (every block walks the whole sequence, so a second partial wave costs a whole
  // block time); when no split fits, 2 (if allowed): more warps than 1 at ~10% more issue.
  static int choose(const SelectiveScanCudaParams<T>& p, int forced) {
    if (forced == 1 || forced == 2 || forced == 4) return std::min(std::max(forced, kMinS), std::min(kMaxS, kMaxST));
    int sms = 0, dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        sms <= 0) {
      cudaGetLastError();
      sms = 132;
    }
    // Measured on an H100 (NOTES.md, v3): at b8 d3072 l2048 n16, S2 376 us, S1 518, S4 544
    // (S4's register cap costs more than its extra warps give). So S2 whenever its grid is at
    // least half a wave and fits in one; S4 only for grids too small to fill the SMs.
    if (allowed(2)) {
      const int occ = occupancy_of(2);
      const int64_t blocks = blocks_of(p, 2);
      if (occ > 0 && blocks <= int64_t{occ} * sms && blocks >= sms / 2) return 2;
    }
    for (int S : {4, 2, 1}) {
      if (!allowed(S)) continue;
      const int occ = occupancy_of(S);
      if (occ > 0 && int64_t{blocks_of(p, S)} <= int64_t{occ} * sms) return S;
    }
    return allowed(2) ? 2 : kMinS;
  }
  static void run(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced) {
    const int S = choose(p, forced);
    if constexpr (kOk<4>) if (S == 4) { launch<4>(p, stream); return; }
    if constexpr (kOk<2>) if (S == 2) { launch<2>(p, stream); return; }
    if constexpr (kOk<1>) if (S == 1) { launch<1>(p, stream); return; }
    launch<kMinS>(p, stream);
  }
};

}  // namespace
}  // namespace mamba::kernels::cuda
