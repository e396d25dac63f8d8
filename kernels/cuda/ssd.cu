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

// ---- tensor-core kernel (v2) -------------------------------------------------------------------
//
// One block of 4 warps per (batch, head); chunks of kQ = 64 steps in order. Shared memory per
// chunk: C, B (kQ x N), x (kQ x 64) as bf16 rows padded by 16 bytes (ldmatrix without bank
// conflicts), the entering state S as bf16 [p][n], and per step cs (the cumulative log decay
// inside the chunk), dt' and w = exp(cs_last - cs) dt'. Warp w owns state rows p = 16w..16w+15
// (all N columns, f32 accumulators of mma.sync) and, in chunk c, output rows 16r..16r+15 of the
// chunk with r = (w + c) % 4 (the causal part's cost grows with r; rotating balances the warps).
// Per chunk:
//   Y  = diag(exp(cs)) C S^T                          (K = N)
//   Y += sum over 16-column blocks jb <= w of (C B_jb^T o decay o dt)_bf16 X_jb   (K = N, then 16)
//   y  = (Y + D x) [* silu(z)]
//   S  = exp(cs_last) S + (X o w)^T B                 (K = kQ)
// x, B, C, dt are read once, y written once.
namespace tc {

constexpr int kQ = 64, kP = 64, kThreads = 128;

// kPF (v3): x is double-buffered and the next chunk's x rows (from DRAM, read by this block
// only) are loaded during this chunk's products; C and B (shared by the heads, mostly L2 hits)
// are not. 71 KB: still 3 blocks per SM.
// kPF 2 (v4): as 1, plus the next chunk's C rows loaded right after this chunk's intra-chunk part
// (the last use of C; the epilogue and the state update overlap the load) and the next chunk's
// dt held in registers of warp 0, loaded during this chunk. Same 71 KB.
// kPF 3 (v5): C and B double-buffered too: the whole next chunk (C, B, x; dt in registers) is
// loaded during the current one. kH heads of one group per block (kH * 4 warps) share the
// chunk's C and B tiles: L2 -> SM traffic for B / C / kH. v5 uses kH = 3 (179 KB, one block of 12
// warps per SM; the standard shape's 8 x 48 heads are 128 blocks: one wave on 132 SMs).
// kYS (v6, v7): a y tile per head: z rows come in by cp.async with the chunk's other loads, the
// epilogue writes y (gated) into the tile, and the tile goes out after the state update in 16-byte
// pieces (whole 128-byte rows per 8 threads) instead of 4-byte stores spread over 8 rows.
// kDB (v9): cs, dt', w double-buffered: the next chunk's are computed during this one.
// kXC (v12, v13): 3 slots of one packed 16 x 16 A fragment per lane, handed between two warps.
template <int kN, int kPF = 0, int kH = 1, int kYS = 0, int kDB = 0, int kXC = 0>
struct Smem {
  static constexpr int kNS = kN + 8, kXS = kP + 8, kNX = kPF ? 2 : 1, kNC = kPF >= 3 ? 2 : 1, kNY = kYS ? 1 : 0,
                       kNB = kDB ? 2 : 1, kNP = kXC ? 3 : 0;
  bf16 C[kNC][kQ][kNS];
  bf16 B[kNC][kQ][kNS];
  struct Head {
    bf16 X[kNX][kQ][kXS];
    bf16 S[kP][kNS];
    float cs[kNB][kQ], dt[kNB][kQ], w[kNB][kQ];
    bf16 Y[kNY][kQ][kXS];
    uint4 P[kNP][32];
  } hd[kH];
};

template <int kN, class Sm>
__device__ __forceinline__ void store_state_bf16(Sm& sm, const float (&st)[kN / 8][4], int row0, int q) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    const int n = nt * 8 + 2 * q;
    *reinterpret_cast<uint32_t*>(&sm.S[row0][n]) = sm::pack_bf16(st[nt][0], st[nt][1]);
    *reinterpret_cast<uint32_t*>(&sm.S[row0 + 8][n]) = sm::pack_bf16(st[nt][2], st[nt][3]);
  }
}

