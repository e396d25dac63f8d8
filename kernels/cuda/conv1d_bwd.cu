// Causal depthwise conv1d backward on the GPU: v3 (the default, below) and v1 (unaligned rows,
// or MAMBA_CONV_BWD_VERSION=1). (v2, chunks of 4 steps with their loads first, and variant 4, v3
// with 3 ring stages and a 128-register cap, measured slower and were removed on branch prune.)
// v1: a thread owns kV = 4 consecutive channels (16-byte f32 / 8-byte bf16 accesses when aligned)
// of one batch and a tile of kTile = 64 timesteps [t0, t1). It walks t from t0 to t1 + K - 2:
// recomputes pre[t] from a window of the last K inputs, g[t] = dout[t] * silu'(pre[t]) (zero past
// the sequence), keeps the last K values of g and emits dx[t - (K - 1)] = sum_k w[k] g[t - k]
// (times below 0 go to dinitial_state, from the first tile only). The K - 1 halo steps past the
// tile are recomputed (re-read, mostly from L2). dweight / dbias partials of each (batch, tile)
// go to the workspace; column_sum_kernel adds them in a fixed order (deterministic).
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "train_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;
constexpr int kV = 4;

template <class T, bool kVec>
__device__ __forceinline__ void load4(const T* p, int64_t c, int64_t C, float (&v)[kV]) {
  if constexpr (kVec) {
    if constexpr (sizeof(T) == 4) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p));
      v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    } else {
      union { uint2 u; T e[4]; } q;
      q.u = __ldg(reinterpret_cast<const uint2*>(p));
#pragma unroll
      for (int j = 0; j < kV; ++j) v[j] = dev::to_f32(q.e[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kV; ++j) v[j] = c + j < C ? dev::to_f32(p[j]) : 0.f;
  }
}
template <class T, bool kVec>
__device__ __forceinline__ void store4(T* p, int64_t c, int64_t C, const float (&v)[kV]) {
  if constexpr (kVec) {
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      union { uint2 u; T e[4]; } q;
#pragma unroll
      for (int j = 0; j < kV; ++j) q.e[j] = dev::from_f32<T>(v[j]);
      *reinterpret_cast<uint2*>(p) = q.u;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kV; ++j)
      if (c + j < C) p[j] = dev::from_f32<T>(v[j]);
  }
}

// The walk's state of one thread (both versions): the 4 channels' weights and bias, the last K
// inputs xw[k] (time t - K1 + k) and values gw[k] of g = dout * silu'(pre), and the dweight /
// dbias partial sums over the thread's steps [t0, t1).
template <int K>
struct WalkState {
  float w[K][kV], bias[kV], xw[K][kV], gw[K][kV], dw[K][kV], dbs[kV];
};

// Loads weights and bias of channels c0..c0+3 (zero past C), zeroes the sums and the g window, and
// fills the input window with the K - 1 steps before t0 (from initial_state, or 0, below time 0).
template <class T, int K, bool kVec>
__device__ __forceinline__ void walk_begin(WalkState<K>& ws, const CausalConv1dCudaParams<T>& p, const T* xb, int64_t b,
                                           int64_t c0, int64_t t0) {
  constexpr int K1 = K - 1;
  const int64_t C = p.channels;
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    const bool in = c0 + j < C;
#pragma unroll
    for (int k = 0; k < K; ++k) ws.w[k][j] = in ? __ldg(p.weight + (c0 + j) * K + k) : 0.f;
    ws.bias[j] = in && p.bias ? __ldg(p.bias + c0 + j) : 0.f;
    ws.dbs[j] = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) { ws.dw[k][j] = 0.f; ws.gw[k][j] = 0.f; }
  }
#pragma unroll
  for (int k = 0; k < K1; ++k) {
    const int64_t ts = t0 - K1 + k;
    if (ts >= 0) {
      load4<T, kVec>(xb + ts * p.x_st, c0, C, ws.xw[k]);
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j)
        ws.xw[k][j] = p.initial_state && c0 + j < C ? p.initial_state[(b * C + c0 + j) * K1 + (K1 + ts)] : 0.f;
    }
  }
}

