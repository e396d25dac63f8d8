// Scan forward v6 (private to kernels/cuda; NOTES.md "Scan forward v6"): v3's layout (a block of
// 128 lanes = 128 / kS channels of one group of one batch row, kS lanes per channel, each lane
// walking the whole sequence for kN / kS states in registers) with the per-tile overhead cut:
//   - tiles of kTB bytes of steps (64: 32 bf16 / 16 f32 steps; v3: 32 bytes), so the barrier,
//     the B / C staging, the scalar prologue and the y epilogue are paid half as often;
//   - B / C tiles loaded as 16-byte pieces (one uint4 per thread per tile at kN 16, bf16,
//     instead of 2 x kBC element loads with bounds and 64-bit index arithmetic each), the same
//     registers and store code for the element fallback (unaligned rows, the last tile);
//   - silu(z) for bf16 by one MUFU.TANH (x/2 + x/2 tanh(x/2); tanh.approx rel. error ~2^-11,
//     under bf16's rounding 2^-9); f32 keeps ex2 + rcp;
//   - kPoly: every kPoly-th (step, state) exponential of a rolled block on the FMA pipe
//     (dev::ex2_poly_fma), 0 = all on MUFU; kU steps per rolled block.
// Everything else (varlen, initial / final state, groups, inactive channels, identity steps past
// the end) is v3's, so the checks are v3's checks.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "device_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#include "scan_fwd_v3.cuh"
#include "scan_fwd_v6_launch.cuh"