// skip: timing only (wrong results), env MAMBA_SSD_SKIP: bit 0 leaves out the intra-chunk part, bit 1
// the C S^T part, bit 2 the state update; bit 3 (8) the y stores, bit 4 (16) the C / B loads, bit 5
// (32) the x (and z) loads, bit 6 (64) the dt loads (dt' = 0.1).
// kIL: bit 0 (v7) intra blocks in pairs, bit 1 (v8) the state update inside the intra loop, bit 2
// (v9, with kDB) the next chunk's dt', cs, w computed during this chunk by the warp with the least
// intra-chunk work (its raw dt loaded into registers at the start of the chunk).
template <int kN, int kPF, int kH, int kYS = 0, int kIL = 0>
__global__ void __launch_bounds__(kThreads * kH, kH == 1 ? 3 : 1)
    ssd_fwd_tc_kernel(const SsdCudaParams<bf16> p, const int skip) {
  extern __shared__ __align__(16) unsigned char tc_smem[];
  constexpr int kDB = (kIL & 4) ? 1 : 0, kIM = kIL & 3, kXC = (kIL & 8) ? 1 : 0, kLBS = (kIL & 16) ? 1 : 0,
                kTMA = (kIL & 32) ? 1 : 0, kCE = (kIL & 64) ? 1 : 0;
  static_assert(!kCE || (kDB && kPF == 0 && kH == 1 && !kLBS && !kXC), "kCE: v20's structure only");
  static_assert(!kTMA || (kYS && kPF == 0 && kH == 1 && !kLBS), "kTMA needs the y tile, no x prefetch, one head");
  static_assert(!kLBS || (kYS && kPF == 0 && kH == 1), "kLBS needs the y tile, no x prefetch, one head");
  using SmemT = Smem<kN, kPF, kH, kYS, kDB, kXC>;
  SmemT& sm = *reinterpret_cast<SmemT*>(tc_smem);
  constexpr int kXS = SmemT::kXS, kNS = SmemT::kNS, kAll = kThreads * kH;
  // tid / warp: within this thread's head (4 warps per head); tid_all over the block (C, B loads).
  const int tid_all = threadIdx.x, hl = kH == 1 ? 0 : tid_all >> 7, tid = kH == 1 ? tid_all : tid_all & (kThreads - 1),
            warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int64_t hpb = p.nheads / kH;  // blocks per batch row
  const int64_t b = blockIdx.x / hpb, h = (blockIdx.x % hpb) * kH + hl, bh = b * p.nheads + h,
                grp = h / (p.nheads / p.ngroups);
  auto& hd = sm.hd[hl];
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
  store_state_bf16<kN>(hd, st, row0, q);

  // ldmatrix lane offsets (see ssd_common.cuh): A from [m][k], B from [n][k], B from [k][n] (trans),
  // A from [k][m] (trans).
  const int lr = lane & 7, lm = lane >> 3;
  const int a_m = lr + 8 * (lm & 1), a_k = 8 * (lm >> 1);        // A, non-trans
  const int bn_n = lr + 8 * (lm >> 1), bn_k = 8 * (lm & 1);      // B stored [n][k], non-trans
  const int bt_k = lr + 8 * (lm & 1), bt_n = 8 * (lm >> 1);      // B stored [k][n], trans
  const int at_k = lr + 8 * (lm >> 1), at_m = 8 * (lm & 1);      // A stored [k][m], trans

  const int64_t nchunks = (p.seqlen + kQ - 1) / kQ;
  // x rows [t0, t0 + qn) of the chunk into X (rows past qn zero-filled); not committed here.
  auto load_x = [&](bf16 (*X)[kXS], int64_t t0, int qn) {
    constexpr int kPcs = kP / 8;
    if (skip & 32) return;
    for (int i = tid; i < kQ * kPcs; i += kThreads) {
      const int r = i / kPcs, pc = (i % kPcs) * 8;
      const bool ok = r < qn;
      sm::cp_async16(&X[r][pc], ok ? xb + (t0 + r) * p.x_st + pc : xb, ok);
    }
  };
  float dtraw[2] = {0.f, 0.f};  // kPF >= 2, warp 0: the raw dt of steps 2 lane, 2 lane + 1
  // C and B rows [t0, t0 + qn) of a chunk into buffer cb (rows past qn zero-filled); not committed.
  auto load_cb = [&](int cb, int64_t t0, int qn, bool with_c) {
    constexpr int kPcsN = kN / 8;
    if (skip & 16) return;
    for (int i = tid_all; i < kQ * kPcsN; i += kAll) {
      const int r = i / kPcsN, pc = (i % kPcsN) * 8;
      const bool ok = r < qn;
      if (with_c) sm::cp_async16(&sm.C[cb][r][pc], ok ? Cb + (t0 + r) * p.C_st + pc : Cb, ok);
      sm::cp_async16(&sm.B[cb][r][pc], ok ? Bb + (t0 + r) * p.B_st + pc : Bb, ok);
    }
  };
  auto load_dt = [&](float (&r)[2], int64_t t0, int qn) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int t = 2 * lane + k;
      r[k] = t < qn && !(skip & 64) ? __bfloat162float(dtb[(t0 + t) * p.dt_st]) : 0.f;
    }
  };
  // dt' = softplus(dt + bias) of a chunk's steps 2 lane, 2 lane + 1 (raw dt in r, 0 past qn), the
  // cumulative log decay cs (a warp scan) and w = exp(cs_last - cs) dt', into cs_, dt_, w_.
  auto prologue = [&](const float (&r)[2], int qn_, float* cs_, float* dt_, float* w_) {
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
    const float l0 = d[0] * A, l1 = d[1] * A;
    float incl = l0 + l1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const float last = __shfl_sync(0xffffffffu, incl, 31);
    const float cs0 = incl - l1, cs1 = incl;
    cs_[2 * lane] = cs0;
    cs_[2 * lane + 1] = cs1;
    dt_[2 * lane] = d[0];
    dt_[2 * lane + 1] = d[1];
    w_[2 * lane] = __expf(last - cs0) * d[0];
    w_[2 * lane + 1] = __expf(last - cs1) * d[1];
  };
  // z rows [t0, t0 + qn) into the y tile (the same pieces as the y copy-out); not committed.
  auto load_z = [&](int64_t t0, int qn) {
    if constexpr (kTMA) {
      // v22: thread r < 64 owns y tile row r: its bulk store of the previous chunk's row must have
      // read the tile before the z row comes in.
      if (tid < kQ) {
        asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
        if (zb && !(skip & 32)) {
          const bool ok = tid < qn;
#pragma unroll
          for (int pc = 0; pc < kP; pc += 8)
            sm::cp_async16(&hd.Y[0][tid][pc], ok ? zb + (t0 + tid) * p.z_st + pc : zb, ok);
        }
      }
      return;
    }
    if constexpr (kYS) {
      if (!zb || (skip & 32)) return;
      constexpr int kPcs = kP / 8;
      for (int i = tid; i < kQ * kPcs; i += kThreads) {
        const int r = i / kPcs, pc = (i % kPcs) * 8;
        const bool ok = r < qn;
        sm::cp_async16(&hd.Y[0][r][pc], ok ? zb + (t0 + r) * p.z_st + pc : zb, ok);
      }
    }
  };
  float dtnext[2] = {0.f, 0.f};  // kDB: the raw dt of the next chunk (the warp that computes its cs)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = c * kQ;
    const int qn = static_cast<int>(p.seqlen - t0 < kQ ? p.seqlen - t0 : kQ);
    // Loads: rows past the sequence are zero-filled (cp.async with 0 source bytes).
    constexpr int kPcsN = kN / 8;
    const int cb = kPF >= 3 ? static_cast<int>(c & 1) : 0;
    bf16 (*const Cs)[kNS] = sm.C[cb];
    bf16 (*const Bs)[kNS] = sm.B[cb];
    bf16 (*X)[kXS] = hd.X[kPF ? (c & 1) : 0];
    if (!kLBS || c == 0) {  // kLBS: chunk c > 0 was issued at the end of chunk c - 1
      if (kPF < 3 || c == 0) load_cb(cb, t0, qn, (kPF < 2 && !kCE) || c == 0);  // kCE: C came early
      if (!kPF || c == 0) load_x(X, t0, qn);
      if (kYS) load_z(t0, qn);
      sm::cp_async_commit();
    }
    float* const csb = hd.cs[kDB ? (c & 1) : 0];
    float* const dts = hd.dt[kDB ? (c & 1) : 0];
    float* const wb = hd.w[kDB ? (c & 1) : 0];
    if (warp == 0 && (!kDB || c == 0)) {  // dt', the cumulative log decay cs (a warp scan), w
      if (kPF >= 2 && c == 0) load_dt(dtraw, t0, qn);
      float r[2];
      if (kPF >= 2) {
        r[0] = dtraw[0];
        r[1] = dtraw[1];
      } else {
        load_dt(r, t0, qn);
      }
      if (kPF >= 2 && c + 1 < nchunks)  // the next chunk's dt: in flight during this chunk
        load_dt(dtraw, t0 + kQ, static_cast<int>(p.seqlen - t0 - kQ < kQ ? p.seqlen - t0 - kQ : kQ));
      prologue(r, qn, csb, dts, wb);
    }
    sm::cp_async_wait_all();
    __syncthreads();
    // kDB: the warp with the least intra-chunk work in this chunk (yw = 0) prepares the next chunk.
    // (v12, v13: the row block 2 warp, the lightest there)
    const bool dt_warp = kDB && c + 1 < nchunks && warp == (((kXC ? 2 : 0) - static_cast<int>(c & 3)) & 3);
    const int qn_next = static_cast<int>(p.seqlen - t0 - kQ < kQ ? p.seqlen - t0 - kQ : kQ);
    if (dt_warp) load_dt(dtnext, t0 + kQ, qn_next);
    if (kPF && c + 1 < nchunks) {  // the next chunk's x (and C, B), into the other buffers (free since chunk c - 1)
      const int64_t t1 = t0 + kQ;
      const int qn1 = static_cast<int>(p.seqlen - t1 < kQ ? p.seqlen - t1 : kQ);
      load_x(hd.X[(c + 1) & 1], t1, qn1);
      if (kPF >= 3) load_cb(cb ^ 1, t1, qn1, true);
      sm::cp_async_commit();
    }

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
      sm::ldsm_x4(af, &Cs[yw * 16 + a_m][ks * 16 + a_k]);
