// Mamba-2 SSD scan on the GPU: the sequential kernel (any shape, f32 and bf16) and the chunked
// tensor-core kernel (bf16, headdim 64). Contracts in mamba/kernels/cuda/ssd_cuda.h; design and
// figures in kernels/cuda/NOTES.md ("ssd.cu").
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
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
using dev::from_f32;
using dev::to_f32;

// ---- sequential kernel (v1) --------------------------------------------------------------------
//
// One block of 256 threads (8 warps) per (batch, head). Warp w owns the state rows
// p = w * kR + r (r < kR), lane l the states n = l + 32 k (k < kNL): S (P x N) lives in registers,
// kR * kNL floats per thread. The sequence goes in tiles of kTT steps: B, C, x (and z) rows of the
// tile are staged in shared memory as f32, dt' and a = exp(dt' A) once per step; y_t[p] is a warp
// sum over n (xor shuffles), written to a shared tile and stored row by row.
constexpr int kSeqThreads = 256;
constexpr int kTT = 16;

template <class T, int kR, int kNL>
__global__ void __launch_bounds__(kSeqThreads) ssd_seq_kernel(const SsdCudaParams<T> p) {
  extern __shared__ float seq_smem[];
  const int P = static_cast<int>(p.headdim), N = static_cast<int>(p.dstate);
  float* sB = seq_smem;             // [kTT][N]
  float* sC = sB + kTT * N;         // [kTT][N]
  float* sX = sC + kTT * N;         // [kTT][P]
  float* sY = sX + kTT * P;         // [kTT][P]
  float* sDt = sY + kTT * P;        // [kTT]
  float* sA = sDt + kTT;            // [kTT]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x, b = bh / p.nheads, h = bh % p.nheads, grp = h / (p.nheads / p.ngroups);
  const T* xb = p.x + b * p.x_sb + h * p.x_sh;
  const T* dtb = p.dt + b * p.dt_sb + h * p.dt_sh;
  const T* Bb = p.B + b * p.B_sb + grp * p.B_sg;
  const T* Cb = p.C + b * p.C_sb + grp * p.C_sg;
  const T* zb = p.z ? p.z + b * p.z_sb + h * p.z_sh : nullptr;
  T* yb = p.y + b * p.y_sb + h * p.y_sh;
  const float A = p.A[h], Dh = p.D ? p.D[h] : 0.f, bias = p.dt_bias ? p.dt_bias[h] : 0.f;
  const float* S0 = p.initial_state ? p.initial_state + bh * P * N : nullptr;

  float s[kR][kNL];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int k = 0; k < kNL; ++k) {
      const int row = warp * kR + r, n = lane + 32 * k;
      s[r][k] = (S0 && row < P && n < N) ? S0[row * N + n] : 0.f;
    }
  for (int64_t t0 = 0; t0 < p.seqlen; t0 += kTT) {
    const int qn = static_cast<int>(p.seqlen - t0 < kTT ? p.seqlen - t0 : kTT);
    for (int i = threadIdx.x; i < kTT * N; i += kSeqThreads) {
      const int t = i / N, n = i % N;
      sB[i] = t < qn ? to_f32(Bb[(t0 + t) * p.B_st + n]) : 0.f;
      sC[i] = t < qn ? to_f32(Cb[(t0 + t) * p.C_st + n]) : 0.f;
    }
    for (int i = threadIdx.x; i < kTT * P; i += kSeqThreads) {
      const int t = i / P, pp = i % P;
      sX[i] = t < qn ? to_f32(xb[(t0 + t) * p.x_st + pp]) : 0.f;
    }
    if (threadIdx.x < kTT) {
      const int t = threadIdx.x;
      float d = 0.f;
      if (t < qn) {
        const float r = to_f32(dtb[(t0 + t) * p.dt_st]) + bias;
        d = p.dt_softplus ? dev::softplus(r) : r;
      }
      sDt[t] = d;
      sA[t] = expf(d * A);
    }
    __syncthreads();
    for (int t = 0; t < qn; ++t) {
      const float a = sA[t], d = sDt[t];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int row = warp * kR + r;
        if (kR > 1 && row >= P) break;
        const float dx = row < P ? d * sX[t * P + row] : 0.f;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < kNL; ++k) {
          const int n = lane + 32 * k;
          if (n < N) {
            s[r][k] = fmaf(a, s[r][k], dx * sB[t * N + n]);
            acc = fmaf(s[r][k], sC[t * N + n], acc);
          }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0 && row < P) sY[t * P + row] = acc + Dh * sX[t * P + row];
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < qn * P; i += kSeqThreads) {
      const int t = i / P, pp = i % P;
      float v = sY[i];
      if (zb) v *= dev::silu(to_f32(zb[(t0 + t) * p.z_st + pp]));
      yb[(t0 + t) * p.y_st + pp] = from_f32<T>(v);
    }
    __syncthreads();
  }
  if (p.final_state) {
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int k = 0; k < kNL; ++k) {
        const int row = warp * kR + r, n = lane + 32 * k;
        if (row < P && n < N) p.final_state[bh * P * N + row * N + n] = s[r][k];
      }
  }
}