namespace mamba::kernels::cuda {
namespace {

constexpr int kV6Threads = 128;

// Resident blocks per SM the register cap is set for (kThr threads per block: 128, or 32 = one
// warp per block, no block barrier).
template <int kS, int kThr = kV6Threads>
struct V6MinBlocks { static constexpr int value = (kS == 4 ? 6 : kS == 2 ? 3 : 1) * (kV6Threads / kThr); };

__device__ __forceinline__ float tanh_mufu(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
template <class T>
__device__ __forceinline__ float silu_v6(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return dev::silu_fast(x);
  } else {
    const float h = 0.5f * x;
    return fmaf(h, tanh_mufu(h), h);
  }
}

// softplus with one MUFU: max(x, 0) + log1p(t), t = exp(-|x|) in (0, 1] (MUFU ex2), log1p(t) =
// t q(t) with q a degree-8 polynomial (weighted least squares on Chebyshev nodes, fitted here:
// relative error 3.0e-8 in exact arithmetic, 2.1e-7 evaluated in f32). For x > 20 the result
// rounds to x (t q(t) < 2.1e-9 < half an ulp of 20), PyTorch's threshold; v3's softplus_fast
// takes 2 MUFU (ex2 + lg2) for the same accuracy class.
__device__ __forceinline__ float softplus_1mufu(float x) {
  const float t = dev::ex2_mufu(-fabsf(x) * dev::kLog2e);
  float q = 5.227511749e-03f;
  q = fmaf(q, t, -2.948447689e-02f);
  q = fmaf(q, t, 7.819215208e-02f);
  q = fmaf(q, t, -1.366038024e-01f);
  q = fmaf(q, t, 1.910466105e-01f);
  q = fmaf(q, t, -2.484263927e-01f);
  q = fmaf(q, t, 3.331905305e-01f);
  q = fmaf(q, t, -4.999949038e-01f);
  q = fmaf(q, t, 9.999999404e-01f);
  return fmaf(t, q, fmaxf(x, 0.f));
}

// 2^x on the FMA pipe as dev::ex2_poly_fma (the same clamp, reduction and polynomial), the
// exponent added by one IMAD (bits(t) * 2^23 + bits(p): t = 1.5 * 2^23 + floor(x), whose low 9
// bits are floor(x) mod 2^9, so the product mod 2^32 is floor(x) << 23) instead of SHL + IADD.
__device__ __forceinline__ float ex2_poly_imad(float x) {
  float t;
  const float p = dev::ex2_poly_fraction(x, t);
  unsigned r;
  asm("mad.lo.u32 %0, %1, 8388608, %2;" : "=r"(r) : "r"(__float_as_uint(t)), "r"(__float_as_uint(p)));
  return __uint_as_float(r);
}

// Which exponentials of a rolled block go to the FMA pipe (m = step-in-block * kNS + state,
// compile-time after unrolling; the same in every lane): kPoly 0 none, 1..99 every kPoly-th,
// 100 + q: q / 32 of them, spread evenly (m q mod 32 < q).
template <int kPoly>
__device__ __forceinline__ constexpr bool on_poly(int m) {
  if constexpr (kPoly <= 0) return false;
  else if constexpr (kPoly >= 100) return (m * (kPoly - 100)) % 32 < (kPoly - 100);
  else return m % kPoly == kPoly - 1;
}

// kOpt (v6 measurement variants, NOTES.md "Scan forward v7"): bit 8 = the per-tile tests
// (softplus on, last tile, z present) as one uniform branch each around the tile's steps instead
// of one per step; bit 1 = the polynomial through
// ex2_poly_imad; bit 2 = exponentials one step ahead (step j computes step j + 1's decay factors
// while it updates the state with step j's: the MUFU round trip overlaps a step's FMA work, and
// a rolled block's first step no longer waits for its own exponentials); bit 4 = two steps'
// (dt, du) pairs per 16-byte shared-memory load (without bit 2).
// Sequence split (p.seg_workspace; NOTES.md "Scan forward: sequence split"): block z scans steps
// [z * seg_steps, (z + 1) * seg_steps) of its sequence (seg_steps: a multiple of 64; one
// segment = the whole sequence). kLoc: the local pass of segments 0 .. K-2: from the zero state,
// no y, no z, C or checkpoints; the end state and the sum of dt go to the workspace. Otherwise
// segment z > 0 starts from the exact entering state folded from those entries.
template <class T, int kN, int kS, bool kExact, int kTB, int kPoly, int kU, bool kVar, int kSp = 0, int kThr = kV6Threads,
          int kOpt = 0, bool kLoc = false>
__global__ void __launch_bounds__(kThr, V6MinBlocks<kS, kThr>::value)
selective_scan_fwd_v6_kernel(SelectiveScanCudaParams<T> p, int blocks_per_group, int seg_steps) {
  constexpr int kT = kTB / int(sizeof(T));  // steps per tile
  constexpr int kNS = kN / kS;              // states per lane
  constexpr int kE = kT / kS;               // steps whose scalars this lane loads / stores
  constexpr int kCh = kThr / kS;            // channels per block
  constexpr int kNB = kThr == 32 ? 1 : 2;   // B / C buffers: one-warp blocks single-buffer (shared memory)
  constexpr int kStride = kN + 4;
  constexpr int kDtRow = 2 * kT + 4;
  constexpr int kYRow = kS * kT + 4;
  constexpr int kUB = kU < kT ? kU : kT;
  constexpr int kVE = 16 / int(sizeof(T));  // elements per 16-byte piece
  constexpr int kPR = kT / kVE;             // pieces per state row and tile
  constexpr int kPieces = (kLoc ? 1 : 2) * kN * kPR;  // B and C (the local pass: B)
  constexpr int kVB = (kPieces + kThr - 1) / kThr;
  static_assert(kNS >= 2 && kNS <= 16 && kN % kS == 0, "2..16 states per lane");
  static_assert(kE >= 2 && kT % kS == 0 && kT % kUB == 0 && kT % kVE == 0, "tile shape");
  static_assert(kUB <= 8 && kT % 8 == 0, "checkpoints every 8 steps fall on block starts");
  static_assert(kThr == 128 || kThr == 32, "block of 4 warps or 1");
  static_assert(!kLoc || (kOpt & 2) == 0, "the local pass has no exponentials-ahead loop");
  static_assert(sizeof(float) * (kNB * 2 * kT * kStride + (kS > 1 ? kCh * (kDtRow + kYRow) : 8)) <= 48 * 1024,
                "static shared memory");
  __shared__ __align__(16) float sBC[kNB][2][kT * kStride];  // [buffer][B, C][t * kStride + n]
  __shared__ __align__(16) float sDt[kS > 1 ? kCh * kDtRow : 4];
  __shared__ __align__(16) float sY[kS > 1 ? kCh * kYRow : 4];

  const int tid = threadIdx.x;
  const int ch = tid / kS, s = tid % kS;
  const int nN = kExact ? kN : static_cast<int>(p.dstate);
  const int myN = kExact ? kNS : min(max(nN - s * kNS, 0), kNS);
  const int64_t dpg = p.dim / p.n_groups;
  const int64_t g = blockIdx.x / blocks_per_group;
  const int64_t cl = int64_t{blockIdx.x % blocks_per_group} * kCh + ch;
  const bool active = cl < dpg;
  const int64_t d = g * dpg + (active ? cl : 0);
  const int64_t b = blockIdx.y;
  const int64_t ld = p.seqlen;
  int64_t start = 0, L = p.seqlen, brow = b;
  if (kVar && p.cu_seqlens) {
    const int64_t s0 = min(max(int64_t{p.cu_seqlens[b]}, int64_t{0}), ld);
    const int64_t s1 = min(max(int64_t{p.cu_seqlens[b + 1]}, s0), ld);
    start = s0;
    L = s1 - s0;
    brow = 0;
  }
  const int64_t seg = blockIdx.z, tb = seg * int64_t{seg_steps};
  const bool last_seg = tb + seg_steps >= L;
  if (kLoc ? last_seg : seg > 0 && tb >= L) return;  // block-uniform: nothing of this segment to do
  const int64_t Lseq = L;
  L = last_seg ? L - tb : seg_steps;  // from here on, the segment is the sequence
  start += tb;
  const int64_t row = (brow * p.dim + d) * ld + start;
  const T* u_row = p.u + row;
  const T* dt_row = p.delta + row;
  const T* z_row = p.z && !kLoc ? p.z + row : nullptr;
  T* y_row = p.y + row;
  const T* Bg = p.B + (brow * p.n_groups + g) * nN * ld + start;
  const T* Cg = p.C + (brow * p.n_groups + g) * nN * ld + start;
  const bool vec = dev::aligned16(u_row) && dev::aligned16(dt_row) && dev::aligned16(y_row) &&
                   (!z_row || dev::aligned16(z_row));
  const bool bcvec = dev::aligned16(Bg) && dev::aligned16(Cg) && (ld * int64_t(sizeof(T))) % 16 == 0;
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
    h[i] = on && p.initial_state && !kLoc ? p.initial_state[state_off + i] : 0.f;
  }
  // The split's entries, per (row, segment 0 .. K-2): the local end state [n][dim], then the sum
  // of dt [dim] after all rows' states.
  const int64_t nseg = kLoc ? gridDim.z : gridDim.z - 1;
  float* ws_h = p.seg_workspace + (b * nseg * nN + s * kNS) * p.dim + d;
  float* ws_s = p.seg_workspace + int64_t{gridDim.y} * nseg * nN * p.dim + b * nseg * p.dim + d;
  if (!kLoc) {
    for (int64_t j = 0; j < seg; ++j) {  // h <- h_loc(j) + 2^(A2 sum dt(j)) h
      const float sd = ws_s[j * p.dim];
#pragma unroll
      for (int i = 0; i < kNS; ++i)
        if (kExact || i < myN) h[i] = fmaf(dev::ex2_mufu(A2[i] * sd), h[i], ws_h[(j * nN + i) * p.dim]);
    }
  }
  float sdt = 0.f;  // kLoc: this lane's share of the segment's sum of dt

