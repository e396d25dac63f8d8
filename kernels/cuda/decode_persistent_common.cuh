// Pieces shared by the persistent decode kernels (mamba1_decode_persistent.cu: version 2,
// mamba1_decode_v3.cu: version 3). Private to kernels/cuda.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "device_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/mamba1_decode_persistent_cuda.h"

namespace mamba::kernels::cuda::decode {

template <class T> __device__ __forceinline__ T round_t(float v) { return dev::from_f32<T>(v); }
// f32 of the value rounded to T (the roundings of the unfused path, where it stores T).
template <class T> __device__ __forceinline__ float rt(float v) { return dev::to_f32(dev::from_f32<T>(v)); }

// Loads through L2 only: data written by other blocks earlier in this launch.
__device__ __forceinline__ float ldcg_f(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float ldcg_f(const __nv_bfloat16* p) {
  const unsigned short u = __ldcg(reinterpret_cast<const unsigned short*>(p));
  return __uint_as_float(static_cast<unsigned>(u) << 16);
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Grid-wide barrier on one monotonic counter: the block's writes are ordered before a
// release add (thread 0, after __syncthreads), then thread 0 spins with acquire loads until
// `target` arrivals. `stamps` (optional): arrival / departure times of this block for barrier e.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target, unsigned long long* stamps,
                                             unsigned e) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if (stamps) stamps[(size_t{e} * gridDim.x + blockIdx.x) * 2] = globaltimer();
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    unsigned v;
    for (;;) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      if (v >= target) break;
    }
    if (stamps) stamps[(size_t{e} * gridDim.x + blockIdx.x) * 2 + 1] = globaltimer();
  }
  __syncthreads();
}

// The same barrier with the wait on a separate flag: every block adds to `counter` (acq_rel);
// the one that brings it to `target` stores `epoch` to `flag` (release); the others spin with
// acquire loads on `flag` only, so the polls and the arrivals do not share one address.
__device__ __forceinline__ void grid_barrier_flag(unsigned* counter, unsigned* flag, unsigned target, unsigned epoch,
                                                  unsigned long long* stamps) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if (stamps) stamps[(size_t{epoch} * gridDim.x + blockIdx.x) * 2] = globaltimer();
    unsigned old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
    if (old + 1 == target) {
      asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(flag), "r"(epoch) : "memory");
    } else {
      unsigned v;
      for (;;) {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
        if (v >= epoch) break;
      }
    }
    if (stamps) stamps[(size_t{epoch} * gridDim.x + blockIdx.x) * 2 + 1] = globaltimer();
  }
  __syncthreads();
}

// scale[i] = rsqrt(sum over the block of ss[i] / d + eps) for the block's per-thread sums of
// squares ss (red: blockDim / 32 * MM floats of shared memory). before() runs before the
// first __syncthreads (a cp.async wait, say). Ends with a __syncthreads.
template <int MM, class Before>
__device__ __forceinline__ void rms_scales(float (&ss)[MM], int64_t d, float eps, float* red, float* scale,
                                           Before before) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x / 32;
#pragma unroll
  for (int i = 0; i < MM; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss[i] += __shfl_xor_sync(0xffffffffu, ss[i], off);
    if (lane == 0) red[warp * MM + i] = ss[i];
  }
  before();
  __syncthreads();
  if (tid < MM) {
    float t = 0.f;
    for (int wi = 0; wi < nw; ++wi) t += red[wi * MM + tid];
    scale[tid] = rsqrtf(t / static_cast<float>(d) + eps);
  }
  __syncthreads();
}

// xs[i, :] = rt(RMSNorm(v_i) * w) for the m <= MM rows v_i = in(i, k) (f32, k < d), computed
// by the whole block (stride blockDim.x); res[i, :] = v_i when res is given (shared or global).
// before() runs after the input loads are issued and before the block's first __syncthreads
// (a cp.async wait, say: w may be among the copies; or a copy of xs, which then holds v, by
// the thread that wrote it). red / scale as in rms_scales. Ends with a __syncthreads.
template <class T, int MM, class In, class Before>
__device__ __forceinline__ void norm_rows(int m, int64_t d, float eps, In in, float* res, const float* w, float* xs,
                                          float* red, float* scale, Before before) {
  const int64_t nt = blockDim.x;
  float ss[MM];
#pragma unroll
  for (int i = 0; i < MM; ++i) ss[i] = 0.f;
  // Only loads and stores in this loop, so the loads of several k are in flight.
#pragma unroll 2
  for (int64_t k = threadIdx.x; k < d; k += nt) {
#pragma unroll
    for (int i = 0; i < MM; ++i) {
      if (i < m) {
        const float v = in(i, k);
        if (res) res[i * d + k] = v;
        xs[i * d + k] = v;
        ss[i] = fmaf(v, v, ss[i]);
      }
    }
  }
  rms_scales<MM>(ss, d, eps, red, scale, before);
  for (int64_t k = threadIdx.x; k < d; k += nt) {
    const float wk = w[k];
#pragma unroll
    for (int i = 0; i < MM; ++i)
      if (i < m) xs[i * d + k] = rt<T>(xs[i * d + k] * scale[i] * wk);
  }
  __syncthreads();
}

