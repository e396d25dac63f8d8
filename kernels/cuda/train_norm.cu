// Norm backward kernels (and the LayerNorm forward) for training on the GPU.
// RMSNorm backward: a fixed grid of nb = min(rows, kNormSlots) blocks; block b walks the rows
// [b * rpb, (b + 1) * rpb) one at a time. A thread owns fixed columns (pieces of 8 consecutive
// elements, P pieces cached in registers, further pieces re-read), so it accumulates its dw
// partial in registers across the block's rows without atomics. One block reduction per row
// (sum r^2 and sum w dy r together; shared buffers alternate between rows: one barrier).
// Each block writes its dw partial row to the workspace; column_sum_kernel adds the nb rows
// in a fixed order (deterministic).
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "train_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kPiece = 8;
constexpr int64_t kNormSlots = 1024;  // blocks (dw partial rows) of the norm backward

// MAMBA_NORM_SLOTS (benchmarks only) overrides kNormSlots; read by the workspace size too.
int64_t norm_slots(int64_t rows) {
  int64_t slots = kNormSlots;
  if (const char* env = std::getenv("MAMBA_NORM_SLOTS")) slots = std::clamp<int64_t>(std::atoll(env), 1, 1 << 16);
  return std::min<int64_t>(std::max<int64_t>(rows, 1), slots);
}

// Threads and cached pieces per thread for a row of n elements.
void norm_shape(int64_t n, int& threads, int& P) {
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  for (int p : {1, 2, 4}) {
    const int64_t t = (pieces + p - 1) / p;
    if (t <= 256 || p == 4) {
      threads = static_cast<int>(std::clamp<int64_t>((t + 31) / 32 * 32, 32, 256));
      P = p;
      return;
    }
  }
}

template <class T, int P, bool kPre>
__global__ void __launch_bounds__(256)
rms_norm_bwd_kernel(int64_t rows, int64_t dim, int64_t rpb, const float* r, const float* w, float eps, const T* dy,
                    const float* dr_add, float* dr, float* part) {
  __shared__ float sh[128];
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;
  const int64_t row0 = int64_t(blockIdx.x) * rpb;
  const int64_t row1 = std::min(rows, row0 + rpb);
  float* prow = part + int64_t(blockIdx.x) * dim;
  float wv[P][kPiece], acc[P][kPiece];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dev::load_run<kPiece>(w, t_first + p * step, dim, wv[p], 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) acc[p][j] = 0.f;
  }
  for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
    const float z[kPiece] = {};
    dev::store_run<kPiece>(prow, t0, dim, z);
  }
  const float inv_dim = 1.f / static_cast<float>(dim);
  int parity = 0;
  // kPre: the next row's cached pieces are loaded before this row's block reduction.
  float rn[P][kPiece], gn[P][kPiece];
  if constexpr (kPre) {
    if (row0 < row1) {
#pragma unroll
      for (int p = 0; p < P; ++p) {
        dev::load_run<kPiece>(r + row0 * dim, t_first + p * step, dim, rn[p], 0.f);
        dev::load_run<kPiece>(dy + row0 * dim, t_first + p * step, dim, gn[p], 0.f);
      }
    }
  }
  for (int64_t row = row0; row < row1; ++row, parity ^= 1) {
    const float* rr = r + row * dim;
    const T* dyr = dy + row * dim;
    float rv[P][kPiece], gv[P][kPiece];
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      if constexpr (kPre) {
#pragma unroll
        for (int j = 0; j < kPiece; ++j) { rv[p][j] = rn[p][j]; gv[p][j] = gn[p][j]; }
      } else {
        dev::load_run<kPiece>(rr, t0, dim, rv[p], 0.f);
        dev::load_run<kPiece>(dyr, t0, dim, gv[p], 0.f);
      }
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        ss = fmaf(rv[p][j], rv[p][j], ss);
        dot = fmaf(wv[p][j] * gv[p][j], rv[p][j], dot);
      }
    }
    for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
      float a[kPiece], g[kPiece], ww[kPiece];
      dev::load_run<kPiece>(rr, t0, dim, a, 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, g, 0.f);
      dev::load_run<kPiece>(w, t0, dim, ww, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        ss = fmaf(a[j], a[j], ss);
        dot = fmaf(ww[j] * g[j], a[j], dot);
      }
    }
    if constexpr (kPre) {
      if (row + 1 < row1) {
#pragma unroll
        for (int p = 0; p < P; ++p) {
          dev::load_run<kPiece>(rr + dim, t_first + p * step, dim, rn[p], 0.f);
          dev::load_run<kPiece>(dyr + dim, t_first + p * step, dim, gn[p], 0.f);
        }
      }
    }
    const float2 tot = train_dev::block_sum2(ss, dot, sh, parity);
    const float rstd = rsqrtf(tot.x * inv_dim + eps);
    const float c = rstd * rstd * rstd * tot.y * inv_dim;
    const float* da = dr_add ? dr_add + row * dim : nullptr;
    float* dro = dr + row * dim;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      if (t0 < dim) {
        float o[kPiece], a[kPiece];
        if (da) dev::load_run<kPiece>(da, t0, dim, a, 0.f);
#pragma unroll
        for (int j = 0; j < kPiece; ++j) {
          o[j] = rstd * wv[p][j] * gv[p][j] - rv[p][j] * c + (da ? a[j] : 0.f);
          acc[p][j] = fmaf(gv[p][j], rv[p][j] * rstd, acc[p][j]);
        }
        dev::store_run<kPiece>(dro, t0, dim, o);
      }
    }
    for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
      float a[kPiece], g[kPiece], ww[kPiece], o[kPiece], pa[kPiece];
      dev::load_run<kPiece>(rr, t0, dim, a, 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, g, 0.f);
      dev::load_run<kPiece>(w, t0, dim, ww, 0.f);
      dev::load_run<kPiece>(static_cast<const float*>(prow), t0, dim, pa, 0.f);
      float ad[kPiece];
      if (da) dev::load_run<kPiece>(da, t0, dim, ad, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        o[j] = rstd * ww[j] * g[j] - a[j] * c + (da ? ad[j] : 0.f);
        pa[j] = fmaf(g[j], a[j] * rstd, pa[j]);
      }
      dev::store_run<kPiece>(dro, t0, dim, o);
      dev::store_run<kPiece>(prow, t0, dim, pa);
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) dev::store_run<kPiece>(prow, t_first + p * step, dim, acc[p]);
}


