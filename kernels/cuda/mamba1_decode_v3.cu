// Persistent MambaLM decode step, version 3: two grid barriers per layer, channel-owning
// blocks, weights staged in shared memory layers ahead (mamba1_decode_persistent_cuda.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "decode_persistent_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"

namespace mamba::kernels::cuda {
namespace {

using decode::ldcg_f;
using decode::norm_rows;
using decode::round_t;
using decode::rt;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxStages = 3;

constexpr int64_t align16(int64_t b) { return (b + 15) / 16 * 16; }

// Byte offsets of one stage (a layer's slice for one block) and of the fixed area.
struct Plan {
  int64_t cpb = 0, ngroups = 0;
  int stages = 0;
  // stage
  int64_t s_norm = 0, s_win = 0, s_wout = 0, s_wx = 0, s_wdt = 0, s_A = 0, s_cw = 0, s_cb = 0, s_dtb = 0, s_D = 0,
          s_cs = 0, s_hs = 0, stage_bytes = 0;
  // fixed
  int64_t f_res = 0, f_xs = 0, f_xv = 0, f_zs = 0, f_xc = 0, f_xd = 0, f_y = 0, f_red = 0, f_scale = 0, fixed_bytes = 0;
  int64_t smem() const { return fixed_bytes + stages * stage_bytes; }
};

template <class T>
struct Args {
  PersistentDecodeParams<T> p;
  Plan plan;
};

int mm_for(int64_t batch) { return batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : batch <= 8 ? 8 : 16; }

template <class T>
Plan make_plan(const PersistentDecodeParams<T>& p, int grid, int64_t max_smem, int want_stages) {
  Plan P;
  const int64_t d = p.d_model, di = p.d_inner, N = p.dstate, R = p.dt_rank, xd = R + 2 * N, K = p.d_conv, B = p.batch;
  const int64_t MM = mm_for(B);
  P.cpb = (di + grid - 1) / grid;
  P.ngroups = (di + P.cpb - 1) / P.cpb;
  const int64_t c = P.cpb, st = sizeof(T);
  int64_t o = 0;
  auto take = [&](int64_t bytes) { const int64_t at = o; o += align16(bytes); return at; };
  P.s_norm = take(d * 4);
  P.s_win = take(2 * c * d * st);
  P.s_wout = take(c * d * st);
  P.s_wx = take(c * xd * st);
  P.s_wdt = take(c * R * st);
  P.s_A = take(c * N * 4);
  P.s_cw = take(c * K * 4);
  P.s_cb = take(c * 4);
  P.s_dtb = take(c * 4);
  P.s_D = take(c * 4);
  P.s_cs = take(B * c * K * 4);
  P.s_hs = take(B * c * N * 4);
  P.stage_bytes = o;
  o = 0;
  P.f_res = take(B * d * 4);
  P.f_xs = take(B * d * 4);
  P.f_xv = take(B * c * 4);
  P.f_zs = take(B * c * 4);
  P.f_xc = take(B * c * 4);
  P.f_xd = take(B * xd * 4);
  P.f_y = take(B * c * 4);
  P.f_red = take(kWarps * MM * 4);
  P.f_scale = take(MM * 4);
  P.fixed_bytes = o;
  const int64_t fit = P.stage_bytes > 0 ? (max_smem - P.fixed_bytes) / P.stage_bytes : 0;
  int s = static_cast<int>(std::min<int64_t>(kMaxStages, std::max<int64_t>(0, fit)));
  if (want_stages > 0) s = std::min(s, want_stages);
  P.stages = s;
  return P;
}

// ---- cp.async ----------------------------------------------------------------------------------

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// The block copies [src, src + bytes) to shared memory asynchronously (16-byte pieces when
// both ends are aligned, else 4-byte, else a plain synchronous copy).
__device__ __forceinline__ void copy_async(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0 || !src) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | static_cast<uintptr_t>(bytes);
  const char* s = static_cast<const char*>(src);
  char* t = static_cast<char*>(dst);
  if ((a & 15) == 0) {
    for (int64_t o = int64_t{threadIdx.x} * 16; o < bytes; o += int64_t{kThreads} * 16)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(t + o)), "l"(s + o) : "memory");
  } else if ((a & 3) == 0) {
    for (int64_t o = int64_t{threadIdx.x} * 4; o < bytes; o += int64_t{kThreads} * 4)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(t + o)), "l"(s + o) : "memory");
  } else {
    for (int64_t o = threadIdx.x; o < bytes; o += kThreads) t[o] = s[o];
  }
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_wait(int pending) {
  if (pending <= 0)
    asm volatile("cp.async.wait_group 0;" ::: "memory");
  else if (pending == 1)
    asm volatile("cp.async.wait_group 1;" ::: "memory");
  else
    asm volatile("cp.async.wait_group 2;" ::: "memory");
}

