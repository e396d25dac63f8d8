// Private helpers of the training kernels (train_norm.cu, cross_entropy.cu, conv1d_bwd.cu,
// optim.cu): block reductions and the deterministic column sum of per-block partials.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mamba::kernels::cuda::train_dev {
namespace {  // internal linkage: each .cu gets its own copy of the kernels

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum of (a, b) over the block (blockDim.x a multiple of 32); every thread gets the totals.
// sh: 64 floats; `parity` alternates between consecutive calls so one barrier per call suffices.
__device__ __forceinline__ float2 block_sum2(float a, float b, float* sh, int parity) {
  a = warp_sum(a);
  b = warp_sum(b);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  float* s = sh + parity * 64;
  if (lane == 0) { s[warp] = a; s[32 + warp] = b; }
  __syncthreads();
  a = lane < nw ? s[lane] : 0.f;
  b = lane < nw ? s[32 + lane] : 0.f;
  return make_float2(warp_sum(a), warp_sum(b));
}

// out[col] = sum_{s < nslots} part[s * ncols + col], summed in a fixed order: blockDim (32, 16),
// lane y sums slots y, y + 16, ...; then the 16 lane sums are added in order.
// Destination: K == 0: dst[col]; else col = k * C + c with k <= K: k < K -> dst[c * K + k],
// k == K -> dst2[c] (dst2 nullable).
__global__ void column_sum_kernel(int64_t nslots, int64_t ncols, const float* __restrict__ part, float* dst,
                                  float* dst2, int64_t K, int64_t C) {
  __shared__ float sh[16][33];
  const int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (col < ncols)
    for (int64_t s = threadIdx.y; s < nslots; s += 16) acc += part[s * ncols + col];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < ncols) {
    float t = 0.f;
#pragma unroll
    for (int y = 0; y < 16; ++y) t += sh[y][threadIdx.x];
    if (K == 0) {
      dst[col] = t;
    } else {
      const int64_t k = col / C, c = col % C;
      if (k < K) dst[c * K + k] = t;
      else if (dst2) dst2[c] = t;
    }
  }
}

inline void launch_column_sum(int64_t nslots, int64_t ncols, const float* part, float* dst, float* dst2, int64_t K,
                              int64_t C, cudaStream_t stream) {
  const dim3 block(32, 16);
  const dim3 grid(static_cast<unsigned>((ncols + 31) / 32));
  column_sum_kernel<<<grid, block, 0, stream>>>(nslots, ncols, part, dst, dst2, K, C);
}

}  // namespace
}  // namespace mamba::kernels::cuda::train_dev