// Step t of the walk over [t0, t1 + K - 1): with t < L, xi / go are x[t] and dout[t]: pre[t] from the
// input window, g[t] = dout[t] * silu'(pre[t]) (dout[t] without SiLU), the dweight / dbias sums for
// t < t1; past L, g = 0. Then dx[s] = sum_k w[k] g[s + k] for s = t - (K - 1) in [t0, t1) (s < 0: the
// first tile's dinitial_state entries, when dinit is given).
template <class T, int K, bool kVec>
__device__ __forceinline__ void walk_step(WalkState<K>& ws, const CausalConv1dCudaParams<T>& p, int64_t t, int64_t t0,
                                          int64_t t1, const float (&xi)[kV], const float (&go)[kV], T* dxb, int64_t dx_st,
                                          float* dinit, int64_t b, int64_t c0) {
  constexpr int K1 = K - 1;
  const int64_t C = p.channels;
  float g[kV];
  if (t < p.seqlen) {
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      ws.xw[K1][j] = xi[j];
      float pre = ws.bias[j];
#pragma unroll
      for (int k = 0; k < K; ++k) pre = fmaf(ws.w[k][j], ws.xw[k][j], pre);
      float gg = go[j];
      if (p.silu) {
        const float sg = __fdividef(1.f, 1.f + __expf(-pre));
        gg *= sg * (1.f + pre * (1.f - sg));
      }
      g[j] = gg;
      if (t < t1) {
        ws.dbs[j] += gg;
#pragma unroll
        for (int k = 0; k < K; ++k) ws.dw[k][j] = fmaf(gg, ws.xw[k][j], ws.dw[k][j]);
      }
#pragma unroll
      for (int k = 0; k < K1; ++k) ws.xw[k][j] = ws.xw[k + 1][j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < kV; ++j) g[j] = 0.f;
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) {
#pragma unroll
    for (int k = 0; k < K1; ++k) ws.gw[k][j] = ws.gw[k + 1][j];
    ws.gw[K1][j] = g[j];
  }
  const int64_t s = t - K1;
  if (s >= t0 || (t0 == 0 && dinit)) {
    float o[kV];
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      float a = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) a = fmaf(ws.w[k][j], ws.gw[K1 - k][j], a);
      o[j] = a;
    }
    if (s >= 0) {
      if (s < t1) store4<T, kVec>(dxb + s * dx_st, c0, C, o);
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j)
        if (c0 + j < C) dinit[(b * C + c0 + j) * K1 + (K1 + s)] = o[j];
    }
  }
}

// The thread's dweight / dbias partials into slot `slot` of the workspace: rows k = 0..K (K: bias),
// columns c.
template <int K>
__device__ __forceinline__ void walk_end(const WalkState<K>& ws, float* part, int64_t slot, int64_t c0, int64_t C) {
  float* ps = part + slot * (K + 1) * C;
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    if (c0 + j < C) {
#pragma unroll
      for (int k = 0; k < K; ++k) ps[k * C + c0 + j] = ws.dw[k][j];
      ps[K * C + c0 + j] = ws.dbs[j];
    }
  }
}

// One thread's run of the walk: channels [c0, c0 + kV) of batch b = blockIdx.z over the run
// blockIdx.y of `seg` steps, [t0, t1); its x / dout / dx rows and its workspace slot. c0 past the
// channels means the thread has nothing to do.
template <class T>
struct WalkRun {
  int64_t c0, b, t0, t1, slot;
  const T* xb;
  const T* db;
  T* dxb;
  __device__ __forceinline__ WalkRun(const CausalConv1dCudaParams<T>& p, const T* dout, T* dx, int64_t dx_sb, int64_t seg)
      : c0((int64_t(blockIdx.x) * kThreads + threadIdx.x) * kV), b(blockIdx.z), t0(int64_t(blockIdx.y) * seg),
        t1(t0 + seg < p.seqlen ? t0 + seg : p.seqlen), slot(b * gridDim.y + blockIdx.y), xb(p.x + b * p.x_sb + c0),
        db(dout + b * p.seqlen * p.channels + c0), dxb(dx + b * dx_sb + c0) {}
};

