// Depthwise causal conv1d on the GPU.
// Forward, fast path (contiguous 16-byte pieces along c): see causal_conv1d_fwd_vec_kernel.
// Forward, general fallback: grid (ceil(C / 128), ceil(L / kSteps), batch), one thread per channel c walking
// kSteps = 16 consecutive timesteps with the last K inputs in registers, so each input is
// read once (plus K - 1 halo steps) and a warp's loads and stores are contiguous along c.
// Update: one thread per (b, c); conv_state is shifted in place.
#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "bulk_copy.cuh"
#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kSteps = 16;

template <class T, int K>
__global__ void __launch_bounds__(kThreads) causal_conv1d_fwd_kernel(CausalConv1dCudaParams<T> p) {
  const int64_t c = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (c >= p.channels) return;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * kSteps;
  const T* x = p.x + b * p.x_sb + c;
  const float* init = p.initial_state ? p.initial_state + (b * p.channels + c) * (K - 1) : nullptr;

  float w[K];
#pragma unroll
  for (int k = 0; k < K; ++k) w[k] = p.weight[c * K + k];
  const float bias = p.bias ? p.bias[c] : 0.f;

  // win[k] holds the input at time t - (K - 1) + k; fill the K - 1 steps before t_begin.
  float win[K];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
    float v = 0.f;
    if (ts >= 0) v = dev::to_f32(x[ts * p.x_st]);
    else if (init) v = init[(K - 1) + ts];  // state holds times -(K-1) .. -1
    win[k] = v;
  }
  const int64_t t_end = t_begin + kSteps < p.seqlen ? t_begin + kSteps : p.seqlen;
  T* out = p.out + (b * p.seqlen) * p.channels + c;
#pragma unroll 4
  for (int64_t t = t_begin; t < t_end; ++t) {
    win[K - 1] = dev::to_f32(x[t * p.x_st]);
    float acc = bias;
#pragma unroll
    for (int k = 0; k < K; ++k) acc += w[k] * win[k];
    if (p.silu) acc = dev::silu(acc);
    out[t * p.channels] = dev::from_f32<T>(acc);
#pragma unroll
    for (int k = 0; k < K - 1; ++k) win[k] = win[k + 1];
  }
}


__device__ __forceinline__ float tanh_mufu(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint4 ld_stream16(const void* g) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(g));
  return v;
}

// Weights w[k][v] and bias of channels c0 .. c0 + kV, times `scale`, from 16-byte aligned rows.
template <int K, int kV>
__device__ __forceinline__ void conv_load_weights(const float* weight, const float* bias_p, int64_t c0, float scale,
                                                  float (&w)[K][kV], float (&bias)[kV]) {
  const float4* w4 = reinterpret_cast<const float4*>(weight + c0 * K);  // kV * K floats, 16-byte aligned
  float wf[kV * K];
#pragma unroll
  for (int i = 0; i < kV * K / 4; ++i) {
    const float4 v = __ldg(w4 + i);
    wf[4 * i] = v.x; wf[4 * i + 1] = v.y; wf[4 * i + 2] = v.z; wf[4 * i + 3] = v.w;
  }
#pragma unroll
  for (int v = 0; v < kV; ++v)
#pragma unroll
    for (int k = 0; k < K; ++k) w[k][v] = wf[v * K + k] * scale;
#pragma unroll
  for (int i = 0; i < kV / 4; ++i) {
    const float4 v = bias_p ? __ldg(reinterpret_cast<const float4*>(bias_p + c0) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
    bias[4 * i] = v.x * scale; bias[4 * i + 1] = v.y * scale; bias[4 * i + 2] = v.z * scale; bias[4 * i + 3] = v.w * scale;
  }
}

// One output step of a thread's kV channels: the window gets the new input piece `in` (win[K - 1]),
// out = bias + sum_k w[k] win[k], then silu (kTanh: the weights and bias were halved, out = h + h
// tanh h; else x / (1 + exp(-x)) on the SFU), and the window shifts by one step.
template <class T, int K, int kV, bool kTanh>
__device__ __forceinline__ uint4 conv_step(float (&win)[K][kV], const float (&w)[K][kV], const float (&bias)[kV],
                                           const dev::RawRow<T, kV>& in, bool silu) {
  dev::RawRow<T, kV> o;
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    win[K - 1][v] = dev::to_f32(in.e[v]);
    float acc = bias[v];
#pragma unroll
    for (int k = 0; k < K; ++k) acc = fmaf(w[k][v], win[k][v], acc);
    if constexpr (kTanh) {
      if (silu) acc = fmaf(acc, tanh_mufu(acc), acc);  // acc = a / 2: silu(a) = h (1 + tanh h)
    } else {
      if (silu) acc = dev::silu_fast(acc);
    }
    o.e[v] = dev::from_f32<T>(acc);
#pragma unroll
    for (int k = 0; k < K - 1; ++k) win[k][v] = win[k + 1][v];
  }
  return o.v[0];
}

