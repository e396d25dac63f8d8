// Mamba-1 selective scan BACKWARD on the GPU. Semantics: the CPU selective_scan_bwd_ref
// (kernels/cpu/selective_scan_bwd.cc). Design (see NOTES.md, "Scan backward"):
//   grid (n_groups * blocks_per_group, batch); a block = kBT = 64 consecutive channels of one
//   group of one batch row, one thread per (b, d) channel with the states of a slice of up to
//   16 states in registers (dstate > 16: one launch per slice of 16 states).
//   Pass A: the forward recurrence over the whole row, writing the state entering every chunk
//   of kK = 8 steps to the workspace (checkpoints, f32, (b, chunk, n, d): coalesced).
//   Pass B: chunks from the last to the first; per chunk, the per-step scalars (dt, dt u,
//   dy silu(z)) go to shared memory, the chunk's states h_{t-1} are recomputed from its
//   checkpoint into shared memory [t][n][thread], then the adjoint g walks the chunk
//   backwards (exp(dt A) recomputed on the SFU):
//     g_t = dy_t C_t + a_{t+1} g_{t+1};  sum_n g B -> du, ddelta;  dA += g h_{t-1} a dt
//   and the per-(t, n) contributions to dB (g dt u) and dC (dy h_t) of the warp's 32 channels
//   are summed through a per-warp shared-memory transpose (each lane sums one column), the
//   block's warps combined at the end of the chunk and written as per-block partials.
//   Reductions over channels (dB, dC), batch (dA, dD, d delta_bias) are finished by two small
//   kernels in a fixed order: deterministic, no atomics, no zeroing.
//   Versions: v1 one thread per channel, v2 (default) two lanes per channel. (v3, pass A as a
//   separate checkpoint kernel + 2 or 4 lanes per channel, measured slower than v2 on an H200
//   (NOTES.md, "backward v3") and was removed on branch prune.)
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kBT = 64;       // threads (= channels) per block
constexpr int kWarpsB = kBT / 32;
constexpr int kK = 8;         // steps per chunk (checkpoint interval)
constexpr int kSlice = 16;    // states per launch (registers)
constexpr int kMaxStateB = 256;
constexpr float kLn2 = 0.6931471805599453f;

struct BwdWs {
  float* ckpt = nullptr;   // (batch, nchunks, kSlice, dim)
  float* pBC = nullptr;    // (batch, n_groups, blocks per group of the launch, 2 * dstate, seqlen)
  float* pA = nullptr;     // (batch, dim, dstate)
  float* pD = nullptr;     // (batch, dim)
  float* pbias = nullptr;  // (batch, dim)
  float* sums = nullptr;   // (3, batch, dim, seqlen) when dstate > kSlice: sum_n g B, sum_n g h a A log2e, sum_n h C
  int64_t nchunks = 0;
};

struct WsLayout {
  size_t ckpt = 0, pBC = 0, pA = 0, pD = 0, pbias = 0, sums = 0, total = 0;  // offsets in floats
};

int64_t blocks_per_group(int64_t dim, int64_t groups, int64_t per_block = kBT) {
  return (dim / groups + per_block - 1) / per_block;
}
constexpr int64_t kMinChannelsPerBlock = 32;  // the finest block any version takes (v4 layout 2): sizes pBC

WsLayout ws_layout(int64_t batch, int64_t dim, int64_t L, int64_t N, int64_t G) {
  auto up = [](int64_t n) { return static_cast<size_t>((n + 63) / 64 * 64); };  // 256-byte pieces
  const int64_t nch = (L + kK - 1) / kK;
  WsLayout w;
  size_t o = 0;
  w.ckpt = o; o += up(batch * nch * kSlice * dim);
  w.pBC = o; o += up(batch * G * blocks_per_group(dim, G, kMinChannelsPerBlock) * 2 * N * L);
  w.pA = o; o += up(batch * dim * N);
  w.pD = o; o += up(batch * dim);
  w.pbias = o; o += up(batch * dim);
  w.sums = o; if (N > kSlice) o += up(3 * batch * dim * L);
  w.total = o;
  return w;
}

// Shared memory of the main kernel for kN states (floats).
template <int kN>
struct Smem {
  static constexpr int V = 2 * kN;         // values reduced over channels per step (dB, dC)
  static constexpr int kRS = V + 4;        // transpose row stride (floats): conflict-free STS.128
  static constexpr int kStride = kN + 4;   // B / C tile row [t][n] (16-byte rows)
  static constexpr int H = kK * kN * kBT;  // h_{t-1} of the chunk, [t][n][thread]
  static constexpr int STEP = kK * 4 * kBT;
  static constexpr int RED = kWarpsB * 32 * kRS;
  static constexpr int PART = kWarpsB * kK * V;
  static constexpr int TILE = kK * kStride;
  static constexpr int kFloats = H + STEP + RED + PART + 4 * TILE;
  static constexpr size_t kBytes = size_t(kFloats) * 4;
  static_assert(V <= 32, "at most 16 states per slice");
};

__device__ __forceinline__ float sigmoid_fast(float x) { return __frcp_rn(1.f + dev::ex2_mufu(-x * dev::kLog2e)); }

template <class T, int kN>
__global__ void __launch_bounds__(kBT, 4)
scan_bwd_kernel(SelectiveScanBwdCudaParams<T> p, BwdWs ws, int bpg, int n0, int nS, bool first, bool last, int skip) {
  using S = Smem<kN>;
  constexpr int kStride = S::kStride;
  constexpr int kBC = (kN * kK + kBT - 1) / kBT;  // B (and C) tile elements per thread
  extern __shared__ float4 smem4[];
  float* sH = reinterpret_cast<float*>(smem4);
  float* sStep = sH + S::H;     // [t][4][thread]: dt, dt u (then sum g B), dy (then sum g h a A2), sum h C
  float* sRed = sStep + S::STEP;
  float* sPart = sRed + S::RED;  // [warp][t][v]
  float* sB = sPart + S::PART;   // [2][TILE]
  float* sC = sB + 2 * S::TILE;  // [2][TILE]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t L = p.seqlen, N = p.dstate, G = p.n_groups, dim = p.dim, dpg = dim / G;
  const int64_t g = blockIdx.x / bpg, blk = blockIdx.x % bpg;
  const int64_t cl = blk * kBT + tid;
  const bool active = cl < dpg;
  const float act = active ? 1.f : 0.f;  // inactive threads mirror channel 0 with zero gradients
  const int64_t d = g * dpg + (active ? cl : 0);
  const int64_t b = blockIdx.y;
  const int64_t row = (b * dim + d) * L;
  const T* u_row = p.u + row;
  const T* delta_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  const T* dout_row = p.dout + row;
  const T* Bg = p.B + ((b * G + g) * N + n0) * L;
  const T* Cg = p.C + ((b * G + g) * N + n0) * L;
  const float Dv = p.D ? p.D[d] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int64_t st_off = (b * dim + d) * N + n0;
  const int64_t nch = ws.nchunks;
  float* ck_base = ws.ckpt + b * nch * kSlice * dim + d;  // + (c * kSlice + i) * dim

  float A2[kN], h[kN];
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    const bool on = i < nS;
    A2[i] = on ? p.A[d * N + n0 + i] * dev::kLog2e : 0.f;
    h[i] = on && active && p.initial_state ? p.initial_state[st_off + i] : 0.f;
  }

  // B / C tile element k of this thread: e = tid + k * kBT, state i = e / kK, step j = e % kK.
  auto load_tile = [&](int64_t t0, bool withC, T (&rb)[kBC], T (&rc)[kBC]) {
#pragma unroll
    for (int k = 0; k < kBC; ++k) {
      const int e = tid + k * kBT;
      const int i = e / kK, j = e % kK;
      const bool in = e < kN * kK && i < nS && t0 + j < L;
      rb[k] = in ? Bg[i * L + t0 + j] : dev::from_f32<T>(0.f);
      rc[k] = in && withC ? Cg[i * L + t0 + j] : dev::from_f32<T>(0.f);
    }
  };
  auto store_tile = [&](float* sb, float* sc, const T (&rb)[kBC], const T (&rc)[kBC], bool withC) {
#pragma unroll
    for (int k = 0; k < kBC; ++k) {
      const int e = tid + k * kBT;
      if (e < kN * kK) {
        const int i = e / kK, j = e % kK;
        sb[j * kStride + i] = dev::to_f32(rb[k]);
        if (withC) sc[j * kStride + i] = dev::to_f32(rc[k]);
      }
    }
  };

  // ---- pass A: checkpoints ----
  {
    float cu[kK], cr[kK];
    T cb[kBC], cc[kBC];
    if (nch > 1) {
      dev::load_run<kK>(u_row, 0, L, cu, 0.f);
      dev::load_run<kK>(delta_row, 0, L, cr, 0.f);
      load_tile(0, false, cb, cc);
    }
    for (int64_t c = 0; c < nch && !(skip & 2); ++c) {
      if (active) {
#pragma unroll
        for (int i = 0; i < kN; ++i) ck_base[(c * kSlice + i) * dim] = h[i];
      }
      if (c == nch - 1) break;  // the last chunk's own states are recomputed in pass B
      const int64_t t0 = c * kK;
      float* sb = sB + (c & 1) * S::TILE;
      store_tile(sb, nullptr, cb, cc, false);
      __syncthreads();
      float nu[kK], nr[kK];
      T nb[kBC], nc[kBC];
      dev::load_run<kK>(u_row, t0 + kK, L, nu, 0.f);
      dev::load_run<kK>(delta_row, t0 + kK, L, nr, 0.f);
      load_tile(t0 + kK, false, nb, nc);
#pragma unroll
      for (int j = 0; j < kK; ++j) {  // every step of a chunk before the last is in range
        float dt = cr[j] + bias;
        if (p.delta_softplus) dt = dev::softplus_fast(dt);
        const float dtu = dt * cu[j];
        const float* bt = sb + j * kStride;
#pragma unroll
        for (int i4 = 0; i4 < kN; i4 += 4) {
          const float4 b4 = *reinterpret_cast<const float4*>(bt + i4);
          const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
          for (int q = 0; q < 4; ++q) h[i4 + q] = fmaf(dev::ex2_mufu(dt * A2[i4 + q]), h[i4 + q], dtu * bv[q]);
        }
      }
#pragma unroll
      for (int j = 0; j < kK; ++j) { cu[j] = nu[j]; cr[j] = nr[j]; }
#pragma unroll
      for (int k = 0; k < kBC; ++k) { cb[k] = nb[k]; cc[k] = nc[k]; }
    }
  }
  __syncthreads();

  // ---- pass B: the adjoint, chunk by chunk from the end ----
  float gcur[kN], dAa[kN];
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    gcur[i] = i < nS && active && p.dfinal_state ? p.dfinal_state[st_off + i] : 0.f;
    dAa[i] = 0.f;
  }
  float dD_acc = 0.f, db_acc = 0.f;
  const int64_t plane = p.batch * dim * L;  // one array of ws.sums

  float cu[kK], cr[kK], cz[kK], co[kK], ck[kN];
  T cb[kBC], cc[kBC];
  auto load_chunk = [&](int64_t c, float (&u_)[kK], float (&r_)[kK], float (&z_)[kK], float (&o_)[kK],
                        float (&k_)[kN], T (&b_)[kBC], T (&c_)[kBC]) {
    const int64_t t0 = c * kK;
    dev::load_run<kK>(u_row, t0, L, u_, 0.f);
    dev::load_run<kK>(delta_row, t0, L, r_, 0.f);
    if (z_row) dev::load_run<kK>(z_row, t0, L, z_, 0.f);
    else {
#pragma unroll
      for (int j = 0; j < kK; ++j) z_[j] = 0.f;
    }
    dev::load_run<kK>(dout_row, t0, L, o_, 0.f);
    load_tile(t0, true, b_, c_);
#pragma unroll
    for (int i = 0; i < kN; ++i) k_[i] = active ? ck_base[(c * kSlice + i) * dim] : 0.f;  // written by this thread
  };
  if (nch > 0) load_chunk(nch - 1, cu, cr, cz, co, ck, cb, cc);

  for (int64_t c = nch - 1; c >= 0; --c) {
    const int64_t t0 = c * kK;
    float* sb = sB + (c & 1) * S::TILE;
    float* sc = sC + (c & 1) * S::TILE;
    store_tile(sb, sc, cb, cc, true);
    float dyt[kK], sgz[kK];
#pragma unroll
    for (int j = 0; j < kK; ++j) {
      const bool valid = t0 + j < L;
      float dt = cr[j] + bias;
      if (p.delta_softplus) dt = dev::softplus_fast(dt);
      dt = valid ? dt : 0.f;  // identity map past the end
      const float uu = cu[j] * act, o = co[j] * act;  // load_run pads 0 past the end
      float dy = o;
      sgz[j] = 0.f;
      if (z_row) {
        const float s = sigmoid_fast(cz[j]);
        sgz[j] = s;
        dy = o * cz[j] * s;
      }
      dyt[j] = dy;
      float* stp = sStep + j * 4 * kBT + tid;
      stp[0] = dt;
      stp[kBT] = dt * uu;
      stp[2 * kBT] = dy;
    }
#pragma unroll
    for (int i = 0; i < kN; ++i) h[i] = ck[i];
    __syncthreads();  // tile visible (sStep and sH are private to each thread)

    float nu[kK], nr[kK], nz[kK], no[kK], nk[kN];
    T nb[kBC], nc[kBC];
    if (c > 0) load_chunk(c - 1, nu, nr, nz, no, nk, nb, nc);

    // Recompute the chunk's states: sH[j] = h_{t0 + j - 1}.
#pragma unroll 1
    for (int j = 0; j < ((skip & 4) ? 0 : kK); ++j) {
      const float dt = sStep[j * 4 * kBT + tid], dtu = sStep[(j * 4 + 1) * kBT + tid];
      const float* bt = sb + j * kStride;
      float* hj = sH + j * kN * kBT + tid;
#pragma unroll
      for (int i4 = 0; i4 < kN; i4 += 4) {
        const float4 b4 = *reinterpret_cast<const float4*>(bt + i4);
        const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int i = i4 + q;
          hj[i * kBT] = h[i];
          h[i] = fmaf(dev::ex2_mufu(dt * A2[i]), h[i], dtu * bv[q]);
        }
      }
    }

    // Adjoint walk over the chunk, last step first.
    float* myrow = sRed + (warp * 32 + lane) * S::kRS;
