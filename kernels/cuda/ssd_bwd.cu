// Backward of the Mamba-2 SSD scan on tensor cores (bf16, headdim 64). Contract in
// mamba/kernels/cuda/ssd_cuda.h; the derivation and figures in kernels/cuda/NOTES.md ("ssd.cu").
//
// Per chunk of kQ = 64 steps (local index t, cumulative log decay cs_t, dt'_t, w_t =
// exp(cs_last - cs_t) dt'_t, L_ij = exp(cs_i - cs_j) for j <= i), with S_prev the state entering
// the chunk and G = dL/dS at its end:
//   y_i      = sum_j (C_i.B_j) L_ij dt_j x_j + exp(cs_i) S_prev C_i + D x_i
//   S_next   = exp(cs_last) S_prev + sum_j w_j x_j B_j^T
// so, with DX_ij = dy_i.x_j, W_ij = DX_ij L_ij dt_j, M_ij = (C_i.B_j) L_ij dt_j:
//   dC_i     = sum_{j<=i} W_ij B_j + exp(cs_i) (dy S_prev)_i
//   dB_j     = sum_{i>=j} W_ij C_i + w_j (x G)_j
//   dx_j     = sum_{i>=j} M_ij dy_i + w_j (B G^T)_j + D dy_j
//   dS_prev  = exp(cs_last) G + sum_i exp(cs_i) dy_i^T C_i                      (the next G)
//   d dt'_j (direct)  = sum_{i>=j} (C_i.B_j) L_ij DX_ij + exp(cs_last - cs_j) x_j.(B G^T)_j
//   d cs_i  = sum_{j<=i} M_ij DX_ij - sum_{k>=i} M_ki DX_ki + exp(cs_i) C_i.(dy S_prev)_i - u_i
//             (+ exp(cs_last) <G, S_prev> + sum_j u_j at i = last),  u_j = w_j x_j.(B G^T)_j
//   d(dt'_t A) = sum_{i>=t} d cs_i;  d dt'_t = direct + A d(dt'_t A);  dA += dt'_t d(dt'_t A)
// Warp w owns rows 16w..16w+15 of every Q x * product (as i for dC, as j for dB and dx) and
// state rows p = 16w..16w+15 of G; the 16 x 16 blocks of C B^T and dy x^T are computed in both
// orientations (i-rows for dC, j-rows for dB / dx), which balances the warps.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "device_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/ssd_cuda.h"
#include "ssd_common.cuh"

namespace mamba::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;

namespace tcb {

constexpr int kQ = 64, kP = 64, kThreads = 128;

template <int kN>
struct Smem {
  static constexpr int kNS = kN + 8, kXS = kP + 8;
  bf16 C[kQ][kNS];
  bf16 B[kQ][kNS];
  bf16 X[kQ][kXS];
  bf16 dY[kQ][kXS];
  bf16 dYlo[kQ][kXS];  // with z: the gated dy's rounding remainder, dy - bf16(dy), as bf16 (hi + lo ~ f32)
  bf16 Sp[kP][kNS];  // the state entering the chunk
  bf16 G[kP][kNS];   // dL/dS at the end of the chunk
  float cs[kQ], dt[kQ], w[kQ], ecs[kQ], raw[kQ], dcs[kQ], ddir[kQ];
  float red[4];
};

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

using sm::store_rows_bf16;

// dt', cs, w, exp(cs) and the raw dt of chunk rows [t0, t0 + qn) into shared memory (warp 0).
template <int kN>
__device__ __forceinline__ void chunk_dt(Smem<kN>& s, const bf16* dtb, int64_t dt_st, int64_t t0, int qn, float A,
                                         float bias, bool softplus, int lane) {
  float d[2], r[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int t = 2 * lane + k;
    d[k] = 0.f;
    r[k] = 0.f;
    if (t < qn) {
      r[k] = __bfloat162float(dtb[(t0 + t) * dt_st]) + bias;
      d[k] = softplus ? dev::softplus(r[k]) : r[k];
    }
  }
  float cs[2], last;
  sm::chunk_cumsum(d[0] * A, d[1] * A, lane, cs[0], cs[1], last);
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int t = 2 * lane + k;
    s.cs[t] = cs[k];
    s.dt[t] = d[k];
    s.raw[t] = r[k];
    s.w[t] = __expf(last - cs[k]) * d[k];
    s.ecs[t] = __expf(cs[k]);
  }
}

struct Args {
  SsdBwdCudaParams<bf16> p;
  bf16* states;    // [bh][nchunks][kP][kN]
  float* partial;  // [bh][3]: dA, dD, ddt_bias
  int64_t nchunks;
  bool prefetch;  // pass 1 double-buffered (env MAMBA_SSD_BWD_PREFETCH=0: off, for comparison)
};