// v1: one step at a time, two loads per step.
template <class T, int K, bool kVec>
__global__ void __launch_bounds__(kThreads)
conv1d_bwd_kernel(CausalConv1dCudaParams<T> p, const T* __restrict__ dout, T* __restrict__ dx, int64_t dx_sb, int64_t dx_st, float* dinit,
                  float* part) {
  constexpr int K1 = K - 1;
  const WalkRun<T> r(p, dout, dx, dx_sb, kTile);
  if (r.c0 >= p.channels) return;
  const int64_t C = p.channels, L = p.seqlen, c0 = r.c0, b = r.b, t0 = r.t0, t1 = r.t1;
  WalkState<K> ws;
  walk_begin<T, K, kVec>(ws, p, r.xb, b, c0, t0);
  const int64_t t_last = t1 + K1;  // exclusive
  for (int64_t t = t0; t < t_last; ++t) {
    float xi[kV], go[kV];
    if (t < L) {
      load4<T, kVec>(r.xb + t * p.x_st, c0, C, xi);
      load4<T, kVec>(r.db + t * C, c0, C, go);
    }
    walk_step<T, K, kVec>(ws, p, t, t0, t1, xi, go, r.dxb, dx_st, dinit, b, c0);
  }
  walk_end<K>(ws, part, r.slot, c0, C);
}

// v3 (branch bwkern, NOTES.md "Memory-bound kernels to 80%"): v1's per-thread walk (4 channels,
// one step at a time) with x and dout brought in by cp.async into a per-thread ring of kS stages
// x kB steps in shared memory (each thread reads back only its own copies: no barrier), so
// (kS - 1) x kB steps of both inputs are in flight per thread without registers. v1 had one
// step's two 8-byte loads in flight per thread (~0.5 KB per warp), 236 us at b8 l2048 c3072 k4
// bf16 (31% of copy). The run length per thread (>= kTile, a multiple of kB) is chosen at launch
// so the grid is one wave of resident blocks; fewer (batch, run) slots than v1's 64-step tiles,
// so the workspace (sized for v1) always suffices.
template <int kBytes>
__device__ __forceinline__ void cpa(unsigned smem, const void* g, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem), "l"(g), "n"(kBytes), "r"(valid ? kBytes : 0) : "memory");
}
__device__ __forceinline__ void cpa_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpa_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

template <class T>
__device__ __forceinline__ void unpack4(const uint2& u, float (&v)[kV]) {
  union { uint2 u; T e[4]; } q;
  q.u = u;
#pragma unroll
  for (int j = 0; j < kV; ++j) v[j] = dev::to_f32(q.e[j]);
}
__device__ __forceinline__ void unpack4f(const float4& u, float (&v)[kV]) { v[0] = u.x; v[1] = u.y; v[2] = u.z; v[3] = u.w; }

template <class T, int K, int kB, int kS>
__global__ void __launch_bounds__(kThreads)
conv1d_bwd_v3_kernel(CausalConv1dCudaParams<T> p, const T* __restrict__ dout, T* __restrict__ dx, int64_t dx_sb,
                     int64_t dx_st, float* dinit, float* part, int64_t seg) {
  constexpr int K1 = K - 1;
  constexpr int PB = kV * int(sizeof(T));  // bytes per piece: 8 (bf16) or 16 (f32)
  using PieceT = std::conditional_t<PB == 16, float4, uint2>;
  extern __shared__ __align__(16) unsigned char b3_ring[];  // [kS * kB][2][kThreads] pieces
  const WalkRun<T> r(p, dout, dx, dx_sb, seg);
  if (r.c0 >= p.channels) return;
  const int64_t C = p.channels, L = p.seqlen, c0 = r.c0, b = r.b, t0 = r.t0, t1 = r.t1;
  const T* xb = r.xb;
  const T* db = r.db;
  const int64_t t_last = t1 + K1;  // exclusive
  const int64_t nbatch = (t_last - t0 + kB - 1) / kB;
  const unsigned ring = static_cast<unsigned>(__cvta_generic_to_shared(b3_ring)) + threadIdx.x * PB;
  auto issue = [&](int64_t j) {
    if (j < nbatch) {
      const unsigned st = ring + static_cast<unsigned>((j % kS) * kB * 2) * (kThreads * PB);
#pragma unroll
      for (int i = 0; i < kB; ++i) {
        const int64_t t = t0 + j * kB + i;
        const bool v = t < L && t < t_last;
        cpa<PB>(st + (2 * i) * (kThreads * PB), v ? static_cast<const void*>(xb + t * p.x_st) : static_cast<const void*>(xb), v);
        cpa<PB>(st + (2 * i + 1) * (kThreads * PB), v ? static_cast<const void*>(db + t * C) : static_cast<const void*>(db), v);
      }
    }
    cpa_commit();
  };
#pragma unroll
  for (int j = 0; j < kS - 1; ++j) issue(j);

  WalkState<K> ws;
  walk_begin<T, K, true>(ws, p, xb, b, c0, t0);
  const PieceT* pr = reinterpret_cast<const PieceT*>(b3_ring) + threadIdx.x;
#pragma unroll 1
  for (int64_t jb = 0; jb < nbatch; ++jb) {
    issue(jb + kS - 1);
    cpa_wait<kS - 1>();
    const PieceT* st = pr + (jb % kS) * kB * 2 * kThreads;
#pragma unroll
    for (int u = 0; u < kB; ++u) {
      const int64_t t = t0 + jb * kB + u;
      if (t >= t_last) break;
      float xi[kV], go[kV];
      if (t < L) {
        if constexpr (PB == 16) {
          unpack4f(st[(2 * u) * kThreads], xi);
          unpack4f(st[(2 * u + 1) * kThreads], go);
        } else {
          unpack4<T>(st[(2 * u) * kThreads], xi);
          unpack4<T>(st[(2 * u + 1) * kThreads], go);
        }
      }
      walk_step<T, K, true>(ws, p, t, t0, t1, xi, go, r.dxb, dx_st, dinit, b, c0);
    }
  }
  cpa_wait<0>();
  walk_end<K>(ws, part, r.slot, c0, C);
}