#pragma unroll 1
    for (int j = kK - 1; j >= 0; --j) {
      float* stp = sStep + j * 4 * kBT + tid;
      const float dt = stp[0], dtu = stp[kBT], dy = stp[2 * kBT];
      const float* bt = sb + j * kStride;
      const float* ct = sc + j * kStride;
      const float* hj = sH + j * kN * kBT + tid;
      float sgB0 = 0.f, sgB1 = 0.f, sga0 = 0.f, sga1 = 0.f, y0 = 0.f, y1 = 0.f;
#pragma unroll
      for (int i4 = 0; i4 < kN; i4 += 4) {
        const float4 b4 = *reinterpret_cast<const float4*>(bt + i4);
        const float4 c4 = *reinterpret_cast<const float4*>(ct + i4);
        const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
        const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
        float vb[4], vc[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int i = i4 + q;
          const float a = dev::ex2_mufu(dt * A2[i]);
          const float ha = a * hj[i * kBT];        // a_t h_{t-1}
          const float h1 = fmaf(dtu, bv[q], ha);   // h_t
          const float gi = fmaf(dy, cv[q], gcur[i]);
          const float gha = gi * ha;
          if (q & 1) {
            y1 = fmaf(h1, cv[q], y1);
            sga1 = fmaf(gha, A2[i], sga1);
            sgB1 = fmaf(gi, bv[q], sgB1);
          } else {
            y0 = fmaf(h1, cv[q], y0);
            sga0 = fmaf(gha, A2[i], sga0);
            sgB0 = fmaf(gi, bv[q], sgB0);
          }
          dAa[i] = fmaf(gha, dt, dAa[i]);
          vb[q] = gi * dtu;  // dB contribution
          vc[q] = dy * h1;   // dC contribution
          gcur[i] = a * gi;
        }
        *reinterpret_cast<float4*>(myrow + i4) = make_float4(vb[0], vb[1], vb[2], vb[3]);
        *reinterpret_cast<float4*>(myrow + kN + i4) = make_float4(vc[0], vc[1], vc[2], vc[3]);
      }
      // Column sums over the warp's 32 channels: lane sums column lane % V over its row group.
      constexpr int V = S::V, kGroups = 32 / V, kRows = 32 / kGroups;
      if (!(skip & 1)) {
        __syncwarp();
        const int col = lane % V, r0 = (lane / V) * kRows;
        const float* colp = sRed + (warp * 32 + r0) * S::kRS + col;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int r = 0; r < kRows; r += 2) {
          s0 += colp[r * S::kRS];
          s1 += colp[(r + 1) * S::kRS];
        }
        float s = s0 + s1;
#pragma unroll
        for (int o = V; o < 32; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        __syncwarp();
        if (lane < V) sPart[(warp * kK + j) * V + lane] = s;
      }
      stp[kBT] = sgB0 + sgB1;
      stp[2 * kBT] = sga0 + sga1;
      stp[3 * kBT] = y0 + y1;
    }

    // Per-step outputs (last slice) or running sums over the slices.
    float odu[kK], odd[kK], odz[kK];
#pragma unroll
    for (int j = 0; j < kK; ++j) {
      const bool valid = t0 + j < L;
      const float* stp = sStep + j * 4 * kBT + tid;
      float sgB = stp[kBT], sga = stp[2 * kBT], yy = stp[3 * kBT];
      const int64_t idx = row + t0 + j;
      if (!first && active && valid) {
        sgB += ws.sums[idx];
        sga += ws.sums[plane + idx];
        yy += ws.sums[2 * plane + idx];
      }
      odu[j] = odd[j] = odz[j] = 0.f;
      if (last) {
        const float uu = cu[j] * act, dt = stp[0];
        odu[j] = fmaf(dyt[j], Dv, dt * sgB);
        const float ddt = fmaf(kLn2, sga, uu * sgB);
        const float dd = p.delta_softplus ? ddt * sigmoid_fast(cr[j] + bias) : ddt;
        odd[j] = dd;
        if (z_row) {
          const float yt = fmaf(Dv, uu, yy), sg = sgz[j];
          odz[j] = co[j] * yt * (sg * (1.f + cz[j] * (1.f - sg)));
        }
        if (valid && active) {
          dD_acc = fmaf(dyt[j], uu, dD_acc);
          db_acc += dd;
        }
      } else if (active && valid) {
        ws.sums[idx] = sgB;
        ws.sums[plane + idx] = sga;
        ws.sums[2 * plane + idx] = yy;
      }
    }
    if (last && active) {
      dev::store_run<kK>(p.du + row, t0, L, odu);
      dev::store_run<kK>(p.ddelta + row, t0, L, odd);
      if (z_row) dev::store_run<kK>(p.dz + row, t0, L, odz);
    }

    __syncthreads();  // sPart complete
    {
      constexpr int V = S::V;
      float* pbase = ws.pBC + ((b * G + g) * bpg + blk) * 2 * N * L;
      for (int e = tid; e < ((skip & 1) ? 0 : kK * V); e += kBT) {
        const int v = e / kK, j = e % kK;
        const int i = v % kN;
        const int64_t t = t0 + j;
        if (i < nS && t < L) {
          float s = 0.f;
#pragma unroll
          for (int w = 0; w < kWarpsB; ++w) s += sPart[(w * kK + j) * V + v];
          pbase[((v >= kN ? N : 0) + n0 + i) * L + t] = s;
        }
      }
    }

    if (c > 0) {
#pragma unroll
      for (int j = 0; j < kK; ++j) { cu[j] = nu[j]; cr[j] = nr[j]; cz[j] = nz[j]; co[j] = no[j]; }
#pragma unroll
      for (int i = 0; i < kN; ++i) ck[i] = nk[i];
#pragma unroll
      for (int k = 0; k < kBC; ++k) { cb[k] = nb[k]; cc[k] = nc[k]; }
    }
  }

  if (active) {
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      if (i < nS) {
        if (p.dinitial_state) p.dinitial_state[st_off + i] = gcur[i];
        ws.pA[st_off + i] = dAa[i];
      }
    }
    if (last) {
      ws.pD[b * dim + d] = dD_acc;
      ws.pbias[b * dim + d] = db_acc;
    }
  }
}