// ---- LayerNorm -----------------------------------------------------------------------------------
// Forward: one block per row; mean, then the centred sum of squares over the cached pieces
// (two block reductions); pieces past the cache are re-read from residual_out.
template <class T, int P>
__global__ void __launch_bounds__(256)
add_layer_norm_kernel(int64_t dim, const T* x, const float* res_in, float* res_out, const float* w, const float* b,
                      float eps, T* y, float* mean_out, float* rstd_out) {
  __shared__ float sh[128];
  const int64_t row = blockIdx.x;
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;
  const T* xr = x + row * dim;
  const float* ri = res_in ? res_in + row * dim : nullptr;
  float* ro = res_out + row * dim;
  float v[P][kPiece];
  float s = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t t0 = t_first + p * step;
    dev::load_run<kPiece>(xr, t0, dim, v[p], 0.f);
    if (ri) {
      float a[kPiece];
      dev::load_run<kPiece>(ri, t0, dim, a, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) v[p][j] += a[j];
    }
#pragma unroll
    for (int j = 0; j < kPiece; ++j) s += v[p][j];
    if (t0 < dim) dev::store_run<kPiece>(ro, t0, dim, v[p]);
  }
  for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
    float u[kPiece], a[kPiece];
    dev::load_run<kPiece>(xr, t0, dim, u, 0.f);
    if (ri) {
      dev::load_run<kPiece>(ri, t0, dim, a, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) u[j] += a[j];
    }
#pragma unroll
    for (int j = 0; j < kPiece; ++j) s += u[j];
    dev::store_run<kPiece>(ro, t0, dim, u);
  }
  const float inv_dim = 1.f / static_cast<float>(dim);
  const float mu = train_dev::block_sum2(s, 0.f, sh, 0).x * inv_dim;
  float q = 0.f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t t0 = t_first + p * step;
#pragma unroll
    for (int j = 0; j < kPiece; ++j)
      if (t0 + j < dim) q = fmaf(v[p][j] - mu, v[p][j] - mu, q);
  }
  for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
    float u[kPiece];
    dev::load_run<kPiece>(static_cast<const float*>(ro), t0, dim, u, 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j)
      if (t0 + j < dim) q = fmaf(u[j] - mu, u[j] - mu, q);
  }
  const float rs = rsqrtf(train_dev::block_sum2(q, 0.f, sh, 1).x * inv_dim + eps);
  if (threadIdx.x == 0) {
    if (mean_out) mean_out[row] = mu;
    if (rstd_out) rstd_out[row] = rs;
  }
  T* yr = y + row * dim;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < dim) {
      float wv[kPiece], bv[kPiece], o[kPiece];
      dev::load_run<kPiece>(w, t0, dim, wv, 0.f);
      if (b) dev::load_run<kPiece>(b, t0, dim, bv, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) o[j] = (v[p][j] - mu) * rs * wv[j] + (b ? bv[j] : 0.f);
      dev::store_run<kPiece>(yr, t0, dim, o);
    }
  }
  for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
    float u[kPiece], wv[kPiece], bv[kPiece];
    dev::load_run<kPiece>(static_cast<const float*>(ro), t0, dim, u, 0.f);
    dev::load_run<kPiece>(w, t0, dim, wv, 0.f);
    if (b) dev::load_run<kPiece>(b, t0, dim, bv, 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) u[j] = (u[j] - mu) * rs * wv[j] + (b ? bv[j] : 0.f);
    dev::store_run<kPiece>(yr, t0, dim, u);
  }
}

// Backward, laid out as rms_norm_bwd_kernel: xhat = (r - mean) rstd, g = w dy,
// dr = dr_add + rstd (g - mean(g) - xhat mean(g xhat)); partial rows hold [dw | db].
template <class T, int P>
__global__ void __launch_bounds__(256)
layer_norm_bwd_kernel(int64_t rows, int64_t dim, int64_t rpb, const float* r, const float* mean, const float* rstd,
                      const float* w, const T* dy, const float* dr_add, float* dr, float* part) {
  __shared__ float sh[128];
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;
  const int64_t row0 = int64_t(blockIdx.x) * rpb;
  const int64_t row1 = std::min(rows, row0 + rpb);
  float* pw = part + int64_t(blockIdx.x) * 2 * dim;
  float* pb = pw + dim;
  float wv[P][kPiece], aw[P][kPiece], ab[P][kPiece];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dev::load_run<kPiece>(w, t_first + p * step, dim, wv[p], 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) { aw[p][j] = 0.f; ab[p][j] = 0.f; }
  }
  for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
    const float z[kPiece] = {};
    dev::store_run<kPiece>(pw, t0, dim, z);
    dev::store_run<kPiece>(pb, t0, dim, z);
  }
  const float inv_dim = 1.f / static_cast<float>(dim);
  int parity = 0;
  for (int64_t row = row0; row < row1; ++row, parity ^= 1) {
    const float* rr = r + row * dim;
    const T* dyr = dy + row * dim;
    const float mu = mean[row], rs = rstd[row];
    float xh[P][kPiece], gv[P][kPiece];
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      dev::load_run<kPiece>(rr, t0, dim, xh[p], 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, gv[p], 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        xh[p][j] = t0 + j < dim ? (xh[p][j] - mu) * rs : 0.f;
        const float g = wv[p][j] * gv[p][j];
        s1 += g;
        s2 = fmaf(g, xh[p][j], s2);
      }
    }
    for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
      float a[kPiece], d[kPiece], ww[kPiece];
      dev::load_run<kPiece>(rr, t0, dim, a, 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, d, 0.f);
      dev::load_run<kPiece>(w, t0, dim, ww, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float xhj = t0 + j < dim ? (a[j] - mu) * rs : 0.f;
        const float g = ww[j] * d[j];
        s1 += g;
        s2 = fmaf(g, xhj, s2);
      }
    }
    const float2 tot = train_dev::block_sum2(s1, s2, sh, parity);
    const float c1 = tot.x * inv_dim, c2 = tot.y * inv_dim;
    const float* da = dr_add ? dr_add + row * dim : nullptr;
    float* dro = dr + row * dim;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      if (t0 < dim) {
        float o[kPiece], a[kPiece];
        if (da) dev::load_run<kPiece>(da, t0, dim, a, 0.f);
#pragma unroll
        for (int j = 0; j < kPiece; ++j) {
          o[j] = rs * (wv[p][j] * gv[p][j] - c1 - xh[p][j] * c2) + (da ? a[j] : 0.f);
          aw[p][j] = fmaf(gv[p][j], xh[p][j], aw[p][j]);
          ab[p][j] += gv[p][j];
        }
        dev::store_run<kPiece>(dro, t0, dim, o);
      }
    }
    for (int64_t t0 = t_first + P * step; t0 < dim; t0 += step) {
      float a[kPiece], d[kPiece], ww[kPiece], o[kPiece], qa[kPiece], qb[kPiece], ad[kPiece];
      dev::load_run<kPiece>(rr, t0, dim, a, 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, d, 0.f);
      dev::load_run<kPiece>(w, t0, dim, ww, 0.f);
      dev::load_run<kPiece>(static_cast<const float*>(pw), t0, dim, qa, 0.f);
      dev::load_run<kPiece>(static_cast<const float*>(pb), t0, dim, qb, 0.f);
      if (da) dev::load_run<kPiece>(da, t0, dim, ad, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float xhj = (a[j] - mu) * rs;
        o[j] = rs * (ww[j] * d[j] - c1 - xhj * c2) + (da ? ad[j] : 0.f);
        qa[j] = fmaf(d[j], xhj, qa[j]);
        qb[j] += d[j];
      }
      dev::store_run<kPiece>(dro, t0, dim, o);
      dev::store_run<kPiece>(pw, t0, dim, qa);
      dev::store_run<kPiece>(pb, t0, dim, qb);
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dev::store_run<kPiece>(pw, t_first + p * step, dim, aw[p]);
    dev::store_run<kPiece>(pb, t_first + p * step, dim, ab[p]);
  }
}