#pragma unroll
      for (int pt2 = 0; pt2 < 4; ++pt2) {
        uint32_t bfr[4];
        sm::ldsm_x4(bfr, &hd.S[pt2 * 16 + bn_n][ks * 16 + bn_k]);
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
    // One 16-step slice ks of the state update S += (X o w)^T B (rows 16 warp.., all N columns).
    auto upd = [&](int ks) {
      uint32_t af[4];
      sm::ldsm_x4_t(af, &X[ks * 16 + at_k][warp * 16 + at_m]);
      // A element (m, k): registers 0/1 hold k = 2q, 2q + 1; 2/3 hold k = 2q + 8, 2q + 9.
      const int k0 = ks * 16 + 2 * q;
      af[0] = sm::scale_bf16x2(af[0], wb[k0], wb[k0 + 1]);
      af[1] = sm::scale_bf16x2(af[1], wb[k0], wb[k0 + 1]);
      af[2] = sm::scale_bf16x2(af[2], wb[k0 + 8], wb[k0 + 9]);
      af[3] = sm::scale_bf16x2(af[3], wb[k0 + 8], wb[k0 + 9]);
#pragma unroll
      for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
        uint32_t bfr[4];
        sm::ldsm_x4_t(bfr, &Bs[ks * 16 + bt_k][nt2 * 16 + bt_n]);
        sm::mma_bf16(st[2 * nt2], af, bfr[0], bfr[1]);
        sm::mma_bf16(st[2 * nt2 + 1], af, bfr[2], bfr[3]);
      }
    };
    // kIL 2 (v8): the state update's four 16-step slices are issued inside the intra-chunk loop,
    // slice jb with column block jb (the rest after it): its 16 independent mma chains fill the
    // tensor pipe while the C B^T chain of the block waits.
    if constexpr ((kIM & 2) != 0) {
      const float decay = __expf(csb[kQ - 1]);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= decay;
    }
    // ---- Y += (C B^T o decay o dt) X, 16 columns at a time, j <= i
    // kIL (v7): two column blocks jb, jb + 1 per pass, their C B^T products interleaved (two
    // independent mma chains share each C fragment), so the chain is walked half as often.
    int nu = 0;  // v13: state update slices done inside the intra part
    if constexpr (kXC) {
      // v12, v13: the 10 causal blocks balanced over the 4 warps. Row block r costs r + 1 C B^T
      // blocks (16 mma + the mask) and r + 1 products with X (8 mma); the row-0 warp computes the
      // masked blocks (3, 0) and (3, 1) for the row-3 warp, the row-1 warp (2, 0) for the row-2
      // warp, and hands them over as packed A fragments in shared memory (named barriers 1, 2,
      // producer arrives, consumer waits). Per warp then 3 / 3 / 2 / 2 C B^T blocks and 1 / 2 / 3 / 4
      // X products (was up to 4 + 4).
      auto cbblk = [&](int r, int jb, uint32_t (&pa)[4]) {
        float cb[2][4];
#pragma unroll
        for (int jt = 0; jt < 2; ++jt)
#pragma unroll
          for (int e = 0; e < 4; ++e) cb[jt][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kN / 16; ++ks) {
          uint32_t af[4], bfr[4];
          sm::ldsm_x4(af, &Cs[r * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &Bs[jb * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(cb[0], af, bfr[0], bfr[1]);
          sm::mma_bf16(cb[1], af, bfr[2], bfr[3]);
        }
        const int i0 = r * 16 + g;
        const float ci0 = csb[i0], ci1 = csb[i0 + 8];
#pragma unroll
        for (int jt = 0; jt < 2; ++jt) {
          const int j = jb * 16 + jt * 8 + 2 * q;
          const float csj0 = csb[j], csj1 = csb[j + 1], dj0 = dts[j], dj1 = dts[j + 1];
          const float v00 = j <= i0 ? cb[jt][0] * __expf(ci0 - csj0) * dj0 : 0.f;
          const float v01 = j + 1 <= i0 ? cb[jt][1] * __expf(ci0 - csj1) * dj1 : 0.f;
          const float v10 = j <= i0 + 8 ? cb[jt][2] * __expf(ci1 - csj0) * dj0 : 0.f;
          const float v11 = j + 1 <= i0 + 8 ? cb[jt][3] * __expf(ci1 - csj1) * dj1 : 0.f;
          pa[2 * jt] = sm::pack_bf16(v00, v01);
          pa[2 * jt + 1] = sm::pack_bf16(v10, v11);
        }
        if constexpr ((kIM & 2) != 0) {
          if (!(skip & 4) && nu < kQ / 16) upd(nu++);
        }
      };
      auto xmul = [&](const uint32_t (&pa)[4], int jb) {
#pragma unroll
        for (int pt2 = 0; pt2 < 4; ++pt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &X[jb * 16 + bt_k][pt2 * 16 + bt_n]);
          sm::mma_bf16(yacc[2 * pt2], pa, bfr[0], bfr[1]);
          sm::mma_bf16(yacc[2 * pt2 + 1], pa, bfr[2], bfr[3]);
        }
      };
      auto own = [&](int jb) {
        uint32_t pa[4];
        cbblk(yw, jb, pa);
        xmul(pa, jb);
      };
      auto give = [&](int r, int jb, int slot) {
        uint32_t pa[4];
        cbblk(r, jb, pa);
        hd.P[slot][lane] = make_uint4(pa[0], pa[1], pa[2], pa[3]);
      };
      auto take = [&](int slot, int jb) {
        const uint4 v = hd.P[slot][lane];
        const uint32_t pa[4] = {v.x, v.y, v.z, v.w};
        xmul(pa, jb);
      };
      if (!(skip & 1)) {
        if (yw == 0) {
          give(3, 0, 0);
          give(3, 1, 1);
          __threadfence_block();
          asm volatile("bar.arrive 1, 64;\n" ::: "memory");
          own(0);
        } else if (yw == 3) {
          own(2);
          own(3);
          asm volatile("bar.sync 1, 64;\n" ::: "memory");
          take(0, 0);
          take(1, 1);
        } else if (yw == 1) {
          give(2, 0, 2);
          __threadfence_block();
          asm volatile("bar.arrive 2, 64;\n" ::: "memory");
          own(0);
          own(1);
        } else {
          own(1);
          own(2);
          asm volatile("bar.sync 2, 64;\n" ::: "memory");
          take(2, 0);
        }
      }
    }
    if constexpr ((kIM & 1) != 0 && !kXC) {
      for (int jb = 0; jb <= ((skip & 1) ? -1 : yw); jb += 2) {
        const bool two = jb + 1 <= yw;
        if constexpr ((kIM & 2) != 0) {  // v11: the state update's slices jb, jb + 1 with the pair
          if (!(skip & 4)) {
            upd(jb);
            if (two) upd(jb + 1);
          }
        }
        float cb[2][2][4];
#pragma unroll
        for (int u = 0; u < 2; ++u)
#pragma unroll
          for (int jt = 0; jt < 2; ++jt)
#pragma unroll
            for (int e = 0; e < 4; ++e) cb[u][jt][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kN / 16; ++ks) {
          uint32_t af[4], bfr[4], bfr2[4];
          sm::ldsm_x4(af, &Cs[yw * 16 + a_m][ks * 16 + a_k]);
          sm::ldsm_x4(bfr, &Bs[jb * 16 + bn_n][ks * 16 + bn_k]);
          if (two) sm::ldsm_x4(bfr2, &Bs[(jb + 1) * 16 + bn_n][ks * 16 + bn_k]);
          sm::mma_bf16(cb[0][0], af, bfr[0], bfr[1]);
          sm::mma_bf16(cb[0][1], af, bfr[2], bfr[3]);
          if (two) {
            sm::mma_bf16(cb[1][0], af, bfr2[0], bfr2[1]);
            sm::mma_bf16(cb[1][1], af, bfr2[2], bfr2[3]);
          }
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          if (u == 1 && !two) break;
          const int jbu = jb + u;
          uint32_t pa[4];
#pragma unroll
          for (int jt = 0; jt < 2; ++jt) {
            const int j = jbu * 16 + jt * 8 + 2 * q;
            const float csj0 = csb[j], csj1 = csb[j + 1], dj0 = dts[j], dj1 = dts[j + 1];
            const float v00 = j <= yrow0 ? cb[u][jt][0] * __expf(cs_i0 - csj0) * dj0 : 0.f;
            const float v01 = j + 1 <= yrow0 ? cb[u][jt][1] * __expf(cs_i0 - csj1) * dj1 : 0.f;
            const float v10 = j <= yrow0 + 8 ? cb[u][jt][2] * __expf(cs_i1 - csj0) * dj0 : 0.f;
            const float v11 = j + 1 <= yrow0 + 8 ? cb[u][jt][3] * __expf(cs_i1 - csj1) * dj1 : 0.f;
            pa[2 * jt] = sm::pack_bf16(v00, v01);
            pa[2 * jt + 1] = sm::pack_bf16(v10, v11);
          }
#pragma unroll
          for (int pt2 = 0; pt2 < 4; ++pt2) {
            uint32_t b2[4];
            sm::ldsm_x4_t(b2, &X[jbu * 16 + bt_k][pt2 * 16 + bt_n]);
            sm::mma_bf16(yacc[2 * pt2], pa, b2[0], b2[1]);
            sm::mma_bf16(yacc[2 * pt2 + 1], pa, b2[2], b2[3]);
          }
        }
      }
    }
    for (int jb = 0; jb <= ((skip & 1) || (kIM & 1) || kXC ? -1 : yw); ++jb) {
      if constexpr (kIM == 2) {
        if (!(skip & 4)) upd(jb);
      }
      float cb[2][4];
#pragma unroll
      for (int jt = 0; jt < 2; ++jt)
#pragma unroll
        for (int e = 0; e < 4; ++e) cb[jt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t af[4], bfr[4];
        sm::ldsm_x4(af, &Cs[yw * 16 + a_m][ks * 16 + a_k]);
        sm::ldsm_x4(bfr, &Bs[jb * 16 + bn_n][ks * 16 + bn_k]);
        sm::mma_bf16(cb[0], af, bfr[0], bfr[1]);
        sm::mma_bf16(cb[1], af, bfr[2], bfr[3]);
      }
      uint32_t pa[4];
#pragma unroll
      for (int jt = 0; jt < 2; ++jt) {
        const int j = jb * 16 + jt * 8 + 2 * q;
        const float csj0 = csb[j], csj1 = csb[j + 1], dj0 = dts[j], dj1 = dts[j + 1];
        const float v00 = j <= yrow0 ? cb[jt][0] * __expf(cs_i0 - csj0) * dj0 : 0.f;
        const float v01 = j + 1 <= yrow0 ? cb[jt][1] * __expf(cs_i0 - csj1) * dj1 : 0.f;
        const float v10 = j <= yrow0 + 8 ? cb[jt][2] * __expf(cs_i1 - csj0) * dj0 : 0.f;
        const float v11 = j + 1 <= yrow0 + 8 ? cb[jt][3] * __expf(cs_i1 - csj1) * dj1 : 0.f;
        pa[2 * jt] = sm::pack_bf16(v00, v01);
        pa[2 * jt + 1] = sm::pack_bf16(v10, v11);
      }
#pragma unroll
      for (int pt2 = 0; pt2 < 4; ++pt2) {
        uint32_t bfr[4];
        sm::ldsm_x4_t(bfr, &X[jb * 16 + bt_k][pt2 * 16 + bt_n]);
        sm::mma_bf16(yacc[2 * pt2], pa, bfr[0], bfr[1]);
        sm::mma_bf16(yacc[2 * pt2 + 1], pa, bfr[2], bfr[3]);
      }
    }
    if (dt_warp) {  // kDB: the next chunk's cs, dt', w into the other buffers (free since chunk c - 1)
      const int nb = static_cast<int>((c + 1) & 1);
      prologue(dtnext, qn_next, hd.cs[nb], hd.dt[nb], hd.w[nb]);
    }
    if constexpr (kCE) {
      // v23: C's last use was the intra part: once all 4 warps are past it (named barrier 3: the
      // dt warp waits, the others only arrive), the dt warp loads the next chunk's C rows, so their
      // latency hides behind the epilogue and the state update.
      if (c + 1 < nchunks) {
        if (dt_warp) {
          asm volatile("bar.sync 3, 128;\n" ::: "memory");
          if (!(skip & 16)) {
            constexpr int kPcsN = kN / 8;
            for (int i = lane; i < kQ * kPcsN; i += 32) {
              const int r = i / kPcsN, pc = (i % kPcsN) * 8;
              const bool ok = r < qn_next;
              sm::cp_async16(&sm.C[0][r][pc], ok ? Cb + (t0 + kQ + r) * p.C_st + pc : Cb, ok);
            }
          }
          sm::cp_async_commit();
        } else {
          asm volatile("bar.arrive 3, 128;\n" ::: "memory");
        }
      }
    }
    if constexpr ((kIM & 2) != 0) {  // the state update's slices past this warp's column blocks
      if (!(skip & 4))
        for (int ks = kXC ? nu : (skip & 1) ? 0 : yw + 1; ks < kQ / 16; ++ks) upd(ks);
    }
    if (kPF == 2 && c + 1 < nchunks) {  // C is free: the next chunk's rows, during the epilogue
      __syncthreads();
      const int64_t t1 = t0 + kQ;
      const int qn1 = static_cast<int>(p.seqlen - t1 < kQ ? p.seqlen - t1 : kQ);
      for (int i = tid_all; i < kQ * kPcsN; i += kAll) {
        const int r = i / kPcsN, pc = (i % kPcsN) * 8;
        const bool ok = r < qn1;
        sm::cp_async16(&sm.C[0][r][pc], ok ? Cb + (t1 + r) * p.C_st + pc : Cb, ok);
      }
      sm::cp_async_commit();
    }
    // ---- y = (Y + D x) [* silu(z)]
    if constexpr (kYS) {  // into the y tile (z read from it); stored after the state update
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = yrow0 + 8 * half;
#pragma unroll
        for (int pt = 0; pt < 8; ++pt) {
          const int pp = pt * 8 + 2 * q;
          const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&X[i][pp]));
          float v0 = yacc[pt][2 * half] + Dh * xv.x, v1 = yacc[pt][2 * half + 1] + Dh * xv.y;
          __nv_bfloat162* yz = reinterpret_cast<__nv_bfloat162*>(&hd.Y[0][i][pp]);
          if (zb) {
            const float2 zv = __bfloat1622float2(*yz);
            v0 *= dev::silu_fast(zv.x);
            v1 *= dev::silu_fast(zv.y);
          }
          *yz = __floats2bfloat162_rn(v0, v1);
        }
      }
      if constexpr (kTMA) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the tile goes out by TMA
    }