// ---- v2: two lanes per channel ----------------------------------------------------------------
// v1 runs one thread per channel: at b 8 x d 3072 that is ~6 warps per SM, latency-bound (about
// 1.2 instructions per clock per SM). v2 splits each channel's states over kS2 = 2 adjacent lanes
// (lane s owns states [s kNS, (s + 1) kNS)) and its per-step scalars too (lane s loads, computes
// and stores steps [s kE, (s + 1) kE) of each chunk; the (dt, dt u, dy) of all steps are
// published in a per-channel shared row). Block = 128 lanes = 64 channels (same partial layout
// as v1). Per-step sums over the states (sum g B, sum g h a A, sum h C) are completed with one
// xor-1 shuffle each; the dB / dC transpose sums 16 rows (the lanes owning the value's state).
constexpr int kS2 = 2;
constexpr int kBT2 = kBT * kS2;
constexpr int kWarps2 = kBT2 / 32;
constexpr int kF = 6;  // sStep fields: dt, dt u, dy, sum g B, sum g h a A log2e, sum h C

template <int kN>
struct Smem2 {
  static constexpr int kNS = kN / kS2;
  static constexpr int V = 2 * kN;           // distinct values per warp and step
  static constexpr int kRS = 2 * kNS + 4;    // transpose row: own dB, own dC, pad
  static constexpr int kStride = kN + 4;
  static constexpr int H = kK * kNS * kBT2;  // [t][own state][lane]; pass A: (dt, dt u) [2][t][2][ch]
  static constexpr int STEP = kK * kF * kBT;
  static constexpr int RED = kWarps2 * 32 * kRS;
  static constexpr int PART = kWarps2 * kK * V;
  static constexpr int TILE = kK * kStride;
  static constexpr int kFloats = H + STEP + RED + PART + 4 * TILE;
  static constexpr size_t kBytes = size_t(kFloats) * 4;
  static_assert(V <= 32 && kNS >= 2, "2..8 states per lane");
  static_assert(H >= 2 * kK * 2 * kBT, "pass A scalars fit in the sH region");
};

template <class T, int kE>
__device__ __forceinline__ void load_e(const T* __restrict__ row, int64_t t, int64_t L, bool vec, float (&out)[kE]) {
  constexpr int kBytes = kE * int(sizeof(T));
  if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
    if (vec && t + kE <= L) {
      using V = typename std::conditional<kBytes == 16, uint4, typename std::conditional<kBytes == 8, uint2, unsigned>::type>::type;
      union { V v; T e[kE]; } r;
      r.v = *reinterpret_cast<const V*>(row + t);
#pragma unroll
      for (int j = 0; j < kE; ++j) out[j] = dev::to_f32(r.e[j]);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < kE; ++j) out[j] = t + j < L ? dev::to_f32(row[t + j]) : 0.f;
}
template <class T, int kE>
__device__ __forceinline__ void store_e(T* __restrict__ row, int64_t t, int64_t L, bool vec, const float (&in)[kE]) {
  constexpr int kBytes = kE * int(sizeof(T));
  if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
    if (vec && t + kE <= L) {
      using V = typename std::conditional<kBytes == 16, uint4, typename std::conditional<kBytes == 8, uint2, unsigned>::type>::type;
      union { V v; T e[kE]; } r;
#pragma unroll
      for (int j = 0; j < kE; ++j) r.e[j] = dev::from_f32<T>(in[j]);
      *reinterpret_cast<V*>(row + t) = r.v;
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < kE; ++j)
    if (t + j < L) row[t + j] = dev::from_f32<T>(in[j]);
}
// The per-step inputs u, delta, z (0 without z) and dout of steps t .. t + kE - 1 (v2, v4).
template <class T, int kE>
__device__ __forceinline__ void load_step_inputs(const T* u_row, const T* delta_row, const T* z_row, const T* dout_row,
                                                 int64_t t, int64_t L, bool vec, float (&u_)[kE], float (&r_)[kE],
                                                 float (&z_)[kE], float (&o_)[kE]) {
  load_e<T, kE>(u_row, t, L, vec, u_);
  load_e<T, kE>(delta_row, t, L, vec, r_);
  if (z_row) load_e<T, kE>(z_row, t, L, vec, z_);
  else {
#pragma unroll
    for (int e = 0; e < kE; ++e) z_[e] = 0.f;
  }
  load_e<T, kE>(dout_row, t, L, vec, o_);
}
// A chunk's per-step inputs as v4 keeps them while the previous chunk's adjoint runs: f32
// as loaded, bf16 packed two to a register (half the registers; to f32 by a shift).
template <class T, int kE>
struct StepIn {
  float v[kE];
  __device__ __forceinline__ float get(int j) const { return v[j]; }
  __device__ __forceinline__ void load(const T* __restrict__ row, int64_t t, int64_t L, bool vec) {
    load_e<T, kE>(row, t, L, vec, v);
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int j = 0; j < kE; ++j) v[j] = 0.f;
  }
};
template <int kE>
struct StepIn<__nv_bfloat16, kE> {
  static_assert(kE % 2 == 0, "bf16 pairs");
  uint32_t w[kE / 2];
  __device__ __forceinline__ float get(int j) const {
    return __uint_as_float(j % 2 ? w[j / 2] & 0xffff0000u : w[j / 2] << 16);
  }
  __device__ __forceinline__ void load(const __nv_bfloat16* __restrict__ row, int64_t t, int64_t L, bool vec) {
    constexpr int kBytes = kE * 2;
    if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
      if (vec && t + kE <= L) {
        using V = typename std::conditional<kBytes == 16, uint4, typename std::conditional<kBytes == 8, uint2, unsigned>::type>::type;
        union { V v; uint32_t w[kE / 2]; } r;
        r.v = *reinterpret_cast<const V*>(row + t);
#pragma unroll
        for (int j = 0; j < kE / 2; ++j) w[j] = r.w[j];
        return;
      }
    }
    const unsigned short* bits = reinterpret_cast<const unsigned short*>(row);
#pragma unroll
    for (int j = 0; j < kE / 2; ++j) {
      const uint32_t lo = t + 2 * j < L ? bits[t + 2 * j] : 0u, hi = t + 2 * j + 1 < L ? bits[t + 2 * j + 1] : 0u;
      w[j] = lo | (hi << 16);
    }
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int j = 0; j < kE / 2; ++j) w[j] = 0u;
  }
};
__host__ __device__ __forceinline__ bool aligned_to(const void* p, int bytes) {
  return (reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes)) == 0;
}