// ---- RMSNorm / LayerNorm backward v2 (branch bwkern): a warp per row --------------------------
// As gated_rms_norm_bwd v2: lane l owns the pieces i * 32 + l (8 elements) of its warp's row; all
// loads of the row (r f32, dy, dr_add f32) are issued before any arithmetic, the two sums are
// reduced with warp shuffles (no block barrier per row), the block's 4 warps take rows
// row0 + w, row0 + w + 4, ... of the slot, and their dw (db) partials are added in a fixed order
// through shared memory at the end. v1: one block per slot walking its rows one at a time with a
// block reduction per row (rms 768: 68 us, 62% of copy; layer norm 768: 73 us, 58%).
// Needs dim % 8 == 0, dim <= 256 kPL, r, dr, dr_add, dy, w 16-byte aligned.
constexpr int kNv2Warps = 4;
constexpr int kNv2MaxCols = 1024;

template <class T, int kPL, bool kLN>
__global__ void __launch_bounds__(kNv2Warps * 32)
norm_bwd_v2_kernel(int64_t rows, int64_t dim, int64_t rpb, const float* __restrict__ r, const float* mean,
                   const float* rstd_in, const float* __restrict__ w, float eps, const T* __restrict__ dy,
                   const float* dr_add, float* dr, float* part) {
  using Raw = dev::RawRow<T, kPiece>;
  constexpr int kU = int(sizeof(Raw) / 16);
  constexpr int kAcc = kLN ? 2 : 1;
  __shared__ float red[kNv2Warps][kAcc][kNv2MaxCols];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = int64_t(blockIdx.x) * rpb;
  const int64_t row1 = std::min(rows, row0 + rpb);
  const float inv_dim = 1.f / static_cast<float>(dim);
  float aw[kPL][kPiece], ab[kLN ? kPL : 1][kPiece];
#pragma unroll
  for (int i = 0; i < kPL; ++i)
#pragma unroll
    for (int j = 0; j < kPiece; ++j) {
      aw[i][j] = 0.f;
      if constexpr (kLN) ab[i][j] = 0.f;
    }
  for (int64_t row = row0 + warp; row < row1; row += kNv2Warps) {
    const float* rr = r + row * dim;
    const T* dyr = dy + row * dim;
    const float* da = dr_add ? dr_add + row * dim : nullptr;
    float4 rv[kPL][2], av[kPL][2];
    Raw gv[kPL];
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * 32 + lane) * kPiece;
      const bool in = t0 < dim;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        rv[i][h] = in ? __ldg(reinterpret_cast<const float4*>(rr + t0) + h) : make_float4(0.f, 0.f, 0.f, 0.f);
        av[i][h] = in && da ? *(reinterpret_cast<const float4*>(da + t0) + h) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) gv[i].v[u] = in ? __ldg(reinterpret_cast<const uint4*>(dyr + t0) + u) : make_uint4(0u, 0u, 0u, 0u);
    }
    const float mu = kLN ? mean[row] : 0.f, rs_row = kLN ? rstd_in[row] : 0.f;
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * 32 + lane) * kPiece;
      if (t0 >= dim) continue;
      const float4 w0 = __ldg(reinterpret_cast<const float4*>(w + t0)), w1 = __ldg(reinterpret_cast<const float4*>(w + t0) + 1);
      const float wv[kPiece] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
      const float xv[kPiece] = {rv[i][0].x, rv[i][0].y, rv[i][0].z, rv[i][0].w, rv[i][1].x, rv[i][1].y, rv[i][1].z, rv[i][1].w};
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float g = dev::to_f32(gv[i].e[j]);
        if constexpr (kLN) {
          const float wg = wv[j] * g;
          s1 += wg;
          s2 = fmaf(wg, (xv[j] - mu) * rs_row, s2);
        } else {
          s1 = fmaf(xv[j], xv[j], s1);
          s2 = fmaf(wv[j] * g, xv[j], s2);
        }
      }
    }
    s1 = train_dev::warp_sum(s1);
    s2 = train_dev::warp_sum(s2);
    float rs, c1, c2;
    if constexpr (kLN) {
      rs = rs_row;
      c1 = s1 * inv_dim;
      c2 = s2 * inv_dim;
    } else {
      rs = rsqrtf(s1 * inv_dim + eps);
      c1 = rs * rs * rs * s2 * inv_dim;
      c2 = 0.f;
    }
    float* dro = dr + row * dim;
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * 32 + lane) * kPiece;
      if (t0 >= dim) continue;
      const float4 w0 = __ldg(reinterpret_cast<const float4*>(w + t0)), w1 = __ldg(reinterpret_cast<const float4*>(w + t0) + 1);
      const float wv[kPiece] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
      const float xv[kPiece] = {rv[i][0].x, rv[i][0].y, rv[i][0].z, rv[i][0].w, rv[i][1].x, rv[i][1].y, rv[i][1].z, rv[i][1].w};
      const float dv[kPiece] = {av[i][0].x, av[i][0].y, av[i][0].z, av[i][0].w, av[i][1].x, av[i][1].y, av[i][1].z, av[i][1].w};
      float o[kPiece];
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float g = dev::to_f32(gv[i].e[j]);
        if constexpr (kLN) {
          const float xh = (xv[j] - mu) * rs;
          o[j] = rs * (wv[j] * g - c1 - xh * c2) + dv[j];
          aw[i][j] = fmaf(g, xh, aw[i][j]);
          ab[i][j] += g;
        } else {
          o[j] = rs * wv[j] * g - xv[j] * c1 + dv[j];
          aw[i][j] = fmaf(g, xv[j] * rs, aw[i][j]);
        }
      }
      reinterpret_cast<float4*>(dro + t0)[0] = make_float4(o[0], o[1], o[2], o[3]);
      reinterpret_cast<float4*>(dro + t0)[1] = make_float4(o[4], o[5], o[6], o[7]);
    }
  }