  // Backward checkpoints (p.bwd_workspace): the state entering every chunk of kCkK steps, f32
  // (batch, chunk, 16, dim) as selective_scan_bwd.cu's pass A writes them (kN <= 16 here).
  constexpr int kCkK = 8;
  float* ck = p.bwd_workspace && active && !kLoc
                  ? p.bwd_workspace + (b * ((Lseq + kCkK - 1) / kCkK) + tb / kCkK) * 16 * p.dim + d
                  : nullptr;
  auto write_ck = [&](int64_t t) {  // t: the first step of a chunk (a multiple of kCkK), t < L
    if (kN <= 16 && !kLoc && ck) {
      float* c = ck + (t / kCkK) * 16 * p.dim + int64_t{s * kNS} * p.dim;
#pragma unroll
      for (int i = 0; i < kNS; ++i) c[i * p.dim] = h[i];
    }
  };

  // This thread's B / C pieces: piece e = tid + i * 128 is (which = B / C, state n, 16-byte
  // piece q of the tile's row).
  union BCPiece {
    uint4 v;
    T e[kVE];
  };
  BCPiece cbc[kVB];
  auto load_bc = [&](int64_t t0, BCPiece (&r)[kVB]) {
#pragma unroll
    for (int i = 0; i < kVB; ++i) {
      const int e = tid + i * kThr;
      if (kPieces % kThr == 0 || e < kPieces) {
        const int which = e / (kN * kPR), rr = e % (kN * kPR), n = rr / kPR, q = rr % kPR;
        const T* src = (which ? Cg : Bg) + int64_t{n} * ld + t0 + q * kVE;
        if (bcvec && t0 + kT <= L && (kExact || n < nN)) {
          r[i].v = __ldg(reinterpret_cast<const uint4*>(src));
        } else {
#pragma unroll
          for (int j = 0; j < kVE; ++j)
            r[i].e[j] = (kExact || n < nN) && t0 + q * kVE + j < L ? src[j] : dev::from_f32<T>(0.f);
        }
      }
    }
  };
  auto store_bc = [&](int buf, const BCPiece (&r)[kVB]) {
#pragma unroll
    for (int i = 0; i < kVB; ++i) {
      const int e = tid + i * kThr;
      if (kPieces % kThr == 0 || e < kPieces) {
        const int which = e / (kN * kPR), rr = e % (kN * kPR), n = rr / kPR, q = rr % kPR;
        float* dst = sBC[buf][which] + q * kVE * kStride + n;
#pragma unroll
        for (int j = 0; j < kVE; ++j) dst[j * kStride] = dev::to_f32(r[i].e[j]);
      }
    }
  };