template <class T, int kN>
__global__ void __launch_bounds__(kBT2, 3)
scan_bwd_v2_kernel(SelectiveScanBwdCudaParams<T> p, BwdWs ws, int bpg, int n0, int nS, bool first, bool last, int skip) {
  using S = Smem2<kN>;
  constexpr int kNS = S::kNS;
  constexpr int kE = kK / kS2;  // steps per lane for the per-step scalars
  constexpr int kStride = S::kStride;
  constexpr int kBC = (kN * kK + kBT2 - 1) / kBT2;
  constexpr int kCh = kBT;  // channels per block
  extern __shared__ float4 smem4[];
  float* sH = reinterpret_cast<float*>(smem4);
  float* sStep = sH + S::H;      // [t][kF][channel]
  float* sRed = sStep + S::STEP;
  float* sPart = sRed + S::RED;  // [warp][t][v]
  float* sB = sPart + S::PART;   // [2][TILE]
  float* sC = sB + 2 * S::TILE;  // [2][TILE]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ch = tid / kS2, s = tid % kS2;
  const int64_t L = p.seqlen, N = p.dstate, G = p.n_groups, dim = p.dim, dpg = dim / G;
  const int64_t g = blockIdx.x / bpg, blk = blockIdx.x % bpg;
  const int64_t cl = blk * kCh + ch;
  const bool active = cl < dpg;
  const float act = active ? 1.f : 0.f;
  const int64_t d = g * dpg + (active ? cl : 0);
  const int64_t b = blockIdx.y;
  const int64_t row = (b * dim + d) * L;
  const T* u_row = p.u + row;
  const T* delta_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  const T* dout_row = p.dout + row;
  constexpr int kVB = kE * int(sizeof(T));  // bytes of a lane's piece
  const bool vec = aligned_to(u_row, kVB) && aligned_to(delta_row, kVB) && aligned_to(dout_row, kVB) &&
                   (!z_row || aligned_to(z_row, kVB)) && aligned_to(p.du + row, kVB) && aligned_to(p.ddelta + row, kVB) &&
                   (!z_row || aligned_to(p.dz + row, kVB));
  const T* Bg = p.B + ((b * G + g) * N + n0) * L;
  const T* Cg = p.C + ((b * G + g) * N + n0) * L;
  const float Dv = p.D ? p.D[d] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int ns0 = s * kNS;  // first state of this lane within the slice
  const int64_t st_off = (b * dim + d) * N + n0 + ns0;
  const int64_t nch = ws.nchunks;
  float* ck_base = ws.ckpt + b * nch * kSlice * dim + d;  // + (c * kSlice + state) * dim
  const int own = s * kE;  // this lane's first step within a chunk

  float A2[kNS], h[kNS];
#pragma unroll
  for (int i = 0; i < kNS; ++i) {
    const bool on = ns0 + i < nS;
    A2[i] = on ? p.A[d * N + n0 + ns0 + i] * dev::kLog2e : 0.f;
    h[i] = on && active && p.initial_state ? p.initial_state[st_off + i] : 0.f;
  }

  auto load_tile = [&](int64_t t0, bool withC, T (&rb)[kBC], T (&rc)[kBC]) {
#pragma unroll
    for (int k = 0; k < kBC; ++k) {
      const int e = tid + k * kBT2;
      const int i = e / kK, j = e % kK;
      const bool in = e < kN * kK && i < nS && t0 + j < L;
      rb[k] = in ? Bg[i * L + t0 + j] : dev::from_f32<T>(0.f);
      rc[k] = in && withC ? Cg[i * L + t0 + j] : dev::from_f32<T>(0.f);
    }
  };
  auto store_tile = [&](float* sb, float* sc, const T (&rb)[kBC], const T (&rc)[kBC], bool withC) {
#pragma unroll
    for (int k = 0; k < kBC; ++k) {
      const int e = tid + k * kBT2;
      if (e < kN * kK) {
        const int i = e / kK, j = e % kK;
        sb[j * kStride + i] = dev::to_f32(rb[k]);
        if (withC) sc[j * kStride + i] = dev::to_f32(rc[k]);
      }
    }
  };

  // ---- pass A: checkpoints ----
  {
    float cu[kE], cr[kE];
    T cb[kBC], cc[kBC];
    if (nch > 1) {
      load_e<T, kE>(u_row, own, L, vec, cu);
      load_e<T, kE>(delta_row, own, L, vec, cr);
      load_tile(0, false, cb, cc);
    }
    for (int64_t c = 0; c < nch && !(skip & 2); ++c) {
      if (active) {
#pragma unroll
        for (int i = 0; i < kNS; ++i) ck_base[(c * kSlice + ns0 + i) * dim] = h[i];
      }
      if (c == nch - 1) break;
      const int64_t t0 = c * kK;
      float* sb = sB + (c & 1) * S::TILE;
      float* sa = sH + (c & 1) * (kK * 2 * kCh);  // (dt, dt u) of the chunk: [t][2][channel]
      store_tile(sb, nullptr, cb, cc, false);
#pragma unroll
      for (int e = 0; e < kE; ++e) {  // every step of a chunk before the last is in range
        float dt = cr[e] + bias;
        if (p.delta_softplus) dt = dev::softplus_fast(dt);
        sa[((own + e) * 2) * kCh + ch] = dt;
        sa[((own + e) * 2 + 1) * kCh + ch] = dt * cu[e];
      }
      __syncthreads();
      float nu[kE], nr[kE];
      T nb[kBC], nc[kBC];
      load_e<T, kE>(u_row, t0 + kK + own, L, vec, nu);
      load_e<T, kE>(delta_row, t0 + kK + own, L, vec, nr);
      load_tile(t0 + kK, false, nb, nc);
#pragma unroll
      for (int j = 0; j < kK; ++j) {
        const float dt = sa[(j * 2) * kCh + ch], dtu = sa[(j * 2 + 1) * kCh + ch];
        const float* bt = sb + j * kStride + ns0;
#pragma unroll
        for (int i4 = 0; i4 < kNS; i4 += 2) {
          const float2 b2 = *reinterpret_cast<const float2*>(bt + i4);
          h[i4] = fmaf(dev::ex2_mufu(dt * A2[i4]), h[i4], dtu * b2.x);
          h[i4 + 1] = fmaf(dev::ex2_mufu(dt * A2[i4 + 1]), h[i4 + 1], dtu * b2.y);
        }
      }
#pragma unroll
      for (int e = 0; e < kE; ++e) { cu[e] = nu[e]; cr[e] = nr[e]; }
#pragma unroll
      for (int k = 0; k < kBC; ++k) { cb[k] = nb[k]; cc[k] = nc[k]; }
    }
  }
  __syncthreads();

  // ---- pass B ----
  float gcur[kNS], dAa[kNS];
#pragma unroll
  for (int i = 0; i < kNS; ++i) {
    gcur[i] = ns0 + i < nS && active && p.dfinal_state ? p.dfinal_state[st_off + i] : 0.f;
    dAa[i] = 0.f;
  }
  float dD_acc = 0.f, db_acc = 0.f;
  const int64_t plane = p.batch * dim * L;

  float cu[kE], cr[kE], cz[kE], co[kE], ck[kNS];
  T cb[kBC], cc[kBC];
  auto load_chunk = [&](int64_t c, float (&u_)[kE], float (&r_)[kE], float (&z_)[kE], float (&o_)[kE],
                        float (&k_)[kNS], T (&b_)[kBC], T (&c_)[kBC]) {
    load_step_inputs<T, kE>(u_row, delta_row, z_row, dout_row, c * kK + own, L, vec, u_, r_, z_, o_);
    load_tile(c * kK, true, b_, c_);
#pragma unroll
    for (int i = 0; i < kNS; ++i) k_[i] = active ? ck_base[(c * kSlice + ns0 + i) * dim] : 0.f;
  };
  if (nch > 0) load_chunk(nch - 1, cu, cr, cz, co, ck, cb, cc);

  float* myrow = sRed + (warp * 32 + lane) * S::kRS;
  for (int64_t c = nch - 1; c >= 0; --c) {
    const int64_t t0 = c * kK;
    float* sb = sB + (c & 1) * S::TILE;
    float* sc = sC + (c & 1) * S::TILE;
    store_tile(sb, sc, cb, cc, true);
    float dyt[kE], sgz[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const bool valid = t0 + own + e < L;
      float dt = cr[e] + bias;
      if (p.delta_softplus) dt = dev::softplus_fast(dt);
      dt = valid ? dt : 0.f;
      const float uu = cu[e] * act, o = co[e] * act;
      float dy = o;
      sgz[e] = 0.f;
      if (z_row) {
        const float sg = sigmoid_fast(cz[e]);
        sgz[e] = sg;
        dy = o * cz[e] * sg;
      }
      dyt[e] = dy;
      float* stp = sStep + (own + e) * kF * kCh + ch;
      stp[0] = dt;
      stp[kCh] = dt * uu;
      stp[2 * kCh] = dy;
    }
#pragma unroll
    for (int i = 0; i < kNS; ++i) h[i] = ck[i];
    __syncthreads();  // tile and the channel's per-step scalars visible

    float nu[kE], nr[kE], nz[kE], no[kE], nk[kNS];
    T nb[kBC], nc[kBC];
    if (c > 0) load_chunk(c - 1, nu, nr, nz, no, nk, nb, nc);

#pragma unroll 1
    for (int j = 0; j < ((skip & 4) ? 0 : kK); ++j) {
      const float dt = sStep[j * kF * kCh + ch], dtu = sStep[(j * kF + 1) * kCh + ch];
      const float* bt = sb + j * kStride + ns0;
      float* hj = sH + j * kNS * kBT2 + tid;
#pragma unroll
      for (int i2 = 0; i2 < kNS; i2 += 2) {
        const float2 b2 = *reinterpret_cast<const float2*>(bt + i2);
        const float bv[2] = {b2.x, b2.y};
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int i = i2 + q;
          hj[i * kBT2] = h[i];
          h[i] = fmaf(dev::ex2_mufu(dt * A2[i]), h[i], dtu * bv[q]);
        }
      }
    }

#pragma unroll 1
    for (int j = kK - 1; j >= 0; --j) {
      const float* stp = sStep + j * kF * kCh + ch;
      const float dt = stp[0], dtu = stp[kCh], dy = stp[2 * kCh];
      const float* bt = sb + j * kStride + ns0;
      const float* ct = sc + j * kStride + ns0;
      const float* hj = sH + j * kNS * kBT2 + tid;
      float sgB0 = 0.f, sgB1 = 0.f, sga0 = 0.f, sga1 = 0.f, y0 = 0.f, y1 = 0.f;
      float vb[kNS], vc[kNS];
#pragma unroll
      for (int i2 = 0; i2 < kNS; i2 += 2) {
        const float2 b2 = *reinterpret_cast<const float2*>(bt + i2);
        const float2 c2 = *reinterpret_cast<const float2*>(ct + i2);
        const float bv[2] = {b2.x, b2.y};
        const float cv[2] = {c2.x, c2.y};
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int i = i2 + q;
          const float a = dev::ex2_mufu(dt * A2[i]);
          const float ha = a * hj[i * kBT2];
          const float h1 = fmaf(dtu, bv[q], ha);
          const float gi = fmaf(dy, cv[q], gcur[i]);
          const float gha = gi * ha;
          if (q) {
            y1 = fmaf(h1, cv[q], y1);
            sga1 = fmaf(gha, A2[i], sga1);
            sgB1 = fmaf(gi, bv[q], sgB1);
          } else {
            y0 = fmaf(h1, cv[q], y0);
            sga0 = fmaf(gha, A2[i], sga0);
            sgB0 = fmaf(gi, bv[q], sgB0);
          }
          dAa[i] = fmaf(gha, dt, dAa[i]);
          vb[i] = gi * dtu;
          vc[i] = dy * h1;
          gcur[i] = a * gi;
        }
      }
#pragma unroll
      for (int i4 = 0; i4 < kNS; i4 += 4) {
        if constexpr (kNS % 4 == 0) {
          *reinterpret_cast<float4*>(myrow + i4) = make_float4(vb[i4], vb[i4 + 1], vb[i4 + 2], vb[i4 + 3]);
          *reinterpret_cast<float4*>(myrow + kNS + i4) = make_float4(vc[i4], vc[i4 + 1], vc[i4 + 2], vc[i4 + 3]);
        }
      }
      if constexpr (kNS % 4 != 0) {
#pragma unroll
        for (int i2 = 0; i2 < kNS; i2 += 2) {
          *reinterpret_cast<float2*>(myrow + i2) = make_float2(vb[i2], vb[i2 + 1]);
          *reinterpret_cast<float2*>(myrow + kNS + i2) = make_float2(vc[i2], vc[i2 + 1]);
        }
      }
      float sgB = sgB0 + sgB1, sga = sga0 + sga1, yy = y0 + y1;
      sgB += __shfl_xor_sync(0xffffffffu, sgB, 1);
      sga += __shfl_xor_sync(0xffffffffu, sga, 1);
      yy += __shfl_xor_sync(0xffffffffu, yy, 1);
      if (s == 0) {
        float* w = sStep + (j * kF + 3) * kCh + ch;
        w[0] = sgB;
        w[kCh] = sga;
        w[2 * kCh] = yy;
      }
      constexpr int V = S::V, kGroups = 32 / V, kRowsG = (32 / kS2) / kGroups;
      if (!(skip & 1)) {
        __syncwarp();
        // value v = lane % V: isC = v / kN, state n = v % kN, owned by lanes with s = n / kNS
        const int v = lane % V, grp = lane / V;
        const int n = v % kN, sv = n / kNS, col = (v / kN) * kNS + n % kNS;
        const float* colp = sRed + (warp * 32 + grp * kRowsG * kS2 + sv) * S::kRS + col;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int r = 0; r < kRowsG; r += 2) {
          s0 += colp[(r * kS2) * S::kRS];
          s1 += colp[((r + 1) * kS2) * S::kRS];
        }
        float sum = s0 + s1;
#pragma unroll
        for (int o = V; o < 32; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        __syncwarp();
        if (lane < V) sPart[(warp * kK + j) * V + lane] = sum;
      }
    }
    __syncwarp();  // the channel's per-step sums (written by lane 0) visible to lane 1

    float odu[kE], odd[kE], odz[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int j = own + e;
      const bool valid = t0 + j < L;
      const float* stp = sStep + j * kF * kCh + ch;
      float sgB = stp[3 * kCh], sga = stp[4 * kCh], yy = stp[5 * kCh];
      const int64_t idx = row + t0 + j;
      if (!first && active && valid) {
        sgB += ws.sums[idx];
        sga += ws.sums[plane + idx];
        yy += ws.sums[2 * plane + idx];
      }
      odu[e] = odd[e] = odz[e] = 0.f;
      if (last) {
        const float uu = cu[e] * act, dt = stp[0];
        odu[e] = fmaf(dyt[e], Dv, dt * sgB);
        const float ddt = fmaf(kLn2, sga, uu * sgB);
        const float dd = p.delta_softplus ? ddt * sigmoid_fast(cr[e] + bias) : ddt;
        odd[e] = dd;
        if (z_row) {
          const float yt = fmaf(Dv, uu, yy), sg = sgz[e];
          odz[e] = co[e] * yt * (sg * (1.f + cz[e] * (1.f - sg)));
        }
        if (valid && active) {
          dD_acc = fmaf(dyt[e], uu, dD_acc);
          db_acc += dd;
        }
      } else if (active && valid) {
        ws.sums[idx] = sgB;
        ws.sums[plane + idx] = sga;
        ws.sums[2 * plane + idx] = yy;
      }
    }
    if (last && active) {
      store_e<T, kE>(p.du + row, t0 + own, L, vec, odu);
      store_e<T, kE>(p.ddelta + row, t0 + own, L, vec, odd);
      if (z_row) store_e<T, kE>(p.dz + row, t0 + own, L, vec, odz);
    }

    __syncthreads();  // sPart complete
    {
      constexpr int V = S::V;
      float* pbase = ws.pBC + ((b * G + g) * bpg + blk) * 2 * N * L;
      for (int e = tid; e < ((skip & 1) ? 0 : kK * V); e += kBT2) {
        const int v = e / kK, j = e % kK;
        const int i = v % kN;
        const int64_t t = t0 + j;
        if (i < nS && t < L) {
          float sum = 0.f;
#pragma unroll
          for (int w = 0; w < kWarps2; ++w) sum += sPart[(w * kK + j) * V + v];
          pbase[((v >= kN ? N : 0) + n0 + i) * L + t] = sum;
        }
      }
    }

    if (c > 0) {
#pragma unroll
      for (int e = 0; e < kE; ++e) { cu[e] = nu[e]; cr[e] = nr[e]; cz[e] = nz[e]; co[e] = no[e]; }
#pragma unroll
      for (int i = 0; i < kNS; ++i) ck[i] = nk[i];
#pragma unroll
      for (int k = 0; k < kBC; ++k) { cb[k] = nb[k]; cc[k] = nc[k]; }
    }
  }

  dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, 1);
  db_acc += __shfl_xor_sync(0xffffffffu, db_acc, 1);
  if (active) {
#pragma unroll
    for (int i = 0; i < kNS; ++i) {
      if (ns0 + i < nS) {
        if (p.dinitial_state) p.dinitial_state[st_off + i] = gcur[i];
        ws.pA[st_off + i] = dAa[i];
      }
    }
    if (last && s == 0) {
      ws.pD[b * dim + d] = dD_acc;
      ws.pbias[b * dim + d] = db_acc;
    }
  }
}