#pragma unroll
  for (int i = 0; i < kPL; ++i) {
    const int64_t t0 = int64_t(i * 32 + lane) * kPiece;
    if (t0 < dim)
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        red[warp][0][t0 + j] = aw[i][j];
        if constexpr (kLN) red[warp][kAcc - 1][t0 + j] = ab[i][j];
      }
  }
  __syncthreads();
  float* prow = part + int64_t(blockIdx.x) * kAcc * dim;
  for (int64_t c = threadIdx.x; c < kAcc * dim; c += kNv2Warps * 32) {
    const int q = static_cast<int>(c / dim);
    const int64_t col = c % dim;
    float t = 0.f;
#pragma unroll
    for (int ww = 0; ww < kNv2Warps; ++ww) t += red[ww][q][col];
    prow[c] = t;
  }
}

// Launches v2 when its conditions hold (returns the slot count written, 0 when not taken).
template <class T, bool kLN>
int64_t launch_norm_bwd_v2(int64_t rows, int64_t dim, const float* r, const float* mean, const float* rstd,
                           const float* w, float eps, const T* dy, const float* dr_add, float* dr, float* part,
                           cudaStream_t stream);

// ---- gated, grouped RMSNorm backward -------------------------------------------------------------
// Grid (nb, ngroups): block (b, g) walks the rows of slot b for group g (one block reduction per
// segment); x, z, dy of the cached pieces stay in registers between the two passes.
__device__ __forceinline__ void gate_of(float z, float& gate, float& dgate) {
  const float s = 1.f / (1.f + __expf(-z));
  gate = z * s;
  dgate = s * (1.f + z * (1.f - s));
}

template <class T, int P>
__global__ void __launch_bounds__(256)
gated_rms_norm_bwd_kernel(int64_t rows, int64_t dim, int64_t gsz, int64_t rpb, const T* x, int64_t x_stride,
                          const T* z, int64_t z_stride, const float* w, float eps, bool nbg, const T* dy,
                          int64_t dy_stride, T* dx, int64_t dx_stride, T* dz, int64_t dz_stride, float* part) {
  __shared__ float sh[128];
  const int64_t step = int64_t(blockDim.x) * kPiece;
  const int64_t t_first = int64_t(threadIdx.x) * kPiece;
  const int64_t c0 = int64_t(blockIdx.y) * gsz;
  const int64_t row0 = int64_t(blockIdx.x) * rpb;
  const int64_t row1 = std::min(rows, row0 + rpb);
  const float* wg = w + c0;
  float* prow = part + int64_t(blockIdx.x) * dim + c0;
  float wv[P][kPiece], acc[P][kPiece];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    dev::load_run<kPiece>(wg, t_first + p * step, gsz, wv[p], 0.f);
#pragma unroll
    for (int j = 0; j < kPiece; ++j) acc[p][j] = 0.f;
  }
  for (int64_t t0 = t_first + P * step; t0 < gsz; t0 += step) {
    const float zz[kPiece] = {};
    dev::store_run<kPiece>(prow, t0, gsz, zz);
  }
  const float inv_g = 1.f / static_cast<float>(gsz);
  const bool hz = z != nullptr;
  int parity = 0;
  // u, dn of one piece from x, z, dy.
  auto piece_u = [&](const float* xv, const float* zv, const float* dv, float* u, float* dn) {
#pragma unroll
    for (int j = 0; j < kPiece; ++j) {
      float gate = 1.f, dg = 0.f;
      if (hz) gate_of(zv[j], gate, dg);
      u[j] = nbg ? xv[j] : xv[j] * gate;
      dn[j] = nbg ? dv[j] * gate : dv[j];
    }
  };
  for (int64_t row = row0; row < row1; ++row, parity ^= 1) {
    const T* xr = x + row * x_stride + c0;
    const T* zr = hz ? z + row * z_stride + c0 : nullptr;
    const T* dyr = dy + row * dy_stride + c0;
    float xv[P][kPiece], zv[P][kPiece], dv[P][kPiece];
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      dev::load_run<kPiece>(xr, t0, gsz, xv[p], 0.f);
      if (hz) dev::load_run<kPiece>(zr, t0, gsz, zv[p], 0.f);
      else {
#pragma unroll
        for (int j = 0; j < kPiece; ++j) zv[p][j] = 0.f;
      }
      dev::load_run<kPiece>(dyr, t0, gsz, dv[p], 0.f);
      float u[kPiece], dn[kPiece];
      piece_u(xv[p], zv[p], dv[p], u, dn);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        ss = fmaf(u[j], u[j], ss);
        dot = fmaf(dn[j] * wv[p][j], u[j], dot);
      }
    }
    for (int64_t t0 = t_first + P * step; t0 < gsz; t0 += step) {
      float a[kPiece], b[kPiece] = {}, d[kPiece], ww[kPiece], u[kPiece], dn[kPiece];
      dev::load_run<kPiece>(xr, t0, gsz, a, 0.f);
      if (hz) dev::load_run<kPiece>(zr, t0, gsz, b, 0.f);
      dev::load_run<kPiece>(dyr, t0, gsz, d, 0.f);
      dev::load_run<kPiece>(wg, t0, gsz, ww, 0.f);
      piece_u(a, b, d, u, dn);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        ss = fmaf(u[j], u[j], ss);
        dot = fmaf(dn[j] * ww[j], u[j], dot);
      }
    }
    const float2 tot = train_dev::block_sum2(ss, dot, sh, parity);
    const float rs = rsqrtf(tot.x * inv_g + eps);
    const float c = rs * rs * rs * tot.y * inv_g;
    T* dxr = dx ? dx + row * dx_stride + c0 : nullptr;
    T* dzr = dz && hz ? dz + row * dz_stride + c0 : nullptr;
    auto outputs = [&](const float* a, const float* b, const float* d, const float* ww, float* pacc, int64_t t0) {
      float ox[kPiece], oz[kPiece];
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        float gate = 1.f, dg = 0.f;
        if (hz) gate_of(b[j], gate, dg);
        const float u = nbg ? a[j] : a[j] * gate;
        const float dn = nbg ? d[j] * gate : d[j];
        const float du = rs * dn * ww[j] - u * c;
        pacc[j] = fmaf(dn, u * rs, pacc[j]);
        if (!nbg && hz) {
          ox[j] = du * gate;
          oz[j] = du * a[j] * dg;
        } else {
          ox[j] = du;
          oz[j] = d[j] * u * rs * ww[j] * dg;
        }
      }
      if (dxr) dev::store_run<kPiece>(dxr, t0, gsz, ox);
      if (dzr) dev::store_run<kPiece>(dzr, t0, gsz, oz);
    };
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      if (t0 < gsz) outputs(xv[p], zv[p], dv[p], wv[p], acc[p], t0);
    }
    for (int64_t t0 = t_first + P * step; t0 < gsz; t0 += step) {
      float a[kPiece], b[kPiece] = {}, d[kPiece], ww[kPiece], pa[kPiece];
      dev::load_run<kPiece>(xr, t0, gsz, a, 0.f);
      if (hz) dev::load_run<kPiece>(zr, t0, gsz, b, 0.f);
      dev::load_run<kPiece>(dyr, t0, gsz, d, 0.f);
      dev::load_run<kPiece>(wg, t0, gsz, ww, 0.f);
      dev::load_run<kPiece>(static_cast<const float*>(prow), t0, gsz, pa, 0.f);
      outputs(a, b, d, ww, pa, t0);
      dev::store_run<kPiece>(prow, t0, gsz, pa);
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) dev::store_run<kPiece>(prow, t_first + p * step, gsz, acc[p]);
}