// Issues the copies of layer li's slice for this block (channels [c0, c0 + nc)) into stage `st`.
template <class T>
__device__ void issue_stage(const PersistentDecodeParams<T>& p, const Plan& P, int64_t li, unsigned char* st,
                            int64_t c0, int64_t nc) {
  const PersistentDecodeLayer<T>& L = p.layers[li];
  const int64_t d = p.d_model, di = p.d_inner, N = p.dstate, R = p.dt_rank, xd = R + 2 * N, K = p.d_conv;
  const int64_t c = P.cpb, sT = sizeof(T);
  copy_async(st + P.s_norm, L.norm_w, d * 4);
  if (nc <= 0) return;
  copy_async(st + P.s_win, L.w_in + c0 * d, nc * d * sT);
  copy_async(st + P.s_win + c * d * sT, L.w_in + (di + c0) * d, nc * d * sT);
  copy_async(st + P.s_wout, L.w_out_t + c0 * d, nc * d * sT);
  copy_async(st + P.s_wx, L.w_x_t + c0 * xd, nc * xd * sT);
  copy_async(st + P.s_wdt, L.w_dt + c0 * R, nc * R * sT);
  copy_async(st + P.s_A, L.A + c0 * N, nc * N * 4);
  copy_async(st + P.s_cw, L.conv_w + c0 * K, nc * K * 4);
  copy_async(st + P.s_cb, L.conv_b ? L.conv_b + c0 : nullptr, nc * 4);
  copy_async(st + P.s_dtb, L.dt_bias + c0, nc * 4);
  copy_async(st + P.s_D, L.D ? L.D + c0 : nullptr, nc * 4);
  for (int64_t i = 0; i < p.batch; ++i) {
    copy_async(st + P.s_cs + i * c * K * 4, L.conv_state + (i * di + c0) * K, nc * K * 4);
    copy_async(st + P.s_hs + i * c * N * 4, L.ssm_state + (i * di + c0) * N, nc * N * 4);
  }
}