// ---- v4: four states x kC channels per lane (dstate <= 16) -------------------------------------
// v2's skip study (NOTES.md): the dB / dC channel sums ~400 us, pass A ~400 us, the recompute
// ~200 us of its 2560 us. v4 cuts each:
// - lane (q = lane & 3, cg = lane >> 2) of warp w owns states 4q .. 4q + 3 of kC channels
//   w * 8 kC + 8 k + cg (k < kC): the dB_t / dC_t contributions (sums over channels) are first
//   summed over the lane's kC channels in registers, then (kShfl) over the warp's 8 cg by a
//   transpose-reduce of shuffles, one float per lane and step into a per-warp row, or (not kShfl)
//   written once per (step, state) into a per-warp [v][cg] row; summed over the block's warps
//   (and cg) after the chunk (fixed order);
// - the chunk's states h_{t-1} live in registers (hs[8][kC][4], fully unrolled steps): no
//   shared-memory round trip; the recompute walks 7 steps (the 8th state is not needed);
// - the per-step sums over the states (sum g B, sum g h a A2, sum h C; 4 lanes per channel) go
//   as one float4 per (step, channel, q) into a swizzled [t][ch][q] array that the step's owner
//   thread adds after the chunk (no shuffles);
// - with checkpoints_from_forward two exponentials per (t, n) (recompute 7/8 + adjoint).
// Block = kChB channels = 4 kChB / kC lanes; 2 barriers per chunk. Layout 1: kC 2, 64 channels
// (v1 / v2's partial layout), kShfl; layout 2: kC 1, 32 channels (twice the blocks, 4 per SM).
// Owners of the per-step scalars: 32 / kOwn consecutive channels per warp, a channel's kOwn
// owners kOwnW lanes apart, so the [t][ch] rows are written and read without bank conflicts.
#ifndef V4_PREFETCH_STEP
#define V4_PREFETCH_STEP 4
#endif
#ifndef V4_PREFETCH_CKPT
#define V4_PREFETCH_CKPT 1
#endif
// Layouts (SelectiveScanBwdCudaParams::v4_layout): kC channels per lane, kChB channels per block;
// kShfl: the dB / dC contributions summed over a warp's 8 channel groups by shuffles (one float
// per lane and step to shared memory) instead of 8 floats per lane and step summed after the chunk.
template <int kC, int kChB, bool kShfl>
struct Cfg4 {
  static constexpr int kCh4 = kChB;
  static constexpr int kThreads = kCh4 * 4 / kC;   // 128 (both layouts built)
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kE = kK * kCh4 / kThreads;  // steps per owner thread: 4 (kC 2), 2 (kC 1)
  static constexpr int kOwn = kK / kE;             // owner threads per channel: 2, 4
  // resident blocks per SM the register cap is set for: 168 registers at kC 2, 128 at kC 1
  static constexpr int kMinBlocks = (kC == 2 ? 384 : 512) / kThreads;
  static constexpr int kRedRow = kShfl ? 33 : 32 * 8 + 4;  // sRed row per (warp, step): [slot] or [v'][cg], padded
  static constexpr int STEP = kK * kCh4 * 4;       // [t][ch] float4: dt, u, dy, softplus'
  static constexpr int NS = kK * kCh4 * 4 * 4;     // [t][ch][q ^ swz] float4: sum g B, sum g h a A2, sum h C
  static constexpr int RED = kWarps * kK * kRedRow;
  static constexpr int kTS = 36;                   // tile row: B 16 | C 16 | pad 4 (conflict-free stores)
  static constexpr int kTSA = 20;                  // pass A's B tile row: 16 | pad 4
  static constexpr int TILE = kK * kTS;            // [t][B 16 | C 16 | pad]
  static constexpr int kOwnW = 32 / kOwn;          // owner channels per warp (a channel's owners: lanes kOwnW apart)
  static constexpr int kFloats = STEP + NS + RED + TILE;
  static constexpr size_t kBytes = size_t(kFloats) * 4;
  static constexpr int kBC = (16 * kK + kThreads - 1) / kThreads;  // tile elements per thread (B and C each)
  static_assert(NS >= 2 * kK * kCh4 * 2 + 2 * kK * kTSA, "pass A's double buffers fit in the NS region");
};

// swizzle of the q slot of sN[t][ch]: conflict-free for the writers (2 channels x 4 q per 8-lane
// phase of a 16-byte store) and for the owners' reads (8 consecutive channels of one step).
__device__ __forceinline__ int swz4(int ch) { return (ch >> 1) & 3; }