// v2 (branch bwkern, NOTES.md "Memory-bound kernels to 80%"): one WARP per row (segment), no
// block barrier per row. v1 walked a block's rows one at a time (load, block reduction with a
// barrier, outputs), ~18 warps per SM each with one row's loads in flight and the compute not
// overlapped: 246 us at rows 16384 dim 1536 bf16 (25% of copy). Here lane l owns the pieces
// i * 32 + l (8 elements each) of its warp's row, all kPL x 3 pieces of x, z, dy are loaded raw
// (16-byte loads) before any arithmetic, the two sums are reduced with warp shuffles, and the
// block's 4 warps take rows row0 + w, row0 + w + 4, ... of the slot. dw partials stay in
// registers per lane; at the end the 4 warps' partials are added in a fixed order through
// shared memory into the slot's workspace row (deterministic, same workspace as v1).
// Needs gsz % 8 == 0, gsz <= 256 kPL and every row start 16-byte aligned.
constexpr int kGv2Warps = 4;
constexpr int kGv2MaxCols = 2048;

// sigmoid(z) with a volatile ex2 (so the two passes' exponentials are not merged by the
// compiler, which would keep kPL x 8 of them live between the passes instead of the raw z).
__device__ __forceinline__ float sigmoid_v(float zv) {
  float e;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(-zv * dev::kLog2e));
  return __fdividef(1.f, 1.f + e);
}

template <class T, int kPL, int kWR, int kMinB = 1>
__global__ void __launch_bounds__(kGv2Warps * 32, kMinB)
gated_rms_norm_bwd_v2_kernel(int64_t rows, int64_t gsz, int64_t rpb, const T* x, int64_t x_stride, const T* z,
                             int64_t z_stride, const float* w, float eps, bool nbg, const T* dy, int64_t dy_stride,
                             T* dx, int64_t dx_stride, T* dz, int64_t dz_stride, float* part, int64_t dim) {
  using Raw = dev::RawRow<T, kPiece>;
  constexpr int kU = int(sizeof(Raw) / 16);
  // kWR warps per row (1 or 2): the block works on kGv2Warps / kWR rows at a time; with kWR 2
  // the pair's two partial sums meet in shared memory behind a 64-thread named barrier.
  constexpr int kRows = kGv2Warps / kWR;
  constexpr int kLanes = 32 * kWR;
  __shared__ float red[kRows][kGv2MaxCols];
  __shared__ float2 pair_sum[2][kRows][kWR];
  const int warp = threadIdx.x >> 5;
  const int grp = warp / kWR;                                       // row group in the block
  const int lane = (warp % kWR) * 32 + static_cast<int>(threadIdx.x & 31);  // lane within the row group
  const int64_t c0 = int64_t(blockIdx.y) * gsz;
  const int64_t row0 = int64_t(blockIdx.x) * rpb;
  const int64_t row1 = std::min(rows, row0 + rpb);
  const bool hz = z != nullptr;
  const float inv_g = 1.f / static_cast<float>(gsz);
  float acc[kPL][kPiece];
#pragma unroll
  for (int i = 0; i < kPL; ++i)
#pragma unroll
    for (int j = 0; j < kPiece; ++j) acc[i][j] = 0.f;
  int parity = 0;
  for (int64_t row = row0 + grp; row < row1; row += kRows, parity ^= 1) {
    const T* xr = x + row * x_stride + c0;
    const T* zr = hz ? z + row * z_stride + c0 : nullptr;
    const T* dyr = dy + row * dy_stride + c0;
    Raw rx[kPL], rz[kPL], rd[kPL];
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * kLanes + lane) * kPiece;
      if (t0 < gsz) {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          rx[i].v[u] = __ldg(reinterpret_cast<const uint4*>(xr + t0) + u);
          rd[i].v[u] = __ldg(reinterpret_cast<const uint4*>(dyr + t0) + u);
          rz[i].v[u] = hz ? __ldg(reinterpret_cast<const uint4*>(zr + t0) + u) : make_uint4(0u, 0u, 0u, 0u);
        }
      } else {
#pragma unroll
        for (int u = 0; u < kU; ++u) rx[i].v[u] = rd[i].v[u] = rz[i].v[u] = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * kLanes + lane) * kPiece;
      float wv[kPiece];
      dev::load_run<kPiece>(w + c0, t0, gsz, wv, 0.f);
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float xv = dev::to_f32(rx[i].e[j]), dv = dev::to_f32(rd[i].e[j]);
        float gate = 1.f;
        if (hz) {
          const float zv = dev::to_f32(rz[i].e[j]);
          gate = zv * sigmoid_v(zv);
        }
        const float u = nbg ? xv : xv * gate;
        const float dn = nbg ? dv * gate : dv;
        ss = fmaf(u, u, ss);
        dot = fmaf(dn * wv[j], u, dot);
      }
    }
    ss = train_dev::warp_sum(ss);
    dot = train_dev::warp_sum(dot);
    if constexpr (kWR > 1) {
      if ((threadIdx.x & 31) == 0) pair_sum[parity][grp][warp % kWR] = make_float2(ss, dot);
      asm volatile("bar.sync %0, %1;" ::"r"(1 + grp), "r"(kLanes) : "memory");
      float2 t = pair_sum[parity][grp][0];
#pragma unroll
      for (int q = 1; q < kWR; ++q) {
        const float2 u = pair_sum[parity][grp][q];
        t.x += u.x;
        t.y += u.y;
      }
      ss = t.x;
      dot = t.y;
    }
    const float rs = rsqrtf(ss * inv_g + eps);
    const float c = rs * rs * rs * dot * inv_g;
    T* dxr = dx ? dx + row * dx_stride + c0 : nullptr;
    T* dzr = dz && hz ? dz + row * dz_stride + c0 : nullptr;