template <class T, int kR, int kNL>
void launch_seq(const SsdCudaParams<T>& p, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (2 * kTT * p.dstate + 2 * kTT * p.headdim + 2 * kTT);
  auto kernel = ssd_seq_kernel<T, kR, kNL>;
  MAMBA_CUDA_CHECK("ssd_chunk_scan_cuda", cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                               static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(p.batch * p.nheads), kSeqThreads, smem, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_chunk_scan_cuda (sequential)");
}

template <class T, int kR>
void dispatch_seq_n(const SsdCudaParams<T>& p, cudaStream_t stream) {
  if (p.dstate <= 32) return launch_seq<T, kR, 1>(p, stream);
  if (p.dstate <= 64) return launch_seq<T, kR, 2>(p, stream);
  if (p.dstate <= 128) return launch_seq<T, kR, 4>(p, stream);
  return launch_seq<T, kR, 8>(p, stream);
}

template <class T>
void dispatch_seq(const SsdCudaParams<T>& p, cudaStream_t stream) {
  if (p.headdim <= 8) return dispatch_seq_n<T, 1>(p, stream);
  if (p.headdim <= 16) return dispatch_seq_n<T, 2>(p, stream);
  if (p.headdim <= 32) return dispatch_seq_n<T, 4>(p, stream);
  if (p.headdim <= 64) return dispatch_seq_n<T, 8>(p, stream);
  return dispatch_seq_n<T, 16>(p, stream);
}

// ---- tensor-core kernel (v20) ------------------------------------------------------------------
//
// One block of 4 warps per (batch, head); chunks of kQ = 64 steps in order. Shared memory per
// chunk: C, B (kQ x N), x (kQ x 64) as bf16 rows padded by 16 bytes (ldmatrix without bank
// conflicts), the entering state S as bf16 [p][n], per step cs (the cumulative log decay inside
// the chunk), dt' and w = exp(cs_last - cs) dt' (double-buffered: the next chunk's are computed
// during this one), and a y tile (z comes in with the chunk's other loads by cp.async; the
// epilogue writes the gated y into the tile; the tile goes out after the state update in 16-byte
// pieces). Warp w owns state rows p = 16w..16w+15 (all N columns, f32 accumulators of mma.sync)
// and, in chunk c, output rows 16r..16r+15 of the chunk with r = (w + c) % 4 (the causal part's
// cost grows with r; rotating balances the warps). Per chunk:
//   Y  = diag(exp(cs)) C S^T                          (K = N)
//   Y += sum over 16-column blocks jb <= r of (C B_jb^T o decay o dt)_bf16 X_jb   (K = N, then 16)
//   y  = (Y + D x) [* silu(z)]
//   S  = exp(cs_last) S + (X o w)^T B                 (K = kQ)
// x, B, C, dt (and z) are read once, y written once. The warp with the least intra-chunk work in
// chunk c (r = 0) loads chunk c + 1's raw dt into registers after the chunk's barrier and computes
// its dt', cs, w after its intra part, so the chunk start does not wait on warp 0's dependent
// chain (load -> softplus -> scan -> exp). Removed variants (v2-v19, v21-v23; NOTES.md "ssd2" and
// "prune") are in the git history.
namespace tc {

constexpr int kQ = 64, kP = 64, kThreads = 128;

template <int kN>
struct Smem {
  static constexpr int kNS = kN + 8, kXS = kP + 8;
  bf16 C[kQ][kNS];
  bf16 B[kQ][kNS];
  bf16 X[kQ][kXS];
  bf16 S[kP][kNS];
  float cs[2][kQ], dt[2][kQ], w[2][kQ];
  bf16 Y[kQ][kXS];
};

// skip: timing only (wrong results), env MAMBA_SSD_SKIP: bit 0 leaves out the intra-chunk part, bit 1
// the C S^T part, bit 2 the state update; bit 3 (8) the y stores, bit 4 (16) the C / B loads, bit 5
// (32) the x (and z) loads, bit 6 (64) the dt loads (dt' = 0.1).
template <int kN>
__global__ void __launch_bounds__(kThreads, 3) ssd_fwd_tc_kernel(const SsdCudaParams<bf16> p, const int skip) {
  extern __shared__ __align__(16) unsigned char tc_smem[];
  using SmemT = Smem<kN>;
  SmemT& sm = *reinterpret_cast<SmemT*>(tc_smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int64_t b = blockIdx.x / p.nheads, h = blockIdx.x % p.nheads, bh = b * p.nheads + h,
                grp = h / (p.nheads / p.ngroups);
  const bf16* xb = p.x + b * p.x_sb + h * p.x_sh;
  const bf16* dtb = p.dt + b * p.dt_sb + h * p.dt_sh;
  const bf16* Bb = p.B + b * p.B_sb + grp * p.B_sg;
  const bf16* Cb = p.C + b * p.C_sb + grp * p.C_sg;
  const bf16* zb = p.z ? p.z + b * p.z_sb + h * p.z_sh : nullptr;
  bf16* yb = p.y + b * p.y_sb + h * p.y_sh;
  const float A = p.A[h], Dh = p.D ? p.D[h] : 0.f, bias = p.dt_bias ? p.dt_bias[h] : 0.f;
  constexpr int kNT = kN / 8;
  const int row0 = warp * 16 + g;  // this thread's state rows: row0, row0 + 8

  float st[kNT][4];
  {
    const float* S0 = p.initial_state ? p.initial_state + bh * kP * kN : nullptr;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n = nt * 8 + 2 * q;
      st[nt][0] = S0 ? S0[row0 * kN + n] : 0.f;
      st[nt][1] = S0 ? S0[row0 * kN + n + 1] : 0.f;
      st[nt][2] = S0 ? S0[(row0 + 8) * kN + n] : 0.f;
      st[nt][3] = S0 ? S0[(row0 + 8) * kN + n + 1] : 0.f;
    }
  }
  sm::store_rows_bf16<kN>(sm.S, st, row0, q);

  // ldmatrix lane offsets (see ssd_common.cuh): A from [m][k], B from [n][k], B from [k][n] (trans),
  // A from [k][m] (trans).
  const int lr = lane & 7, lm = lane >> 3;
  const int a_m = lr + 8 * (lm & 1), a_k = 8 * (lm >> 1);        // A, non-trans
  const int bn_n = lr + 8 * (lm >> 1), bn_k = 8 * (lm & 1);      // B stored [n][k], non-trans
  const int bt_k = lr + 8 * (lm & 1), bt_n = 8 * (lm >> 1);      // B stored [k][n], trans
  const int at_k = lr + 8 * (lm >> 1), at_m = 8 * (lm & 1);      // A stored [k][m], trans

  const int64_t nchunks = (p.seqlen + kQ - 1) / kQ;
  // The chunk's rows [t0, t0 + qn) of C, B, x and z (z into the y tile) by cp.async; rows past qn
  // are zero-filled (0 source bytes). Not committed here.
  auto load_chunk = [&](int64_t t0, int qn) {
    constexpr int kPcsN = kN / 8, kPcs = kP / 8;
    if (!(skip & 16))
      for (int i = tid; i < kQ * kPcsN; i += kThreads) {
        const int r = i / kPcsN, pc = (i % kPcsN) * 8;
        const bool ok = r < qn;
        sm::cp_async16(&sm.C[r][pc], ok ? Cb + (t0 + r) * p.C_st + pc : Cb, ok);
        sm::cp_async16(&sm.B[r][pc], ok ? Bb + (t0 + r) * p.B_st + pc : Bb, ok);
      }
    if (skip & 32) return;
    for (int i = tid; i < kQ * kPcs; i += kThreads) {
      const int r = i / kPcs, pc = (i % kPcs) * 8;
      const bool ok = r < qn;
      sm::cp_async16(&sm.X[r][pc], ok ? xb + (t0 + r) * p.x_st + pc : xb, ok);
    }
    if (zb)
      for (int i = tid; i < kQ * kPcs; i += kThreads) {
        const int r = i / kPcs, pc = (i % kPcs) * 8;
        const bool ok = r < qn;
        sm::cp_async16(&sm.Y[r][pc], ok ? zb + (t0 + r) * p.z_st + pc : zb, ok);
      }
  };
  // The raw dt of a chunk's steps 2 lane, 2 lane + 1 (0 past qn).
  auto load_dt = [&](float (&r)[2], int64_t t0, int qn) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int t = 2 * lane + k;
      r[k] = t < qn && !(skip & 64) ? __bfloat162float(dtb[(t0 + t) * p.dt_st]) : 0.f;
    }
  };
  // dt' = softplus(dt + bias) of a chunk's steps 2 lane, 2 lane + 1 (raw dt in r, 0 past qn), the
  // cumulative log decay cs (a warp scan) and w = exp(cs_last - cs) dt', into buffer nb.
  auto prologue = [&](const float (&r)[2], int qn_, int nb) {
    float d[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int t = 2 * lane + k;
      d[k] = 0.f;
      if (t < qn_) {
        const float v = ((skip & 64) ? 0.f : r[k]) + bias;
        d[k] = p.dt_softplus ? dev::softplus(v) : v;
      }
    }
    float cs0, cs1, last;
    sm::chunk_cumsum(d[0] * A, d[1] * A, lane, cs0, cs1, last);
    sm.cs[nb][2 * lane] = cs0;
    sm.cs[nb][2 * lane + 1] = cs1;
    sm.dt[nb][2 * lane] = d[0];
    sm.dt[nb][2 * lane + 1] = d[1];
    sm.w[nb][2 * lane] = __expf(last - cs0) * d[0];
    sm.w[nb][2 * lane + 1] = __expf(last - cs1) * d[1];
  };
  float dtnext[2] = {0.f, 0.f};  // the raw dt of the next chunk (the warp that computes its cs)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = c * kQ;
    const int qn = static_cast<int>(p.seqlen - t0 < kQ ? p.seqlen - t0 : kQ);
    load_chunk(t0, qn);
    sm::cp_async_commit();
    const int cb = static_cast<int>(c & 1);
    const float* const csb = sm.cs[cb];
    const float* const dts = sm.dt[cb];
    const float* const wb = sm.w[cb];
    if (warp == 0 && c == 0) {  // the first chunk's dt', cs, w (later ones: computed ahead)
      float r[2];
      load_dt(r, t0, qn);
      prologue(r, qn, 0);
    }
    sm::cp_async_wait_all();
    __syncthreads();
    // The warp with the least intra-chunk work in this chunk (yw = 0) prepares the next chunk.
    const bool dt_warp = c + 1 < nchunks && warp == ((-static_cast<int>(c & 3)) & 3);
    const int qn_next = static_cast<int>(p.seqlen - t0 - kQ < kQ ? p.seqlen - t0 - kQ : kQ);
    if (dt_warp) load_dt(dtnext, t0 + kQ, qn_next);

    // The output rows of this warp: block yw = (warp + c) % 4 of the chunk. The causal part costs
    // yw + 1 blocks, so the role rotates with the chunk: over four chunks every warp (and the
    // scheduler it runs on) does the same work.
    const int yw = (warp + static_cast<int>(c)) & 3, yrow0 = yw * 16 + g;
    // ---- Y = diag(exp(cs)) C S^T
    float yacc[8][4];
#pragma unroll
    for (int pt = 0; pt < 8; ++pt)
#pragma unroll
      for (int e = 0; e < 4; ++e) yacc[pt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kN / 16; ++ks) {
      if (skip & 2) break;
      uint32_t af[4];
      sm::ldsm_x4(af, &sm.C[yw * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
      for (int pt2 = 0; pt2 < 4; ++pt2) {
        uint32_t bfr[4];
        sm::ldsm_x4(bfr, &sm.S[pt2 * 16 + bn_n][ks * 16 + bn_k]);
        sm::mma_bf16(yacc[2 * pt2], af, bfr[0], bfr[1]);
        sm::mma_bf16(yacc[2 * pt2 + 1], af, bfr[2], bfr[3]);
      }
    }
    const float cs_i0 = csb[yrow0], cs_i1 = csb[yrow0 + 8];
    {
      const float e0 = __expf(cs_i0), e1 = __expf(cs_i1);
#pragma unroll
      for (int pt = 0; pt < 8; ++pt) {
        yacc[pt][0] *= e0;
        yacc[pt][1] *= e0;
        yacc[pt][2] *= e1;
        yacc[pt][3] *= e1;
      }
    }
    // ---- Y += (C B^T o decay o dt) X, 16 columns at a time, j <= i
    for (int jb = 0; jb <= ((skip & 1) ? -1 : yw); ++jb) {
      float cbk[2][4];
#pragma unroll
      for (int jt = 0; jt < 2; ++jt)
#pragma unroll
        for (int e = 0; e < 4; ++e) cbk[jt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t af[4], bfr[4];
        sm::ldsm_x4(af, &sm.C[yw * 16 + a_m][ks * 16 + a_k]);
        sm::ldsm_x4(bfr, &sm.B[jb * 16 + bn_n][ks * 16 + bn_k]);
        sm::mma_bf16(cbk[0], af, bfr[0], bfr[1]);
        sm::mma_bf16(cbk[1], af, bfr[2], bfr[3]);
      }
      uint32_t pa[4];
#pragma unroll
      for (int jt = 0; jt < 2; ++jt) {
        const int j = jb * 16 + jt * 8 + 2 * q;
        const float csj0 = csb[j], csj1 = csb[j + 1], dj0 = dts[j], dj1 = dts[j + 1];
        const float v00 = j <= yrow0 ? cbk[jt][0] * __expf(cs_i0 - csj0) * dj0 : 0.f;
        const float v01 = j + 1 <= yrow0 ? cbk[jt][1] * __expf(cs_i0 - csj1) * dj1 : 0.f;
        const float v10 = j <= yrow0 + 8 ? cbk[jt][2] * __expf(cs_i1 - csj0) * dj0 : 0.f;
        const float v11 = j + 1 <= yrow0 + 8 ? cbk[jt][3] * __expf(cs_i1 - csj1) * dj1 : 0.f;
        pa[2 * jt] = sm::pack_bf16(v00, v01);
        pa[2 * jt + 1] = sm::pack_bf16(v10, v11);
      }
#pragma unroll
      for (int pt2 = 0; pt2 < 4; ++pt2) {
        uint32_t bfr[4];
        sm::ldsm_x4_t(bfr, &sm.X[jb * 16 + bt_k][pt2 * 16 + bt_n]);
        sm::mma_bf16(yacc[2 * pt2], pa, bfr[0], bfr[1]);
        sm::mma_bf16(yacc[2 * pt2 + 1], pa, bfr[2], bfr[3]);
      }
    }
    if (dt_warp) prologue(dtnext, qn_next, cb ^ 1);  // the other buffers: free since chunk c - 1
    // ---- y = (Y + D x) [* silu(z)] into the y tile (z read from it); stored after the state update
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = yrow0 + 8 * half;
#pragma unroll
      for (int pt = 0; pt < 8; ++pt) {
        const int pp = pt * 8 + 2 * q;
        const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&sm.X[i][pp]));
        float v0 = yacc[pt][2 * half] + Dh * xv.x, v1 = yacc[pt][2 * half + 1] + Dh * xv.y;
        __nv_bfloat162* yz = reinterpret_cast<__nv_bfloat162*>(&sm.Y[i][pp]);
        if (zb) {
          const float2 zv = __bfloat1622float2(*yz);
          v0 *= dev::silu_fast(zv.x);
          v1 *= dev::silu_fast(zv.y);
        }
        *yz = __floats2bfloat162_rn(v0, v1);
      }
    }
    // ---- S = exp(cs_last) S + (X o w)^T B (rows 16 warp.., all N columns)
    {
      const float decay = __expf(csb[kQ - 1]);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= decay;
    }
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
      if (skip & 4) break;
      uint32_t af[4];
      sm::ldsm_x4_t(af, &sm.X[ks * 16 + at_k][warp * 16 + at_m]);
      // A element (m, k): registers 0/1 hold k = 2q, 2q + 1; 2/3 hold k = 2q + 8, 2q + 9.
      const int k0 = ks * 16 + 2 * q;
      af[0] = sm::scale_bf16x2(af[0], wb[k0], wb[k0 + 1]);
      af[1] = sm::scale_bf16x2(af[1], wb[k0], wb[k0 + 1]);
      af[2] = sm::scale_bf16x2(af[2], wb[k0 + 8], wb[k0 + 9]);
      af[3] = sm::scale_bf16x2(af[3], wb[k0 + 8], wb[k0 + 9]);