template <class T, int kC, int kChB, bool kShfl>
__global__ void __launch_bounds__(Cfg4<kC, kChB, kShfl>::kThreads, Cfg4<kC, kChB, kShfl>::kMinBlocks)
scan_bwd_v4_kernel(SelectiveScanBwdCudaParams<T> p, BwdWs ws, int bpg, int nS, int skip) {
  using S = Cfg4<kC, kChB, kShfl>;
  constexpr int kCh4 = kChB;
  constexpr int kT = S::kThreads, kE = S::kE, kBC = S::kBC;
  extern __shared__ float4 smem4[];
  float* sStep = reinterpret_cast<float*>(smem4);
  float* sN = sStep + S::STEP;
  float* sRed = sN + S::NS;
  float* sTile = sRed + S::RED;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q = lane & 3, cg = lane >> 2;
  const int64_t L = p.seqlen, N = p.dstate, G = p.n_groups, dim = p.dim, dpg = dim / G;
  const int64_t g = blockIdx.x / bpg, blk = blockIdx.x % bpg;
  const int64_t b = blockIdx.y;
  const int64_t nch = ws.nchunks;

  // the lane's channels (state owner)
  int chl[kC];
  bool act_k[kC];
  int64_t d_k[kC];
#pragma unroll
  for (int k = 0; k < kC; ++k) {
    chl[k] = warp * 8 * kC + 8 * k + cg;
    const int64_t cl = blk * kCh4 + chl[k];
    act_k[k] = cl < dpg;
    d_k[k] = g * dpg + (act_k[k] ? cl : 0);
  }
  // the owner thread's channel and steps (per-step scalars and outputs)
  // the owners: lanes l and l + kOwnW hold the same channel's steps (8 consecutive channels per
  // 8-lane phase: conflict-free [t][ch] float4 rows)
  const int och = warp * S::kOwnW + lane % S::kOwnW, own = (lane / S::kOwnW) * kE;
  const int64_t ocl = blk * kCh4 + och;
  const bool oact = ocl < dpg;
  const float oactf = oact ? 1.f : 0.f;  // inactive channels mirror channel 0 with zero gradients
  const int64_t od = g * dpg + (oact ? ocl : 0);
  const int64_t row = (b * dim + od) * L;
  const T* u_row = p.u + row;
  const T* delta_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  const T* dout_row = p.dout + row;
  constexpr int kVB = (kE * int(sizeof(T))) < 16 ? kE * int(sizeof(T)) : 16;
  const bool vec = aligned_to(u_row, kVB) && aligned_to(delta_row, kVB) && aligned_to(dout_row, kVB) &&
                   (!z_row || aligned_to(z_row, kVB)) && aligned_to(p.du + row, kVB) && aligned_to(p.ddelta + row, kVB) &&
                   (!z_row || aligned_to(p.dz + row, kVB));
  const T* Bg = p.B + (b * G + g) * N * L;
  const T* Cg = p.C + (b * G + g) * N * L;
  const float Dv = p.D ? p.D[od] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[od] : 0.f;
  float* ck_b = ws.ckpt + b * nch * kSlice * dim;  // + (c * kSlice + n) * dim + d

  float A2[kC][4], h[kC][4];
#pragma unroll
  for (int k = 0; k < kC; ++k)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = 4 * q + i;
      const bool on = n < nS;
      A2[k][i] = on ? p.A[d_k[k] * N + n] * dev::kLog2e : 0.f;
      h[k][i] = on && act_k[k] && p.initial_state ? p.initial_state[(b * dim + d_k[k]) * N + n] : 0.f;
    }

  auto load_tile = [&](int64_t t0, bool withC, T (&rb)[kBC], T (&rc)[kBC]) {
#pragma unroll
    for (int kk = 0; kk < kBC; ++kk) {
      const int e = tid + kk * kT;
      const int i = e / kK, j = e % kK;
      const bool in = e < 16 * kK && i < nS && t0 + j < L;
      rb[kk] = in ? Bg[i * L + t0 + j] : dev::from_f32<T>(0.f);
      rc[kk] = in && withC ? Cg[i * L + t0 + j] : dev::from_f32<T>(0.f);
    }
  };
  auto store_tile = [&](float* tile, int cstride, const T (&rb)[kBC], const T (&rc)[kBC], bool withC) {
#pragma unroll
    for (int kk = 0; kk < kBC; ++kk) {
      const int e = tid + kk * kT;
      if (e < 16 * kK) {
        const int i = e / kK, j = e % kK;
        tile[j * cstride + i] = dev::to_f32(rb[kk]);
        if (withC) tile[j * cstride + 16 + i] = dev::to_f32(rc[kk]);
      }
    }
  };

  // ---- pass A: checkpoints (skipped when the forward wrote them: skip & 2) ----
  if (!(skip & 2)) {
    float cu[kE], cr[kE];
    T cb[kBC], cc[kBC];
    if (nch > 1) {
      load_e<T, kE>(u_row, own, L, vec, cu);
      load_e<T, kE>(delta_row, own, L, vec, cr);
      load_tile(0, false, cb, cc);
    }
    for (int64_t c = 0; c < nch; ++c) {
#pragma unroll
      for (int k = 0; k < kC; ++k)
        if (act_k[k]) {
#pragma unroll
          for (int i = 0; i < 4; ++i) ck_b[(c * kSlice + 4 * q + i) * dim + d_k[k]] = h[k][i];
        }
      if (c == nch - 1) break;  // the last chunk's own states are recomputed in pass B
      const int64_t t0 = c * kK;
      float* sa = sN + (c & 1) * (kK * kCh4 * 2);                 // (dt, dt u): [t][ch] float2
      float* sb = sN + 2 * (kK * kCh4 * 2) + (c & 1) * (kK * S::kTSA);  // B: [t][16 | pad]
      store_tile(sb, S::kTSA, cb, cc, false);
#pragma unroll
      for (int e = 0; e < kE; ++e) {  // every step of a chunk before the last is in range
        float dt = cr[e] + bias;
        if (p.delta_softplus) dt = dev::softplus_fast(dt);
        *reinterpret_cast<float2*>(sa + ((own + e) * kCh4 + och) * 2) = make_float2(dt, dt * cu[e]);
      }
      __syncthreads();
      float nu[kE], nr[kE];
      T nb[kBC], nc[kBC];
      load_e<T, kE>(u_row, t0 + kK + own, L, vec, nu);
      load_e<T, kE>(delta_row, t0 + kK + own, L, vec, nr);
      load_tile(t0 + kK, false, nb, nc);
#pragma unroll
      for (int j = 0; j < kK; ++j) {
        const float4 b4 = *reinterpret_cast<const float4*>(sb + j * S::kTSA + 4 * q);
        const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
        for (int k = 0; k < kC; ++k) {
          const float2 s2 = *reinterpret_cast<const float2*>(sa + (j * kCh4 + chl[k]) * 2);
#pragma unroll
          for (int i = 0; i < 4; ++i) h[k][i] = fmaf(dev::ex2_mufu(s2.x * A2[k][i]), h[k][i], s2.y * bv[i]);
        }
      }
#pragma unroll
      for (int e = 0; e < kE; ++e) { cu[e] = nu[e]; cr[e] = nr[e]; }
#pragma unroll
      for (int kk = 0; kk < kBC; ++kk) { cb[kk] = nb[kk]; cc[kk] = nc[kk]; }
    }
    __syncthreads();  // pass B reuses the NS region
  }

  // ---- pass B ----
  float gcur[kC][4], dAa[kC][4];