  using P = Piece<T, kE>;
  P cu, cdt, cz;
  const int64_t own = int64_t{s} * kE;
  if (L > 0) {
    load_piece<T, kE>(u_row, own, L, vec, cu);
    load_piece<T, kE>(dt_row, own, L, vec, cdt);
    if (z_row) load_piece<T, kE>(z_row, own, L, vec, cz);
    load_bc(0, cbc);
  }

  int buf = 0;
  for (int64_t t0 = 0; t0 < L; t0 += kT, buf ^= (kNB - 1)) {
    if constexpr (kThr == 32) {
      __syncwarp();  // single buffer: every lane is done with the last tile's B / C, sDt, sY
      store_bc(buf, cbc);
      __syncwarp();  // B / C of tile t0 visible to the warp
    } else {
      store_bc(buf, cbc);
      __syncthreads();  // B / C of tile t0 visible; last tile's sDt / sY reads done
    }
    const float* sb = sBC[buf][0];
    const float* sc = sBC[buf][1];

    const int64_t t1 = t0 + kT;
    P nu, ndt, nz;
    if (t1 < L) {
      load_piece<T, kE>(u_row, t1 + own, L, vec, nu);
      load_piece<T, kE>(dt_row, t1 + own, L, vec, ndt);
      if (z_row) load_piece<T, kE>(z_row, t1 + own, L, vec, nz);
      load_bc(t1, cbc);  // B / C of tile t0 are in shared memory already: reuse the registers
    }

    float dt[kS > 1 ? 1 : kT], du[kS > 1 ? 1 : kT];
    const bool tail = t0 + kT > L;  // block-uniform: only the last tile has steps past the end
    const int rem = tail ? static_cast<int>(L - t0 - own) : kE;  // this lane's steps in range
    {
      float pairs[2 * kE];
      if constexpr ((kOpt & 8) != 0) {  // the same values, with one uniform branch per tile for each test
        float v[kE];
#pragma unroll
        for (int e = 0; e < kE; ++e) v[e] = dev::to_f32(cdt.e[e]) + bias;
        if (p.delta_softplus) {
#pragma unroll
          for (int e = 0; e < kE; ++e) v[e] = kSp ? softplus_1mufu(v[e]) : dev::softplus_fast(v[e]);
        }
        if (tail) {
#pragma unroll
          for (int e = 0; e < kE; ++e)
            if (e >= rem) v[e] = 0.f;  // identity map past the end
        }
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          pairs[2 * e] = v[e];
          pairs[2 * e + 1] = v[e] * dev::to_f32(cu.e[e]);
          if constexpr (kLoc) sdt += v[e];
        }
      } else {
#pragma unroll
        for (int e = 0; e < kE; ++e) {
          float v = dev::to_f32(cdt.e[e]) + bias;
          if (p.delta_softplus) v = kSp ? softplus_1mufu(v) : dev::softplus_fast(v);
          if (tail && e >= rem) v = 0.f;  // identity map past the end
          pairs[2 * e] = v;
          pairs[2 * e + 1] = v * dev::to_f32(cu.e[e]);
          if constexpr (kLoc) sdt += v;
        }
      }
      if constexpr (kS > 1) {
        sts_floats<2 * kE>(dtrow + 2 * own, pairs);
        __syncwarp();
      } else {
#pragma unroll
        for (int j = 0; j < kT; ++j) { dt[j] = pairs[2 * j]; du[j] = pairs[2 * j + 1]; }
      }
    }

