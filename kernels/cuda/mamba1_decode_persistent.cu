// One MambaLM decode step as one persistent kernel (mamba1_decode_persistent_cuda.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "decode_persistent_common.cuh"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/mamba1_decode_persistent_cuda.h"

namespace mamba::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kNC = 2;  // output columns in flight per warp

using decode::ldcg_f;
using decode::round_t;

// Grid-wide barrier (decode_persistent_common.cuh), stamped when p.stamps is set.
#define MAMBA_GRID_BARRIER() \
  do {                        \
    ++epoch;                  \
    decode::grid_barrier(p.barrier, epoch * G, p.stamps, epoch); \
  } while (0)

// Every thread of the grid prefetches its share of [p, p + bytes) into L2, by 128-byte lines.
__device__ __forceinline__ void prefetch_l2(const void* p, size_t bytes) {
  if (!p) return;
  const char* c = static_cast<const char*>(p);
  const size_t gt = size_t{blockIdx.x} * blockDim.x + threadIdx.x, nt = size_t{gridDim.x} * blockDim.x;
  for (size_t off = gt * 128; off < bytes; off += nt * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// xs[i, :] = round_T(RMSNorm(v_i) * w) with v_i = input row i (+ residual_in row i); block 0
// writes v to residual_out (when given). Input: `hidden` rows, or embedding rows of ids.
template <class T, int MM>
__device__ void norm_rows(const PersistentDecodeParams<T>& p, const T* hidden, const float* res_in, float* res_out,
                          const float* w, float* xs, float (*red)[MM], float* scale) {
  const int m = static_cast<int>(p.batch);
  const int64_t d = p.d_model;
  auto in = [&](int i, int64_t k) {
    float v = hidden ? ldcg_f(hidden + i * d + k)
                     : dev::to_f32(p.embedding[__ldcg(reinterpret_cast<const long long*>(p.ids) + i) * d + k]);
    if (res_in) v += __ldcg(res_in + i * d + k);
    return v;
  };
  // Each thread copies the v it wrote to xs (same k stride), before the scaling rewrites xs.
  auto copy_residual = [&] {
    if (!res_out || blockIdx.x != 0) return;
    for (int64_t k = threadIdx.x; k < d; k += kThreads)
#pragma unroll
      for (int i = 0; i < MM; ++i)
        if (i < m) res_out[i * d + k] = xs[i * d + k];
  };
  decode::norm_rows<T, MM>(m, d, p.eps, in, nullptr, w, xs, &red[0][0], scale, copy_residual);
}

// xs[i, 0..k) = f32(src row i), src rows of stride k (written earlier in this launch).
template <class T, int MM>
__device__ __forceinline__ void load_rows(const T* src, int64_t k, int m, float* xs) {
#pragma unroll 4
  for (int64_t t = threadIdx.x; t < k; t += kThreads)
#pragma unroll
    for (int i = 0; i < MM; ++i)
      if (i < m) xs[i * k + t] = ldcg_f(src + i * k + t);
  __syncthreads();
}

template <class T, int MM>
__global__ void __launch_bounds__(kThreads) persistent_decode_kernel(PersistentDecodeParams<T> p) {
  extern __shared__ __align__(16) float xs[];  // [MM][max(d_model, d_inner)]
  __shared__ float red[kWarps][MM];
  __shared__ float scale[MM];
  __shared__ float red_x[kWarps][MM];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, m = static_cast<int>(p.batch);
  const int64_t d = p.d_model, di = p.d_inner, N = p.dstate, R = p.dt_rank, xd = R + 2 * N, K = p.d_conv;
  const unsigned G = gridDim.x;
  unsigned epoch = 0;
  if (p.stamps && tid == 0) p.stamps[size_t{blockIdx.x} * 2] = decode::globaltimer();

  for (int64_t li = 0; li < p.n_layers; ++li) {
    const PersistentDecodeLayer<T>& L = p.layers[li];
    // ---- 1. residual + RMSNorm + in_proj + conv update ------------------------------------
    norm_rows<T, MM>(p, li == 0 ? nullptr : p.hidden, li == 0 ? nullptr : p.residual[li % 2],
                     p.residual[(li + 1) % 2], L.norm_w, xs, red, scale);
    const int64_t n_out = 2 * di;
    decode::grid_gemv_rows<T, MM, kNC>(L.w_in, n_out, d, xs, m, [&](int i, int64_t col, float acc) {
      const T v = round_t<T>(acc);
      p.xz[i * n_out + col] = v;
      if (col >= di) return;
      // The conv update of channel col: every load (state, weights, bias; K <= 4) before the
      // first store.
      float* s = L.conv_state + (i * di + col) * K;
      const float* w = L.conv_w + col * K;
      float sv[4], wv[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        sv[k] = k + 1 < K ? __ldcg(s + k + 1) : 0.f;
        wv[k] = k < K ? __ldg(w + k) : 0.f;
      }
      float a = L.conv_b ? __ldg(L.conv_b + col) : 0.f;
      const float xv = dev::to_f32(v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k + 1 < K) {
          s[k] = sv[k];
          a += wv[k] * sv[k];
        }
      }
      s[K - 1] = xv;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k == K - 1) a += wv[k] * xv;
      p.xc[i * di + col] = round_t<T>(dev::silu(a));
    });
    if (p.prefetch) {
      prefetch_l2(L.w_x, static_cast<size_t>(xd * di) * sizeof(T));
      prefetch_l2(L.w_dt, static_cast<size_t>(di * R) * sizeof(T));
    }
    MAMBA_GRID_BARRIER();

    // ---- 2. x_proj: a block per output column, warps split k ------------------------------
    if (static_cast<int64_t>(blockIdx.x) < xd) {
      load_rows<T, MM>(p.xc, di, m, xs);
      constexpr int kVec = 16 / sizeof(T);
      for (int64_t col = blockIdx.x; col < xd; col += G) {
        const T* wr = L.w_x + col * di;
        float acc[MM];
#pragma unroll
        for (int i = 0; i < MM; ++i) acc[i] = 0.f;
        if ((di % kVec) == 0 && (reinterpret_cast<uintptr_t>(wr) & 15) == 0) {
          for (int64_t v = tid; v < di / kVec; v += kThreads) {
            union { uint4 u; T e[kVec]; } wb;
            wb.u = __ldg(reinterpret_cast<const uint4*>(wr) + v);
#pragma unroll
            for (int i = 0; i < MM; ++i)
#pragma unroll
              for (int j = 0; j < kVec; ++j) acc[i] = fmaf(dev::to_f32(wb.e[j]), xs[i * di + v * kVec + j], acc[i]);
          }
        } else {
          for (int64_t k = tid; k < di; k += kThreads) {
            const float wf = dev::to_f32(wr[k]);
#pragma unroll
            for (int i = 0; i < MM; ++i) acc[i] = fmaf(wf, xs[i * di + k], acc[i]);
          }
        }
#pragma unroll
        for (int i = 0; i < MM; ++i) {
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
          if (lane == 0) red_x[warp][i] = acc[i];
        }
        __syncthreads();
        if (tid < m) {
          float t = 0.f;
          for (int wi = 0; wi < kWarps; ++wi) t += red_x[wi][tid];
          p.xdbl[tid * xd + col] = round_t<T>(t);
        }
        __syncthreads();
      }
    }
    if (p.prefetch) prefetch_l2(L.w_out, static_cast<size_t>(d * di) * sizeof(T));
    MAMBA_GRID_BARRIER();

    // ---- 3. dt_proj + softplus + state update + D + gate: a thread per (b, channel) --------
    if (p.p3_smem && (R % 8) == 0 && (N % 4) == 0 && xd <= (d > di ? d : di)) {
      // xdbl rows staged in shared memory once per block; the dt_proj row, the state and A
      // read as 16-byte vectors, every load of a thread issued before its arithmetic.
      load_rows<T, MM>(p.xdbl, xd, m, xs);
      for (int64_t c = blockIdx.x + int64_t{G} * tid; c < m * di; c += int64_t{G} * kThreads) {
        const int64_t b = c / di, dd = c % di;
        const float* xr = xs + b * xd;
        float dtr = 0.f;
        const uint4* wr = reinterpret_cast<const uint4*>(L.w_dt + dd * R);
        constexpr int kVec = 16 / sizeof(T);
        for (int64_t v = 0; v < R / kVec; ++v) {
          union { uint4 u; T e[kVec]; } wb;
          wb.u = __ldg(wr + v);
#pragma unroll
          for (int j = 0; j < kVec; ++j) dtr = fmaf(xr[v * kVec + j], dev::to_f32(wb.e[j]), dtr);
        }
        float dt = dev::to_f32(round_t<T>(dtr)) + L.dt_bias[dd];
        dt = dev::softplus(dt);
        const float x = ldcg_f(p.xc + b * di + dd);
        const float4* A4 = reinterpret_cast<const float4*>(L.A + dd * N);
        float4* h4 = reinterpret_cast<float4*>(L.ssm_state + (b * di + dd) * N);
        const float dtx = dt * x, dt2 = dt * dev::kLog2e;
        float yv = 0.f;
        for (int64_t n4 = 0; n4 < N / 4; ++n4) {
          const float4 a = __ldg(A4 + n4);
          const float4 h = __ldcg(h4 + n4);
          const float av[4] = {a.x, a.y, a.z, a.w}, hv[4] = {h.x, h.y, h.z, h.w};
          float ho[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int64_t n = n4 * 4 + j;
            ho[j] = exp2f(dt2 * av[j]) * hv[j] + dtx * xr[R + n];
            yv += ho[j] * xr[R + N + n];
          }
          h4[n4] = make_float4(ho[0], ho[1], ho[2], ho[3]);
        }
        if (L.D) yv += L.D[dd] * x;
        yv *= dev::silu(ldcg_f(p.xz + b * 2 * di + di + dd));
        p.y[b * di + dd] = dev::from_f32<T>(yv);
      }
    } else if (xd <= (d > di ? d : di)) {
      // xdbl rows in shared memory; the state in chunks of 8 with every load of a chunk
      // issued before its stores (the global stores would otherwise serialise the loads).
      load_rows<T, MM>(p.xdbl, xd, m, xs);
      for (int64_t c = blockIdx.x + int64_t{G} * tid; c < m * di; c += int64_t{G} * kThreads) {
        const int64_t b = c / di, dd = c % di;
        const float* xr = xs + b * xd;
        const T* wr = L.w_dt + dd * R;
        float dtr = 0.f;
#pragma unroll 8
        for (int64_t r = 0; r < R; ++r) dtr = fmaf(xr[r], dev::to_f32(__ldg(wr + r)), dtr);
        float dt = dev::to_f32(round_t<T>(dtr)) + __ldg(L.dt_bias + dd);
        dt = dev::softplus(dt);
        const float x = ldcg_f(p.xc + b * di + dd);
        const float zg = ldcg_f(p.xz + b * 2 * di + di + dd);
        const float* A = L.A + dd * N;
        float* h = L.ssm_state + (b * di + dd) * N;
        const float dtx = dt * x, dt2 = dt * dev::kLog2e;
        float yv = 0.f;
        for (int64_t n0 = 0; n0 < N; n0 += 8) {
          float hv[8], av[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const bool in = n0 + j < N;
            hv[j] = in ? __ldcg(h + n0 + j) : 0.f;
            av[j] = in ? __ldg(A + n0 + j) : 0.f;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            if (n0 + j < N) {
              const float hn = exp2f(dt2 * av[j]) * hv[j] + dtx * xr[R + n0 + j];
              h[n0 + j] = hn;
              yv += hn * xr[R + N + n0 + j];
            }
          }
        }
        if (L.D) yv += __ldg(L.D + dd) * x;
        yv *= dev::silu(zg);
        p.y[b * di + dd] = dev::from_f32<T>(yv);
      }
    } else
    for (int64_t c = blockIdx.x + int64_t{G} * tid; c < m * di; c += int64_t{G} * kThreads) {
      const int64_t b = c / di, dd = c % di;
      const T* xr = p.xdbl + b * xd;
      const T* wr = L.w_dt + dd * R;
      float dtr = 0.f;
#pragma unroll 8
      for (int64_t r = 0; r < R; ++r) dtr = fmaf(ldcg_f(xr + r), dev::to_f32(wr[r]), dtr);
      float dt = dev::to_f32(round_t<T>(dtr)) + L.dt_bias[dd];
      dt = dev::softplus(dt);
      const float x = ldcg_f(p.xc + b * di + dd);
      const float* A = L.A + dd * N;
      float* h = L.ssm_state + (b * di + dd) * N;
      const float dtx = dt * x, dt2 = dt * dev::kLog2e;
      float yv = 0.f;
#pragma unroll 4
      for (int64_t n = 0; n < N; ++n) {
        const float hn = exp2f(dt2 * A[n]) * __ldcg(h + n) + dtx * ldcg_f(xr + R + n);
        h[n] = hn;
        yv += hn * ldcg_f(xr + R + N + n);
      }
      if (L.D) yv += L.D[dd] * x;
      yv *= dev::silu(ldcg_f(p.xz + b * 2 * di + di + dd));
      p.y[b * di + dd] = dev::from_f32<T>(yv);
    }
    if (p.prefetch && li + 1 < p.n_layers) prefetch_l2(p.layers[li + 1].w_in, static_cast<size_t>(2 * di * d) * sizeof(T));
    MAMBA_GRID_BARRIER();

    // ---- 4. out_proj -> hidden --------------------------------------------------------------
    load_rows<T, MM>(p.y, di, m, xs);
    T* hidden = p.hidden;
    decode::grid_gemv_rows<T, MM, kNC>(L.w_out, d, di, xs, m,
                                       [&](int i, int64_t col, float v) { hidden[i * d + col] = round_t<T>(v); });
    MAMBA_GRID_BARRIER();
  }

  // ---- final RMSNorm + LM head (f32 logits) ---------------------------------------------------
  const int64_t nl = p.n_layers;
  norm_rows<T, MM>(p, nl == 0 ? nullptr : p.hidden, nl == 0 ? nullptr : p.residual[nl % 2], nullptr, p.norm_f_w, xs,
                   red, scale);
  const int64_t V = p.vocab_rows;
  float* logits = p.logits;
  decode::grid_gemv_rows<T, MM, kNC>(p.head, V, d, xs, m, [&](int i, int64_t col, float v) { logits[i * V + col] = v; });
  if (p.stamps && tid == 0) p.stamps[size_t{blockIdx.x} * 2 + 1] = decode::globaltimer();
}

