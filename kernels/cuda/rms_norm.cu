// RMSNorm on the GPU: fused residual add + RMSNorm, and the gated, grouped RMSNorm.
// One block per normalised segment (a row; for the gated form a row's group), 32..512 threads
// chosen so each thread holds about two pieces of 8 consecutive elements. Pass 1 loads the
// pieces (16-byte accesses where the piece is aligned and in bounds, element accesses
// otherwise), keeps up to kCache pieces per thread in registers and sums squares in f32
// (warp shuffles, then one value per warp through shared memory). Pass 2 scales and stores.
// Segments longer than 512 * 8 * kCache = 16384 elements re-read the pieces past the cache:
// residual_out (already written by the same thread) for the residual form, x and z for the
// gated form.
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <algorithm>
#include <stdexcept>

#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kPiece = 8;        // consecutive elements per load
constexpr int kCache = 4;        // pieces per thread kept in registers
constexpr int kMaxThreads = 512;

// Sum over the block; every thread gets the total. blockDim.x is a multiple of 32, <= 1024.
__device__ __forceinline__ float block_sum(float v, float* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  if (lane == 0) sh[warp] = v;
  __syncthreads();  // also orders pass 1's stores before pass 2's re-reads
  v = lane < nw ? sh[lane] : 0.f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads)
add_rms_norm_kernel(int64_t dim, const T* x, const float* res_in, float* res_out, const float* w, float eps, T* y) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T* xr = x ? x + row * dim : nullptr;
  const float* ri = res_in ? res_in + row * dim : nullptr;
  float* ro = res_out + row * dim;
  T* yr = y + row * dim;
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;

  float v[kCache][kPiece];
  float ss = 0.f;
#pragma unroll
  for (int p = 0; p < kCache; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < dim) {
      float a[kPiece];
      if (xr) {
        dev::load_run<kPiece>(xr, t0, dim, v[p], 0.f);
      } else {
#pragma unroll
        for (int j = 0; j < kPiece; ++j) v[p][j] = 0.f;
      }
      if (ri) {
        dev::load_run<kPiece>(ri, t0, dim, a, 0.f);
#pragma unroll
        for (int j = 0; j < kPiece; ++j) v[p][j] += a[j];
      }
#pragma unroll
      for (int j = 0; j < kPiece; ++j) ss += v[p][j] * v[p][j];
      dev::store_run<kPiece>(ro, t0, dim, v[p]);
    }
  }
  for (int64_t t0 = t_first + kCache * step; t0 < dim; t0 += step) {
    float u[kPiece], a[kPiece];
    if (xr) {
      dev::load_run<kPiece>(xr, t0, dim, u, 0.f);
    } else {
#pragma unroll
      for (int j = 0; j < kPiece; ++j) u[j] = 0.f;
    }
    if (ri) {
      dev::load_run<kPiece>(ri, t0, dim, a, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) u[j] += a[j];
    }
#pragma unroll
    for (int j = 0; j < kPiece; ++j) ss += u[j] * u[j];
    dev::store_run<kPiece>(ro, t0, dim, u);
  }
  const float r = rsqrtf(block_sum(ss, sh) / static_cast<float>(dim) + eps);

#pragma unroll
  for (int p = 0; p < kCache; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < dim) {
      float wv[kPiece], o[kPiece];
      dev::load_run<kPiece>(w, t0, dim, wv, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) o[j] = v[p][j] * r * wv[j];
      dev::store_run<kPiece>(yr, t0, dim, o);
    }
  }
  for (int64_t t0 = t_first + kCache * step; t0 < dim; t0 += step) {
    float u[kPiece], wv[kPiece];
    dev::load_run<kPiece>(static_cast<const float*>(ro), t0, dim, u, 0.f);
    dev::load_run<kPiece>(w, t0, dim, wv, 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) u[j] = u[j] * r * wv[j];
    dev::store_run<kPiece>(yr, t0, dim, u);
  }
}