template <class T, int MM>
__global__ void __launch_bounds__(kThreads, 1) decode_v3_kernel(const Args<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const PersistentDecodeParams<T>& p = a.p;
  const Plan& P = a.plan;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, m = static_cast<int>(p.batch);
  const int64_t d = p.d_model, di = p.d_inner, N = p.dstate, R = p.dt_rank, xd = R + 2 * N, K = p.d_conv;
  const int64_t cpb = P.cpb, nl = p.n_layers;
  const unsigned G = gridDim.x;
  const int S = P.stages;
  const int64_t c0 = int64_t{blockIdx.x} * cpb;
  const int64_t nc = blockIdx.x < P.ngroups ? std::min(cpb, di - c0) : 0;
  float* res = reinterpret_cast<float*>(smem + P.f_res);
  float* xs = reinterpret_cast<float*>(smem + P.f_xs);
  float* xv = reinterpret_cast<float*>(smem + P.f_xv);  // in_proj x half (pre-conv), [m][cpb]
  float* zs = reinterpret_cast<float*>(smem + P.f_zs);  // in_proj z half, [m][cpb]
  float* xc = reinterpret_cast<float*>(smem + P.f_xc);  // conv + SiLU output, [m][cpb]
  float* xds = reinterpret_cast<float*>(smem + P.f_xd); // x_proj sums, [m][xd]
  float* ys = reinterpret_cast<float*>(smem + P.f_y);   // gated y, [m][cpb]
  float* red = reinterpret_cast<float*>(smem + P.f_red);
  float* scale = reinterpret_cast<float*>(smem + P.f_scale);
  unsigned char* stage0 = smem + P.fixed_bytes;
  float* Hacc[2] = {p.work, p.work + p.batch * d};
  float* Xacc[2] = {p.work + 2 * p.batch * d, p.work + 2 * p.batch * d + p.batch * xd};
  unsigned epoch = 0;
  if (p.stamps && tid == 0) p.stamps[size_t{blockIdx.x} * 2] = decode::globaltimer();

  for (int s = 0; s < S; ++s) {
    if (s < nl) issue_stage(p, P, s, stage0 + s * P.stage_bytes, c0, nc);
    cp_commit();
  }
  const int64_t* ids = p.ids;

  for (int64_t li = 0; li < nl; ++li) {
    const PersistentDecodeLayer<T>& L = p.layers[li];
    unsigned char* st = stage0 + (li % S) * P.stage_bytes;
    const float* s_norm = reinterpret_cast<const float*>(st + P.s_norm);
    const T* s_win = reinterpret_cast<const T*>(st + P.s_win);
    const T* s_wout = reinterpret_cast<const T*>(st + P.s_wout);
    const T* s_wx = reinterpret_cast<const T*>(st + P.s_wx);
    const T* s_wdt = reinterpret_cast<const T*>(st + P.s_wdt);
    const float* s_A = reinterpret_cast<const float*>(st + P.s_A);
    const float* s_cw = reinterpret_cast<const float*>(st + P.s_cw);
    const float* s_cb = reinterpret_cast<const float*>(st + P.s_cb);
    const float* s_dtb = reinterpret_cast<const float*>(st + P.s_dtb);
    const float* s_D = reinterpret_cast<const float*>(st + P.s_D);
    const float* s_cs = reinterpret_cast<const float*>(st + P.s_cs);
    const float* s_hs = reinterpret_cast<const float*>(st + P.s_hs);
    const bool has_cb = L.conv_b != nullptr, has_D = L.D != nullptr;

    // ---- A. residual + RMSNorm + in_proj (own channels, both halves) + conv + x_proj partials
    // The input rows do not depend on the stage: they are read before waiting for its copies
    // (this layer's group; S - 1 later ones may stay in flight).
    auto wait_stage = [&]() { cp_wait(S - 1); };
    if (li == 0) {
      norm_rows<T, MM>(m, d, p.eps, [&](int i, int64_t k) { return dev::to_f32(p.embedding[__ldg(ids + i) * d + k]); },
                       res, s_norm, xs, red, scale, wait_stage);
    } else {
      const float* hin = Hacc[(li - 1) % 2];
      norm_rows<T, MM>(m, d, p.eps, [&](int i, int64_t k) { return rt<T>(__ldcg(hin + i * d + k)) + res[i * d + k]; },
                       res, s_norm, xs, red, scale, wait_stage);
    }
    if (nc > 0) {
      constexpr int kVec = 16 / sizeof(T);
      const bool vec = (d % kVec) == 0;
      for (int64_t r = warp; r < 2 * cpb; r += kWarps) {
        const int64_t ch = r % cpb;
        if (ch >= nc) continue;
        const T* wr = s_win + r * d;
        float acc[MM];
#pragma unroll
        for (int i = 0; i < MM; ++i) acc[i] = 0.f;
        if (vec) {
          for (int64_t v = lane; v < d / kVec; v += 32) {
            union { uint4 u; T e[kVec]; } wb;
            wb.u = reinterpret_cast<const uint4*>(wr)[v];
#pragma unroll
            for (int i = 0; i < MM; ++i) {
              if (i >= m) break;
#pragma unroll
              for (int j = 0; j < kVec; j += 4) {
                const float4 f = *reinterpret_cast<const float4*>(xs + i * d + v * kVec + j);
                acc[i] = fmaf(dev::to_f32(wb.e[j]), f.x, acc[i]);
                acc[i] = fmaf(dev::to_f32(wb.e[j + 1]), f.y, acc[i]);
                acc[i] = fmaf(dev::to_f32(wb.e[j + 2]), f.z, acc[i]);
                acc[i] = fmaf(dev::to_f32(wb.e[j + 3]), f.w, acc[i]);
              }
            }
          }
        } else {
          for (int64_t k = lane; k < d; k += 32) {
            const float wf = dev::to_f32(wr[k]);
#pragma unroll
            for (int i = 0; i < MM; ++i)
              if (i < m) acc[i] = fmaf(wf, xs[i * d + k], acc[i]);
          }
        }
#pragma unroll
        for (int i = 0; i < MM; ++i)
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
        if (lane == 0) {
          float* dst = r < cpb ? xv : zs;
#pragma unroll
          for (int i = 0; i < MM; ++i)
            if (i < m) dst[i * cpb + ch] = rt<T>(acc[i]);
        }
      }
    }
    __syncthreads();
    // conv update + SiLU of the own channels; the new conv state goes straight to memory.
    for (int64_t t = tid; t < m * cpb; t += kThreads) {
      const int64_t i = t / cpb, r = t % cpb;
      if (r >= nc) continue;
      const float* sv = s_cs + (i * cpb + r) * K;
      const float* w = s_cw + r * K;
      const float x = xv[i * cpb + r];
      float acc = has_cb ? s_cb[r] : 0.f;
      float* g = L.conv_state + (i * di + c0 + r) * K;
      for (int64_t k = 0; k + 1 < K; ++k) {
        acc += w[k] * sv[k + 1];
        g[k] = sv[k + 1];
      }
      acc += w[K - 1] * x;
      g[K - 1] = x;
      xc[i * cpb + r] = rt<T>(dev::silu(acc));
    }
    __syncthreads();
    // x_proj partial sums over the own channels -> Xacc (f32 atomics).
    if (nc > 0) {
      float* xa = Xacc[li % 2];
      for (int64_t t = tid; t < m * xd; t += kThreads) {
        const int64_t i = t / xd, o = t % xd;
        float acc = 0.f;
        for (int64_t r = 0; r < nc; ++r) acc = fmaf(dev::to_f32(s_wx[r * xd + o]), xc[i * cpb + r], acc);
        atomicAdd(xa + t, acc);
      }
    }
    ++epoch;
    decode::grid_barrier(p.barrier, epoch * G, p.stamps, epoch);

    // ---- B. dt_proj + softplus + state update + D + gate (own channels) + out_proj partials
    {
      const float* xa = Xacc[li % 2];
      for (int64_t t = tid; t < m * xd; t += kThreads) xds[t] = rt<T>(__ldcg(xa + t));
      if (blockIdx.x == G - 1) {
        // Both accumulators of the next layer: their last readers passed the last barrier.
        float* hz = Hacc[(li + 1) % 2];
        float* xz = Xacc[(li + 1) % 2];
        for (int64_t t = tid; t < m * d; t += kThreads) hz[t] = 0.f;
        for (int64_t t = tid; t < m * xd; t += kThreads) xz[t] = 0.f;
      }
    }
    __syncthreads();
    if (nc > 0) {
      if (N <= 32 && (N & (N - 1)) == 0) {
        // A group of N lanes per (row, channel): lane n owns state element n; dt_proj split
        // over the group's lanes; the y sum reduced by shuffles within the group.
        const int64_t gpb = kThreads / N, total = m * cpb;
        const int n = tid % static_cast<int>(N);
        for (int64_t base = 0; base < total; base += gpb) {
          const int64_t g = base + tid / N;
          const int64_t i = g / cpb, r = g % cpb;
          const bool on = g < total && r < nc;
          float dtr = 0.f;
          if (on)
            for (int64_t q = n; q < R; q += N) dtr = fmaf(xds[i * xd + q], dev::to_f32(s_wdt[r * R + q]), dtr);
          for (int off = static_cast<int>(N) / 2; off > 0; off >>= 1) dtr += __shfl_xor_sync(0xffffffffu, dtr, off);
          float yv = 0.f, x = 0.f;
          if (on) {
            const float dt = dev::softplus(rt<T>(dtr) + s_dtb[r]);
            x = xc[i * cpb + r];
            const float h = s_hs[(i * cpb + r) * N + n];
            const float hn = exp2f(dt * dev::kLog2e * s_A[r * N + n]) * h + dt * x * xds[i * xd + R + n];
            L.ssm_state[(i * di + c0 + r) * N + n] = hn;
            yv = hn * xds[i * xd + R + N + n];
          }
          for (int off = static_cast<int>(N) / 2; off > 0; off >>= 1) yv += __shfl_xor_sync(0xffffffffu, yv, off);
          if (on && n == 0) {
            if (has_D) yv += s_D[r] * x;
            yv *= dev::silu(zs[i * cpb + r]);
            ys[i * cpb + r] = rt<T>(yv);
          }
        }
      } else {
        for (int64_t t = tid; t < m * cpb; t += kThreads) {
          const int64_t i = t / cpb, r = t % cpb;
          if (r >= nc) continue;
          float dtr = 0.f;
          for (int64_t q = 0; q < R; ++q) dtr = fmaf(xds[i * xd + q], dev::to_f32(s_wdt[r * R + q]), dtr);
          const float dt = dev::softplus(rt<T>(dtr) + s_dtb[r]);
          const float x = xc[i * cpb + r];
          float yv = 0.f;
          for (int64_t n = 0; n < N; ++n) {
            const float hn = exp2f(dt * dev::kLog2e * s_A[r * N + n]) * s_hs[(i * cpb + r) * N + n] +
                             dt * x * xds[i * xd + R + n];
            L.ssm_state[(i * di + c0 + r) * N + n] = hn;
            yv += hn * xds[i * xd + R + N + n];
          }
          if (has_D) yv += s_D[r] * x;
          yv *= dev::silu(zs[i * cpb + r]);
          ys[i * cpb + r] = rt<T>(yv);
        }
      }
    }
    __syncthreads();
    // out_proj partial sums over the own channels -> Hacc (float4 atomics when aligned).
    if (nc > 0) {
      float* ha = Hacc[li % 2];
      if ((d % 4) == 0) {
        for (int64_t o4 = tid; o4 < d / 4; o4 += kThreads) {
          float4 acc[MM];
#pragma unroll
          for (int i = 0; i < MM; ++i) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
          for (int64_t r = 0; r < nc; ++r) {
            float w[4];
            if constexpr (sizeof(T) == 2) {
              const uint2 u = *reinterpret_cast<const uint2*>(s_wout + r * d + o4 * 4);
              const T* e = reinterpret_cast<const T*>(&u);
              w[0] = dev::to_f32(e[0]); w[1] = dev::to_f32(e[1]); w[2] = dev::to_f32(e[2]); w[3] = dev::to_f32(e[3]);
            } else {
              const float4 f = *reinterpret_cast<const float4*>(s_wout + r * d + o4 * 4);
              w[0] = f.x; w[1] = f.y; w[2] = f.z; w[3] = f.w;
            }
#pragma unroll
            for (int i = 0; i < MM; ++i) {
              if (i >= m) break;
              const float yv = ys[i * cpb + r];
              acc[i].x = fmaf(w[0], yv, acc[i].x);
              acc[i].y = fmaf(w[1], yv, acc[i].y);
              acc[i].z = fmaf(w[2], yv, acc[i].z);
              acc[i].w = fmaf(w[3], yv, acc[i].w);
            }
          }
#pragma unroll
          for (int i = 0; i < MM; ++i)
            if (i < m) atomicAdd(reinterpret_cast<float4*>(ha + i * d) + o4, acc[i]);
        }
      } else {
        for (int64_t o = tid; o < d; o += kThreads) {
          float acc[MM];
#pragma unroll
          for (int i = 0; i < MM; ++i) acc[i] = 0.f;
          for (int64_t r = 0; r < nc; ++r) {
            const float w = dev::to_f32(s_wout[r * d + o]);
#pragma unroll
            for (int i = 0; i < MM; ++i)
              if (i < m) acc[i] = fmaf(w, ys[i * cpb + r], acc[i]);
          }
#pragma unroll
          for (int i = 0; i < MM; ++i)
            if (i < m) atomicAdd(ha + i * d + o, acc[i]);
        }
      }
    }
    __syncthreads();  // every thread is done with stage li % S: refill it with layer li + S
    if (li + S < nl) issue_stage(p, P, li + S, st, c0, nc);
    cp_commit();
    ++epoch;
    decode::grid_barrier(p.barrier, epoch * G, p.stamps, epoch);
  }

  // ---- final RMSNorm + LM head (f32 logits) --------------------------------------------------
  if (nl == 0) {
    norm_rows<T, MM>(m, d, p.eps, [&](int i, int64_t k) { return dev::to_f32(p.embedding[__ldg(ids + i) * d + k]); },
                     nullptr, p.norm_f_w, xs, red, scale, [] {});
  } else {
    const float* hin = Hacc[(nl - 1) % 2];
    norm_rows<T, MM>(m, d, p.eps, [&](int i, int64_t k) { return rt<T>(__ldcg(hin + i * d + k)) + res[i * d + k]; },
                     nullptr, p.norm_f_w, xs, red, scale, [] {});
  }
  const int64_t V = p.vocab_rows;
  float* logits = p.logits;
  decode::grid_gemv_rows<T, MM, 2>(p.head, V, d, xs, m, [&](int i, int64_t col, float v) { logits[i * V + col] = v; });
  if (p.stamps && tid == 0) p.stamps[size_t{blockIdx.x} * 2 + 1] = decode::globaltimer();
}