#pragma unroll
      for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
        uint32_t bfr[4];
        sm::ldsm_x4_t(bfr, &sm.B[ks * 16 + bt_k][nt2 * 16 + bt_n]);
        sm::mma_bf16(st[2 * nt2], af, bfr[0], bfr[1]);
        sm::mma_bf16(st[2 * nt2 + 1], af, bfr[2], bfr[3]);
      }
    }
    __syncthreads();  // every warp is done with S (bf16), C, B, X of this chunk
    sm::store_rows_bf16<kN>(sm.S, st, row0, q);
    // The y tile out: 16-byte pieces, the pieces this thread loaded z into (so the next chunk's z
    // load, issued by the same thread, cannot overtake the store's read of the tile).
    if (!(skip & 8)) {
      constexpr int kPcs = kP / 8;
      for (int i = tid; i < qn * kPcs; i += kThreads) {
        const int r = i / kPcs, pc = (i % kPcs) * 8;
        *reinterpret_cast<uint4*>(yb + (t0 + r) * p.y_st + pc) = *reinterpret_cast<const uint4*>(&sm.Y[r][pc]);
      }
    }
  }
  if (p.final_state) {
    float* out = p.final_state + bh * kP * kN;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int n = nt * 8 + 2 * q;
      *reinterpret_cast<float2*>(out + row0 * kN + n) = make_float2(st[nt][0], st[nt][1]);
      *reinterpret_cast<float2*>(out + (row0 + 8) * kN + n) = make_float2(st[nt][2], st[nt][3]);
    }
  }
}

