// Mamba-1 selective scan forward on the GPU. Design (see NOTES.md):
//   grid (dim, batch), one block of kThreads = 128 threads per (b, d) row. The row is walked
//   in chunks of kThreads * kItems timesteps; thread i owns the kItems consecutive steps
//   [i * kItems, (i + 1) * kItems) of the chunk, loaded 16 bytes at a time along l.
//   For each state n: every step is the affine map h -> a_t * h + b_t with
//   a_t = exp2(dt_t * A[n] * log2 e), b_t = dt_t * u_t * B[n, t]. Each thread composes its
//   kItems maps, a warp scan (shuffles) and a scan over the 4 warp totals (shared memory)
//   give every thread the state entering its run, starting from the state carried in from
//   the previous chunk; the thread then replays its run and accumulates y_t += h_t * C[n, t].
//   The state leaving the chunk (held by the last thread) is the carry for the next chunk.
//   Steps past seqlen get dt = 0, i.e. the identity map, so the carry is exact.
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "scan_fwd_v3.cuh"  // v3 (below: its dispatch)
#include "scan_fwd_v6_launch.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxState = 256;

struct Affine {  // h -> a * h + b
  float a, b;
};
// first x, then y
__device__ __forceinline__ Affine compose(Affine x, Affine y) { return {x.a * y.a, y.a * x.b + y.b}; }

template <class T, int kItems>
__global__ void __launch_bounds__(kThreads) selective_scan_fwd_kernel(SelectiveScanCudaParams<T> p) {
  __shared__ Affine warp_total[kMaxState][kWarps];
  __shared__ float carry[2][kMaxState];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t d = blockIdx.x, b = blockIdx.y;
  const int64_t L = p.seqlen, N = p.dstate;
  const int64_t g = d / (p.dim / p.n_groups);
  const int64_t row = (b * p.dim + d) * L;
  const T* u_row = p.u + row;
  const T* delta_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  T* y_row = p.y + row;
  const T* B_base = p.B + (b * p.n_groups + g) * N * L;
  const T* C_base = p.C + (b * p.n_groups + g) * N * L;
  const float* A_row = p.A + d * N;
  const float D = p.D ? p.D[d] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int64_t state_off = (b * p.dim + d) * N;

  for (int64_t n = tid; n < N; n += kThreads) carry[0][n] = p.initial_state ? p.initial_state[state_off + n] : 0.f;
  __syncthreads();

  int cur = 0;
  constexpr int64_t kChunk = int64_t{kThreads} * kItems;
  for (int64_t c0 = 0; c0 < L; c0 += kChunk) {
    const int64_t t0 = c0 + int64_t{tid} * kItems;
    float u[kItems], dt[kItems], du[kItems], y[kItems];
    dev::load_run<kItems>(u_row, t0, L, u, 0.f);
    dev::load_run<kItems>(delta_row, t0, L, dt, 0.f);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      float v = dt[j] + bias;
      if (p.delta_softplus) v = dev::softplus(v);
      dt[j] = t0 + j < L ? v : 0.f;  // identity map past the end
      du[j] = dt[j] * u[j];
      y[j] = 0.f;
    }

    for (int64_t n = 0; n < N; ++n) {
      const float A2 = A_row[n] * dev::kLog2e;
      float Bv[kItems], Cv[kItems], a[kItems];
      dev::load_run<kItems>(B_base + n * L, t0, L, Bv, 0.f);
      dev::load_run<kItems>(C_base + n * L, t0, L, Cv, 0.f);
      Affine run{1.f, 0.f};
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        a[j] = exp2f(dt[j] * A2);
        Bv[j] *= du[j];  // b_t
        run = compose(run, Affine{a[j], Bv[j]});
      }
      // Inclusive scan of the runs within the warp.
      Affine inc = run;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const float pa = __shfl_up_sync(0xffffffffu, inc.a, off);
        const float pb = __shfl_up_sync(0xffffffffu, inc.b, off);
        if (lane >= off) inc = compose(Affine{pa, pb}, inc);
      }
      if (lane == 31) warp_total[n][warp] = inc;
      // Exclusive prefix within the warp.
      float ea = __shfl_up_sync(0xffffffffu, inc.a, 1);
      float eb = __shfl_up_sync(0xffffffffu, inc.b, 1);
      if (lane == 0) { ea = 1.f; eb = 0.f; }
      __syncthreads();
      float h = carry[cur][n];
      for (int w = 0; w < warp; ++w) h = warp_total[n][w].a * h + warp_total[n][w].b;
      h = ea * h + eb;
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        h = a[j] * h + Bv[j];
        y[j] += h * Cv[j];
      }
      if (tid == kThreads - 1) carry[cur ^ 1][n] = h;
    }

    float z[kItems];
    if (z_row) dev::load_run<kItems>(z_row, t0, L, z, 0.f);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      y[j] += D * u[j];
      if (z_row) y[j] *= dev::silu(z[j]);
    }
    dev::store_run<kItems>(y_row, t0, L, y);
    cur ^= 1;
    __syncthreads();  // carry[cur] complete; warp_total free for the next chunk
  }

  if (p.final_state)
    for (int64_t n = tid; n < N; n += kThreads) p.final_state[state_off + n] = carry[cur][n];
}