// rows[c] . xs[i, :] for NC weight rows (some may be null) and MM activation rows in shared
// memory (f32, row stride k); lanes split k (16-byte weight loads when aligned); the result
// is reduced into every lane.
template <class T, int MM, int NC>
__device__ __forceinline__ void warp_dot(const T* const (&rows)[NC], int64_t k, const float* xs, float (&acc)[NC][MM],
                                         int lane) {
#pragma unroll
  for (int c = 0; c < NC; ++c)
#pragma unroll
    for (int i = 0; i < MM; ++i) acc[c][i] = 0.f;
  constexpr int kVec = 16 / sizeof(T);
  bool vec = (k % kVec) == 0;
#pragma unroll
  for (int c = 0; c < NC; ++c)
    if (rows[c] && (reinterpret_cast<uintptr_t>(rows[c]) & 15) != 0) vec = false;
  if (vec) {
    const int64_t nv = k / kVec;
#pragma unroll 2
    for (int64_t v = lane; v < nv; v += 32) {
      union { uint4 u; T e[kVec]; } wb[NC];
#pragma unroll
      for (int c = 0; c < NC; ++c)
        wb[c].u = rows[c] ? __ldg(reinterpret_cast<const uint4*>(rows[c]) + v) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < MM; ++i) {
        float xv[kVec];
#pragma unroll
        for (int j = 0; j < kVec; j += 4) {
          const float4 f = *reinterpret_cast<const float4*>(xs + i * k + v * kVec + j);
          xv[j] = f.x; xv[j + 1] = f.y; xv[j + 2] = f.z; xv[j + 3] = f.w;
        }
#pragma unroll
        for (int c = 0; c < NC; ++c)
#pragma unroll
          for (int j = 0; j < kVec; ++j) acc[c][i] = fmaf(dev::to_f32(wb[c].e[j]), xv[j], acc[c][i]);
      }
    }
  } else {
    for (int64_t kk = lane; kk < k; kk += 32) {
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        if (!rows[c]) continue;
        const float wf = dev::to_f32(rows[c][kk]);
#pragma unroll
        for (int i = 0; i < MM; ++i) acc[c][i] = fmaf(wf, xs[i * k + kk], acc[c][i]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < NC; ++c)
#pragma unroll
    for (int i = 0; i < MM; ++i)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[c][i] += __shfl_xor_sync(0xffffffffu, acc[c][i], off);
}

// y[i, col] = W[col, :] . xs[i, :] for col in [0, n) (W row-major (n, k), HBM / L2), a warp
// per column, NC columns in flight per warp, warps of the whole grid strided over the columns;
// store(i, col, value) is called by lane 0 for i < m.
template <class T, int MM, int NC, class Store>
__device__ __forceinline__ void grid_gemv_rows(const T* W, int64_t n, int64_t k, const float* xs, int m, Store store) {
  const int lane = threadIdx.x & 31;
  const int64_t wpb = blockDim.x / 32;
  const int64_t gwarp = int64_t{blockIdx.x} * wpb + (threadIdx.x >> 5), nwarps = int64_t{gridDim.x} * wpb;
  for (int64_t c0 = gwarp; c0 < n; c0 += NC * nwarps) {
    const T* rows[NC];
    int64_t cols[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      cols[c] = c0 + c * nwarps;
      rows[c] = cols[c] < n ? W + cols[c] * k : nullptr;
    }
    float acc[NC][MM];
    warp_dot<T, MM, NC>(rows, k, xs, acc, lane);
    if (lane == 0) {
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        if (!rows[c]) continue;
#pragma unroll
        for (int i = 0; i < MM; ++i)
          if (i < m) store(i, cols[c], acc[c][i]);
      }
    }
  }
}

// Launches `kernel` (one parameter, *arg) on `grid` blocks that must all be resident at once:
// a cooperative launch, or a plain one with MAMBA_DECODE_COOP=0 (the grid still fits on the
// device: it is sized from the occupancy; only for drivers that refuse cooperative nodes in
// graphs). persist (optional): an L2 access-policy window marked persisting (the part of the
// L2 set aside with cudaLimitPersistingL2CacheSize keeps those lines across launches).
// Checks the launch, naming op.
inline void launch_resident(const char* op, const void* kernel, int grid, int threads, size_t smem,
                            cudaStream_t stream, void* arg, const cudaAccessPolicyWindow* persist = nullptr) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(grid));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  const char* coop = std::getenv("MAMBA_DECODE_COOP");
  if (!(coop && std::string(coop) == "0")) {
    attr[n].id = cudaLaunchAttributeCooperative;
    attr[n].val.cooperative = 1;
    ++n;
  }
  if (persist && persist->num_bytes > 0) {
    attr[n].id = cudaLaunchAttributeAccessPolicyWindow;
    attr[n].val.accessPolicyWindow = *persist;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  void* kargs[] = {arg};
  MAMBA_CUDA_CHECK(op, cudaLaunchKernelExC(&cfg, kernel, kargs));
  MAMBA_CUDA_CHECK_LAUNCH(op);
}

}  // namespace mamba::kernels::cuda::decode

namespace mamba::kernels::cuda::detail {
template <class T> int persistent_decode_v3_grid(const PersistentDecodeParams<T>& p);
template <class T> void persistent_decode_v3_launch(const PersistentDecodeParams<T>& p, int grid, cudaStream_t stream);
}  // namespace mamba::kernels::cuda::detail