#pragma unroll
    for (int i = 0; i < kPL; ++i) {
      const int64_t t0 = int64_t(i * kLanes + lane) * kPiece;
      if (t0 >= gsz) continue;
      float wv[kPiece];
      dev::load_run<kPiece>(w + c0, t0, gsz, wv, 0.f);
      Raw ox, oz;
#pragma unroll
      for (int j = 0; j < kPiece; ++j) {
        const float a = dev::to_f32(rx[i].e[j]), d = dev::to_f32(rd[i].e[j]);
        float gate = 1.f, dg = 0.f;
        if (hz) {
          const float zv = dev::to_f32(rz[i].e[j]);
          const float sg = sigmoid_v(zv);
          gate = zv * sg;
          dg = sg * (1.f + zv * (1.f - sg));
        }
        const float u = nbg ? a : a * gate;
        const float dn = nbg ? d * gate : d;
        const float du = rs * dn * wv[j] - u * c;
        acc[i][j] = fmaf(dn, u * rs, acc[i][j]);
        float vx, vz;
        if (!nbg && hz) {
          vx = du * gate;
          vz = du * a * dg;
        } else {
          vx = du;
          vz = d * u * rs * wv[j] * dg;
        }
        ox.e[j] = dev::from_f32<T>(vx);
        oz.e[j] = dev::from_f32<T>(vz);
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (dxr) reinterpret_cast<uint4*>(dxr + t0)[u] = ox.v[u];
        if (dzr) reinterpret_cast<uint4*>(dzr + t0)[u] = oz.v[u];
      }
    }
  }
  // Fixed-order sum of the 4 warps' partials into the slot's row of the workspace.
#pragma unroll
  for (int i = 0; i < kPL; ++i) {
    const int64_t t0 = int64_t(i * kLanes + lane) * kPiece;
    if (t0 < gsz)
#pragma unroll
      for (int j = 0; j < kPiece; ++j) red[grp][t0 + j] = acc[i][j];
  }
  __syncthreads();
  float* prow = part + int64_t(blockIdx.x) * dim + c0;
  for (int64_t cidx = threadIdx.x; cidx < gsz; cidx += kGv2Warps * 32) {
    float t = 0.f;
#pragma unroll
    for (int ww = 0; ww < kRows; ++ww) t += red[ww][cidx];
    prow[cidx] = t;
  }
}

// Blocks that are resident at once on the current device (SMs x occupancy of `kernel`): the
// slot count is capped by it so every block starts in the first wave (1024 blocks of 88
// registers x 96 threads ran as 924 + 100 on an H200). Deterministic for a given device.
template <class Kern>
int64_t resident_blocks(Kern kernel, int threads) {
  int dev = 0, sms = 0, per = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, threads, 0) != cudaSuccess || sms <= 0 || per <= 0) {
    cudaGetLastError();
    return kNormSlots;
  }
  return std::max<int64_t>(1, int64_t(sms) * per);
}

template <class T, bool kLN>
int64_t launch_norm_bwd_v2(int64_t rows, int64_t dim, const float* r, const float* mean, const float* rstd,
                           const float* w, float eps, const T* dy, const float* dr_add, float* dr, float* part,
                           cudaStream_t stream) {
  const char* ver = std::getenv("MAMBA_NORM_BWD_VERSION");
  if (ver && std::atoi(ver) == 1) return 0;
  const char* pre = std::getenv("MAMBA_NORM_PREFETCH");  // v1's prefetch variant (benchmarks)
  if (!kLN && pre && std::atoi(pre) == 1) return 0;
  if (dim % kPiece != 0 || dim > kNv2MaxCols) return 0;
  if (!dev::aligned16(r) || !dev::aligned16(w) || !dev::aligned16(dy) || !dev::aligned16(dr) ||
      (dr_add && !dev::aligned16(dr_add)))
    return 0;
  const int64_t pl = (dim + 255) / 256;
  auto kern = pl <= 1 ? norm_bwd_v2_kernel<T, 1, kLN> : pl <= 2 ? norm_bwd_v2_kernel<T, 2, kLN>
            : pl <= 3 ? norm_bwd_v2_kernel<T, 3, kLN> : norm_bwd_v2_kernel<T, 4, kLN>;
  const int64_t nb = std::min(norm_slots(rows), resident_blocks(kern, kNv2Warps * 32));
  const int64_t rpb = (rows + nb - 1) / nb;
  const int64_t nblocks = (rows + rpb - 1) / rpb;
  kern<<<static_cast<unsigned>(nblocks), kNv2Warps * 32, 0, stream>>>(rows, dim, rpb, r, mean, rstd, w, eps, dy, dr_add,
                                                                       dr, part);
  return nblocks;
}

void check_rows_dim(const char* fn, int64_t rows, int64_t dim) {
  if (rows < 0) throw std::invalid_argument(std::string(fn) + ": rows must be >= 0, got " + std::to_string(rows));
  if (dim <= 0) throw std::invalid_argument(std::string(fn) + ": dim must be >= 1, got " + std::to_string(dim));
  if (dim > (int64_t(1) << 24))
    throw std::invalid_argument(std::string(fn) + ": dim must be <= 2^24, got " + std::to_string(dim));
}
void check_ptr(const char* fn, const char* name, const void* p) {
  if (!p) throw std::invalid_argument(std::string(fn) + ": " + name + " must not be null");
}
void check_ws(const char* fn, size_t have, size_t need, const void* ws) {
  if (have < need || (need && !ws))
    throw std::invalid_argument(std::string(fn) + ": workspace_bytes " + std::to_string(have) + " < required " +
                                std::to_string(need));
}

}  // namespace

size_t rms_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim) {
  return static_cast<size_t>(norm_slots(rows) * std::max<int64_t>(dim, 0)) * sizeof(float);
}

template <class T>
void rms_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, const T* dy,
                       const float* dr_add, float* dr, float* dw, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  const char* fn = "rms_norm_bwd_cuda";
  check_rows_dim(fn, rows, dim);
  check_ptr(fn, "w", w);
  check_ptr(fn, "dw", dw);
  if (rows > 0) {
    check_ptr(fn, "r", r);
    check_ptr(fn, "dy", dy);
    check_ptr(fn, "dr", dr);
  }
  check_ws(fn, workspace_bytes, rms_norm_bwd_cuda_workspace_bytes(rows, dim), workspace);
  if (rows == 0) {
    MAMBA_CUDA_CHECK(fn, cudaMemsetAsync(dw, 0, size_t(dim) * sizeof(float), stream));
    return;
  }
  if (const int64_t nb2 = launch_norm_bwd_v2<T, false>(rows, dim, r, nullptr, nullptr, w, eps, dy, dr_add, dr,
                                                      static_cast<float*>(workspace), stream)) {
    MAMBA_CUDA_CHECK_LAUNCH(fn);
    train_dev::launch_column_sum(nb2, dim, static_cast<float*>(workspace), dw, nullptr, 0, 0, stream);
    MAMBA_CUDA_CHECK_LAUNCH(fn);
    return;
  }
  int threads = 32, P = 1;
  norm_shape(dim, threads, P);
  // MAMBA_NORM_PREFETCH=1 (benchmarks, P <= 2): the next row's loads before this row's reduction.
  const char* pre_env = std::getenv("MAMBA_NORM_PREFETCH");
  const bool pre = pre_env && std::atoi(pre_env) == 1;
  auto kern = P == 1 ? (pre ? rms_norm_bwd_kernel<T, 1, true> : rms_norm_bwd_kernel<T, 1, false>)
            : P == 2 ? (pre ? rms_norm_bwd_kernel<T, 2, true> : rms_norm_bwd_kernel<T, 2, false>)
                     : rms_norm_bwd_kernel<T, 4, false>;
  const int64_t nb = std::min(norm_slots(rows), resident_blocks(kern, threads));
  const int64_t rpb = (rows + nb - 1) / nb;
  const int64_t nblocks = (rows + rpb - 1) / rpb;
  float* part = static_cast<float*>(workspace);
  kern<<<static_cast<unsigned>(nblocks), threads, 0, stream>>>(rows, dim, rpb, r, w, eps, dy, dr_add, dr, part);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
  train_dev::launch_column_sum(nblocks, dim, part, dw, nullptr, 0, 0, stream);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