// v4 (NOTES.md "conv1d v4"): a thread owns kV = 16 / sizeof(T) consecutive channels and a run
// of kC4Steps = 64 consecutive steps, walked with the last K - 1 inputs in registers (halo
// re-read: K - 1 pieces per 64 steps). The inputs come in batches of kC4Batch = 8 pieces (16 bytes
// each), the next batch issued before the current one is computed; weights and bias are read
// once per thread as float4s (v3 issued 5 scalar loads per output piece for them). silu on the
// SFU. A warp's loads and stores are 512 contiguous bytes of one timestep row.
constexpr int kC4Threads = 128;
constexpr int kC4Steps = 64;
constexpr int kC4Batch = 8;

template <class T, int K>
__global__ void __launch_bounds__(kC4Threads) causal_conv1d_fwd_v4_kernel(CausalConv1dCudaParams<T> p) {
  constexpr int kV = 16 / int(sizeof(T));
  using Piece = dev::RawRow<T, kV>;
  const int64_t c0 = (int64_t{blockIdx.x} * kC4Threads + threadIdx.x) * kV;
  if (c0 >= p.channels) return;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * kC4Steps;
  const int64_t t_end = t_begin + kC4Steps < p.seqlen ? t_begin + kC4Steps : p.seqlen;
  const T* x = p.x + b * p.x_sb + c0;
  T* out = p.out + b * p.seqlen * p.channels + c0;

  float w[K][kV], bias[kV];
  conv_load_weights<K, kV>(p.weight, p.bias, c0, 1.f, w, bias);
  // win[k][v]: input at time t - (K - 1) + k of channel c0 + v (k < K - 1 between steps).
  float win[K][kV];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
    if (ts >= 0) {
      Piece h;
      h.v[0] = __ldg(reinterpret_cast<const uint4*>(x + ts * p.x_st));
#pragma unroll
      for (int v = 0; v < kV; ++v) win[k][v] = dev::to_f32(h.e[v]);
    } else {
#pragma unroll
      for (int v = 0; v < kV; ++v)
        win[k][v] = p.initial_state ? p.initial_state[(b * p.channels + c0 + v) * (K - 1) + (K - 1) + ts] : 0.f;
    }
  }
  Piece cur[kC4Batch];
#pragma unroll
  for (int i = 0; i < kC4Batch; ++i) {
    const int64_t ts = t_begin + i;
    cur[i].v[0] = ts < t_end ? __ldg(reinterpret_cast<const uint4*>(x + ts * p.x_st)) : make_uint4(0u, 0u, 0u, 0u);
  }
#pragma unroll 1
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kC4Batch) {
    Piece nxt[kC4Batch];
#pragma unroll
    for (int i = 0; i < kC4Batch; ++i) {
      const int64_t ts = t0 + kC4Batch + i;
      nxt[i].v[0] = ts < t_end ? __ldg(reinterpret_cast<const uint4*>(x + ts * p.x_st)) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int i = 0; i < kC4Batch; ++i) {
      const uint4 o = conv_step<T, K, kV, false>(win, w, bias, cur[i], p.silu);
      if (t0 + i < t_end) *reinterpret_cast<uint4*>(out + (t0 + i) * p.channels) = o;
    }
#pragma unroll
    for (int i = 0; i < kC4Batch; ++i) cur[i] = nxt[i];
  }
}