template <class T>
const void* kernel_ptr(int64_t batch) {
  switch (mm_for(batch)) {
    case 1: return reinterpret_cast<const void*>(decode_v3_kernel<T, 1>);
    case 2: return reinterpret_cast<const void*>(decode_v3_kernel<T, 2>);
    case 4: return reinterpret_cast<const void*>(decode_v3_kernel<T, 4>);
    case 8: return reinterpret_cast<const void*>(decode_v3_kernel<T, 8>);
    default: return reinterpret_cast<const void*>(decode_v3_kernel<T, 16>);
  }
}

int want_stages(int from_params) {
  if (from_params > 0) return from_params;
  if (const char* e = std::getenv("MAMBA_DECODE_STAGES")) return std::max(1, std::atoi(e));
  return 0;
}

// Grid size and plan for p on the current device; grid 0 when not possible. check_kernel:
// also set the kernel's shared-memory limit and check that one block fits on an SM (done once,
// by persistent_decode_grid_for; not needed again at each launch).
template <class T>
int grid_and_plan(const PersistentDecodeParams<T>& p, Plan* out, bool check_kernel = true) {
  if (p.batch < 1 || p.batch > 16 || p.d_conv < 1 || p.d_conv > 4 || p.d_model < 1 || p.d_inner < 1 || p.dstate < 1 ||
      p.dt_rank < 1)
    return 0;
  int dev = 0, coop = 0, sms = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
  const Plan P = make_plan(p, sms, optin, want_stages(p.stages));
  if (P.stages < 1) return 0;
  if (out) *out = P;
  if (!check_kernel) return sms;
  const void* k = kernel_ptr<T>(p.batch);
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(P.smem())) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, kThreads, P.smem()) != cudaSuccess || occ < 1) {
    cudaGetLastError();
    return 0;
  }
  return sms;
}

}  // namespace

