// Fused Mamba-1 decode kernels (mamba1_decode_cuda.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/mamba1_decode_cuda.h"

namespace mamba::kernels::cuda {
namespace {

constexpr int kWarps = 8;          // warps per block
constexpr int kColsPerWarp = 2;    // output columns per warp
constexpr int kMaxSmemFloats = 12288;

template <class T> __device__ __forceinline__ T round_t(float v) { return dev::from_f32<T>(v); }

// grid: ceil(2 d_inner / (kWarps * kColsPerWarp)) blocks of kWarps warps.
// Every block normalises the (<= 8) rows into shared memory (cheap: the rows are a few KB in
// L2), block 0 also writes residual_out; then each warp computes kColsPerWarp output columns
// (W_in rows, 16-byte loads, lanes split k) and lane 0 runs the conv update of its channel.
template <class T, int MM>
__global__ void __launch_bounds__(kWarps * 32) norm_in_proj_conv_kernel(NormInProjConvParams<T> p) {
  extern __shared__ float xs[];  // [MM][d_model]
  __shared__ float red[kWarps][MM];
  __shared__ float scale[MM];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t d = p.d_model;
  const int m = static_cast<int>(p.batch);
  float ss[MM];
#pragma unroll
  for (int i = 0; i < MM; ++i) ss[i] = 0.f;
  for (int64_t k = tid; k < d; k += blockDim.x) {
#pragma unroll
    for (int i = 0; i < MM; ++i) {
      if (i < m) {
        float v = dev::to_f32(p.hidden[i * d + k]);
        if (p.residual_in) v += p.residual_in[i * d + k];
        xs[i * d + k] = v;
        ss[i] = fmaf(v, v, ss[i]);
        if (blockIdx.x == 0) p.residual_out[i * d + k] = v;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < MM; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss[i] += __shfl_xor_sync(0xffffffffu, ss[i], off);
    if (lane == 0) red[warp][i] = ss[i];
  }
  __syncthreads();
  if (tid < MM) {
    float t = 0.f;
    for (int w = 0; w < kWarps; ++w) t += red[w][tid];
    scale[tid] = rsqrtf(t / static_cast<float>(d) + p.eps);
  }
  __syncthreads();
  for (int64_t k = tid; k < d; k += blockDim.x) {
    const float w = p.norm_w[k];
#pragma unroll
    for (int i = 0; i < MM; ++i)
      if (i < m) xs[i * d + k] = dev::to_f32(round_t<T>(xs[i * d + k] * scale[i] * w));
  }
  __syncthreads();

  const int64_t n_out = 2 * p.d_inner;
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = (d % kVec) == 0 && (reinterpret_cast<uintptr_t>(p.w_in) & 15) == 0;
  for (int cc = 0; cc < kColsPerWarp; ++cc) {
    const int64_t col = (int64_t{blockIdx.x} * kWarps + warp) * kColsPerWarp + cc;
    if (col >= n_out) break;
    const T* wr = p.w_in + col * d;
    float acc[MM];
#pragma unroll
    for (int i = 0; i < MM; ++i) acc[i] = 0.f;
    if (vec) {
      for (int64_t v = lane; v < d / kVec; v += 32) {
        union { uint4 u; T e[kVec]; } wb;
        wb.u = __ldg(reinterpret_cast<const uint4*>(wr) + v);
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const float wf = dev::to_f32(wb.e[j]);
#pragma unroll
          for (int i = 0; i < MM; ++i) acc[i] = fmaf(wf, xs[i * d + v * kVec + j], acc[i]);
        }
      }
    } else {
      for (int64_t k = lane; k < d; k += 32) {
        const float wf = dev::to_f32(wr[k]);
#pragma unroll
        for (int i = 0; i < MM; ++i) acc[i] = fmaf(wf, xs[i * d + k], acc[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < MM; ++i) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
    }
    if (lane != 0) continue;
#pragma unroll
    for (int i = 0; i < MM; ++i) {
      if (i >= m) break;
      const T v = round_t<T>(acc[i]);
      p.xz[i * n_out + col] = v;
      if (col >= p.d_inner) continue;
      // The conv update of channel `col` (causal_conv1d_update_kernel's arithmetic).
      const int64_t K = p.d_conv;
      float* s = p.conv_state + (i * p.d_inner + col) * K;
      const float* w = p.conv_w + col * K;
      float a = p.conv_b ? p.conv_b[col] : 0.f;
      for (int64_t k = 0; k + 1 < K; ++k) {
        const float sv = s[k + 1];
        s[k] = sv;
        a += w[k] * sv;
      }
      const float xv = dev::to_f32(v);
      s[K - 1] = xv;
      a += w[K - 1] * xv;
      p.xc[i * p.d_inner + col] = round_t<T>(dev::silu(a));
    }
  }
}

// One thread per (b, d): the dt_proj dot product (dt_rank terms), then the state update of
// selective_state_update_kernel.
template <class T>
__global__ void __launch_bounds__(128) dt_state_update_kernel(DtStateUpdateParams<T> p) {
  const int64_t d = int64_t{blockIdx.x} * 128 + threadIdx.x;
  if (d >= p.d_inner) return;
  const int64_t b = blockIdx.y, N = p.dstate, R = p.dt_rank, xd = R + 2 * N;
  const T* xr = p.xdbl + b * xd;
  const T* wr = p.w_dt + d * R;
  float dtr = 0.f;
  for (int64_t r = 0; r < R; ++r) dtr = fmaf(dev::to_f32(xr[r]), dev::to_f32(wr[r]), dtr);
  float dt = dev::to_f32(round_t<T>(dtr)) + p.dt_bias[d];
  dt = dev::softplus(dt);
  const float x = dev::to_f32(p.xc[b * p.d_inner + d]);
  const T* Bv = xr + R;
  const T* Cv = xr + R + N;
  const float* A = p.A + d * N;
  float* h = p.state + (b * p.d_inner + d) * N;
  const float dtx = dt * x, dt2 = dt * dev::kLog2e;
  float y = 0.f;
#pragma unroll 4
  for (int64_t n = 0; n < N; ++n) {
    const float hn = exp2f(dt2 * A[n]) * h[n] + dtx * dev::to_f32(Bv[n]);
    h[n] = hn;
    y += hn * dev::to_f32(Cv[n]);
  }
  if (p.D) y += p.D[d] * x;
  y *= dev::silu(dev::to_f32(p.z[b * p.z_stride + d]));
  p.y[b * p.d_inner + d] = dev::from_f32<T>(y);
}

}  // namespace

bool norm_in_proj_conv_supported(int64_t batch, int64_t d_model, int64_t d_conv) {
  return batch >= 1 && batch <= 8 && batch * d_model <= kMaxSmemFloats && d_conv >= 1 && d_conv <= 4;
}

template <class T>
void norm_in_proj_conv_cuda(const NormInProjConvParams<T>& p, cudaStream_t stream) {
  if (!norm_in_proj_conv_supported(p.batch, p.d_model, p.d_conv))
    throw std::invalid_argument("norm_in_proj_conv_cuda: batch " + std::to_string(p.batch) + ", d_model " +
                                std::to_string(p.d_model) + ", d_conv " + std::to_string(p.d_conv) +
                                " outside the limits (batch <= 8, batch * d_model <= 12288, d_conv <= 4)");
  if (p.residual_in && p.residual_in == p.residual_out)
    throw std::invalid_argument("norm_in_proj_conv_cuda: residual_out must not alias residual_in");
  const int64_t cols_per_block = kWarps * kColsPerWarp;
  const dim3 grid(static_cast<unsigned>((2 * p.d_inner + cols_per_block - 1) / cols_per_block));
  const size_t smem = static_cast<size_t>(p.batch * p.d_model) * sizeof(float);
  if (p.batch == 1)
    norm_in_proj_conv_kernel<T, 1><<<grid, kWarps * 32, smem, stream>>>(p);
  else if (p.batch == 2)
    norm_in_proj_conv_kernel<T, 2><<<grid, kWarps * 32, smem, stream>>>(p);
  else if (p.batch <= 4)
    norm_in_proj_conv_kernel<T, 4><<<grid, kWarps * 32, smem, stream>>>(p);
  else
    norm_in_proj_conv_kernel<T, 8><<<grid, kWarps * 32, smem, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("norm_in_proj_conv_cuda");
}

template <class T>
void dt_state_update_cuda(const DtStateUpdateParams<T>& p, cudaStream_t stream) {
  if (p.batch < 1 || p.batch > 65535 || p.dstate < 1 || p.dstate > 256 || p.dt_rank < 1)
    throw std::invalid_argument("dt_state_update_cuda: batch " + std::to_string(p.batch) + ", dstate " +
                                std::to_string(p.dstate) + ", dt_rank " + std::to_string(p.dt_rank) +
                                " outside [1, 65535] / [1, 256] / >= 1");
  const dim3 grid(static_cast<unsigned>((p.d_inner + 127) / 128), static_cast<unsigned>(p.batch));
  dt_state_update_kernel<T><<<grid, 128, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("dt_state_update_cuda");
}

template void norm_in_proj_conv_cuda<float>(const NormInProjConvParams<float>&, cudaStream_t);
template void norm_in_proj_conv_cuda<__nv_bfloat16>(const NormInProjConvParams<__nv_bfloat16>&, cudaStream_t);
template void dt_state_update_cuda<float>(const DtStateUpdateParams<float>&, cudaStream_t);
template void dt_state_update_cuda<__nv_bfloat16>(const DtStateUpdateParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