// Pass-1 values of one piece of the gated form: v (the normalised input) and the gate.
template <class T>
__device__ __forceinline__ void gated_piece(const T* xr, const T* zr, int64_t t0, int64_t n, bool nbg,
                                            float (&v)[kPiece], float (&g)[kPiece]) {
  dev::load_run<kPiece>(xr, t0, n, v, 0.f);
  if (zr) {
    dev::load_run<kPiece>(zr, t0, n, g, 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) g[j] = dev::silu(g[j]);
    if (!nbg) {
#pragma unroll
      for (int j = 0; j < kPiece; ++j) v[j] *= g[j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < kPiece; ++j) g[j] = 1.f;
  }
}

// kC pieces per thread kept in registers (kCache for long segments; 2 covers threads_for's two
// pieces per thread up to 8192 elements): v and g hold 2 x kC x 8 floats, so kC 4 took 122
// registers, 8 blocks of 64 threads per SM, and the kernel waited on memory at 24% of bandwidth.
// kPost: the gate multiplies after the norm (norm_before_gate with z), so pass 2 needs the cached
// gate values; otherwise only the normalised input is cached (half the registers of the cache).
template <class T, int kC, bool kPost>
__global__ void __launch_bounds__(kMaxThreads)
gated_rms_norm_kernel(int64_t ngroups, int64_t gsz, const T* x, int64_t x_stride, const T* z, int64_t z_stride,
                      const float* w, float eps, bool nbg, T* y, int64_t y_stride) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x / ngroups;
  const int64_t c0 = (blockIdx.x % ngroups) * gsz;
  const T* xr = x + row * x_stride + c0;
  const T* zr = z ? z + row * z_stride + c0 : nullptr;
  const float* wg = w + c0;
  T* yr = y + row * y_stride + c0;
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;
  constexpr bool post_gate = kPost;

  float v[kC][kPiece], g[kPost ? kC : 1][kPiece];
  float ss = 0.f;
#pragma unroll
  for (int p = 0; p < kC; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < gsz) {
      float h[kPiece];
      gated_piece(xr, zr, t0, gsz, nbg, v[p], h);
      if constexpr (kPost) {
#pragma unroll
        for (int j = 0; j < kPiece; ++j) g[p][j] = h[j];
      }
#pragma unroll
      for (int j = 0; j < kPiece; ++j) ss += v[p][j] * v[p][j];
    }
  }
  for (int64_t t0 = t_first + kC * step; t0 < gsz; t0 += step) {
    float u[kPiece], h[kPiece];
    gated_piece(xr, zr, t0, gsz, nbg, u, h);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) ss += u[j] * u[j];
  }
  const float r = rsqrtf(block_sum(ss, sh) / static_cast<float>(gsz) + eps);

#pragma unroll
  for (int p = 0; p < kC; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < gsz) {
      float wv[kPiece], o[kPiece];
      dev::load_run<kPiece>(wg, t0, gsz, wv, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) o[j] = post_gate ? v[p][j] * r * wv[j] * g[kPost ? p : 0][j] : v[p][j] * r * wv[j];
      dev::store_run<kPiece>(yr, t0, gsz, o);
    }
  }
  for (int64_t t0 = t_first + kC * step; t0 < gsz; t0 += step) {
    float u[kPiece], h[kPiece], wv[kPiece];
    gated_piece(xr, zr, t0, gsz, nbg, u, h);
    dev::load_run<kPiece>(wg, t0, gsz, wv, 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) u[j] = post_gate ? u[j] * r * wv[j] * h[j] : u[j] * r * wv[j];
    dev::store_run<kPiece>(yr, t0, gsz, u);
  }
}

// Threads for a segment of n elements: about two pieces per thread, 32..512, a multiple of 32.
int threads_for(int64_t n) {
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  const int64_t t = ((pieces + 1) / 2 + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(t, 32, kMaxThreads));
}

}  // namespace

template <class T>
void add_rms_norm_cuda(int64_t rows, int64_t dim, const T* x, const float* residual_in, float* residual_out,
                       const float* w, float eps, T* y, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  if (rows > 0x7fffffff) throw std::invalid_argument("add_rms_norm_cuda: rows > 2^31 - 1");
  add_rms_norm_kernel<T><<<static_cast<unsigned>(rows), threads_for(dim), 0, stream>>>(dim, x, residual_in,
                                                                                      residual_out, w, eps, y);
  MAMBA_CUDA_CHECK_LAUNCH("add_rms_norm_cuda");
}

template <class T>
void gated_rms_norm_cuda(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride, const T* z,
                         int64_t z_stride, const float* w, float eps, bool norm_before_gate, T* y, int64_t y_stride,
                         cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  if (group_size <= 0 || dim % group_size != 0)
    throw std::invalid_argument("gated_rms_norm_cuda: group_size must divide dim");
  const int64_t ngroups = dim / group_size;
  if (rows * ngroups > 0x7fffffff) throw std::invalid_argument("gated_rms_norm_cuda: rows * groups > 2^31 - 1");
  const int threads = threads_for(group_size);
  const int64_t per_thread = ((group_size + kPiece - 1) / kPiece + threads - 1) / threads;
  const dim3 grid(static_cast<unsigned>(rows * ngroups));
  const bool post = norm_before_gate && z;
  auto run = [&](auto kernel) {
    kernel<<<grid, threads, 0, stream>>>(ngroups, group_size, x, x_stride, z, z_stride, w, eps, norm_before_gate, y,
                                         y_stride);
  };
  if (per_thread <= 2) post ? run(gated_rms_norm_kernel<T, 2, true>) : run(gated_rms_norm_kernel<T, 2, false>);
  else post ? run(gated_rms_norm_kernel<T, kCache, true>) : run(gated_rms_norm_kernel<T, kCache, false>);
  MAMBA_CUDA_CHECK_LAUNCH("gated_rms_norm_cuda");
}

#define MAMBA_RMS_NORM_INSTANTIATE(T)                                                                            \
  template void add_rms_norm_cuda<T>(int64_t, int64_t, const T*, const float*, float*, const float*, float, T*,  \
                                     cudaStream_t);                                                              \
  template void gated_rms_norm_cuda<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t,          \
                                       const float*, float, bool, T*, int64_t, cudaStream_t);
MAMBA_RMS_NORM_INSTANTIATE(float)
MAMBA_RMS_NORM_INSTANTIATE(__nv_bfloat16)
#undef MAMBA_RMS_NORM_INSTANTIATE

}  // namespace mamba::kernels::cuda