// Sized for the removed version 4 (a 32-float flag line + up to 16 copies of each
// accumulator; kept so the layout of `work` stays as
// checked on the GPU); version 3 uses the first 2 batch (d_model + dt_rank + 2 dstate) floats.
template <class T>
int64_t persistent_decode_workspace_floats(int64_t batch, int64_t d_model, int64_t dt_rank, int64_t dstate) {
  return 32 + 2 * 16 * (batch * d_model + batch * (dt_rank + 2 * dstate));
}

template <class T>
__global__ void transpose_rows_kernel(const T* in, int64_t rows, int64_t cols, T* out) {
  __shared__ T tile[32][33];
  const int64_t r0 = int64_t{blockIdx.y} * 32, c0 = int64_t{blockIdx.x} * 32;
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t c = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][j];
  }
}

template <class T>
void transpose_rows_cuda(const T* in, int64_t rows, int64_t cols, T* out, cudaStream_t stream) {
  if (rows < 1 || cols < 1 || (cols + 31) / 32 > 2147483647 || (rows + 31) / 32 > 65535)
    throw std::invalid_argument("transpose_rows_cuda: rows " + std::to_string(rows) + ", cols " + std::to_string(cols) +
                                " outside [1, 2^21] / [1, 2^36]");
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_rows_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(in, rows, cols, out);
  MAMBA_CUDA_CHECK_LAUNCH("transpose_rows_cuda");
}