#pragma unroll
  for (int k = 0; k < kC; ++k)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = 4 * q + i;
      gcur[k][i] = n < nS && act_k[k] && p.dfinal_state ? p.dfinal_state[(b * dim + d_k[k]) * N + n] : 0.f;
      dAa[k][i] = 0.f;
    }
  float dD_acc = 0.f, db_acc = 0.f;

  // The chunk's per-step inputs (bf16 packed: 8 registers fewer while the next chunk's wait
  // through the adjoint), converted in (1).
  StepIn<T, kE> cu, cr, cz, co;
  float ck[kC][4];
  T cb[kBC], cc[kBC];
  auto load_chunk = [&](int64_t c, StepIn<T, kE>& u_, StepIn<T, kE>& r_, StepIn<T, kE>& z_, StepIn<T, kE>& o_,
                        T (&b_)[kBC], T (&c_)[kBC]) {
    const int64_t t = c * kK + own;  // the rows from the parameters (no pointer registers held)
    u_.load(p.u + row, t, L, vec);
    r_.load(p.delta + row, t, L, vec);
    if (p.z) z_.load(p.z + row, t, L, vec);
    else z_.zero();
    o_.load(p.dout + row, t, L, vec);
    load_tile(c * kK, true, b_, c_);
  };
  auto load_ckpt = [&](int64_t c, float (&k_)[kC][4]) {
#pragma unroll
    for (int k = 0; k < kC; ++k)
#pragma unroll
      for (int i = 0; i < 4; ++i)  // states >= nS: not written by the forward's checkpoints (kN < 16)
        k_[k][i] = act_k[k] && 4 * q + i < nS ? ck_b[(c * kSlice + 4 * q + i) * dim + d_k[k]] : 0.f;
  };
  if (nch > 0) {
    load_chunk(nch - 1, cu, cr, cz, co, cb, cc);
    load_ckpt(nch - 1, ck);
  }

  constexpr int kPf = V4_PREFETCH_STEP;  // adjoint step before which the next chunk is loaded
  constexpr int kPfK = V4_PREFETCH_CKPT;  // ... and its checkpoint
  float* myred = sRed + warp * kK * S::kRedRow + q * 8 + cg;  // + j * kRedRow + (v * 4) * 8, v = i (B) or 4 + i (C)
  for (int64_t c = nch - 1; c >= 0; --c) {
    const int64_t t0 = c * kK;
    // (1) the owner's per-step scalars, the B / C tile, the checkpoint
    float odzf[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const bool valid = t0 + own + e < L;
      const float r = cr.get(e) + bias;
      float dt = r, sig = 1.f;
      if (p.delta_softplus) {
        dt = dev::softplus_fast(r);
        sig = sigmoid_fast(r);
      }
      dt = valid ? dt : 0.f;  // identity map past the end
      const float uu = cu.get(e) * oactf, o = co.get(e) * oactf;  // 0 past the end
      float dy = o, dzf = 0.f;
      if (z_row) {
        const float zz = cz.get(e);
        const float sg = sigmoid_fast(zz);
        dy = o * zz * sg;
        dzf = o * (sg * (1.f + zz * (1.f - sg)));
      }
      odzf[e] = dzf;
      *reinterpret_cast<float4*>(sStep + ((own + e) * kCh4 + och) * 4) = make_float4(dt, uu, dy, sig);
    }
    store_tile(sTile, S::kTS, cb, cc, true);
    float hs[kK][kC][4];
#pragma unroll
    for (int k = 0; k < kC; ++k)
#pragma unroll
      for (int i = 0; i < 4; ++i) hs[0][k][i] = ck[k][i];
    __syncthreads();  // S1: scalars and tile visible

    // (2) recompute hs[j] = h_{t0 + j - 1}, j = 1 .. 7
#pragma unroll
    for (int j = 0; j < kK - 1; ++j) {
      const float4 b4 = *reinterpret_cast<const float4*>(sTile + j * S::kTS + 4 * q);
      const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
      for (int k = 0; k < kC; ++k) {
        const float2 s2 = *reinterpret_cast<const float2*>(sStep + (j * kCh4 + chl[k]) * 4);
        const float dtu = s2.x * s2.y;
#pragma unroll
        for (int i = 0; i < 4; ++i) hs[j + 1][k][i] = fmaf(dev::ex2_mufu(s2.x * A2[k][i]), hs[j][k][i], dtu * bv[i]);
      }
    }

    // (3) the adjoint, last step first; the next chunk's inputs are loaded before step kPf (4:
    // hs[5 ..] are dead by then; cu .. co of this chunk are no longer needed)
#pragma unroll
    for (int j = kK - 1; j >= 0; --j) {
      if (j == kPf && c > 0) load_chunk(c - 1, cu, cr, cz, co, cb, cc);
      if (j == kPfK && c > 0) load_ckpt(c - 1, ck);
      const float4 b4 = *reinterpret_cast<const float4*>(sTile + j * S::kTS + 4 * q);
      const float4 c4 = *reinterpret_cast<const float4*>(sTile + j * S::kTS + 16 + 4 * q);
      const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
      const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
      float vb[4], vc[4];
#pragma unroll
      for (int k = 0; k < kC; ++k) {
        const float4 s4 = *reinterpret_cast<const float4*>(sStep + (j * kCh4 + chl[k]) * 4);
        const float dt = s4.x, dtu = s4.x * s4.y, dy = s4.z;
        float sgB = 0.f, sga = 0.f, yy = 0.f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float a = dev::ex2_mufu(dt * A2[k][i]);
          const float ha = a * hs[j][k][i];       // a_t h_{t-1}
          const float h1 = fmaf(dtu, bv[i], ha);  // h_t
          const float gi = fmaf(dy, cv[i], gcur[k][i]);
          const float gha = gi * ha;
          sga = fmaf(gha, A2[k][i], sga);
          sgB = fmaf(gi, bv[i], sgB);
          yy = fmaf(h1, cv[i], yy);
          dAa[k][i] = fmaf(gha, dt, dAa[k][i]);
          vb[i] = k == 0 ? gi * dtu : fmaf(gi, dtu, vb[i]);  // dB contribution, summed over the lane's channels
          vc[i] = k == 0 ? dy * h1 : fmaf(dy, h1, vc[i]);    // dC contribution
          gcur[k][i] = a * gi;
        }
        const int ch = chl[k];
        *reinterpret_cast<float4*>(sN + ((j * kCh4 + ch) * 4 + (q ^ swz4(ch))) * 4) = make_float4(sgB, sga, yy, 0.f);
      }
      if (skip & 1) {
      } else if constexpr (kShfl) {
        // transpose-reduce over the lane bits 4, 3, 2 (cg): each level keeps half the values and
        // adds the partner's; lane (q, h1 h2 h3) ends with value i = 2 h2 + h3 of B (h1 0) or C
        // (h1 1), state 4 q + i, summed over the warp's 8 channel groups
        const bool h1 = lane & 16, h2 = lane & 8, h3 = lane & 4;
        float x[4], y[2];
#pragma unroll
        for (int k = 0; k < 4; ++k) x[k] = (h1 ? vc[k] : vb[k]) + __shfl_xor_sync(0xffffffffu, h1 ? vb[k] : vc[k], 16);
#pragma unroll
        for (int k = 0; k < 2; ++k) y[k] = (h2 ? x[2 + k] : x[k]) + __shfl_xor_sync(0xffffffffu, h2 ? x[k] : x[2 + k], 8);
        const float zsum = (h3 ? y[1] : y[0]) + __shfl_xor_sync(0xffffffffu, h3 ? y[0] : y[1], 4);
        // slot of vv = 16 h1 + 4 q + i (vv < 16: B of state vv, else C of state vv - 16): (vv & 3) * 8 + (vv >> 2)
        sRed[(warp * kK + j) * S::kRedRow + (2 * h2 + h3) * 8 + 4 * h1 + q] = zsum;
      } else {
        float* r = myred + j * S::kRedRow;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          r[(i * 4) * 8] = vb[i];        // v' = i * 4 + q (state 4 q + i of B)
          r[(16 + i * 4) * 8] = vc[i];   // v' = 16 + i * 4 + q (C)
        }
      }
    }
    __syncthreads();  // S2: sN and sRed complete

    // (4) per-step outputs of the owner's steps
    {
      float odu[kE], odd[kE], odz[kE];
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        const int t = own + e;
        const bool valid = t0 + t < L;
        const float4* nrow = reinterpret_cast<const float4*>(sN) + (t * kCh4 + och) * 4;
        const int f = swz4(och);
        const float4 r0 = nrow[0 ^ f], r1 = nrow[1 ^ f], r2 = nrow[2 ^ f], r3 = nrow[3 ^ f];
        const float sgB = (r0.x + r1.x) + (r2.x + r3.x);
        const float sga = (r0.y + r1.y) + (r2.y + r3.y);
        const float yy = (r0.z + r1.z) + (r2.z + r3.z);
        const float4 s4 = *reinterpret_cast<const float4*>(sStep + (t * kCh4 + och) * 4);
        const float dt = s4.x, uu = s4.y, dy = s4.z, sig = s4.w;
        odu[e] = fmaf(dy, Dv, dt * sgB);
        const float dd = fmaf(kLn2, sga, uu * sgB) * sig;
        odd[e] = dd;
        odz[e] = odzf[e] * fmaf(Dv, uu, yy);
        if (valid && oact) {
          dD_acc = fmaf(dy, uu, dD_acc);
          db_acc += dd;
        }
      }
      if (oact) {
        store_e<T, kE>(p.du + row, t0 + own, L, vec, odu);
        store_e<T, kE>(p.ddelta + row, t0 + own, L, vec, odd);
        if (z_row) store_e<T, kE>(p.dz + row, t0 + own, L, vec, odz);
      }
    }
    // (5) dB / dC block partials: output o = (v, t), v < 16 B of state v, else C of state v - 16
    if (!(skip & 1)) {
      float* pbase = ws.pBC + ((b * G + g) * bpg + blk) * 2 * N * L;
#pragma unroll
      for (int o = tid; o < 32 * kK; o += kT) {
        const int t = o % kK, v = o / kK;
        const int n = v & 15, isC = v >> 4;
        float sum = 0.f;
        if constexpr (kShfl) {
#pragma unroll
          for (int w = 0; w < S::kWarps; ++w) sum += sRed[(w * kK + t) * S::kRedRow + (v & 3) * 8 + (v >> 2)];
        } else {
          const int vp = isC * 16 + (n & 3) * 4 + (n >> 2);
#pragma unroll
          for (int w = 0; w < S::kWarps; ++w) {
            const float4* rr = reinterpret_cast<const float4*>(sRed + (w * kK + t) * S::kRedRow + vp * 8);
            const float4 x = rr[0], y = rr[1];
            sum += ((x.x + x.y) + (x.z + x.w)) + ((y.x + y.y) + (y.z + y.w));
          }
        }
        if (n < nS && t0 + t < L) pbase[((isC ? N : 0) + n) * L + t0 + t] = sum;
      }
    }
  }

#pragma unroll
  for (int m = S::kOwnW; m < 32; m <<= 1) {  // the channel's owner threads: lanes kOwnW apart
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, m);
    db_acc += __shfl_xor_sync(0xffffffffu, db_acc, m);
  }
  if (oact && own == 0) {
    ws.pD[b * dim + od] = dD_acc;
    ws.pbias[b * dim + od] = db_acc;
  }
#pragma unroll
  for (int k = 0; k < kC; ++k)
    if (act_k[k]) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int n = 4 * q + i;
        if (n < nS) {
          const int64_t so = (b * dim + d_k[k]) * N + n;
          if (p.dinitial_state) p.dinitial_state[so] = gcur[k][i];
          ws.pA[so] = dAa[k][i];
        }
      }
    }
}

// dB / dC [b, g, n, t] = sum over the group's blocks of the partials, in block order.
__global__ void scan_bwd_reduce_bc(const float* __restrict__ pBC, float* __restrict__ dB, float* __restrict__ dC,
                                   int64_t BG, int64_t bpg, int64_t N, int64_t L) {
  const int64_t total = BG * 2 * N * L;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = idx % L, v = (idx / L) % (2 * N), bg = idx / (2 * N * L);
    const float* src = pBC + (bg * bpg * 2 * N + v) * L + t;
    float s = 0.f;
    for (int64_t k = 0; k < bpg; ++k) s += src[k * 2 * N * L];
    if (v < N) dB[(bg * N + v) * L + t] = s;
    else dC[(bg * N + v - N) * L + t] = s;
  }
}

// dA (dim, n), dD, d delta_bias (dim): sums over the batch, in batch order.
__global__ void scan_bwd_reduce_small(const float* __restrict__ pA, const float* __restrict__ pD,
                                      const float* __restrict__ pbias, float* __restrict__ dA, float* __restrict__ dD,
                                      float* __restrict__ dbias, int64_t batch, int64_t dim, int64_t N) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < dim * N; idx += stride) {
    float s = 0.f;
    for (int64_t b = 0; b < batch; ++b) s += pA[b * dim * N + idx];
    dA[idx] = s;
  }
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < dim; idx += stride) {
    float sd = 0.f, sb = 0.f;
    for (int64_t b = 0; b < batch; ++b) {
      sd += pD[b * dim + idx];
      sb += pbias[b * dim + idx];
    }
    if (dD) dD[idx] = sd;
    if (dbias) dbias[idx] = sb;
  }
}

template <class T, int kN>
void launch_main(const SelectiveScanBwdCudaParams<T>& p, const BwdWs& ws, int bpg, int n0, int nS, bool first,
                 bool last, int skip, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(scan_bwd_kernel<T, kN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(Smem<kN>::kBytes));
  MAMBA_CUDA_CHECK("selective_scan_bwd_cuda (smem attribute)", attr);
  const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(p.batch));
  scan_bwd_kernel<T, kN><<<grid, kBT, Smem<kN>::kBytes, stream>>>(p, ws, bpg, n0, nS, first, last, skip);
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_bwd_cuda");
}

template <class T, int kN>
void launch_v2(const SelectiveScanBwdCudaParams<T>& p, const BwdWs& ws, int bpg, int n0, int nS, bool first, bool last,
               int skip, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(scan_bwd_v2_kernel<T, kN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(Smem2<kN>::kBytes));
  MAMBA_CUDA_CHECK("selective_scan_bwd_cuda (v2 smem attribute)", attr);
  const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(p.batch));
  scan_bwd_v2_kernel<T, kN><<<grid, kBT2, Smem2<kN>::kBytes, stream>>>(p, ws, bpg, n0, nS, first, last, skip);
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_bwd_cuda (v2)");
}

template <class T, int kC, int kChB, bool kShfl>
void launch_v4(const SelectiveScanBwdCudaParams<T>& p, const BwdWs& ws, int bpg, int nS, int skip, cudaStream_t stream) {
  using S = Cfg4<kC, kChB, kShfl>;
  static const cudaError_t attr = cudaFuncSetAttribute(scan_bwd_v4_kernel<T, kC, kChB, kShfl>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(S::kBytes));
  MAMBA_CUDA_CHECK("selective_scan_bwd_cuda (v4 smem attribute)", attr);
  const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(p.batch));
  scan_bwd_v4_kernel<T, kC, kChB, kShfl><<<grid, S::kThreads, S::kBytes, stream>>>(p, ws, bpg, nS, skip);
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_bwd_cuda (v4)");
}