template <int kN>
void launch(const SsdCudaParams<bf16>& p, cudaStream_t stream) {
  const size_t smem = sizeof(Smem<kN>);
  auto kernel = ssd_fwd_tc_kernel<kN>;
  MAMBA_CUDA_CHECK("ssd_chunk_scan_cuda", cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                               static_cast<int>(smem)));
  const char* env = std::getenv("MAMBA_SSD_SKIP");
  const int skip = env ? std::atoi(env) : 0;
  kernel<<<static_cast<unsigned>(p.batch * p.nheads), kThreads, smem, stream>>>(p, skip);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_chunk_scan_cuda (tensor cores)");
}

}  // namespace tc

void check_version(int v) {
  if (v != 0 && v != 1 && v != 20)
    throw std::invalid_argument("ssd_chunk_scan_cuda: version must be 0 (automatic), 1 (sequential) or 20 (tensor cores), got " +
                                std::to_string(v) + " (versions 2-19 and 21-23 were removed: kernels/cuda/NOTES.md, branch prune)");
}

template <class T>
void check_params(const SsdCudaParams<T>& p) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("ssd_chunk_scan_cuda: " + m); };
  check_version(p.version);
  if (p.batch < 1) bad("batch must be >= 1 (got " + std::to_string(p.batch) + ")");
  if (p.nheads < 1) bad("nheads must be >= 1 (got " + std::to_string(p.nheads) + ")");
  if (p.batch * p.nheads > 2147483647LL) bad("batch * nheads must be <= 2^31 - 1");
  if (p.seqlen < 0) bad("seqlen must be >= 0");
  if (p.ngroups < 1 || p.nheads % p.ngroups != 0) bad("nheads must be a multiple of ngroups");
  if (p.headdim < 1 || p.headdim > 128) bad("headdim must be in [1, 128] (got " + std::to_string(p.headdim) + ")");
  if (p.dstate < 1 || p.dstate > 256) bad("dstate must be in [1, 256] (got " + std::to_string(p.dstate) + ")");
  if (!p.A) bad("A is required");
  if (p.seqlen > 0 && (!p.x || !p.dt || !p.B || !p.C || !p.y)) bad("x, dt, B, C and y are required");
}