template <class T, int K>
bool launch_fwd_v4(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kV = 16 / int(sizeof(T));
  const bool ok = dev::aligned16(p.x) && dev::aligned16(p.out) && dev::aligned16(p.weight) &&
                  (!p.bias || dev::aligned16(p.bias)) && p.channels % kV == 0 && p.x_sb % kV == 0 &&
                  p.x_st % kV == 0 && (p.seqlen + kC4Steps - 1) / kC4Steps <= 65535;
  if (!ok) return false;
  const int64_t lanes = p.channels / kV;
  const dim3 grid(static_cast<unsigned>((lanes + kC4Threads - 1) / kC4Threads),
                  static_cast<unsigned>((p.seqlen + kC4Steps - 1) / kC4Steps), static_cast<unsigned>(p.batch));
  causal_conv1d_fwd_v4_kernel<T, K><<<grid, kC4Threads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda (v4)");
  return true;
}

// v7 (branch bwkern; MAMBA_CONV_VERSION=7; its 8-step variant v8 lost and is deleted): short blocks. A thread owns 16
// bytes of channels and kS7 consecutive steps; all kS7 + K - 1 input pieces are loaded at once
// (raw, 16 bytes each), then the kS7 outputs are computed and stored; many short blocks (the
// Mamba-2 update's pattern, 94% of copy on an H200) instead of v4's 64-step walks (2.9 waves of
// 255-register threads) or v5's one-wave runs (measured slower: 77 us against v4's 68).
template <class T, int K, int kS7>
__global__ void __launch_bounds__(128) causal_conv1d_fwd_v7_kernel(CausalConv1dCudaParams<T> p) {
  constexpr int kV = 16 / int(sizeof(T));
  constexpr int kIn = kS7 + K - 1;
  using Piece = dev::RawRow<T, kV>;
  const int64_t c0 = (int64_t{blockIdx.x} * 128 + threadIdx.x) * kV;
  if (c0 >= p.channels) return;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * kS7;
  const T* x = p.x + b * p.x_sb + c0;
  T* out = p.out + b * p.seqlen * p.channels + c0;
  Piece in[kIn];
#pragma unroll
  for (int i = 0; i < kIn; ++i) {
    const int64_t ts = t_begin - (K - 1) + i;
    in[i].v[0] = ts >= 0 && ts < p.seqlen ? __ldg(reinterpret_cast<const uint4*>(x + ts * p.x_st)) : make_uint4(0u, 0u, 0u, 0u);
  }
  float w[K][kV], bias[kV];
  conv_load_weights<K, kV>(p.weight, p.bias, c0, 1.f, w, bias);
  float win[K][kV];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
#pragma unroll
    for (int v = 0; v < kV; ++v)
      win[k][v] = ts >= 0 ? dev::to_f32(in[k].e[v])
                          : (p.initial_state ? p.initial_state[(b * p.channels + c0 + v) * (K - 1) + (K - 1) + ts] : 0.f);
  }
#pragma unroll
  for (int s = 0; s < kS7; ++s) {
    const int64_t t = t_begin + s;
    const uint4 o = conv_step<T, K, kV, false>(win, w, bias, in[K - 1 + s], p.silu);
    if (t < p.seqlen) *reinterpret_cast<uint4*>(out + t * p.channels) = o;
  }
}