size_t layer_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim) {
  return 2 * rms_norm_bwd_cuda_workspace_bytes(rows, dim);
}

template <class T>
void add_layer_norm_cuda(int64_t rows, int64_t dim, const T* x, const float* residual_in, float* residual_out,
                         const float* w, const float* b, float eps, T* y, float* mean, float* rstd,
                         cudaStream_t stream) {
  const char* fn = "add_layer_norm_cuda";
  check_rows_dim(fn, rows, dim);
  if (rows > 0x7fffffff) throw std::invalid_argument(std::string(fn) + ": rows must be <= 2^31 - 1");
  if (rows == 0) return;
  check_ptr(fn, "x", x);
  check_ptr(fn, "residual_out", residual_out);
  check_ptr(fn, "w", w);
  check_ptr(fn, "y", y);
  int threads = 32, P = 1;
  norm_shape(dim, threads, P);
  const unsigned g = static_cast<unsigned>(rows);
  if (P == 1) add_layer_norm_kernel<T, 1><<<g, threads, 0, stream>>>(dim, x, residual_in, residual_out, w, b, eps, y, mean, rstd);
  else if (P == 2) add_layer_norm_kernel<T, 2><<<g, threads, 0, stream>>>(dim, x, residual_in, residual_out, w, b, eps, y, mean, rstd);
  else add_layer_norm_kernel<T, 4><<<g, threads, 0, stream>>>(dim, x, residual_in, residual_out, w, b, eps, y, mean, rstd);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

template <class T>
void layer_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* mean, const float* rstd,
                         const float* w, const T* dy, const float* dr_add, float* dr, float* dw, float* db,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "layer_norm_bwd_cuda";
  check_rows_dim(fn, rows, dim);
  check_ptr(fn, "w", w);
  check_ptr(fn, "dw", dw);
  if (rows > 0) {
    check_ptr(fn, "r", r);
    check_ptr(fn, "mean", mean);
    check_ptr(fn, "rstd", rstd);
    check_ptr(fn, "dy", dy);
    check_ptr(fn, "dr", dr);
  }
  check_ws(fn, workspace_bytes, layer_norm_bwd_cuda_workspace_bytes(rows, dim), workspace);
  if (rows == 0) {
    MAMBA_CUDA_CHECK(fn, cudaMemsetAsync(dw, 0, size_t(dim) * sizeof(float), stream));
    if (db) MAMBA_CUDA_CHECK(fn, cudaMemsetAsync(db, 0, size_t(dim) * sizeof(float), stream));
    return;
  }
  if (const int64_t nb2 = launch_norm_bwd_v2<T, true>(rows, dim, r, mean, rstd, w, 0.f, dy, dr_add, dr,
                                                     static_cast<float*>(workspace), stream)) {
    MAMBA_CUDA_CHECK_LAUNCH(fn);
    train_dev::launch_column_sum(nb2, 2 * dim, static_cast<float*>(workspace), dw, db, 1, dim, stream);
    MAMBA_CUDA_CHECK_LAUNCH(fn);
    return;
  }
  int threads = 32, P = 1;
  norm_shape(dim, threads, P);
  auto kern = P == 1 ? layer_norm_bwd_kernel<T, 1> : P == 2 ? layer_norm_bwd_kernel<T, 2> : layer_norm_bwd_kernel<T, 4>;
  const int64_t nb = std::min(norm_slots(rows), resident_blocks(kern, threads));
  const int64_t rpb = (rows + nb - 1) / nb;
  const int64_t nblocks = (rows + rpb - 1) / rpb;
  float* part = static_cast<float*>(workspace);
  kern<<<static_cast<unsigned>(nblocks), threads, 0, stream>>>(rows, dim, rpb, r, mean, rstd, w, dy, dr_add, dr, part);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
  // Partial row b = [dw (dim) | db (dim)]: column k * dim + c, k = 0 -> dw[c], k = 1 -> db[c].
  train_dev::launch_column_sum(nblocks, 2 * dim, part, dw, db, 1, dim, stream);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

size_t gated_rms_norm_bwd_cuda_workspace_bytes(int64_t rows, int64_t dim) {
  return rms_norm_bwd_cuda_workspace_bytes(rows, dim);
}

template <class T>
void gated_rms_norm_bwd_cuda(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride,
                             const T* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                             const T* dy, int64_t dy_stride, T* dx, int64_t dx_stride, T* dz, int64_t dz_stride,
                             float* dw, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "gated_rms_norm_bwd_cuda";
  check_rows_dim(fn, rows, dim);
  if (group_size <= 0 || dim % group_size != 0)
    throw std::invalid_argument(std::string(fn) + ": group_size must divide dim = " + std::to_string(dim) +
                                ", got " + std::to_string(group_size));
  const int64_t ngroups = dim / group_size;
  if (ngroups > 65535)
    throw std::invalid_argument(std::string(fn) + ": dim / group_size must be <= 65535, got " + std::to_string(ngroups));
  check_ptr(fn, "w", w);
  check_ptr(fn, "dw", dw);
  if (rows > 0) {
    check_ptr(fn, "x", x);
    check_ptr(fn, "dy", dy);
    if (x_stride < dim || dy_stride < dim || (dx && dx_stride < dim) || (z && z_stride < dim) ||
        (z && dz && dz_stride < dim))
      throw std::invalid_argument(std::string(fn) + ": row strides must be >= dim = " + std::to_string(dim));
  }
  check_ws(fn, workspace_bytes, gated_rms_norm_bwd_cuda_workspace_bytes(rows, dim), workspace);
  if (rows == 0) {
    MAMBA_CUDA_CHECK(fn, cudaMemsetAsync(dw, 0, size_t(dim) * sizeof(float), stream));
    return;
  }
  // v2 (warp per row, the default): pieces of 8 elements, every row start 16-byte aligned,
  // group_size <= 2048 (bf16) / 1024 (f32). MAMBA_GATED_BWD_VERSION=1 selects v1.
  {
    const char* ver = std::getenv("MAMBA_GATED_BWD_VERSION");
    const int64_t esz = sizeof(T);
    auto al = [&](const void* q, int64_t stride) {
      return q == nullptr || (dev::aligned16(q) && (stride * esz) % 16 == 0);
    };
    // MAMBA_GATED_BWD_VERSION=3: two warps per row (half the registers per lane).
    // Default: two warps per row when one warp would hold >= 3 pieces per lane (group_size > 512),
    // else one (measured, H200: dim 1536 one warp 117 us, two 96-120 us, two capped at 128
    // registers 94.5 us; group 128: one 153-173 us, two 292-295 us). MAMBA_GATED_BWD_VERSION=2
    // forces one warp per row, 3 two, 4 two capped at 128 registers (bf16).
    const int vnum = ver ? std::atoi(ver) : 0;
    const int wr = vnum == 3 || vnum == 4 || (vnum == 0 && group_size > 512) ? 2 : 1;
    const int64_t pl = (group_size + 256 * wr - 1) / (256 * wr);
    const int64_t max_pl = (sizeof(T) == 2 ? 8 : 4) / wr;
    const bool v2 = vnum != 1 && group_size % kPiece == 0 && pl <= max_pl &&
                    al(x, x_stride) && al(z, z_stride) && al(dy, dy_stride) && al(dx, dx_stride) &&
                    al(z ? dz : nullptr, dz_stride);
    if (v2) {
      const int kpl = pl <= 1 ? 1 : pl <= 2 ? 2 : pl <= 3 ? 3 : pl <= 4 ? 4 : pl <= 6 ? 6 : 8;
      // MAMBA_GATED_BWD_VERSION=4: variant 3 capped at 128 registers (4 blocks per SM).
      // The capped two-warp kernel is the default for bf16 above 512 columns (H200: 94.5 us against
      // 120 us uncapped (194 registers) and 118 us for one warp per row at dim 1536).
      const bool cap = (vnum == 4 || (vnum == 0 && wr == 2)) && sizeof(T) == 2;
      auto k2 = cap ? (kpl == 1 ? gated_rms_norm_bwd_v2_kernel<T, 1, 2, 4> : kpl == 2 ? gated_rms_norm_bwd_v2_kernel<T, 2, 2, 4>
                     : kpl == 3 ? gated_rms_norm_bwd_v2_kernel<T, 3, 2, 4> : gated_rms_norm_bwd_v2_kernel<T, 4, 2, 4>)
              : wr == 2 ? (kpl == 1 ? gated_rms_norm_bwd_v2_kernel<T, 1, 2> : kpl == 2 ? gated_rms_norm_bwd_v2_kernel<T, 2, 2>
                         : kpl == 3 ? gated_rms_norm_bwd_v2_kernel<T, 3, 2> : gated_rms_norm_bwd_v2_kernel<T, 4, 2>)
              : kpl == 1 ? gated_rms_norm_bwd_v2_kernel<T, 1, 1> : kpl == 2 ? gated_rms_norm_bwd_v2_kernel<T, 2, 1>
              : kpl == 3 ? gated_rms_norm_bwd_v2_kernel<T, 3, 1> : kpl == 4 ? gated_rms_norm_bwd_v2_kernel<T, 4, 1>
              : kpl == 6 ? gated_rms_norm_bwd_v2_kernel<T, 6, 1> : gated_rms_norm_bwd_v2_kernel<T, 8, 1>;
      const int64_t nb = std::min(norm_slots(rows), std::max<int64_t>(1, resident_blocks(k2, kGv2Warps * 32) / ngroups));
      const int64_t rpb = (rows + nb - 1) / nb;
      const int64_t nblocks = (rows + rpb - 1) / rpb;
      float* part = static_cast<float*>(workspace);
      const dim3 g(static_cast<unsigned>(nblocks), static_cast<unsigned>(ngroups));
      k2<<<g, kGv2Warps * 32, 0, stream>>>(rows, group_size, rpb, x, x_stride, z, z_stride, w, eps, norm_before_gate, dy,
                                           dy_stride, dx, dx_stride, dz, dz_stride, part, dim);
      MAMBA_CUDA_CHECK_LAUNCH(fn);
      train_dev::launch_column_sum(nblocks, dim, part, dw, nullptr, 0, 0, stream);
      MAMBA_CUDA_CHECK_LAUNCH(fn);
      return;
    }
  }
  int threads = 32, P = 1;
  norm_shape(group_size, threads, P);
  auto kern = P == 1 ? gated_rms_norm_bwd_kernel<T, 1> : P == 2 ? gated_rms_norm_bwd_kernel<T, 2> : gated_rms_norm_bwd_kernel<T, 4>;
  // Resident blocks are shared among the groups (grid.y).
  const int64_t nb = std::min(norm_slots(rows), std::max<int64_t>(1, resident_blocks(kern, threads) / ngroups));
  const int64_t rpb = (rows + nb - 1) / nb;
  const int64_t nblocks = (rows + rpb - 1) / rpb;
  float* part = static_cast<float*>(workspace);
  const dim3 g(static_cast<unsigned>(nblocks), static_cast<unsigned>(ngroups));
  kern<<<g, threads, 0, stream>>>(rows, dim, group_size, rpb, x, x_stride, z, z_stride, w, eps, norm_before_gate, dy,
                                  dy_stride, dx, dx_stride, dz, dz_stride, part);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
  train_dev::launch_column_sum(nblocks, dim, part, dw, nullptr, 0, 0, stream);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

#define MAMBA_TRAIN_NORM_INSTANTIATE(T)                                                                          \
  template void rms_norm_bwd_cuda<T>(int64_t, int64_t, const float*, const float*, float, const T*, const float*, \
                                     float*, float*, void*, size_t, cudaStream_t);                             \
  template void add_layer_norm_cuda<T>(int64_t, int64_t, const T*, const float*, float*, const float*,         \
                                       const float*, float, T*, float*, float*, cudaStream_t);                \
  template void layer_norm_bwd_cuda<T>(int64_t, int64_t, const float*, const float*, const float*,             \
                                       const float*, const T*, const float*, float*, float*, float*, void*,   \
                                       size_t, cudaStream_t);                                                  \
  template void gated_rms_norm_bwd_cuda<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t,    \
                                           const float*, float, bool, const T*, int64_t, T*, int64_t, T*,      \
                                           int64_t, float*, void*, size_t, cudaStream_t);
MAMBA_TRAIN_NORM_INSTANTIATE(float)
MAMBA_TRAIN_NORM_INSTANTIATE(__nv_bfloat16)
#undef MAMBA_TRAIN_NORM_INSTANTIATE

}  // namespace mamba::kernels::cuda