    // The decay factors of one step (jp: its index in the rolled block, for on_poly), then the
    // state update and y partial of step j with them.
    auto exps = [&](int jp, float dtj, float (&a)[kNS]) {
#pragma unroll
      for (int i = 0; i < kNS; ++i) {
        if (kExact || i < myN) {
          const float x = dtj * A2[i];
          a[i] = on_poly<kPoly>(jp * kNS + i) ? ((kOpt & 1) ? ex2_poly_imad(x) : dev::ex2_poly_fma(x)) : dev::ex2_mufu(x);
        }
      }
    };
    auto update = [&](int j, const float (&a)[kNS], float duj) -> float {
      float bv[kNS], cv[kNS];
      lds_floats<kNS>(sb + j * kStride + s * kNS, bv);
      if constexpr (kLoc) {
#pragma unroll
        for (int i = 0; i < kNS; ++i)
          if (kExact || i < myN) h[i] = fmaf(a[i], h[i], duj * bv[i]);
        return 0.f;
      }
      lds_floats<kNS>(sc + j * kStride + s * kNS, cv);
      float y0 = 0.f, y1 = 0.f;
#pragma unroll
      for (int i = 0; i < kNS; ++i) {
        if (kExact || i < myN) {
          h[i] = fmaf(a[i], h[i], duj * bv[i]);
          if (i & 1) y1 = fmaf(h[i], cv[i], y1);
          else y0 = fmaf(h[i], cv[i], y0);
        }
      }
      return y0 + y1;
    };
    auto step = [&](int j, int jp, float dtj, float duj) -> float {
      float a[kNS];
      exps(jp, dtj, a);
      return update(j, a, duj);
    };

    float oy[kE];
    if constexpr (kS > 1 && (kOpt & 2)) {
      // Exponentials one step ahead: entering step j, a holds step j's decay factors and dun its du.
      float a[kNS], dun;
      {
        const float2 v = *reinterpret_cast<const float2*>(dtrow);
        exps(0, v.x, a);
        dun = v.y;
      }
#pragma unroll 1
      for (int j0 = 0; j0 < kT; j0 += kUB) {
        if (j0 % kCkK == 0 && t0 + j0 < L) write_ck(t0 + j0);
        float yv[kUB];
#pragma unroll
        for (int jj = 0; jj < kUB; ++jj) {
          const int j = j0 + jj;
          const float duj = dun;
          float an[kNS];
          if (jj + 1 < kUB || j0 + kUB < kT) {  // not the tile's last step
            const float2 v = *reinterpret_cast<const float2*>(dtrow + 2 * (j + 1));
            exps((jj + 1) % kUB, v.x, an);
            dun = v.y;
          }
          yv[jj] = update(j, a, duj);
#pragma unroll
          for (int i = 0; i < kNS; ++i) a[i] = an[i];
        }
        sts_floats<kUB>(yrow + s * kT + j0, yv);
      }
      sum_split_partials<kS, kT>(yrow, own, oy);
    } else if constexpr (kS > 1) {
      split_tile_steps<kS, kT, kUB, kE, (kOpt & 4) != 0, !kLoc>(dtrow, yrow, s, own, step, [&](int j0) {
        if (j0 % kCkK == 0 && t0 + j0 < L) write_ck(t0 + j0);
      }, oy);
    } else {
      // kS == 1 (kN 32 / 64 never take it: at most 16 states per lane): the pairs stay in
      // registers, so the whole tile is unrolled (compile-time indices).
#pragma unroll
      for (int j = 0; j < kT; ++j) {
        if (j % kCkK == 0 && t0 + j < L) write_ck(t0 + j);
        oy[j] = step(j, j, dt[j], du[j]);
      }
    }

    if constexpr (!kLoc)
      store_y_piece<T, kE, (kOpt & 8) != 0>(y_row, t0 + own, L, vec, active, D, cu, z_row ? &cz : nullptr, oy,
                                            [](float x) { return silu_v6<T>(x); });

    cu = nu;
    cdt = ndt;
    if (z_row) cz = nz;
  }

  if constexpr (kLoc) {
#pragma unroll
    for (int o = 1; o < kS; o <<= 1) sdt += __shfl_xor_sync(0xffffffffu, sdt, o);  // the channel's kS lanes
    if (active) {
#pragma unroll
      for (int i = 0; i < kNS; ++i)
        if (kExact || i < myN) ws_h[(seg * nN + i) * p.dim] = h[i];
      if (s == 0) ws_s[seg * p.dim] = sdt;
    }
  } else if (active && p.final_state && last_seg) {
#pragma unroll
    for (int i = 0; i < kNS; ++i)
      if (kExact || i < myN) p.final_state[state_off + i] = h[i];
  }
}