namespace detail {

template <class T>
int persistent_decode_v3_grid(const PersistentDecodeParams<T>& p) {
  return grid_and_plan(p, nullptr);
}

template <class T>
void persistent_decode_v3_launch(const PersistentDecodeParams<T>& p, int grid, cudaStream_t stream) {
  const char* op = "persistent_decode_cuda (version 3)";
  auto bad = [&](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (p.batch < 1 || p.batch > 16) bad("batch " + std::to_string(p.batch) + " outside [1, 16]");
  if (!p.work) bad("work (the f32 workspace) is null");
  Plan P;
  const int g = grid_and_plan(p, &P, false);
  if (g < 1) bad("the device or the shape does not allow it (cooperative launch, shared memory for one stage)");
  if (grid != g) bad("grid_blocks " + std::to_string(grid) + " must be " + std::to_string(g) + " (persistent_decode_grid_for)");
  const size_t ws = static_cast<size_t>(persistent_decode_workspace_floats<T>(p.batch, p.d_model, p.dt_rank, p.dstate));
  MAMBA_CUDA_CHECK(op, cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), stream));
  MAMBA_CUDA_CHECK(op, cudaMemsetAsync(p.work, 0, ws * sizeof(float), stream));
  Args<T> args{p, P};
  decode::launch_resident(op, kernel_ptr<T>(p.batch), g, kThreads, static_cast<size_t>(P.smem()), stream, &args);
}

template int persistent_decode_v3_grid<float>(const PersistentDecodeParams<float>&);
template int persistent_decode_v3_grid<__nv_bfloat16>(const PersistentDecodeParams<__nv_bfloat16>&);
template void persistent_decode_v3_launch<float>(const PersistentDecodeParams<float>&, int, cudaStream_t);
template void persistent_decode_v3_launch<__nv_bfloat16>(const PersistentDecodeParams<__nv_bfloat16>&, int, cudaStream_t);

}  // namespace detail

template int64_t persistent_decode_workspace_floats<float>(int64_t, int64_t, int64_t, int64_t);
template int64_t persistent_decode_workspace_floats<__nv_bfloat16>(int64_t, int64_t, int64_t, int64_t);
template void transpose_rows_cuda<float>(const float*, int64_t, int64_t, float*, cudaStream_t);
template void transpose_rows_cuda<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, __nv_bfloat16*, cudaStream_t);

}  // namespace mamba::kernels::cuda