// Launches v3 when its conditions hold; returns the number of partial slots written (0: not taken).
template <class T, int K>
int64_t launch_v3(const CausalConv1dCudaParams<T>& p, const T* dout, T* dx, int64_t dx_sb, int64_t dx_st, float* dinit,
                  float* part, cudaStream_t stream) {
  constexpr int kS = 4, kB = sizeof(T) == 4 ? 4 : 8;  // 64 KB of ring per block either way
  constexpr int PB = kV * int(sizeof(T));
  constexpr int smem = kS * kB * 2 * kThreads * PB;
  const int64_t C = p.channels;
  auto al = [&](const void* q) { return (reinterpret_cast<uintptr_t>(q) % PB) == 0; };
  const bool vec = C % kV == 0 && p.x_sb % kV == 0 && p.x_st % kV == 0 && dx_sb % kV == 0 && dx_st % kV == 0 &&
                   al(p.x) && al(dout) && al(dx);
  if (!vec) return 0;
  auto kern = conv1d_bwd_v3_kernel<T, K, kB, kS>;
  static int per_sm = -1, sms = 0;  // per instantiation
  if (per_sm < 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kThreads, smem) != cudaSuccess || per_sm <= 0) {
      cudaGetLastError();
      per_sm = -1;
      return 0;
    }
  }
  const int64_t lanes = (C + kV - 1) / kV;
  const int64_t gx = (lanes + kThreads - 1) / kThreads;
  const int64_t resident = int64_t{sms} * per_sm;
  int64_t nseg = std::max<int64_t>(1, resident / std::max<int64_t>(gx * p.batch, 1));
  int64_t seg = (p.seqlen + nseg - 1) / nseg;
  seg = std::max<int64_t>(kTile, (seg + kB - 1) / kB * kB);
  const int64_t gy = (p.seqlen + seg - 1) / seg;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(p.batch));
  kern<<<grid, kThreads, smem, stream>>>(p, dout, dx, dx_sb, dx_st, dinit, part, seg);
  return p.batch * gy;
}

int64_t conv_slots(int64_t batch, int64_t seqlen) { return batch * ((seqlen + kTile - 1) / kTile); }

