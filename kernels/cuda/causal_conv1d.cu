// Depthwise causal conv1d on the GPU.
// Forward, fast path (16-byte pieces along c, aligned rows): v9, short blocks (see its comment).
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

// A thread's kS outputs (kS consecutive steps of its 16 bytes of channels c0 .. c0 + kV) from the kS +
// K - 1 raw input pieces `in` (in[i] = time t_begin - (K - 1) + i, zero outside the row): weights and
// bias (halved for kTanh with silu), the window (before t = 0: initial_state, kept in f32), then the
// steps, each stored with st.global.cs while t < seqlen. The short-block kernels differ only in how
// `in` arrives.
template <class T, int K, int kS, bool kTanh>
__device__ __forceinline__ void conv_run(const CausalConv1dCudaParams<T>& p, int64_t b, int64_t c0, int64_t t_begin,
                                         const dev::RawRow<T, 16 / sizeof(T)> (&in)[kS + K - 1]) {
  constexpr int kV = 16 / int(sizeof(T));
  const bool half = kTanh && p.silu;
  float w[K][kV], bias[kV];
  conv_load_weights<K, kV>(p.weight, p.bias, c0, half ? 0.5f : 1.f, w, bias);
  float win[K][kV];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int64_t ts = t_begin - (K - 1) + k;
#pragma unroll
    for (int v = 0; v < kV; ++v)
      win[k][v] = ts >= 0 ? dev::to_f32(in[k].e[v])
                          : (p.initial_state ? p.initial_state[(b * p.channels + c0 + v) * (K - 1) + (K - 1) + ts] : 0.f);
  }
  T* out = p.out + b * p.seqlen * p.channels + c0;
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t t = t_begin + s;
    const uint4 o = conv_step<T, K, kV, kTanh>(win, w, bias, in[K - 1 + s], p.silu);
    if (t < p.seqlen) __stcs(reinterpret_cast<uint4*>(out + t * p.channels), o);
  }
}

// v9 (branch bw80; the default; MAMBA_CONV_V9_STEPS=8|16|32): short blocks: a thread owns 16 bytes of
// channels and kS9 steps, all kS9 + K - 1 input pieces loaded at once (the Mamba-2 update's pattern),
// then conv_run. For bf16 the silu is silu(a) = h + h tanh(h) with h = a / 2 and the 1/2 folded into
// the weights and bias (one MUFU.TANH per output instead of EX2 + RCP; bf16 moves half the bytes of
// f32 per output, so its arithmetic per byte is twice f32's); f32 keeps silu_fast (tanh.approx's 2^-11
// error is fine for bf16 outputs, not for the f32 tolerance). Loads skip L1
// (ld.global.nc.L1::no_allocate), stores stream (st.global.cs).
template <class T, int K, int kS9>
__global__ void __launch_bounds__(128) causal_conv1d_fwd_v9_kernel(CausalConv1dCudaParams<T> p) {
  constexpr int kV = 16 / int(sizeof(T));
  using Piece = dev::RawRow<T, kV>;
  const int64_t c0 = (int64_t{blockIdx.x} * 128 + threadIdx.x) * kV;
  if (c0 >= p.channels) return;
  const int64_t b = blockIdx.z;
  const int64_t t_begin = int64_t{blockIdx.y} * kS9;
  const T* x = p.x + b * p.x_sb + c0;
  Piece in[kS9 + K - 1];
#pragma unroll
  for (int i = 0; i < kS9 + K - 1; ++i) {
    const int64_t ts = t_begin - (K - 1) + i;
    in[i].v[0] = ts >= 0 && ts < p.seqlen ? ld_stream16(x + ts * p.x_st) : make_uint4(0u, 0u, 0u, 0u);
  }
  conv_run<T, K, kS9, sizeof(T) == 2>(p, b, c0, t_begin, in);
}

// The 16-byte paths' conditions: aligned base pointers, rows and channels in whole 16-byte pieces.
template <class T>
bool conv_vec_ok(const CausalConv1dCudaParams<T>& p) {
  constexpr int kV = 16 / int(sizeof(T));
  return dev::aligned16(p.x) && dev::aligned16(p.out) && dev::aligned16(p.weight) && (!p.bias || dev::aligned16(p.bias)) &&
         p.channels % kV == 0 && p.x_sb % kV == 0 && p.x_st % kV == 0;
}

template <class T, int K, int kS9>
bool launch_fwd_v9(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kV = 16 / int(sizeof(T));
  if (!conv_vec_ok(p) || (p.seqlen + kS9 - 1) / kS9 > 65535) return false;
  const int64_t lanes = p.channels / kV;
  const dim3 grid(static_cast<unsigned>((lanes + 127) / 128), static_cast<unsigned>((p.seqlen + kS9 - 1) / kS9),
                  static_cast<unsigned>(p.batch));
  causal_conv1d_fwd_v9_kernel<T, K, kS9><<<grid, 128, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("causal_conv1d_fwd_cuda (v9)");
  return true;
}

// MAMBA_CONV_VERSION: unset / empty / 0 = the default (v9), 1 = the scalar walk, 9 = v9. The removed
// versions (3-8, 10: measured slower, NOTES.md) and any other number are an error naming the field.
int conv_version() {
  const char* ver = std::getenv("MAMBA_CONV_VERSION");
  const int version = ver && *ver ? std::atoi(ver) : 0;
  if (version != 0 && version != 1 && version != 9)
    throw std::invalid_argument("causal_conv1d_fwd_cuda: version (MAMBA_CONV_VERSION) must be 1 or 9 (unset: the default), got " +
                                std::string(ver) + " (versions 3-8 and 10 were removed)");
  return version;
}

template <class T, int K>
void launch_fwd(const CausalConv1dCudaParams<T>& p, cudaStream_t stream) {
  // v9 (MAMBA_CONV_V9_STEPS=8|16|32, default 16: the fastest at l 2048 and 8192, NOTES.md bw81) when
  // the 16-byte conditions hold, else the scalar walk.
  const int version = conv_version();
  if (version != 1) {
    const char* st = std::getenv("MAMBA_CONV_V9_STEPS");
    const int steps = st ? std::atoi(st) : 16;
    if (steps == 8 ? launch_fwd_v9<T, K, 8>(p, stream) : steps == 32 ? launch_fwd_v9<T, K, 32>(p, stream)
                   : launch_fwd_v9<T, K, 16>(p, stream))
      return;
  }
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