constexpr int kFastMaxState = 64;  // v3 / v6 (registers per lane); v1 above

// Version and split overrides from the environment (read once): MAMBA_SCAN_VERSION=1 | 3 | 6,
// MAMBA_SCAN_SPLIT=1|2|4; the older MAMBA_SCAN_FORCE_V1=1 still forces v1. (Versions 2, 4 and 5,
// slower than v6 at every measured shape, were removed on branch prune: NOTES.md.)
int env_int(const char* name) {
  const char* e = std::getenv(name);
  return e && *e ? std::atoi(e) : 0;
}
int env_version() {
  static const int v = [] {
    const int f = env_int("MAMBA_SCAN_FORCE_V1");
    return f ? 1 : env_int("MAMBA_SCAN_VERSION");
  }();
  return v;
}
int env_split() {
  static const int v = env_int("MAMBA_SCAN_SPLIT");
  return v;
}

template <class T, int kItems>
void launch(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.dim), static_cast<unsigned>(p.batch));
  selective_scan_fwd_kernel<T, kItems><<<grid, kThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_fwd_cuda");
}

}  // namespace

template <class T>
void selective_scan_fwd_cuda(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  if (p.batch < 0 || p.dim < 0 || p.seqlen < 0) throw std::invalid_argument("selective_scan_fwd_cuda: negative size");
  if (p.dstate < 1 || p.dstate > kMaxState)
    throw std::invalid_argument("selective_scan_fwd_cuda: dstate must be in [1, 256], got " + std::to_string(p.dstate));
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_scan_fwd_cuda: dim must be a multiple of n_groups");
  if (p.batch > 65535 || p.dim > 0x7fffffff) throw std::invalid_argument("selective_scan_fwd_cuda: batch > 65535 or dim too large");
  if (p.batch == 0 || p.dim == 0) return;
  const int version = p.version ? p.version : env_version();
  if (version != 0 && version != 1 && version != 3 && version != 6)
    throw std::invalid_argument(std::string("selective_scan_fwd_cuda: ") + (p.version ? "version" : "MAMBA_SCAN_VERSION") +
                                " must be 0 (automatic), 1, 3 or 6, got " + std::to_string(version) +
                                " (2, 4 and 5 were removed: kernels/cuda/NOTES.md, branch prune)");
  const int split = p.split ? p.split : env_split();
  if (p.opt < 0 || p.opt > selective_scan_fwd_v6_opt_count())
    throw std::invalid_argument("selective_scan_fwd_cuda: opt must be in [0, " + std::to_string(selective_scan_fwd_v6_opt_count()) +
                                "] (0 = none), got " + std::to_string(p.opt));
  // The varlen arguments first, each with its own message (a null-pointer check ahead of them
  // used to answer every bad varlen call with the pointer message).
  if (p.cu_seqlens) {
    if (p.batch != 1) throw std::invalid_argument("selective_scan_fwd_cuda: cu_seqlens needs batch == 1, got " + std::to_string(p.batch));
    if (p.n_seqs < 1 || p.n_seqs > 65535)
      throw std::invalid_argument("selective_scan_fwd_cuda: n_seqs must be in [1, 65535], got " + std::to_string(p.n_seqs));
    if (p.dstate > kFastMaxState)
      throw std::invalid_argument("selective_scan_fwd_cuda: cu_seqlens needs dstate <= 64, got " + std::to_string(p.dstate));
    if (version != 0 && version != 3 && version != 6)
      throw std::invalid_argument("selective_scan_fwd_cuda: cu_seqlens is supported by version 3 and 6 only (0 = 6), got " +
                                  std::to_string(version));
  }
  if (p.bwd_workspace) {  // the backward's checkpoints written by the forward (v6 only)
    if (version != 0 && version != 6)
      throw std::invalid_argument("selective_scan_fwd_cuda: bwd_workspace needs version 6 (0 = 6), got " + std::to_string(version));
    if (p.dstate > 16)
      throw std::invalid_argument("selective_scan_fwd_cuda: bwd_workspace needs dstate <= 16, got " + std::to_string(p.dstate));
    if (p.cu_seqlens) throw std::invalid_argument("selective_scan_fwd_cuda: bwd_workspace does not take cu_seqlens");
    if (!dev::aligned16(p.bwd_workspace))
      throw std::invalid_argument("selective_scan_fwd_cuda: bwd_workspace must be 16-byte aligned");
  }
  if (p.segments < 0 || ((p.segments > 1 || p.seg_workspace) && !(p.dstate <= kFastMaxState && (version == 0 || version == 6))))
    throw std::invalid_argument("selective_scan_fwd_cuda: segments / seg_workspace need version 6 (0 = 6) and dstate <= 64, segments >= 0; got segments " +
                                std::to_string(p.segments) + ", version " + std::to_string(version) + ", dstate " + std::to_string(p.dstate));
  if (p.seqlen > 0 && (!p.u || !p.delta || !p.B || !p.C || !p.A || !p.y))
    throw std::invalid_argument("selective_scan_fwd_cuda: u, delta, B, C, A and y are required");
  // v6 is the automatic choice for dstate <= 64 (NOTES.md "Scan forward v6": faster than v3 at every
  // timed shape on an H200, every check passed); version = 3 keeps the previous default.
  if (p.dstate <= kFastMaxState && (version == 0 || version == 6)) {
    selective_scan_fwd_v6<T>(p, stream, split);
    return;
  }
  if (p.dstate <= kFastMaxState && version == 3) {  // the previous automatic choice
    switch (p.dstate) {
      case 16: V3<T, 16, true>::run(p, stream, split); return;
      case 8: V3<T, 8, true>::run(p, stream, split); return;
      case 32: V3<T, 32, true>::run(p, stream, split); return;
      case 64: V3<T, 64, true>::run(p, stream, split); return;
      case 4: V3<T, 4, true>::run(p, stream, split); return;
      default: break;
    }
    if (p.dstate <= 4) V3<T, 4, false>::run(p, stream, split);
    else if (p.dstate <= 8) V3<T, 8, false>::run(p, stream, split);
    else if (p.dstate <= 16) V3<T, 16, false>::run(p, stream, split);
    else if (p.dstate <= 32) V3<T, 32, false>::run(p, stream, split);
    else V3<T, 64, false>::run(p, stream, split);
    return;
  }
  if (p.seqlen <= kThreads * 4)
    launch<T, 4>(p, stream);
  else
    launch<T, 16>(p, stream);
}

template <class T>
size_t selective_scan_fwd_cuda_seg_workspace_bytes(const SelectiveScanCudaParams<T>& p) {
  const int version = p.version ? p.version : env_version();
  if (p.batch <= 0 || p.dim <= 0 || p.dstate < 1 || p.dstate > kFastMaxState || (version != 0 && version != 6) || p.segments == 1)
    return 0;
  return selective_scan_fwd_v6_seg_bytes<T>(p, p.split ? p.split : env_split());
}

template size_t selective_scan_fwd_cuda_seg_workspace_bytes<float>(const SelectiveScanCudaParams<float>&);
template size_t selective_scan_fwd_cuda_seg_workspace_bytes<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&);
template void selective_scan_fwd_cuda<float>(const SelectiveScanCudaParams<float>&, cudaStream_t);
template void selective_scan_fwd_cuda<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