template <int kN>
__global__ void __launch_bounds__(kThreads, 2) ssd_bwd_tc_kernel(const Args args) {
  extern __shared__ __align__(16) unsigned char tcb_smem[];
  Smem<kN>& s = *reinterpret_cast<Smem<kN>*>(tcb_smem);
  const SsdBwdCudaParams<bf16>& P = args.p;
  const SsdCudaParams<bf16>& f = P.fwd;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int64_t bh = blockIdx.x, b = bh / f.nheads, h = bh % f.nheads, grp = h / (f.nheads / f.ngroups);
  const int64_t L = f.seqlen;
  const bf16* xb = f.x + b * f.x_sb + h * f.x_sh;
  const bf16* dtb = f.dt + b * f.dt_sb + h * f.dt_sh;
  const bf16* Bb = f.B + b * f.B_sb + grp * f.B_sg;
  const bf16* Cb = f.C + b * f.C_sb + grp * f.C_sg;
  const bf16* zb = f.z ? f.z + b * f.z_sb + h * f.z_sh : nullptr;
  const bf16* dob = P.dout + b * P.dout_sb + h * P.dout_sh;
  bf16* dxb = P.dx + b * P.dx_sb + h * P.dx_sh;
  bf16* ddtb = P.ddt + b * P.ddt_sb + h * P.ddt_sh;
  bf16* dzb = P.dz ? P.dz + b * P.dz_sb + h * P.dz_sh : nullptr;
  float* dBb = P.dB + (b * L * f.ngroups + grp) * kN;  // + t * ngroups * kN
  float* dCb = P.dC + (b * L * f.ngroups + grp) * kN;
  const int64_t bc_st = f.ngroups * kN;
  bf16* states = args.states + bh * args.nchunks * kP * kN;
  const float A = f.A[h], Dh = f.D ? f.D[h] : 0.f, bias = f.dt_bias ? f.dt_bias[h] : 0.f;
  constexpr int kNT = kN / 8, kPcsN = kN / 8, kPcsX = kP / 8;
  const int row0 = warp * 16 + g;
  const int lr = lane & 7, lm = lane >> 3;
  const int a_m = lr + 8 * (lm & 1), a_k = 8 * (lm >> 1);
  const int bn_n = lr + 8 * (lm >> 1), bn_k = 8 * (lm & 1);
  const int bt_k = lr + 8 * (lm & 1), bt_n = 8 * (lm >> 1);
  const int at_k = lr + 8 * (lm >> 1), at_m = 8 * (lm & 1);

  // ---- pass 1: forward over the chunks, storing each chunk's entering state (bf16)
  {
    float st[kNT][4];
    const float* S0 = f.initial_state ? f.initial_state + bh * kP * kN : nullptr;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n = nt * 8 + 2 * q;
      st[nt][0] = S0 ? S0[row0 * kN + n] : 0.f;
      st[nt][1] = S0 ? S0[row0 * kN + n + 1] : 0.f;
      st[nt][2] = S0 ? S0[(row0 + 8) * kN + n] : 0.f;
      st[nt][3] = S0 ? S0[(row0 + 8) * kN + n + 1] : 0.f;
    }
    // Pass 1 only needs B and x: with args.prefetch, chunk c + 1's rows go into C / dY (unused
    // until pass 2) while chunk c is computed, so the loads are off the critical path.
    const bool pf = args.prefetch;
    auto load_p1 = [&](int64_t cc, int buf) {
      const int64_t tt = cc * kQ;
      bf16 (*const dB_)[Smem<kN>::kNS] = buf ? s.C : s.B;
      bf16 (*const dX_)[Smem<kN>::kXS] = buf ? s.dY : s.X;
      for (int i = tid; i < kQ * kPcsN; i += kThreads) {
        const int r = i / kPcsN, pc = (i % kPcsN) * 8;
        sm::cp_async16(&dB_[r][pc], Bb + (tt + r) * f.B_st + pc, true);
      }
      for (int i = tid; i < kQ * kPcsX; i += kThreads) {
        const int r = i / kPcsX, pc = (i % kPcsX) * 8;
        sm::cp_async16(&dX_[r][pc], xb + (tt + r) * f.x_st + pc, true);
      }
      sm::cp_async_commit();
    };
    if (pf && args.nchunks > 1) load_p1(0, 0);
    for (int64_t c = 0; c < args.nchunks; ++c) {
      bf16* out = states + c * kP * kN;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int n = nt * 8 + 2 * q;
        *reinterpret_cast<uint32_t*>(out + row0 * kN + n) = sm::pack_bf16(st[nt][0], st[nt][1]);
        *reinterpret_cast<uint32_t*>(out + (row0 + 8) * kN + n) = sm::pack_bf16(st[nt][2], st[nt][3]);
      }
      if (c + 1 == args.nchunks) break;
      const int64_t t0 = c * kQ;  // a full chunk (only the last one can be partial)
      const int buf = pf ? static_cast<int>(c & 1) : 0;
      if (!pf) load_p1(c, 0);
      else if (c + 2 < args.nchunks) load_p1(c + 1, buf ^ 1);  // the other buffer: free since chunk c - 1
      if (warp == 0) chunk_dt<kN>(s, dtb, f.dt_st, t0, kQ, A, bias, f.dt_softplus, lane);
      if (pf && c + 2 < args.nchunks) sm::cp_async_wait<1>();  // chunk c's group; c + 1's stays in flight
      else sm::cp_async_wait_all();
      __syncthreads();
      bf16 (*const sB)[Smem<kN>::kNS] = buf ? s.C : s.B;
      bf16 (*const sX)[Smem<kN>::kXS] = buf ? s.dY : s.X;
      const float decay = __expf(s.cs[kQ - 1]);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= decay;
#pragma unroll
      for (int ks = 0; ks < kQ / 16; ++ks) {
        uint32_t af[4];
        sm::ldsm_x4_t(af, &sX[ks * 16 + at_k][warp * 16 + at_m]);
        const int k0 = ks * 16 + 2 * q;
        af[0] = sm::scale_bf16x2(af[0], s.w[k0], s.w[k0 + 1]);
        af[1] = sm::scale_bf16x2(af[1], s.w[k0], s.w[k0 + 1]);
        af[2] = sm::scale_bf16x2(af[2], s.w[k0 + 8], s.w[k0 + 9]);
        af[3] = sm::scale_bf16x2(af[3], s.w[k0 + 8], s.w[k0 + 9]);
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &sB[ks * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(st[2 * nt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(st[2 * nt2 + 1], af, bfr[2], bfr[3]);
        }
      }
      __syncthreads();
    }
  }
  __threadfence();  // this block's state stores are visible to its own cp.async reads below
  __syncthreads();

  // ---- pass 2: the chunks backwards
  float gst[kNT][4];
  {
    const float* dF = P.dfinal_state ? P.dfinal_state + bh * kP * kN : nullptr;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n = nt * 8 + 2 * q;
      gst[nt][0] = dF ? dF[row0 * kN + n] : 0.f;
      gst[nt][1] = dF ? dF[row0 * kN + n + 1] : 0.f;
      gst[nt][2] = dF ? dF[(row0 + 8) * kN + n] : 0.f;
      gst[nt][3] = dF ? dF[(row0 + 8) * kN + n + 1] : 0.f;
    }
  }
  store_rows_bf16<kN>(s.G, gst, row0, q);
  float dA_acc = 0.f, dbias_acc = 0.f, dD_acc = 0.f;

  for (int64_t c = args.nchunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kQ;
    const int qn = static_cast<int>(L - t0 < kQ ? L - t0 : kQ);
    for (int i = tid; i < kQ * kPcsN; i += kThreads) {
      const int r = i / kPcsN, pc = (i % kPcsN) * 8;
      const bool ok = r < qn;
      sm::cp_async16(&s.C[r][pc], ok ? Cb + (t0 + r) * f.C_st + pc : Cb, ok);
      sm::cp_async16(&s.B[r][pc], ok ? Bb + (t0 + r) * f.B_st + pc : Bb, ok);
      sm::cp_async16(&s.Sp[r][pc], states + c * kP * kN + r * kN + pc, true);  // kP == kQ rows
    }
    for (int i = tid; i < kQ * kPcsX; i += kThreads) {
      const int r = i / kPcsX, pc = (i % kPcsX) * 8;
      const bool ok = r < qn;
      sm::cp_async16(&s.X[r][pc], ok ? xb + (t0 + r) * f.x_st + pc : xb, ok);
      sm::cp_async16(&s.dY[r][pc], ok ? dob + (t0 + r) * P.dout_st + pc : dob, ok);
    }
    sm::cp_async_commit();
    if (warp == 0) chunk_dt<kN>(s, dtb, f.dt_st, t0, qn, A, bias, f.dt_softplus, lane);
    sm::cp_async_wait_all();
    __syncthreads();
    const float cs_i0 = s.cs[row0], cs_i1 = s.cs[row0 + 8];
    const float dt_r0 = s.dt[row0], dt_r1 = s.dt[row0 + 8];
    const float cs_last = s.cs[kQ - 1], e_last = __expf(cs_last);

    float dcs0 = 0.f, dcs1 = 0.f, dd0 = 0.f, dd1 = 0.f, usum = 0.f;
    // ---- z gate: recompute y_pre for this warp's rows, dy = dout silu(z), dz
    if (zb) {
      float yacc[8][4];
#pragma unroll
      for (int pt = 0; pt < 8; ++pt)
#pragma unroll
        for (int e = 0; e < 4; ++e) yacc[pt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t af[4];
        sm::ldsm_x4(af, &s.C[warp * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
        for (int pt2 = 0; pt2 < 4; ++pt2) {
          uint32_t bfr[4];
          sm::ldsm_x4(bfr, &s.Sp[pt2 * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(yacc[2 * pt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(yacc[2 * pt2 + 1], af, bfr[2], bfr[3]);
        }
      }
      const float e0 = s.ecs[row0], e1 = s.ecs[row0 + 8];
#pragma unroll
      for (int pt = 0; pt < 8; ++pt) {
        yacc[pt][0] *= e0; yacc[pt][1] *= e0; yacc[pt][2] *= e1; yacc[pt][3] *= e1;
      }
      // d cs_i's initial-state term exp(cs_i) C_i.(dy S_prev)_i = dy_i . (exp(cs_i) S_prev C_i), the
      // state part of y_pre just computed, dotted here with the gated dy in f32. The i-side mma
      // (dy S_prev, for dC) sees dy rounded to bf16 (hi only), while the intra-chunk terms of d cs use
      // hi + lo; at short lengths the two parts cancel (l 2: -3.60 + 3.08 = -0.52 in dA), so the
      // mismatch came out as 1.7e-2 of dA (NOTES.md, branch mends).
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = row0 + 8 * half;
        if (i < qn) {
          const bf16* zrow = zb + (t0 + i) * f.z_st;
          float a = 0.f;
#pragma unroll
          for (int pt = 0; pt < 8; ++pt) {
            const int pp = pt * 8 + 2 * q;
            const float2 zv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(zrow + pp));
            const float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.dY[i][pp]));
            a += dv.x * zv.x * sigmoid(zv.x) * yacc[pt][2 * half] + dv.y * zv.y * sigmoid(zv.y) * yacc[pt][2 * half + 1];
          }
          if (half) dcs1 += a; else dcs0 += a;
        }
      }
      for (int jb = 0; jb <= warp; ++jb) {
        float cb[2][4] = {};
#pragma unroll
        for (int ks = 0; ks < kN / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &s.C[warp * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &s.B[jb * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(cb[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(cb[1], af, bfr[2], bfr[3]);
        }
        uint32_t pa[4];
#pragma unroll
        for (int jt = 0; jt < 2; ++jt) {
          const int j = jb * 16 + jt * 8 + 2 * q;
          const float cj0 = s.cs[j], cj1 = s.cs[j + 1], dj0 = s.dt[j], dj1 = s.dt[j + 1];
          pa[2 * jt] = sm::pack_bf16(j <= row0 ? cb[jt][0] * __expf(cs_i0 - cj0) * dj0 : 0.f,
                                     j + 1 <= row0 ? cb[jt][1] * __expf(cs_i0 - cj1) * dj1 : 0.f);
          pa[2 * jt + 1] = sm::pack_bf16(j <= row0 + 8 ? cb[jt][2] * __expf(cs_i1 - cj0) * dj0 : 0.f,
                                         j + 1 <= row0 + 8 ? cb[jt][3] * __expf(cs_i1 - cj1) * dj1 : 0.f);
        }
#pragma unroll
        for (int pt2 = 0; pt2 < 4; ++pt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.X[jb * 16 + bt_k][pt2 * 16 + bt_n]);
          sm::mma_bf16(yacc[2 * pt2], pa, bfr[0], bfr[1]);
          sm::mma_bf16(yacc[2 * pt2 + 1], pa, bfr[2], bfr[3]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = row0 + 8 * half;
        if (i < qn) {
          const bf16* zrow = zb + (t0 + i) * f.z_st;
          bf16* dzrow = dzb + (t0 + i) * P.dz_st;
#pragma unroll
          for (int pt = 0; pt < 8; ++pt) {
            const int pp = pt * 8 + 2 * q;
            const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.X[i][pp]));
            const float2 zv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(zrow + pp));
            const float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.dY[i][pp]));
            const float y0 = yacc[pt][2 * half] + Dh * xv.x, y1 = yacc[pt][2 * half + 1] + Dh * xv.y;
            const float s0 = sigmoid(zv.x), s1 = sigmoid(zv.y);
            const float dz0 = dv.x * y0 * s0 * (1.f + zv.x * (1.f - s0));
            const float dz1 = dv.y * y1 * s1 * (1.f + zv.y * (1.f - s1));
            *reinterpret_cast<__nv_bfloat162*>(dzrow + pp) = __floats2bfloat162_rn(dz0, dz1);
            // The gated dy as hi + lo bf16 pairs: the CPU keeps it in f32, and a single bf16 rounding
            // (2^-9 relative) is amplified by cancellation in the dy.x sums (dD, ddt, dB, dC at
            // short lengths: 1.6-1.9e-2 at l 1, NOTES.md).
            const float g0 = dv.x * zv.x * s0, g1 = dv.y * zv.y * s1;
            const __nv_bfloat162 hi = __floats2bfloat162_rn(g0, g1);
            const float2 hf = __bfloat1622float2(hi);
            *reinterpret_cast<__nv_bfloat162*>(&s.dY[i][pp]) = hi;
            *reinterpret_cast<uint32_t*>(&s.dYlo[i][pp]) = sm::pack_bf16(g0 - hf.x, g1 - hf.y);
          }
        } else {  // rows past the end: dy is zero-filled, so is its remainder
#pragma unroll
          for (int pt = 0; pt < 8; ++pt) *reinterpret_cast<uint32_t*>(&s.dYlo[i][pt * 8 + 2 * q]) = 0u;
        }
      }
      __syncthreads();  // dy (gated) visible to every warp
    }

    // ---- i-side: dC_i = exp(cs_i) (dy S_prev)_i + sum_{j<=i} W_ij B_j
    {
      float acc[kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kP / 16; ++ks) {
        uint32_t af[4];
        sm::ldsm_x4(af, &s.dY[warp * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.Sp[ks * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(acc[2 * nt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(acc[2 * nt2 + 1], af, bfr[2], bfr[3]);
        }
      }
      {
        const float e0 = s.ecs[row0], e1 = s.ecs[row0 + 8];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const int n = nt * 8 + 2 * q;
          acc[nt][0] *= e0; acc[nt][1] *= e0; acc[nt][2] *= e1; acc[nt][3] *= e1;
          const float2 c0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.C[row0][n]));
          const float2 c1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.C[row0 + 8][n]));
          if (!zb) {  // with z: the f32 form above
            dcs0 += c0.x * acc[nt][0] + c0.y * acc[nt][1];
            dcs1 += c1.x * acc[nt][2] + c1.y * acc[nt][3];
          }
        }
      }
      for (int jb = 0; jb <= warp; ++jb) {
        float cb[2][4] = {}, dx_[2][4] = {};
#pragma unroll
        for (int ks = 0; ks < kN / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &s.C[warp * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &s.B[jb * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(cb[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(cb[1], af, bfr[2], bfr[3]);
        }
#pragma unroll
        for (int ks = 0; ks < kP / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &s.dY[warp * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &s.X[jb * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(dx_[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(dx_[1], af, bfr[2], bfr[3]);
          if (zb) {  // + dy_lo . x
            sm::ldsm_x4(af, &s.dYlo[warp * 16 + a_m][ks * 16 + a_k]);
            sm::mma_bf16(dx_[0], af, bfr[0], bfr[1]);
            sm::mma_bf16(dx_[1], af, bfr[2], bfr[3]);
          }
        }
        uint32_t pa[4];
#pragma unroll
        for (int jt = 0; jt < 2; ++jt) {
          float wv[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = row0 + 8 * (e >> 1), j = jb * 16 + jt * 8 + 2 * q + (e & 1);
            const float ld = j <= i ? __expf((e >> 1 ? cs_i1 : cs_i0) - s.cs[j]) * s.dt[j] : 0.f;
            wv[e] = dx_[jt][e] * ld;
            const float qm = cb[jt][e] * wv[e];
            if (e >> 1) dcs1 += qm; else dcs0 += qm;
          }
          pa[2 * jt] = sm::pack_bf16(wv[0], wv[1]);
          pa[2 * jt + 1] = sm::pack_bf16(wv[2], wv[3]);
        }
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.B[jb * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(acc[2 * nt2], pa, bfr[0], bfr[1]);
          sm::mma_bf16(acc[2 * nt2 + 1], pa, bfr[2], bfr[3]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = row0 + 8 * half;
        if (i < qn) {
          float* out = dCb + (t0 + i) * bc_st;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const int n = nt * 8 + 2 * q;
            atomicAdd(reinterpret_cast<float2*>(out + n), make_float2(acc[nt][2 * half], acc[nt][2 * half + 1]));
          }
        }
      }
    }
    // ---- j-side: dB_j = w_j (x G)_j + sum_{i>=j} W_ij C_i;  dx_j = sum_{i>=j} M_ij dy_i + ...
    {
      float acc[kNT][4], dxa[8][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
      for (int pt = 0; pt < 8; ++pt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dxa[pt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kP / 16; ++ks) {
        uint32_t af[4];
        sm::ldsm_x4(af, &s.X[warp * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.G[ks * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(acc[2 * nt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(acc[2 * nt2 + 1], af, bfr[2], bfr[3]);
        }
      }
      {
        const float w0 = s.w[row0], w1 = s.w[row0 + 8];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          acc[nt][0] *= w0; acc[nt][1] *= w0; acc[nt][2] *= w1; acc[nt][3] *= w1;
        }
      }
      for (int ib = warp; ib < kQ / 16; ++ib) {
        float bc[2][4] = {}, xd[2][4] = {};
#pragma unroll
        for (int ks = 0; ks < kN / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &s.B[warp * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &s.C[ib * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(bc[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(bc[1], af, bfr[2], bfr[3]);
        }
#pragma unroll
        for (int ks = 0; ks < kP / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &s.X[warp * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &s.dY[ib * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(xd[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(xd[1], af, bfr[2], bfr[3]);
          if (zb) {  // + x . dy_lo
            sm::ldsm_x4(bfr, &s.dYlo[ib * 16 + bn_n][ks * 16 + bn_k]);
            sm::mma_bf16(xd[0], af, bfr[0], bfr[1]);
            sm::mma_bf16(xd[1], af, bfr[2], bfr[3]);
          }
        }
        uint32_t pw[4], pm[4], pml[4];
#pragma unroll
        for (int it = 0; it < 2; ++it) {
          float wt[4], mt[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = row0 + 8 * (e >> 1), i = ib * 16 + it * 8 + 2 * q + (e & 1);
            const float lj = i >= j ? __expf(s.cs[i] - (e >> 1 ? cs_i1 : cs_i0)) : 0.f;
            const float prod = bc[it][e] * lj * xd[it][e];
            const float dtj = e >> 1 ? dt_r1 : dt_r0;
            if (e >> 1) { dd1 += prod; dcs1 -= prod * dtj; } else { dd0 += prod; dcs0 -= prod * dtj; }
            wt[e] = xd[it][e] * lj * dtj;
            mt[e] = bc[it][e] * lj * dtj;
          }
          pw[2 * it] = sm::pack_bf16(wt[0], wt[1]);
          pw[2 * it + 1] = sm::pack_bf16(wt[2], wt[3]);
          pm[2 * it] = sm::pack_bf16(mt[0], mt[1]);
          pm[2 * it + 1] = sm::pack_bf16(mt[2], mt[3]);
          // The diagonal block's remainder mt - bf16(mt): M_jj dy_j and D dy_j are parallel, so at
          // short lengths (l 1: dx_0 = (M_00 + D) dy_0) a bf16 M_jj is amplified by cancellation.
          const float2 h0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pm[2 * it]));
          const float2 h1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pm[2 * it + 1]));
          pml[2 * it] = sm::pack_bf16(mt[0] - h0.x, mt[1] - h0.y);
          pml[2 * it + 1] = sm::pack_bf16(mt[2] - h1.x, mt[3] - h1.y);
        }
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.C[ib * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(acc[2 * nt2], pw, bfr[0], bfr[1]);
          sm::mma_bf16(acc[2 * nt2 + 1], pw, bfr[2], bfr[3]);
        }
#pragma unroll
        for (int pt2 = 0; pt2 < 4; ++pt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &s.dY[ib * 16 + bt_k][pt2 * 16 + bt_n]);
          sm::mma_bf16(dxa[2 * pt2], pm, bfr[0], bfr[1]);
          sm::mma_bf16(dxa[2 * pt2 + 1], pm, bfr[2], bfr[3]);
          if (ib == warp) {
            sm::mma_bf16(dxa[2 * pt2], pml, bfr[0], bfr[1]);
            sm::mma_bf16(dxa[2 * pt2 + 1], pml, bfr[2], bfr[3]);
            if (zb) {  // and the gated dy's remainder: M_jj (dy_lo) is as large as the error removed above
              sm::ldsm_x4_t(bfr, &s.dYlo[ib * 16 + bt_k][pt2 * 16 + bt_n]);
              sm::mma_bf16(dxa[2 * pt2], pm, bfr[0], bfr[1]);
              sm::mma_bf16(dxa[2 * pt2 + 1], pm, bfr[2], bfr[3]);
            }
          }
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = row0 + 8 * half;
        if (j < qn) {
          float* out = dBb + (t0 + j) * bc_st;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const int n = nt * 8 + 2 * q;
            atomicAdd(reinterpret_cast<float2*>(out + n), make_float2(acc[nt][2 * half], acc[nt][2 * half + 1]));
          }
        }
      }
      // (B G^T)_j, reusing acc's registers as 8 p-tiles
      float bg[8][4];
#pragma unroll
      for (int pt = 0; pt < 8; ++pt)
#pragma unroll
        for (int e = 0; e < 4; ++e) bg[pt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t af[4];
        sm::ldsm_x4(af, &s.B[warp * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
        for (int pt2 = 0; pt2 < 4; ++pt2) {
          uint32_t bfr[4];
          sm::ldsm_x4(bfr, &s.G[pt2 * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(bg[2 * pt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(bg[2 * pt2 + 1], af, bfr[2], bfr[3]);
        }
      }
      const float w0 = s.w[row0], w1 = s.w[row0 + 8];
      float r0 = 0.f, r1 = 0.f;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = row0 + 8 * half;
        const float wj = half ? w1 : w0;
        bf16* dxrow = dxb + (t0 + j) * P.dx_st;
#pragma unroll
        for (int pt = 0; pt < 8; ++pt) {
          const int pp = pt * 8 + 2 * q;
          const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.X[j][pp]));
          float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.dY[j][pp]));
          if (zb) {
            const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.dYlo[j][pp]));
            dv.x += lo.x;
            dv.y += lo.y;
          }
          const float b0 = bg[pt][2 * half], b1 = bg[pt][2 * half + 1];
          const float rr = xv.x * b0 + xv.y * b1;
          if (half) r1 += rr; else r0 += rr;
          dD_acc += dv.x * xv.x + dv.y * xv.y;
          if (j < qn) {
            const float v0 = dxa[pt][2 * half] + wj * b0 + Dh * dv.x;
            const float v1 = dxa[pt][2 * half + 1] + wj * b1 + Dh * dv.y;
            *reinterpret_cast<__nv_bfloat162*>(dxrow + pp) = __floats2bfloat162_rn(v0, v1);
          }
        }
      }
      // r_j = x_j.(B G^T)_j: direct dt' term exp(cs_last - cs_j) r_j, u_j = w_j r_j
      dd0 += __expf(cs_last - cs_i0) * r0;
      dd1 += __expf(cs_last - cs_i1) * r1;
      dcs0 -= w0 * r0;
      dcs1 -= w1 * r1;
      usum = w0 * r0 + w1 * r1;
    }
    // ---- per-row sums over the quad; <G, S_prev>
    {
      float gsp = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int n = nt * 8 + 2 * q;
        const float2 s0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.Sp[row0][n]));
        const float2 s1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&s.Sp[row0 + 8][n]));
        gsp += gst[nt][0] * s0.x + gst[nt][1] * s0.y + gst[nt][2] * s1.x + gst[nt][3] * s1.y;
      }
      float tot = e_last * gsp + usum;
#pragma unroll
      for (int o = 1; o < 4; o <<= 1) {
        dcs0 += __shfl_xor_sync(0xffffffffu, dcs0, o);
        dcs1 += __shfl_xor_sync(0xffffffffu, dcs1, o);
        dd0 += __shfl_xor_sync(0xffffffffu, dd0, o);
        dd1 += __shfl_xor_sync(0xffffffffu, dd1, o);
      }
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) tot += __shfl_xor_sync(0xffffffffu, tot, o);
      if (q == 0) {
        s.dcs[row0] = dcs0;
        s.dcs[row0 + 8] = dcs1;
        s.ddir[row0] = dd0;
        s.ddir[row0 + 8] = dd1;
      }
      if (lane == 0) s.red[warp] = tot;
    }
    // ---- G = exp(cs_last) G + sum_i exp(cs_i) dy_i^T C_i
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) gst[nt][e] *= e_last;
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
      uint32_t af[4];
      sm::ldsm_x4_t(af, &s.dY[ks * 16 + at_k][warp * 16 + at_m]);
      const int k0 = ks * 16 + 2 * q;
      af[0] = sm::scale_bf16x2(af[0], s.ecs[k0], s.ecs[k0 + 1]);
      af[1] = sm::scale_bf16x2(af[1], s.ecs[k0], s.ecs[k0 + 1]);
      af[2] = sm::scale_bf16x2(af[2], s.ecs[k0 + 8], s.ecs[k0 + 9]);
      af[3] = sm::scale_bf16x2(af[3], s.ecs[k0 + 8], s.ecs[k0 + 9]);
#pragma unroll
      for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
        uint32_t bfr[4];
        sm::ldsm_x4_t(bfr, &s.C[ks * 16 + bt_k][nt2 * 16 + bt_n]);
        sm::mma_bf16(gst[2 * nt2], af, bfr[0], bfr[1]);
        sm::mma_bf16(gst[2 * nt2 + 1], af, bfr[2], bfr[3]);
      }
    }
    __syncthreads();  // every warp is done with this chunk's G, dcs / ddir / red are complete
    if (warp == 0) {  // d(dt' A)_t = sum_{i>=t} d cs_i; ddt, dA, ddt_bias
      const float last_extra = s.red[0] + s.red[1] + s.red[2] + s.red[3];
      const float v0 = s.dcs[2 * lane], v1 = s.dcs[2 * lane + 1] + (lane == 31 ? last_extra : 0.f);
      float suf = v0 + v1;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float v = __shfl_down_sync(0xffffffffu, suf, o);
        if (lane + o < 32) suf += v;
      }
      const float dda[2] = {suf, suf - v0};
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int t = 2 * lane + k;
        if (t < qn) {
          const float ddtp = s.ddir[t] + A * dda[k];
          dA_acc += s.dt[t] * dda[k];
          const float ddt = f.dt_softplus ? ddtp * sigmoid(s.raw[t]) : ddtp;
          dbias_acc += ddt;
          ddtb[(t0 + t) * P.ddt_st] = __float2bfloat16_rn(ddt);
        }
      }
    }
    store_rows_bf16<kN>(s.G, gst, row0, q);
  }
  if (P.dinitial_state) {
    float* out = P.dinitial_state + bh * kP * kN;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n = nt * 8 + 2 * q;
      out[row0 * kN + n] = gst[nt][0];
      out[row0 * kN + n + 1] = gst[nt][1];
      out[(row0 + 8) * kN + n] = gst[nt][2];
      out[(row0 + 8) * kN + n + 1] = gst[nt][3];
    }
  }
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    dA_acc += __shfl_xor_sync(0xffffffffu, dA_acc, o);
    dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, o);
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, o);
  }
  __syncthreads();
  if (lane == 0) s.red[warp] = dD_acc;
  __syncthreads();
  if (tid == 0) {
    args.partial[bh * 3 + 0] = dA_acc;
    args.partial[bh * 3 + 1] = s.red[0] + s.red[1] + s.red[2] + s.red[3];
    args.partial[bh * 3 + 2] = dbias_acc;
  }
}

// dA, dD, ddt_bias[h] = the per-(b, h) partials summed over b in order.
__global__ void ssd_bwd_head_sums(const float* __restrict__ partial, int64_t batch, int64_t nheads, float* dA, float* dD,
                                  float* dbias) {
  const int64_t h = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (h >= nheads) return;
  float a = 0.f, d = 0.f, bb = 0.f;
  for (int64_t b = 0; b < batch; ++b) {
    const float* pp = partial + (b * nheads + h) * 3;
    a += pp[0];
    d += pp[1];
    bb += pp[2];
  }
  if (dA) dA[h] = a;
  if (dD) dD[h] = d;
  if (dbias) dbias[h] = bb;
}

size_t states_bytes(int64_t bh, int64_t nchunks, int64_t n) {
  return ((size_t(bh) * nchunks * kP * n * sizeof(bf16)) + 255) / 256 * 256;
}

}  // namespace tcb