template <class T, int K, int kS7>
bool launch_fwd_v7(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kV = 16 / int(sizeof(T));
  const bool ok = dev::aligned16(p.x) && dev::aligned16(p.out) && dev::aligned16(p.weight) &&
                  (!p.bias || dev::aligned16(p.bias)) && p.channels % kV == 0 && p.x_sb % kV == 0 &&
                  p.x_st % kV == 0 && (p.seqlen + kS7 - 1) / kS7 <= 65535;
  if (!ok) return false;
  const int64_t lanes = p.channels / kV;
  const dim3 grid(static_cast<unsigned>((lanes + 127) / 128), static_cast<unsigned>((p.seqlen + kS7 - 1) / kS7),
                  static_cast<unsigned>(p.batch));
  causal_conv1d_fwd_v7_kernel<T, K, kS7><<<grid, 128, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda (v7)");
  return true;
}

// v9 (branch bw80; MAMBA_CONV_VERSION=9, MAMBA_CONV_V9_STEPS=8|16|32): v7's short blocks (a thread
// owns 16 bytes of channels and kS9 steps, all kS9 + K - 1 input pieces loaded at once) with the
// arithmetic cut for bf16, where v7 was issue / SFU bound (bf16 moves half the bytes of f32 per
// output: v7 reached 91% of copy in f32 but 73% in bf16): silu(a) = h + h tanh(h) with h = a / 2 and
// the 1/2 folded into the weights and bias (one MUFU.TANH per output instead of EX2 + RCP, 7.5
// instead of ~12 instructions per output); f32 keeps silu_fast (tanh.approx's 2^-11 error is fine for
// bf16 outputs, not for the f32 tolerance). Loads skip L1 (ld.global.nc.L1::no_allocate), stores
// stream (st.global.cs).
template <class T, int K, int kS9>
__global__ void __launch_bounds__(128) causal_conv1d_fwd_v9_kernel(CausalConv1dCudaParams<T> p) {
  constexpr int kV = 16 / int(sizeof(T));
  constexpr int kIn = kS9 + K - 1;
  constexpr bool kTanh = sizeof(T) == 2;
  using Piece = dev::RawRow<T, kV>;
  const int64_t c0 = (int64_t{blockIdx.x} * 128 + threadIdx.x) * kV;
  if (c0 >= p.channels) return;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * kS9;
  const T* x = p.x + b * p.x_sb + c0;
  T* out = p.out + b * p.seqlen * p.channels + c0;
  Piece in[kIn];
#pragma unroll
  for (int i = 0; i < kIn; ++i) {
    const int64_t ts = t_begin - (K - 1) + i;
    in[i].v[0] = ts >= 0 && ts < p.seqlen ? ld_stream16(x + ts * p.x_st) : make_uint4(0u, 0u, 0u, 0u);
  }
  const bool half = kTanh && p.silu;
  float w[K][kV], bias[kV];
  conv_load_weights<K, kV>(p.weight, p.bias, c0, half ? 0.5f : 1.f, w, bias);
  // Window values as f32; before t = 0 they are initial_state (kept in f32, not rounded to T).
  float win[K][kV];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
#pragma unroll
    for (int v = 0; v < kV; ++v)
      win[k][v] = ts >= 0 ? dev::to_f32(in[k].e[v])
                          : (p.initial_state ? p.initial_state[(b * p.channels + c0 + v) * (K - 1) + (K - 1) + ts] : 0.f);
  }
#pragma unroll
  for (int s = 0; s < kS9; ++s) {
    const int64_t t = t_begin + s;
    const uint4 o = conv_step<T, K, kV, kTanh>(win, w, bias, in[K - 1 + s], p.silu);
    if (t < p.seqlen) __stcs(reinterpret_cast<uint4*>(out + t * p.channels), o);
  }
}

template <class T, int K, int kS9>
bool launch_fwd_v9(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kV = 16 / int(sizeof(T));
  const bool ok = dev::aligned16(p.x) && dev::aligned16(p.out) && dev::aligned16(p.weight) &&
                  (!p.bias || dev::aligned16(p.bias)) && p.channels % kV == 0 && p.x_sb % kV == 0 &&
                  p.x_st % kV == 0 && (p.seqlen + kS9 - 1) / kS9 <= 65535;
  if (!ok) return false;
  const int64_t lanes = p.channels / kV;
  const dim3 grid(static_cast<unsigned>((lanes + 127) / 128), static_cast<unsigned>((p.seqlen + kS9 - 1) / kS9),
                  static_cast<unsigned>(p.batch));
  causal_conv1d_fwd_v9_kernel<T, K, kS9><<<grid, 128, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda (v9)");
  return true;
}