#pragma unroll
    for (int half = 0; half < (kYS ? 0 : 2); ++half) {
      const int i = yrow0 + 8 * half;
      if (i < qn && !(skip & 8)) {
        bf16* yrow = yb + (t0 + i) * p.y_st;
        const bf16* zrow = zb ? zb + (t0 + i) * p.z_st : nullptr;
#pragma unroll
        for (int pt = 0; pt < 8; ++pt) {
          const int pp = pt * 8 + 2 * q;
          const float2 xv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&X[i][pp]));
          float v0 = yacc[pt][2 * half] + Dh * xv.x, v1 = yacc[pt][2 * half + 1] + Dh * xv.y;
          if (zrow) {
            const float2 zv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(zrow + pp));
            v0 *= dev::silu_fast(zv.x);
            v1 *= dev::silu_fast(zv.y);
          }
          *reinterpret_cast<__nv_bfloat162*>(yrow + pp) = __floats2bfloat162_rn(v0, v1);
        }
      }
    }
    // ---- S = exp(cs_last) S + (X o w)^T B
    if constexpr ((kIM & 2) == 0) {
      const float decay = __expf(csb[kQ - 1]);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= decay;
#pragma unroll
      for (int ks = 0; ks < kQ / 16; ++ks) {
        if (skip & 4) break;
        uint32_t af[4];
        sm::ldsm_x4_t(af, &X[ks * 16 + at_k][warp * 16 + at_m]);
        // A element (m, k): registers 0/1 hold k = 2q, 2q + 1; 2/3 hold k = 2q + 8, 2q + 9.
        const int k0 = ks * 16 + 2 * q;
        af[0] = sm::scale_bf16x2(af[0], wb[k0], wb[k0 + 1]);
        af[1] = sm::scale_bf16x2(af[1], wb[k0], wb[k0 + 1]);
        af[2] = sm::scale_bf16x2(af[2], wb[k0 + 8], wb[k0 + 9]);
        af[3] = sm::scale_bf16x2(af[3], wb[k0 + 8], wb[k0 + 9]);
#pragma unroll
        for (int nt2 = 0; nt2 < kN / 16; ++nt2) {
          uint32_t bfr[4];
          sm::ldsm_x4_t(bfr, &Bs[ks * 16 + bt_k][nt2 * 16 + bt_n]);
          sm::mma_bf16(st[2 * nt2], af, bfr[0], bfr[1]);
          sm::mma_bf16(st[2 * nt2 + 1], af, bfr[2], bfr[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with S (bf16), C, B, X of this chunk
    store_state_bf16<kN>(hd, st, row0, q);
    if constexpr (kLBS) {
      // v16-v19: the next chunk's C, B, x loads first (their tiles are free after the barrier above),
      // then the y tile out, each 16-byte piece followed by the next chunk's z load into it (the
      // same thread: the store's shared-memory read comes first): the loads are in flight before
      // the stores.
      constexpr int kPcs = kP / 8;
      const bool more = c + 1 < nchunks;
      const int64_t t1 = t0 + kQ;
      const int qn1 = static_cast<int>(p.seqlen - t1 < kQ ? p.seqlen - t1 : kQ);
      if (more) {
        load_cb(0, t1, qn1, true);
        load_x(X, t1, qn1);
      }
      const bool zload = more && zb && !(skip & 32);
      for (int i = tid; i < kQ * kPcs; i += kThreads) {
        const int r = i / kPcs, pc = (i % kPcs) * 8;
        if (r < qn && !(skip & 8))
          *reinterpret_cast<uint4*>(yb + (t0 + r) * p.y_st + pc) = *reinterpret_cast<const uint4*>(&hd.Y[0][r][pc]);
        if (zload) {
          const bool ok = r < qn1;
          sm::cp_async16(&hd.Y[0][r][pc], ok ? zb + (t1 + r) * p.z_st + pc : zb, ok);
        }
      }
      if (more) sm::cp_async_commit();
    } else if (kTMA) {  // v22: one bulk copy (128 bytes) per y row, issued by the row's owner thread
      if (tid < qn && !(skip & 8)) {
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(yb + (t0 + tid) * p.y_st),
                     "r"(sm::smem_addr(&hd.Y[0][tid][0])), "n"(kP * 2)
                     : "memory");
        asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
      }
    } else if (kYS && !(skip & 8)) {  // the y tile out: 16-byte pieces, the pieces this thread loaded z into
      constexpr int kPcs = kP / 8;
      for (int i = tid; i < qn * kPcs; i += kThreads) {
        const int r = i / kPcs, pc = (i % kPcs) * 8;
        *reinterpret_cast<uint4*>(yb + (t0 + r) * p.y_st + pc) = *reinterpret_cast<const uint4*>(&hd.Y[0][r][pc]);
      }
    }
  }
  if constexpr (kTMA) {
    if (tid < kQ) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
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

template <int kN, int kPF, int kH = 1, int kYS = 0, int kIL = 0>
void launch(const SsdCudaParams<bf16>& p, cudaStream_t stream) {
  const size_t smem = sizeof(Smem<kN, kPF, kH, kYS, (kIL & 4) ? 1 : 0, (kIL & 8) ? 1 : 0>);
  auto kernel = ssd_fwd_tc_kernel<kN, kPF, kH, kYS, kIL>;
  MAMBA_CUDA_CHECK("ssd_chunk_scan_cuda", cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                               static_cast<int>(smem)));
  const char* env = std::getenv("MAMBA_SSD_SKIP");
  const int skip = env ? std::atoi(env) : 0;
  kernel<<<static_cast<unsigned>(p.batch * (p.nheads / kH)), kThreads * kH, smem, stream>>>(p, skip);
  MAMBA_CUDA_CHECK_LAUNCH("ssd_chunk_scan_cuda (tensor cores)");
}

}  // namespace tc

template <class T>
void check_params(const SsdCudaParams<T>& p) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("ssd_chunk_scan_cuda: " + m); };
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
    const char* env = std::getenv("MAMBA_SSD_VERSION");
    // Automatic: v20 (v6 + dt', cs, w ahead: 483.6 us against v2's 537.0 at the standard shape,
    // branch ssd2 round 2; every check passed).
    v = env ? std::atoi(env) : 20;
    if (v < 1 || v > 23) v = 20;
  }
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
    if (v == 5 && (p.nheads / p.ngroups) % 3 != 0) return 4;  // v5 takes heads of a group in threes
    if (v == 11) return 10;  // v11 (pairs + update inside + dt ahead) withdrawn: NaN at n 16 (round 1)
    return v >= 3 && v <= 23 ? v : 2;
  }
}