bool aligned16_rows(const void* base, std::initializer_list<int64_t> strides) {
  if (!dev::aligned16(base)) return false;
  for (int64_t s : strides)
    if ((s * 2) % 16 != 0) return false;
  return true;
}

template <class T>
void check_bwd(const SsdBwdCudaParams<T>& p) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("ssd_chunk_scan_bwd_cuda: " + m); };
  const SsdCudaParams<T>& f = p.fwd;
  if (!std::is_same_v<T, bf16>) bad("only bf16 activations are supported (tensor-core kernel)");
  if (f.batch < 1 || f.nheads < 1) bad("batch and nheads must be >= 1");
  if (f.batch * f.nheads > 2147483647LL) bad("batch * nheads must be <= 2^31 - 1");
  if (f.seqlen < 1) bad("seqlen must be >= 1 (got " + std::to_string(f.seqlen) + ")");
  if (f.ngroups < 1 || f.nheads % f.ngroups != 0) bad("nheads must be a multiple of ngroups");
  if (f.headdim != 64) bad("headdim must be 64 (got " + std::to_string(f.headdim) + ")");
  if (f.dstate != 16 && f.dstate != 32 && f.dstate != 64 && f.dstate != 128)
    bad("dstate must be 16, 32, 64 or 128 (got " + std::to_string(f.dstate) + ")");
  if (!f.A || !f.x || !f.dt || !f.B || !f.C) bad("x, dt, A, B and C are required");
  if (!p.dout || !p.dx || !p.ddt || !p.dB || !p.dC || !p.dA || !p.dD || !p.ddt_bias)
    bad("dout, dx, ddt, dB, dC, dA, dD and ddt_bias are required");
  if (f.z && !p.dz) bad("dz is required when z is given");
  if (!aligned16_rows(f.x, {f.x_sb, f.x_st, f.x_sh}) || !aligned16_rows(f.B, {f.B_sb, f.B_st, f.B_sg}) ||
      !aligned16_rows(f.C, {f.C_sb, f.C_st, f.C_sg}) || !aligned16_rows(p.dout, {p.dout_sb, p.dout_st, p.dout_sh}) ||
      !aligned16_rows(p.dx, {p.dx_sb, p.dx_st, p.dx_sh}) ||
      (f.z && (!aligned16_rows(f.z, {f.z_sb, f.z_st, f.z_sh}) || !aligned16_rows(p.dz, {p.dz_sb, p.dz_st, p.dz_sh}))))
    bad("x, B, C, z, dout, dx, dz rows must start on 16-byte boundaries (strides multiples of 8 elements)");
  if (!dev::aligned16(p.dB) || !dev::aligned16(p.dC)) bad("dB and dC must be 16-byte aligned");
  if (!p.workspace || p.workspace_bytes < ssd_chunk_scan_bwd_cuda_workspace_bytes(p) ||
      (reinterpret_cast<uintptr_t>(p.workspace) & 255) != 0)
    bad("workspace must be 256-byte aligned and hold ssd_chunk_scan_bwd_cuda_workspace_bytes(p) bytes (" +
        std::to_string(ssd_chunk_scan_bwd_cuda_workspace_bytes(p)) + ")");
}