bool aligned_rows(const void* base, std::initializer_list<int64_t> strides, size_t elem) {
  if (!dev::aligned16(base)) return false;
  for (int64_t s : strides)
    if ((s * static_cast<int64_t>(elem)) % 16 != 0) return false;
  return true;
}

}  // namespace

template <class T>
int ssd_cuda_kernel_version(const SsdCudaParams<T>& p) {
  int v = p.version;
  if (v == 0) {
    // Automatic: v20 (483.6 us against v2's 537.0 at the standard shape, branch ssd2 round 2;
    // every check passed). MAMBA_SSD_VERSION=1 forces the sequential kernel; any other value
    // (including the numbers of the removed versions) is the automatic choice.
    const char* env = std::getenv("MAMBA_SSD_VERSION");
    v = env && std::atoi(env) == 1 ? 1 : 20;
  }
  check_version(v);
  if (v == 1) return 1;
  if constexpr (!std::is_same_v<T, bf16>) {
    return 1;
  } else {
    const bool shape = p.headdim == 64 && (p.dstate == 16 || p.dstate == 32 || p.dstate == 64 || p.dstate == 128);
    if (!shape || p.seqlen == 0) return 1;
    if (!aligned_rows(p.x, {p.x_sb, p.x_st, p.x_sh}, 2) || !aligned_rows(p.y, {p.y_sb, p.y_st, p.y_sh}, 2) ||
        !aligned_rows(p.B, {p.B_sb, p.B_st, p.B_sg}, 2) || !aligned_rows(p.C, {p.C_sb, p.C_st, p.C_sg}, 2))
      return 1;
    if (p.z && !aligned_rows(p.z, {p.z_sb, p.z_st, p.z_sh}, 2)) return 1;
    if (p.final_state && !dev::aligned16(p.final_state)) return 1;
    return 20;
  }
}

template <class T>
void ssd_chunk_scan_cuda(const SsdCudaParams<T>& p, cudaStream_t stream) {
  check_params(p);
  if (ssd_cuda_kernel_version(p) == 1) return dispatch_seq(p, stream);
  if constexpr (std::is_same_v<T, bf16>) {
    switch (p.dstate) {
      case 16: return tc::launch<16>(p, stream);
      case 32: return tc::launch<32>(p, stream);
      case 64: return tc::launch<64>(p, stream);
      default: return tc::launch<128>(p, stream);
    }
  }
}

template int ssd_cuda_kernel_version<float>(const SsdCudaParams<float>&);
template int ssd_cuda_kernel_version<bf16>(const SsdCudaParams<bf16>&);
template void ssd_chunk_scan_cuda<float>(const SsdCudaParams<float>&, cudaStream_t);
template void ssd_chunk_scan_cuda<bf16>(const SsdCudaParams<bf16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