template <class T, int MM>
auto kernel_for() {
  return persistent_decode_kernel<T, MM>;
}

template <class T>
void* kernel_ptr(int64_t batch) {
  if (batch <= 1) return reinterpret_cast<void*>(kernel_for<T, 1>());
  if (batch <= 2) return reinterpret_cast<void*>(kernel_for<T, 2>());
  if (batch <= 4) return reinterpret_cast<void*>(kernel_for<T, 4>());
  return reinterpret_cast<void*>(kernel_for<T, 8>());
}

size_t smem_bytes(int64_t batch, int64_t d_model, int64_t d_inner) {
  const int64_t mm = batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : 8;
  return static_cast<size_t>(mm * std::max(d_model, d_inner)) * sizeof(float);
}

}  // namespace

template <class T>
int persistent_decode_grid(int64_t batch, int64_t d_model, int64_t d_inner, int64_t d_conv, int blocks_per_sm) {
  if (batch < 1 || batch > 8 || d_conv < 1 || d_conv > 4 || d_model < 1 || d_inner < 1) return 0;
  const size_t smem = smem_bytes(batch, d_model, d_inner);
  if (smem > 160 * 1024) return 0;
  int dev = 0, coop = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  const void* k = kernel_ptr<T>(batch);
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  int occ = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, kThreads, smem) != cudaSuccess || occ < 1) {
    cudaGetLastError();
    return 0;
  }
  if (blocks_per_sm <= 0) {
    blocks_per_sm = 2;
    if (const char* e = std::getenv("MAMBA_DECODE_BLOCKS_PER_SM")) blocks_per_sm = std::max(1, std::atoi(e));
  }
  return sms * std::min(occ, blocks_per_sm);
}