template <int kN>
void launch_bwd(const SsdBwdCudaParams<bf16>& p, cudaStream_t stream) {
  const SsdCudaParams<bf16>& f = p.fwd;
  const int64_t bh = f.batch * f.nheads, nchunks = (f.seqlen + tcb::kQ - 1) / tcb::kQ;
  tcb::Args a;
  a.p = p;
  a.nchunks = nchunks;
  const char* pe = std::getenv("MAMBA_SSD_BWD_PREFETCH");
  a.prefetch = !(pe && pe[0] == '0');
  a.states = static_cast<bf16*>(p.workspace);
  a.partial = reinterpret_cast<float*>(static_cast<char*>(p.workspace) + tcb::states_bytes(bh, nchunks, kN));
  const size_t bc_bytes = size_t(f.batch) * f.seqlen * f.ngroups * kN * sizeof(float);
  MAMBA_CUDA_CHECK("ssd_chunk_scan_bwd_cuda", cudaMemsetAsync(p.dB, 0, bc_bytes, stream));
  MAMBA_CUDA_CHECK("ssd_chunk_scan_bwd_cuda", cudaMemsetAsync(p.dC, 0, bc_bytes, stream));
  const size_t smem = sizeof(tcb::Smem<kN>);
  auto kernel = tcb::ssd_bwd_tc_kernel<kN>;
  MAMBA_CUDA_CHECK("ssd_chunk_scan_bwd_cuda", cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                                   static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(bh), tcb::kThreads, smem, stream>>>(a);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_chunk_scan_bwd_cuda");
  tcb::ssd_bwd_head_sums<<<static_cast<unsigned>((f.nheads + 127) / 128), 128, 0, stream>>>(
      a.partial, f.batch, f.nheads, p.dA, p.dD, p.ddt_bias);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_chunk_scan_bwd_cuda (head sums)");
}

}  // namespace