template <class T>
void validate(const SelectiveScanBwdCudaParams<T>& p) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0) throw std::invalid_argument("selective_scan_bwd_cuda: negative size");
  if (p.dstate < 1 || p.dstate > kMaxStateB)
    throw std::invalid_argument("selective_scan_bwd_cuda: dstate must be in [1, 256], got " + std::to_string(p.dstate));
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_scan_bwd_cuda: dim must be a multiple of n_groups");
  if (p.batch > 65535 || p.dim > 0x7fffffff) throw std::invalid_argument("selective_scan_bwd_cuda: batch > 65535 or dim too large");
  if (blocks_per_group(p.dim, p.n_groups, kMinChannelsPerBlock) * p.n_groups > 0x7fffffff)
    throw std::invalid_argument("selective_scan_bwd_cuda: dim too large");
}

}  // namespace

template <class T>
size_t selective_scan_bwd_cuda_workspace_bytes(const SelectiveScanBwdCudaParams<T>& p) {
  validate(p);
  return ws_layout(p.batch, p.dim, p.seqlen, p.dstate, p.n_groups).total * sizeof(float);
}

template <class T>
void selective_scan_bwd_cuda(const SelectiveScanBwdCudaParams<T>& p, cudaStream_t stream) {
  validate(p);
  // Kernel: p.version, else MAMBA_SCAN_BWD_VERSION, else automatic: 4 (four states x 1 or 2
  // channels per lane) for 9 <= dstate <= 16, where the H200 measured it faster than v2
  // (NOTES.md "Scan backward v4"); 2 otherwise (1 = one thread per channel).
  const char* ver_env = std::getenv("MAMBA_SCAN_BWD_VERSION");
  const int asked = p.version ? p.version : ver_env && *ver_env ? std::atoi(ver_env) : 0;
  const char* ver_name = p.version ? "version" : "MAMBA_SCAN_BWD_VERSION";
  if (asked != 0 && asked != 1 && asked != 2 && asked != 4)
    throw std::invalid_argument(std::string("selective_scan_bwd_cuda: ") + ver_name +
                                " must be 0 (automatic), 1, 2 or 4, got " + std::to_string(asked) +
                                " (3 was removed: kernels/cuda/NOTES.md, branch prune)");
  if (asked == 4 && p.dstate > kSlice)
    throw std::invalid_argument(std::string("selective_scan_bwd_cuda: ") + ver_name + " 4 needs dstate <= 16, got " +
                                std::to_string(p.dstate));
  const int version = asked ? asked : (p.dstate > 8 && p.dstate <= kSlice ? 4 : 2);
  // v4's layout: p.v4_layout, else MAMBA_SCAN_BWD_V4_LAYOUT, else automatic
  const char* lay_env = std::getenv("MAMBA_SCAN_BWD_V4_LAYOUT");
  const int lay_asked = p.v4_layout ? p.v4_layout : lay_env && *lay_env ? std::atoi(lay_env) : 0;
  if (lay_asked < 0 || lay_asked > 2)
    throw std::invalid_argument(std::string("selective_scan_bwd_cuda: ") + (p.v4_layout ? "v4_layout" : "MAMBA_SCAN_BWD_V4_LAYOUT") +
                                " must be 0 (automatic), 1 or 2, got " + std::to_string(lay_asked));
  // Automatic: layout 2 (1 channel per lane, 32 per block, 4 blocks = 16 warps per SM) while its
  // blocks fit in one wave on the device (batch x dim <= SMs x 4 x 32), layout 1 (2 channels per
  // lane, 64 per block, 3 blocks per SM) above: H200, bf16 l2048 with the forward's checkpoints,
  // layout 1 / 2: b8 d3072 1796.8 / 1954.1 us, b8 d1536 1407.1 / 1001.7, b4 d1536 1135.4 / 785.5
  // (NOTES.md "Scan backward v4: lane layouts").
  const int v4_layout = lay_asked ? lay_asked : p.batch * p.dim <= int64_t{dev::sm_count()} * 4 * 32 ? 2 : 1;
  if (p.checkpoints_from_forward) {  // the forward (v6, bwd_workspace) wrote pass A's checkpoints
    if (p.dstate > kSlice)
      throw std::invalid_argument("selective_scan_bwd_cuda: checkpoints_from_forward needs dstate <= 16, got " +
                                  std::to_string(p.dstate));
    if (version != 2 && version != 4)
      throw std::invalid_argument("selective_scan_bwd_cuda: checkpoints_from_forward needs version 2 (the default) or 4, got " +
                                  std::to_string(version));
  }
  if (p.dim == 0) return;
  if (!p.dA) throw std::invalid_argument("selective_scan_bwd_cuda: dA is required");
  if (p.batch == 0) {  // sums over an empty batch
    MAMBA_CUDA_CHECK("selective_scan_bwd_cuda", cudaMemsetAsync(p.dA, 0, sizeof(float) * p.dim * p.dstate, stream));
    if (p.dD) MAMBA_CUDA_CHECK("selective_scan_bwd_cuda", cudaMemsetAsync(p.dD, 0, sizeof(float) * p.dim, stream));
    if (p.ddelta_bias)
      MAMBA_CUDA_CHECK("selective_scan_bwd_cuda", cudaMemsetAsync(p.ddelta_bias, 0, sizeof(float) * p.dim, stream));
    return;
  }
  if (!p.A || (p.seqlen > 0 && (!p.u || !p.delta || !p.B || !p.C || !p.dout || !p.du || !p.ddelta || !p.dB || !p.dC)))
    throw std::invalid_argument("selective_scan_bwd_cuda: u, delta, B, C, A, dout, du, ddelta, dA, dB and dC are required");
  if (p.z && p.seqlen > 0 && !p.dz) throw std::invalid_argument("selective_scan_bwd_cuda: dz is required when z is given");
  const WsLayout lay = ws_layout(p.batch, p.dim, p.seqlen, p.dstate, p.n_groups);
  if (!p.workspace || p.workspace_bytes < lay.total * sizeof(float))
    throw std::invalid_argument("selective_scan_bwd_cuda: workspace smaller than selective_scan_bwd_cuda_workspace_bytes()");
  if (!dev::aligned16(p.workspace)) throw std::invalid_argument("selective_scan_bwd_cuda: workspace must be 16-byte aligned");
  float* w = static_cast<float*>(p.workspace);
  BwdWs ws;
  ws.ckpt = w + lay.ckpt;
  ws.pBC = w + lay.pBC;
  ws.pA = w + lay.pA;
  ws.pD = w + lay.pD;
  ws.pbias = w + lay.pbias;
  ws.sums = p.dstate > kSlice ? w + lay.sums : nullptr;
  ws.nchunks = (p.seqlen + kK - 1) / kK;
  const int64_t per_block = version == 4 && v4_layout == 2 ? 32 : kBT;
  const int bpg = static_cast<int>(blocks_per_group(p.dim, p.n_groups, per_block));
  const int slices = static_cast<int>((p.dstate + kSlice - 1) / kSlice);
  // Timing experiments only (wrong results): MAMBA_SCAN_BWD_SKIP bit 1 drops the dB / dC
  // channel sums, bit 2 pass A (checkpoints), bit 4 the chunk recompute. Read on every call.
  const char* skip_env = std::getenv("MAMBA_SCAN_BWD_SKIP");
  const int skip = skip_env && *skip_env ? std::atoi(skip_env) : 0;
  const int skip_a = p.checkpoints_from_forward ? 2 : 0;
  if (version == 4) {
    const int nS = static_cast<int>(p.dstate);
    if (v4_layout == 1) launch_v4<T, 2, 64, true>(p, ws, bpg, nS, skip | skip_a, stream);
    else launch_v4<T, 1, 32, false>(p, ws, bpg, nS, skip | skip_a, stream);
  }
  for (int s = 0; s < (version == 4 ? 0 : slices); ++s) {
    const int n0 = s * kSlice;
    const int nS = static_cast<int>(std::min<int64_t>(kSlice, p.dstate - n0));
    const bool first = s == 0, last = s == slices - 1;
    if (version == 1) {
      if (nS <= 4) launch_main<T, 4>(p, ws, bpg, n0, nS, first, last, skip, stream);
      else if (nS <= 8) launch_main<T, 8>(p, ws, bpg, n0, nS, first, last, skip, stream);
      else launch_main<T, 16>(p, ws, bpg, n0, nS, first, last, skip, stream);
    } else {  // v2
      if (nS <= 4) launch_v2<T, 4>(p, ws, bpg, n0, nS, first, last, skip | skip_a, stream);
      else if (nS <= 8) launch_v2<T, 8>(p, ws, bpg, n0, nS, first, last, skip | skip_a, stream);
      else launch_v2<T, 16>(p, ws, bpg, n0, nS, first, last, skip | skip_a, stream);
    }
  }
  const int64_t BG = p.batch * p.n_groups;
  const int64_t nbc = BG * 2 * p.dstate * p.seqlen;
  if (nbc > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>((nbc + 255) / 256, 4096));
    scan_bwd_reduce_bc<<<blocks, 256, 0, stream>>>(ws.pBC, p.dB, p.dC, BG, bpg, p.dstate, p.seqlen);
    MAMBA_CUDA_CHECK_LAUNCH("selective_scan_bwd_cuda (dB, dC)");
  }
  const int blocks = static_cast<int>(std::min<int64_t>((p.dim * p.dstate + 255) / 256, 1024));
  scan_bwd_reduce_small<<<blocks, 256, 0, stream>>>(ws.pA, ws.pD, ws.pbias, p.dA, p.dD, p.ddelta_bias, p.batch, p.dim,
                                                    p.dstate);
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_bwd_cuda (dA, dD, ddelta_bias)");
}

template size_t selective_scan_bwd_cuda_workspace_bytes<float>(const SelectiveScanBwdCudaParams<float>&);
template size_t selective_scan_bwd_cuda_workspace_bytes<__nv_bfloat16>(const SelectiveScanBwdCudaParams<__nv_bfloat16>&);
template void selective_scan_bwd_cuda<float>(const SelectiveScanBwdCudaParams<float>&, cudaStream_t);
template void selective_scan_bwd_cuda<__nv_bfloat16>(const SelectiveScanBwdCudaParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