// Dispatch for one (T, kN, kExact): the split (v3's heuristic on v6's occupancy, or forced)
// and the compiled variant (tile bytes, poly, unroll; NOTES.md "Scan forward v6").
template <class T, int kN, bool kExact>
struct V6 {
  static constexpr int kDefTB = kN <= 16 ? 64 : 32;  // shared memory: 64-byte tiles up to kN 16
  // One launch of gz segments (z) of seg_steps steps each.
  template <int kS, int kTB, int kPoly, int kU, int kSp, int kThr, int kOpt, bool kLoc>
  static void launch_z(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int seg_steps, int gz) {
    constexpr int kCh = kThr / kS;
    const int64_t dpg = p.dim / p.n_groups;
    const int64_t bpg = (dpg + kCh - 1) / kCh;
    if (bpg * p.n_groups > 0x7fffffff) throw std::invalid_argument("selective_scan_fwd_cuda: dim too large");
    const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(B3::rows(p)), static_cast<unsigned>(gz));
    if (p.cu_seqlens)
      selective_scan_fwd_v6_kernel<T, kN, kS, kExact, kTB, kPoly, kU, true, kSp, kThr, kOpt, kLoc>
          <<<grid, kThr, 0, stream>>>(p, static_cast<int>(bpg), seg_steps);
    else
      selective_scan_fwd_v6_kernel<T, kN, kS, kExact, kTB, kPoly, kU, false, kSp, kThr, kOpt, kLoc>
          <<<grid, kThr, 0, stream>>>(p, static_cast<int>(bpg), seg_steps);
    MAMBA_CUDA_CHECK_LAUNCH(kLoc ? "selective_scan_fwd_cuda (v6, local pass of the split)" : "selective_scan_fwd_cuda (v6)");
  }
  // The variant's kernel, after the sequence split's local pass when p splits (that pass runs the
  // default variant's loop: the segment entries do not depend on the variant).
  template <int kS, int kTB, int kPoly, int kU, int kSp = 0, int kThr = kV6Threads, int kOpt = 0>
  static void launch(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
    const SegPlan sp = seg_plan(p, kS, false);
    if (sp.k > 1) {
      const size_t need = size_t(sp.k - 1) * seg_entry_bytes(p);
      if (!p.seg_workspace || p.seg_workspace_bytes < need)
        throw std::invalid_argument("selective_scan_fwd_cuda: seg_workspace_bytes " + std::to_string(p.seg_workspace_bytes) +
                                    " < " + std::to_string(need) + " needed for " + std::to_string(sp.k) + " segments");
      if (!dev::aligned16(p.seg_workspace)) throw std::invalid_argument("selective_scan_fwd_cuda: seg_workspace must be 16-byte aligned");
      launch_z<kS, (kS == 1 ? 32 : kDefTB), 8, (kN == 16 && kS == 2 ? 8 : 4), 0, kV6Threads, 0, true>(p, stream, sp.steps,
                                                                                                      sp.k - 1);
    }
    launch_z<kS, kTB, kPoly, kU, kSp, kThr, kOpt, false>(p, stream, sp.steps, sp.k);
  }
  // Sequence split (NOTES.md "Scan forward: sequence split"): k segments of `steps` steps (a
  // multiple of kSegUnit: whole tiles and checkpoint chunks); k = 1: none. query: as if an
  // unlimited seg_workspace were given (the size query).
  struct SegPlan {
    int k = 1;
    int steps = 0x7fffffff;
  };
  static constexpr int kSegUnit = 64;
  static constexpr int kSegMinAuto = 128;  // the automatic split's shortest segment (steps)
  // The automatic split's fewest segments (NOTES.md "Scan forward: sequence split", round 06:15):
  // with K segments in one wave the split costs ~1.6x the exponentials and a second launch, and the
  // per-step time grows with the resident blocks; K = 3 lost (bf16 1.25x, f32 1.48x the unsplit
  // time), K = 4 won for bf16 (0.89-0.99x) but lost for f32 (1.04-1.12x: twice the bytes re-read by
  // the local pass, 16-step tiles), K >= 8 won 2-5x for both.
  static constexpr int kSegMinK = sizeof(T) == 2 ? 4 : 6;
  static size_t seg_entry_bytes(const SelectiveScanCudaParams<T>& p) {  // per segment but the last
    return size_t(B3::rows(p)) * size_t(p.dim) * size_t(p.dstate + 1) * sizeof(float);
  }
  static bool seg_wanted(const SelectiveScanCudaParams<T>& p, bool query) {
    return p.segments >= 2 || (p.segments == 0 && (query || p.seg_workspace));
  }
  static SegPlan seg_plan(const SelectiveScanCudaParams<T>& p, int S, bool query) {
    SegPlan r;
    const int64_t L = p.seqlen, rows = B3::rows(p);
    if (!seg_wanted(p, query) || L <= kSegUnit || rows <= 0) return r;
    const int64_t lavg = p.cu_seqlens ? std::max<int64_t>(L / rows, 1) : L;  // packed: the mean length
    int64_t k = p.segments;
    if (k < 2) {  // automatic: as many segments as one wave of resident blocks holds
      const int occ = occupancy_of(S);
      k = occ > 0 ? int64_t{occ} * dev::sm_count() / std::max(B3::blocks_of(p, S), 1) : 1;
      k = std::min<int64_t>(k, lavg / kSegMinAuto);
      if (!query) k = std::min<int64_t>(k, 1 + int64_t(p.seg_workspace_bytes / seg_entry_bytes(p)));
      if (k < kSegMinK) return r;
    }
    int64_t steps = (std::max<int64_t>((lavg + k - 1) / k, (L + 65534) / 65535) + kSegUnit - 1) / kSegUnit * kSegUnit;
    const int64_t kz = (L + steps - 1) / steps;
    if (kz < 2 || steps > 0x7fffffff) return r;
    r.k = static_cast<int>(kz);
    r.steps = static_cast<int>(steps);
    return r;
  }
  static size_t seg_bytes(const SelectiveScanCudaParams<T>& p, int forced) {
    const SegPlan sp = seg_plan(p, choose(p, forced, true), true);
    return sp.k > 1 ? size_t(sp.k - 1) * seg_entry_bytes(p) : 0;
  }
  template <int kS>
  static int occupancy() {
    static const int v = [] {
      int n = 0;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
              &n, selective_scan_fwd_v6_kernel<T, kN, kS, kExact, kDefTB, 0, 4, false>, kV6Threads, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
      }
      return n;
    }();
    return v;
  }
  using B3 = V3<T, kN, kExact>;
  template <int S>
  static constexpr bool kOk = S >= B3::kMinS && S <= B3::kMaxS && S <= (kDefTB / int(sizeof(T))) / 2 && (S > 1 || kDefTB == 32);
  static bool allowed(int S) { return (S == 4 && kOk<4>) || (S == 2 && kOk<2>) || (S == 1 && kOk<1>); }
  static int occupancy_of(int S) {
    if constexpr (kOk<4>) if (S == 4) return occupancy<4>();
    if constexpr (kOk<2>) if (S == 2) return occupancy<2>();
    if constexpr (kOk<1>) if (S == 1) return occupancy<1>();
    return 0;
  }
  static int choose(const SelectiveScanCudaParams<T>& p, int forced, bool query = false) {
    int lo = 4, hi = 1;
    for (int S : {1, 2, 4})
      if (allowed(S)) { lo = std::min(lo, S); hi = std::max(hi, S); }
    if (forced == 1 || forced == 2 || forced == 4) return std::min(std::max(forced, lo), hi);
    // A small grid that splits gets more segments, not more lanes (one that does not: as before).
    if (allowed(2) && seg_wanted(p, query) && seg_plan(p, 2, query).k > 1) return 2;
    const int sms = dev::sm_count();
    if (allowed(2)) {
      const int occ = occupancy_of(2);
      const int64_t blocks = B3::blocks_of(p, 2);
      if (occ > 0 && blocks <= int64_t{occ} * sms && blocks >= sms / 2) return 2;
    }
    for (int S : {4, 2, 1}) {
      if (!allowed(S)) continue;
      const int occ = occupancy_of(S);
      if (occ > 0 && int64_t{B3::blocks_of(p, S)} <= int64_t{occ} * sms) return S;
    }
    return allowed(2) ? 2 : lo;
  }
  // Variant (measurement knobs; the defaults are the fastest measured on an H200, NOTES.md "Scan
  // forward v6"): tile bytes (p.tile: 32 | 64, 0 = 64), poly (p.poly: -1 = none, 4 | 8 | 16 =
  // every 4th / 8th / 16th exponential on the FMA pipe, 0 = 8), unroll (p.unroll: 4 | 8, 0 = 8),
  // p.softplus1 (1 = softplus with one MUFU), p.block (32 = one-warp blocks, no block barrier;
  // 0 = 128 lanes). Tuning variants are compiled for dstate 16, split 2 only; other shapes run
  // tile kDefTB, poly 8, unroll 4.
  static bool uneven_grid(const SelectiveScanCudaParams<T>& p) {
    const int64_t blocks = B3::blocks_of(p, 2), sms = dev::sm_count();
    return !p.bwd_workspace && blocks > sms && blocks < 2 * sms && seg_plan(p, 2, false).k <= 1;
  }
  template <int kS>
  static void launch_variant(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
    if constexpr (kN == 16 && kExact && kS == 2) {
      if (p.opt) return selective_scan_fwd_v6_opt<T>(p, stream);
      constexpr int kDefOpt = std::is_same_v<T, float> ? kV6DefaultOptF32 : kV6DefaultOpt;
      // No knob set, bf16 default, no backward checkpoints to write, and a grid of 128-lane blocks
      // between one and two per SM (some SMs would run two, the rest one, and the two-block SMs set
      // the time): one-warp blocks, four times as many, spread evenly (H200, bf16 b8 d1536 l2048:
      // 298.9 -> 273.9 us; below one block per SM, b4 d1536, and at the standard shape's 2.9 they
      // lose; with the trainer's checkpoints its forward phase went 6.76 -> 6.86 ms; NOTES.md).
      if (!kDefOpt && !p.tile && !p.poly && !p.unroll && !p.softplus1 && !p.block && uneven_grid(p))
        return launch<2, 64, 8, 8, 0, 32>(p, stream);
      if (kDefOpt && !p.tile && !p.poly && !p.unroll && !p.softplus1 && !p.block) {
        SelectiveScanCudaParams<T> q = p;
        q.opt = kDefOpt;
        return selective_scan_fwd_v6_opt<T>(q, stream);
      }
      const int tb = p.tile == 32 ? 32 : 64;
      const int pe = p.poly == 0 ? 8 : p.poly < 0 ? 0 : p.poly;
      const int u = p.unroll == 4 ? 4 : 8;
      const bool sp = p.softplus1 == 1, w1 = p.block == 32;
      if (tb == 64 && !sp && !w1) {
        if (u == 8) {
          if (pe == 8) return launch<2, 64, 8, 8>(p, stream);
          if (pe == 0) return launch<2, 64, 0, 8>(p, stream);
          if (pe == 4) return launch<2, 64, 4, 8>(p, stream);
          if (pe == 16) return launch<2, 64, 16, 8>(p, stream);
        } else {
          if (pe == 8) return launch<2, 64, 8, 4>(p, stream);
          if (pe == 0) return launch<2, 64, 0, 4>(p, stream);
        }
      }
      if (tb == 64 && sp && !w1 && u == 8 && pe == 8) return launch<2, 64, 8, 8, 1>(p, stream);
      if (tb == 64 && !sp && w1 && u == 8 && pe == 8) return launch<2, 64, 8, 8, 0, 32>(p, stream);
      if (tb == 64 && sp && w1 && u == 8 && pe == 8) return launch<2, 64, 8, 8, 1, 32>(p, stream);
      if (tb == 32 && !sp && w1 && u == 8 && pe == 8) return launch<2, 32, 8, 8, 0, 32>(p, stream);
      if (tb == 32 && !sp && !w1 && u == 4 && pe == 8) return launch<2, 32, 8, 4>(p, stream);
      return launch<2, 64, 8, 8>(p, stream);  // no compiled variant: the default
    } else if constexpr (kN == 16 && kExact && kS == 4) {
      launch<4, 64, 8, 4>(p, stream);
    } else {
      launch<kS, (kS == 1 ? 32 : kDefTB), 8, 4>(p, stream);
    }
  }
  static void run(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced) {
    const int S = choose(p, forced);
    if constexpr (kOk<4>) if (S == 4) return launch_variant<4>(p, stream);
    if constexpr (kOk<2>) if (S == 2) return launch_variant<2>(p, stream);
    if constexpr (kOk<1>) if (S == 1) return launch_variant<1>(p, stream);
    throw std::invalid_argument("selective_scan_fwd_cuda (v6): no lane split fits dstate " + std::to_string(p.dstate));
  }
};

}  // namespace
}  // namespace mamba::kernels::cuda