template <class T>
size_t ssd_chunk_scan_bwd_cuda_workspace_bytes(const SsdBwdCudaParams<T>& p) {
  const int64_t bh = p.fwd.batch * p.fwd.nheads, nchunks = (p.fwd.seqlen + tcb::kQ - 1) / tcb::kQ;
  return tcb::states_bytes(bh, nchunks, p.fwd.dstate) + size_t(bh) * 3 * sizeof(float);
}

template <class T>
void ssd_chunk_scan_bwd_cuda(const SsdBwdCudaParams<T>& p, cudaStream_t stream) {
  check_bwd(p);
  if constexpr (std::is_same_v<T, bf16>) {
    switch (p.fwd.dstate) {
      case 16: return launch_bwd<16>(p, stream);
      case 32: return launch_bwd<32>(p, stream);
      case 64: return launch_bwd<64>(p, stream);
      default: return launch_bwd<128>(p, stream);
    }
  }
}

template size_t ssd_chunk_scan_bwd_cuda_workspace_bytes<float>(const SsdBwdCudaParams<float>&);
template size_t ssd_chunk_scan_bwd_cuda_workspace_bytes<bf16>(const SsdBwdCudaParams<bf16>&);
template void ssd_chunk_scan_bwd_cuda<float>(const SsdBwdCudaParams<float>&, cudaStream_t);
template void ssd_chunk_scan_bwd_cuda<bf16>(const SsdBwdCudaParams<bf16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