// v10 (branch bw80; MAMBA_CONV_VERSION=10, MAMBA_CONV_V10_ROWS=4|8): the inputs streamed through
// shared memory by the copy engine, so the bytes in flight no longer cost registers. A block of 128
// threads owns 128 x 16 bytes of channels (1024 bf16 / 512 f32) of one batch row and a run of
// consecutive steps (run length chosen for one wave of resident blocks); thread 0 keeps kS10 stages
// of kR10 time rows (one 2 KB bulk copy per row, completing on the stage's mbarrier) in flight; each
// thread walks the rows of a stage with the last K - 1 inputs in registers (no halo re-read but at
// the run's start), computes as v9 (tanh silu for bf16) and stores 16 bytes per row (st.global.cs);
// a barrier per stage, then thread 0 refills it. Needs channels a multiple of 128 x 16 / sizeof(T).
constexpr int kC10Threads = 128;

template <class T, int K, int kR10, int kS10>
__global__ void __launch_bounds__(kC10Threads) causal_conv1d_fwd_v10_kernel(CausalConv1dCudaParams<T> p, int64_t seg) {
  constexpr int kV = 16 / int(sizeof(T));
  constexpr unsigned kRowBytes = kC10Threads * 16;
  constexpr bool kTanh = sizeof(T) == 2;
  using Piece = dev::RawRow<T, kV>;
  extern __shared__ __align__(128) uint4 c10_ring[];  // [kS10][kR10][kC10Threads]
  __shared__ __align__(8) uint64_t full[kS10];
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t cseg = int64_t{blockIdx.x} * kC10Threads * kV;  // first channel of the block
  const int64_t c0 = cseg + int64_t{tid} * kV;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * seg;
  const int64_t t_end = t_begin + seg < p.seqlen ? t_begin + seg : p.seqlen;
  const int64_t nchunks = (t_end - t_begin + kR10 - 1) / kR10;
  const T* xb = p.x + b * p.x_sb;
  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kS10; ++s) dev::mbar_init(&full[s], 1);
    dev::mbar_init_fence();
  }
  __syncthreads();
  auto issue = [&](int64_t j) {  // thread 0: rows t_begin + j kR10 .. of the block's channels into stage j % kS10
    const int s = static_cast<int>(j % kS10);
    const int64_t t0 = t_begin + j * kR10;
    const int rows = static_cast<int>(t_end - t0 < kR10 ? t_end - t0 : kR10);
    dev::mbar_expect_tx(&full[s], kRowBytes * rows);
    for (int r = 0; r < rows; ++r)
      dev::bulk_load(c10_ring + (s * kR10 + r) * kC10Threads, xb + (t0 + r) * p.x_st + cseg, kRowBytes, &full[s]);
  };
  if (tid == 0)
    for (int64_t j = 0; j < kS10 && j < nchunks; ++j) issue(j);
  const bool half = kTanh && p.silu;
  float w[K][kV], bias[kV];
  conv_load_weights<K, kV>(p.weight, p.bias, c0, half ? 0.5f : 1.f, w, bias);
  float win[K][kV];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
    if (ts >= 0) {
      Piece h;
      h.v[0] = ld_stream16(xb + ts * p.x_st + c0);
#pragma unroll
      for (int v = 0; v < kV; ++v) win[k][v] = dev::to_f32(h.e[v]);
    } else {
#pragma unroll
      for (int v = 0; v < kV; ++v)
        win[k][v] = p.initial_state ? p.initial_state[(b * p.channels + c0 + v) * (K - 1) + (K - 1) + ts] : 0.f;
    }
  }
  T* out = p.out + b * p.seqlen * p.channels + c0;