template <class T>
int persistent_decode_grid_for(const PersistentDecodeParams<T>& p, int blocks_per_sm) {
  if (p.version == 3) return detail::persistent_decode_v3_grid<T>(p);
  if (p.version != 2) return 0;
  return persistent_decode_grid<T>(p.batch, p.d_model, p.d_inner, p.d_conv, blocks_per_sm);
}

template <class T>
void persistent_decode_cuda(const PersistentDecodeParams<T>& p, int grid_blocks, cudaStream_t stream) {
  const char* op = "persistent_decode_cuda";
  auto bad = [&](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (p.version < 2 || p.version > 3) bad("version " + std::to_string(p.version) + " must be 2 or 3");
  const int64_t max_batch = p.version >= 3 ? 16 : 8;
  if (p.batch < 1 || p.batch > max_batch)
    bad("batch " + std::to_string(p.batch) + " outside [1, " + std::to_string(max_batch) + "] (version " +
        std::to_string(p.version) + ")");
  if (p.d_conv < 1 || p.d_conv > 4) bad("d_conv " + std::to_string(p.d_conv) + " outside [1, 4]");
  if (p.dstate < 1 || p.dstate > 256) bad("dstate " + std::to_string(p.dstate) + " outside [1, 256]");
  if (p.dt_rank < 1) bad("dt_rank " + std::to_string(p.dt_rank) + " must be >= 1");
  if (p.n_layers < 0) bad("n_layers " + std::to_string(p.n_layers) + " must be >= 0");
  if (grid_blocks < 1) bad("grid_blocks " + std::to_string(grid_blocks) + " must be >= 1 (persistent_decode_grid)");
  if (!p.ids || !p.embedding || !p.head || !p.norm_f_w || !p.hidden || !p.residual[0] || !p.residual[1] || !p.xz ||
      !p.xc || !p.xdbl || !p.y || !p.logits || !p.barrier || (p.n_layers > 0 && !p.layers))
    bad("null pointer among ids, embedding, head, norm_f_w, layers, buffers, logits, barrier");
  if (p.version == 3) {
    detail::persistent_decode_v3_launch<T>(p, grid_blocks, stream);
    return;
  }
  MAMBA_CUDA_CHECK(op, cudaMemsetAsync(p.barrier, 0, sizeof(unsigned), stream));
  PersistentDecodeParams<T> args = p;
  decode::launch_resident(op, reinterpret_cast<const void*>(kernel_ptr<T>(p.batch)), grid_blocks, kThreads,
                          smem_bytes(p.batch, p.d_model, p.d_inner), stream, &args);
}

template int persistent_decode_grid<float>(int64_t, int64_t, int64_t, int64_t, int);
template int persistent_decode_grid<__nv_bfloat16>(int64_t, int64_t, int64_t, int64_t, int);
template int persistent_decode_grid_for<float>(const PersistentDecodeParams<float>&, int);
template int persistent_decode_grid_for<__nv_bfloat16>(const PersistentDecodeParams<__nv_bfloat16>&, int);
template void persistent_decode_cuda<float>(const PersistentDecodeParams<float>&, int, cudaStream_t);
template void persistent_decode_cuda<__nv_bfloat16>(const PersistentDecodeParams<__nv_bfloat16>&, int, cudaStream_t);

}  // namespace mamba::kernels::cuda
