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
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "train_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kPiece = 8;
constexpr int64_t kNormSlots = 1024;  // blocks (dw partial rows) of the norm backward

int64_t norm_slots(int64_t rows) { return std::min<int64_t>(std::max<int64_t>(rows, 1), kNormSlots); }

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

template <class T, int P>
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
  for (int64_t row = row0; row < row1; ++row, parity ^= 1) {
    const float* rr = r + row * dim;
    const T* dyr = dy + row * dim;
    float rv[P][kPiece], gv[P][kPiece];
    float ss = 0.f, dot = 0.f;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t0 = t_first + p * step;
      dev::load_run<kPiece>(rr, t0, dim, rv[p], 0.f);
      dev::load_run<kPiece>(dyr, t0, dim, gv[p], 0.f);
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
  const int64_t nb = norm_slots(rows);
  const int64_t rpb = (rows + nb - 1) / nb;
  const int64_t nblocks = (rows + rpb - 1) / rpb;
  int threads = 32, P = 1;
  norm_shape(dim, threads, P);
  float* part = static_cast<float*>(workspace);
  const unsigned g = static_cast<unsigned>(nblocks);
  if (P == 1) rms_norm_bwd_kernel<T, 1><<<g, threads, 0, stream>>>(rows, dim, rpb, r, w, eps, dy, dr_add, dr, part);
  else if (P == 2) rms_norm_bwd_kernel<T, 2><<<g, threads, 0, stream>>>(rows, dim, rpb, r, w, eps, dy, dr_add, dr, part);
  else rms_norm_bwd_kernel<T, 4><<<g, threads, 0, stream>>>(rows, dim, rpb, r, w, eps, dy, dr_add, dr, part);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
  train_dev::launch_column_sum(nblocks, dim, part, dw, nullptr, 0, 0, stream);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

#define MAMBA_TRAIN_NORM_INSTANTIATE(T)                                                                          \
  template void rms_norm_bwd_cuda<T>(int64_t, int64_t, const float*, const float*, float, const T*, const float*, \
                                     float*, float*, void*, size_t, cudaStream_t);
MAMBA_TRAIN_NORM_INSTANTIATE(float)
MAMBA_TRAIN_NORM_INSTANTIATE(__nv_bfloat16)
#undef MAMBA_TRAIN_NORM_INSTANTIATE

}  // namespace mamba::kernels::cuda