template <class T>
void ssd_chunk_scan_cuda(const SsdCudaParams<T>& p, cudaStream_t stream) {
  check_params(p);
  if (ssd_cuda_kernel_version(p) == 1) return dispatch_seq(p, stream);
  if constexpr (std::is_same_v<T, bf16>) {
    // v2: 0, v3: 1 (x prefetched), v4: 2 (+ C, dt), v5: 3 (everything double-buffered, 3 heads per block)
    const int ver = ssd_cuda_kernel_version(p), pf = ver - 2;
    auto go = [&](auto n) {
      constexpr int kN = decltype(n)::value;
      if (ver == 6) return tc::launch<kN, 0, 1, 1>(p, stream);  // v6: v2 + the y / z tile
      if (ver == 7) return tc::launch<kN, 0, 1, 1, 1>(p, stream);  // v7: v6 + the intra blocks in pairs
      if (ver == 8) return tc::launch<kN, 0, 1, 1, 2>(p, stream);  // v8: v6 + the state update inside the intra loop
      if (ver == 9) return tc::launch<kN, 0, 1, 1, 6>(p, stream);  // v9: v8 + the next chunk's dt', cs, w ahead
      if (ver == 10) return tc::launch<kN, 0, 1, 1, 5>(p, stream);  // v10: v7 (pairs) + dt', cs, w ahead
      if (ver == 12) return tc::launch<kN, 0, 1, 1, 12>(p, stream);  // v12: balanced intra (hand-over) + dt' ahead
      if (ver == 13) return tc::launch<kN, 0, 1, 1, 14>(p, stream);  // v13: v12 + the update inside the intra part
      if (ver == 14) return tc::launch<kN, 1, 1, 0, 12>(p, stream);  // v14: v12 with x prefetched, no y tile
      if (ver == 15) return tc::launch<kN, 1, 1, 0, 14>(p, stream);  // v15: v13 with x prefetched, no y tile
      // v16-v19: the next chunk's loads issued at the end of this chunk, before its y stores
      if (ver == 16) return tc::launch<kN, 0, 1, 1, 21>(p, stream);  // v16: v10 + loads before stores
      if (ver == 17) return tc::launch<kN, 0, 1, 1, 16>(p, stream);  // v17: v6 + loads before stores
      if (ver == 18) return tc::launch<kN, 0, 1, 1, 28>(p, stream);  // v18: v12 + loads before stores
      if (ver == 19) return tc::launch<kN, 0, 1, 1, 22>(p, stream);  // v19: v9 + loads before stores
      if (ver == 20) return tc::launch<kN, 0, 1, 1, 4>(p, stream);   // v20: v6 + dt', cs, w ahead
      if (ver == 21) return tc::launch<kN, 0, 1, 1, 20>(p, stream);  // v21: v20 + loads before stores
      if (ver == 22) return tc::launch<kN, 0, 1, 1, 36>(p, stream);  // v22: v20 + y rows out by TMA bulk copies
      if (ver == 23) return tc::launch<kN, 0, 1, 1, 68>(p, stream);  // v23: v20 + the next chunk's C loaded after the intra part
      if (pf == 3) return tc::launch<kN, 3, 3>(p, stream);
      if (pf == 2) return tc::launch<kN, 2>(p, stream);
      if (pf == 1) return tc::launch<kN, 1>(p, stream);
      return tc::launch<kN, 0>(p, stream);
    };
    switch (p.dstate) {
      case 16: return go(std::integral_constant<int, 16>{});
      case 32: return go(std::integral_constant<int, 32>{});
      case 64: return go(std::integral_constant<int, 64>{});
      default: return go(std::integral_constant<int, 128>{});
    }
  }
}

template int ssd_cuda_kernel_version<float>(const SsdCudaParams<float>&);
template int ssd_cuda_kernel_version<bf16>(const SsdCudaParams<bf16>&);
template void ssd_chunk_scan_cuda<float>(const SsdCudaParams<float>&, cudaStream_t);
template void ssd_chunk_scan_cuda<bf16>(const SsdCudaParams<bf16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