#pragma unroll 1
  for (int64_t j = 0; j < nchunks; ++j) {
    const int s = static_cast<int>(j % kS10);
    dev::mbar_wait(&full[s], static_cast<unsigned>((j / kS10) & 1));
    const int64_t t0 = t_begin + j * kR10;
#pragma unroll
    for (int r = 0; r < kR10; ++r) {
      Piece in;
      in.v[0] = c10_ring[(s * kR10 + r) * kC10Threads + tid];
      const uint4 o = conv_step<T, K, kV, kTanh>(win, w, bias, in, p.silu);
      if (t0 + r < t_end) __stcs(reinterpret_cast<uint4*>(out + (t0 + r) * p.channels), o);
    }
    __syncthreads();  // every thread has read stage s
    if (tid == 0 && j + kS10 < nchunks) issue(j + kS10);
  }
}

template <class T, int K, int kR10, int kS10>
bool launch_fwd_v10(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kV = 16 / int(sizeof(T));
  constexpr int64_t kSegC = int64_t{kC10Threads} * kV;
  const bool ok = dev::aligned16(p.x) && dev::aligned16(p.out) && dev::aligned16(p.weight) &&
                  (!p.bias || dev::aligned16(p.bias)) && p.channels % kSegC == 0 && p.x_sb % kV == 0 && p.x_st % kV == 0;
  if (!ok) return false;
  auto kern = causal_conv1d_fwd_v10_kernel<T, K, kR10, kS10>;
  constexpr int smem = kS10 * kR10 * kC10Threads * 16;
  static int per_sm = -1, sms = 0;  // per instantiation (the current device's figures when first called)
  if (per_sm < 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kC10Threads, smem) != cudaSuccess || per_sm <= 0) {
      cudaGetLastError();
      per_sm = -1;
      return false;
    }
  }
  const int64_t gx = p.channels / kSegC;
  const int64_t cols = gx * p.batch;
  int64_t nseg = std::max<int64_t>(1, int64_t{sms} * per_sm / std::max<int64_t>(cols, 1));
  if (const char* env = std::getenv("MAMBA_CONV_V10_WAVES")) nseg *= std::max(1, std::atoi(env));
  int64_t seg = (p.seqlen + nseg - 1) / nseg;
  seg = std::max<int64_t>(kR10, (seg + kR10 - 1) / kR10 * kR10);
  seg = std::max<int64_t>(seg, (p.seqlen + 65534) / 65535);
  const int64_t gy = (p.seqlen + seg - 1) / seg;
  if (gy > 65535) return false;
  kern<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(p.batch)), kC10Threads, smem,
         stream>>>(p, seg);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda (v10)");
  return true;
}

template <class T, int K>
void launch_fwd(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  // Version: MAMBA_CONV_VERSION=1 (scalar walk), 4 (64-step walks), 7 (16-step short blocks), 9 (the
  // default: v7 with tanh silu; MAMBA_CONV_V9_STEPS=8|16|32), 10 (bulk-copy ring;
  // MAMBA_CONV_V10_ROWS=4|8); each falls back to the scalar walk when its alignment conditions fail.
  const char* ver = std::getenv("MAMBA_CONV_VERSION");
  const int version = ver && *ver ? std::atoi(ver) : 9;
  if (version == 7 && launch_fwd_v7<T, K, 16>(p, stream)) return;
  if (version == 10) {
    const char* rw = std::getenv("MAMBA_CONV_V10_ROWS");
    if ((rw && std::atoi(rw) == 4) ? launch_fwd_v10<T, K, 4, 4>(p, stream) : launch_fwd_v10<T, K, 8, 4>(p, stream)) return;
  }
  if (version == 9) {
    const char* st = std::getenv("MAMBA_CONV_V9_STEPS");
    const int steps = st ? std::atoi(st) : 16;
    if (steps == 8 ? launch_fwd_v9<T, K, 8>(p, stream) : steps == 32 ? launch_fwd_v9<T, K, 32>(p, stream)
                   : launch_fwd_v9<T, K, 16>(p, stream))
      return;
  }
  if (version != 1 && version != 7 && version != 9 && version != 10 && launch_fwd_v4<T, K>(p, stream)) return;
  const dim3 grid(static_cast<unsigned>((p.channels + kThreads - 1) / kThreads),
                  static_cast<unsigned>((p.seqlen + kSteps - 1) / kSteps), static_cast<unsigned>(p.batch));
  causal_conv1d_fwd_kernel<T, K><<<grid, kThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda");
}