// Returns the number of (batch, tile) partial slots written to `part`.
template <class T, int K>
int64_t launch(const CausalConv1dCudaParams<T>& p, const T* dout, T* dx, int64_t dx_sb, int64_t dx_st, float* dinit,
               float* part, cudaStream_t stream) {
  // Default: v3 (cp.async ring) when aligned; MAMBA_CONV_BWD_VERSION=1 selects v1 (any other value:
  // the default; 2 and 4 were removed on branch prune).
  const char* ver = std::getenv("MAMBA_CONV_BWD_VERSION");
  if (!(ver && std::atoi(ver) == 1)) {
    const int64_t slots = launch_v3<T, K>(p, dout, dx, dx_sb, dx_st, dinit, part, stream);
    if (slots > 0) return slots;
  }
  const int64_t C = p.channels;
  const size_t access = kV * sizeof(T);
  auto al = [&](const void* q) { return (reinterpret_cast<uintptr_t>(q) % access) == 0; };
  const bool vec = C % kV == 0 && p.x_sb % kV == 0 && p.x_st % kV == 0 && dx_sb % kV == 0 && dx_st % kV == 0 &&
                   al(p.x) && al(dout) && al(dx);
  const int64_t ntiles = (p.seqlen + kTile - 1) / kTile;
  const int64_t lanes = (C + kV - 1) / kV;
  const dim3 grid(static_cast<unsigned>((lanes + kThreads - 1) / kThreads), static_cast<unsigned>(ntiles),
                  static_cast<unsigned>(p.batch));
  // v1 (236 us at b8 l2048 c3072 k4 bf16 on an H200; v3 151 us).
  if (vec) conv1d_bwd_kernel<T, K, true><<<grid, kThreads, 0, stream>>>(p, dout, dx, dx_sb, dx_st, dinit, part);
  else conv1d_bwd_kernel<T, K, false><<<grid, kThreads, 0, stream>>>(p, dout, dx, dx_sb, dx_st, dinit, part);
  return conv_slots(p.batch, p.seqlen);
}

}  // namespace

size_t causal_conv1d_bwd_cuda_workspace_bytes(const CausalConv1dCudaParams<float>& s) {
  if (s.batch <= 0 || s.seqlen <= 0 || s.channels <= 0 || s.width < 1) return 0;
  return static_cast<size_t>(conv_slots(s.batch, s.seqlen) * (s.width + 1) * s.channels) * sizeof(float);
}

template <class T>
void causal_conv1d_bwd_cuda(const CausalConv1dCudaParams<T>& p, const T* dout, T* dx, int64_t dx_sb, int64_t dx_st,
                            float* dweight, float* dbias, float* dinitial_state, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "causal_conv1d_bwd_cuda";
  auto bad = [&](const std::string& m) { throw std::invalid_argument(std::string(fn) + ": " + m); };
  if (p.width < 1 || p.width > 4) bad("width must be in [1, 4], got " + std::to_string(p.width));
  if (p.batch < 1 || p.batch > 65535) bad("batch must be in [1, 65535], got " + std::to_string(p.batch));
  if (p.seqlen < 1) bad("seqlen must be >= 1, got " + std::to_string(p.seqlen));
  if (p.channels < 1) bad("channels must be >= 1, got " + std::to_string(p.channels));
  if ((p.seqlen + kTile - 1) / kTile > 65535) bad("seqlen must be <= 65535 * 64, got " + std::to_string(p.seqlen));
  if (!p.x || !p.weight || !dout || !dx || !dweight) bad("p.x, p.weight, dout, dx and dweight must not be null");
  CausalConv1dCudaParams<float> s;
  s.batch = p.batch; s.seqlen = p.seqlen; s.channels = p.channels; s.width = p.width;
  const size_t need = causal_conv1d_bwd_cuda_workspace_bytes(s);
  if (!workspace || workspace_bytes < need)
    bad("workspace_bytes " + std::to_string(workspace_bytes) + " < required " + std::to_string(need));
  float* part = static_cast<float*>(workspace);
  int64_t slots = 0;
  switch (p.width) {
    case 1: slots = launch<T, 1>(p, dout, dx, dx_sb, dx_st, dinitial_state, part, stream); break;
    case 2: slots = launch<T, 2>(p, dout, dx, dx_sb, dx_st, dinitial_state, part, stream); break;
    case 3: slots = launch<T, 3>(p, dout, dx, dx_sb, dx_st, dinitial_state, part, stream); break;
    default: slots = launch<T, 4>(p, dout, dx, dx_sb, dx_st, dinitial_state, part, stream); break;
  }
  MAMBA_CUDA_CHECK_LAUNCH(fn);
  train_dev::launch_column_sum(slots, (p.width + 1) * p.channels, part, dweight, dbias, p.width, p.channels, stream);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

template void causal_conv1d_bwd_cuda<float>(const CausalConv1dCudaParams<float>&, const float*, float*, int64_t,
                                            int64_t, float*, float*, float*, void*, size_t, cudaStream_t);
template void causal_conv1d_bwd_cuda<__nv_bfloat16>(const CausalConv1dCudaParams<__nv_bfloat16>&,
                                                    const __nv_bfloat16*, __nv_bfloat16*, int64_t, int64_t, float*,
                                                    float*, float*, void*, size_t, cudaStream_t);

}  // namespace mamba::kernels::cuda