template <class T>
__global__ void __launch_bounds__(kThreads)
causal_conv1d_update_kernel(int64_t batch, int64_t channels, int64_t width, float* conv_state, const T* x,
                            int64_t x_sb, const float* weight, const float* bias, bool silu, T* out) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= batch * channels) return;
  const int64_t b = i / channels, c = i % channels;
  float* s = conv_state + i * width;
  const float* w = weight + c * width;
  float acc = bias ? bias[c] : 0.f;
  for (int64_t k = 0; k + 1 < width; ++k) {
    const float v = s[k + 1];
    s[k] = v;
    acc += w[k] * v;
  }
  const float xv = dev::to_f32(x[b * x_sb + c]);
  s[width - 1] = xv;
  acc += w[width - 1] * xv;
  out[i] = dev::from_f32<T>(silu ? dev::silu(acc) : acc);
}

}  // namespace

template <class T>
void causal_conv1d_fwd_cuda(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  if (p.batch < 0 || p.seqlen < 0 || p.channels < 0) throw std::invalid_argument("causal_conv1d_fwd_cuda: negative size");
  if (p.batch > 65535 || (p.seqlen + kSteps - 1) / kSteps > 65535)
    throw std::invalid_argument("causal_conv1d_fwd_cuda: batch > 65535 or seqlen > 1048560");
  if (p.batch == 0 || p.seqlen == 0 || p.channels == 0) return;
  if (!p.x || !p.weight || !p.out) throw std::invalid_argument("causal_conv1d_fwd_cuda: x, weight and out are required");
  switch (p.width) {
    case 1: launch_fwd<T, 1>(p, stream); break;
    case 2: launch_fwd<T, 2>(p, stream); break;
    case 3: launch_fwd<T, 3>(p, stream); break;
    case 4: launch_fwd<T, 4>(p, stream); break;
    default:
      throw std::invalid_argument("causal_conv1d_fwd_cuda: width must be in [1, 4], got " + std::to_string(p.width));
  }
}

template <class T>
void causal_conv1d_update_cuda(int64_t batch, int64_t channels, int64_t width, float* conv_state, const T* x,
                               int64_t x_sb, const float* weight, const float* bias, bool silu, T* out,
                               cudaStream_t stream) {
  if (batch < 0 || channels < 0 || width < 1) throw std::invalid_argument("causal_conv1d_update_cuda: bad sizes");
  const int64_t n = batch * channels;
  if (n == 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) throw std::invalid_argument("causal_conv1d_update_cuda: too large");
  causal_conv1d_update_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      batch, channels, width, conv_state, x, x_sb, weight, bias, silu, out);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_update_cuda");
}

template void causal_conv1d_fwd_cuda<float>(const CausalConv1dCudaParams<float>&, cudaStream_t);
template void causal_conv1d_fwd_cuda<__nv_bfloat16>(const CausalConv1dCudaParams<__nv_bfloat16>&, cudaStream_t);
template void causal_conv1d_update_cuda<float>(int64_t, int64_t, int64_t, float*, const float*, int64_t, const float*,
                                               const float*, bool, float*, cudaStream_t);
template void causal_conv1d_update_cuda<__nv_bfloat16>(int64_t, int64_t, int64_t, float*, const __nv_bfloat16*, int64_t,
                                                       const float*, const float*, bool, __nv_bfloat16*, cudaStream_t);

}  // namespace mamba::kernels::cuda
