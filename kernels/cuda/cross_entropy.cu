// Softmax cross-entropy fused with its gradient, one block of 1024 threads per row.
// Read pass: each thread loads up to kCache pieces of 16 bytes of the row (all loads issued
// before any arithmetic) and keeps them raw in registers; a bf16 row of up to 1024 * 8 * 8 =
// 65536 logits (V = 50280) is read from memory once. Pieces past the cache are folded in with
// an online max / rescaled sum and re-read in the write pass (same thread, same addresses, so
// the in-place form dlogits == logits stays correct). One block reduction of (max, sum,
// argmax) per row, then the write pass stores (exp(x - lse)) * scale - scale * onehot and zero
// padding. Per-row loss and status go to loss_rows and the workspace; a one-block kernel adds
// them in row order (loss_sum, correct: deterministic) and records the first bad target.
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "train_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kCache = 8;

// Workspace: a Record, then one status byte per row (0 counted, 1 counted and argmax hit,
// 2 ignored, 3 bad target).
struct Record {
  long long bad_row;    // -1: none
  long long bad_value;
  long long pad[2];
};
constexpr size_t kRecordBytes = sizeof(Record);

struct MaxSum {
  float m, s;
  int idx;  // argmax (first occurrence)
  float mv; // the max value for argmax
};

__device__ __forceinline__ void combine(MaxSum& a, const MaxSum& b) {
  const float m = fmaxf(a.m, b.m);
  const float s = (a.m == -INFINITY ? 0.f : a.s * dev::ex2_mufu((a.m - m) * dev::kLog2e)) +
                  (b.m == -INFINITY ? 0.f : b.s * dev::ex2_mufu((b.m - m) * dev::kLog2e));
  a.m = m;
  a.s = s;
  if (b.mv > a.mv || (b.mv == a.mv && b.idx < a.idx)) { a.mv = b.mv; a.idx = b.idx; }
}

__device__ __forceinline__ MaxSum shfl_xor(const MaxSum& v, int o) {
  MaxSum r;
  r.m = __shfl_xor_sync(0xffffffffu, v.m, o);
  r.s = __shfl_xor_sync(0xffffffffu, v.s, o);
  r.idx = __shfl_xor_sync(0xffffffffu, v.idx, o);
  r.mv = __shfl_xor_sync(0xffffffffu, v.mv, o);
  return r;
}

template <class T, int kThreads>
__global__ void __launch_bounds__(kThreads, 1024 / kThreads)
ce_row_kernel(int64_t V, int64_t stride, bool vec, const T* logits, const int64_t* targets, float scale, T* dlogits,
              float* loss_rows, unsigned char* status) {
  constexpr int kN = 16 / int(sizeof(T));
  using Piece = dev::RawRow<T, kN>;
  __shared__ MaxSum sh[32];
  __shared__ float sh_t;
  const int64_t row = blockIdx.x;
  const int64_t tg = targets[row];
  const T* x = logits + row * stride;
  T* dx = dlogits ? dlogits + row * stride : nullptr;
  const int64_t step = int64_t(kThreads) * kN;
  const int64_t t_first = int64_t(threadIdx.x) * kN;
  if (tg < 0 || tg >= V) {
    if (threadIdx.x == 0) {
      loss_rows[row] = 0.f;
      status[row] = tg < 0 ? 2 : 3;
    }
    if (dx) {
      Piece z;
#pragma unroll
      for (int j = 0; j < kN; ++j) z.e[j] = dev::from_f32<T>(0.f);
      for (int64_t t0 = t_first; t0 < stride; t0 += step) dev::store_raw<T, kN>(dx, t0, stride, vec, z);
    }
    return;
  }
  if (threadIdx.x == 0) sh_t = dev::to_f32(x[tg]);
  Piece c[kCache];
#pragma unroll
  for (int p = 0; p < kCache; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < V) dev::load_raw<T, kN>(x, t0, V, vec, c[p]);
  }
  MaxSum ms{-INFINITY, 0.f, 0x7fffffff, -INFINITY};
#pragma unroll
  for (int p = 0; p < kCache; ++p) {
    const int64_t t0 = t_first + p * step;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float v = t0 + j < V ? dev::to_f32(c[p].e[j]) : -INFINITY;
      if (v > ms.mv) { ms.mv = v; ms.idx = static_cast<int>(t0 + j); }
    }
  }
  ms.m = ms.mv;
  if (ms.m != -INFINITY) {
    const float ml = ms.m * dev::kLog2e;
#pragma unroll
    for (int p = 0; p < kCache; ++p) {
      const int64_t t0 = t_first + p * step;
#pragma unroll
      for (int j = 0; j < kN; ++j)
        if (t0 + j < V) ms.s += dev::ex2_mufu(fmaf(dev::to_f32(c[p].e[j]), dev::kLog2e, -ml));
    }
  }
  // Past the cache: online max and rescaled sum.
  for (int64_t t0 = t_first + kCache * step; t0 < V; t0 += step) {
    Piece q;
    dev::load_raw<T, kN>(x, t0, V, vec, q);
    MaxSum b{-INFINITY, 0.f, 0x7fffffff, -INFINITY};
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float v = t0 + j < V ? dev::to_f32(q.e[j]) : -INFINITY;
      if (v > b.mv) { b.mv = v; b.idx = static_cast<int>(t0 + j); }
    }
    b.m = b.mv;
#pragma unroll
    for (int j = 0; j < kN; ++j)
      if (t0 + j < V) b.s += dev::ex2_mufu((dev::to_f32(q.e[j]) - b.m) * dev::kLog2e);
    combine(ms, b);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) { const MaxSum b = shfl_xor(ms, o); combine(ms, b); }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) sh[warp] = ms;
  __syncthreads();
  ms = lane < kThreads / 32 ? sh[lane] : MaxSum{-INFINITY, 0.f, 0x7fffffff, -INFINITY};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) { const MaxSum b = shfl_xor(ms, o); combine(ms, b); }
  const float lse = ms.m + logf(ms.s);
  if (threadIdx.x == 0) {
    loss_rows[row] = lse - sh_t;
    status[row] = ms.idx == tg ? 1 : 0;
  }
  if (!dx) return;
  const float lse2 = lse * dev::kLog2e;
#pragma unroll
  for (int p = 0; p < kCache; ++p) {
    const int64_t t0 = t_first + p * step;
    if (t0 < stride) {
      Piece o;
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const int64_t col = t0 + j;
        float v = col < V ? dev::ex2_mufu(fmaf(dev::to_f32(c[p].e[j]), dev::kLog2e, -lse2)) * scale : 0.f;
        if (col == tg) v -= scale;
        o.e[j] = dev::from_f32<T>(v);
      }
      dev::store_raw<T, kN>(dx, t0, stride, vec, o);
    }
  }
  for (int64_t t0 = t_first + kCache * step; t0 < stride; t0 += step) {
    Piece q, o;
    if (t0 < V) dev::load_raw<T, kN>(x, t0, V, vec, q);
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const int64_t col = t0 + j;
      float v = col < V ? dev::ex2_mufu(fmaf(dev::to_f32(q.e[j]), dev::kLog2e, -lse2)) * scale : 0.f;
      if (col == tg) v -= scale;
      o.e[j] = dev::from_f32<T>(v);
    }
    dev::store_raw<T, kN>(dx, t0, stride, vec, o);
  }
}

// One block: loss_sum (row order: thread i adds rows i, i + 1024, ..., then a fixed tree),
// correct, and the first bad target.
__global__ void __launch_bounds__(1024)
ce_finish_kernel(int64_t rows, const float* loss_rows, const unsigned char* status, const int64_t* targets,
                 float* loss_sum, int64_t* correct, Record* rec) {
  __shared__ float shf[64];
  __shared__ long long shbad[32];
  __shared__ int shc[32];
  float s = 0.f;
  int hits = 0;
  long long bad = 0x7fffffffffffffffLL;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const unsigned char st = status[r];
    if (st <= 1) s += loss_rows[r];
    hits += st == 1;
    if (st == 3 && r < bad) bad = r;
  }
  const float2 tot = train_dev::block_sum2(s, 0.f, shf, 0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    hits += __shfl_xor_sync(0xffffffffu, hits, o);
    const long long b = __shfl_xor_sync(0xffffffffu, bad, o);
    bad = b < bad ? b : bad;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  if (lane == 0) { shc[warp] = hits; shbad[warp] = bad; }
  __syncthreads();
  if (threadIdx.x == 0) {
    long long h = 0, b = 0x7fffffffffffffffLL;
    for (int i = 0; i < nw; ++i) { h += shc[i]; b = shbad[i] < b ? shbad[i] : b; }
    if (loss_sum) *loss_sum = tot.x;
    if (correct) *correct = h;
    rec->bad_row = b == 0x7fffffffffffffffLL ? -1 : b;
    rec->bad_value = b == 0x7fffffffffffffffLL ? 0 : targets[b];
  }
}

}  // namespace

size_t cross_entropy_cuda_workspace_bytes(int64_t rows) {
  return kRecordBytes + static_cast<size_t>((std::max<int64_t>(rows, 0) + 15) / 16 * 16);
}

template <class T>
void cross_entropy_fwd_bwd_cuda(int64_t rows, int64_t V, int64_t row_stride, const T* logits,
                                const int64_t* targets, float scale, T* dlogits, float* loss_rows, float* loss_sum,
                                int64_t* correct, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "cross_entropy_fwd_bwd_cuda";
  auto bad = [&](const std::string& m) { throw std::invalid_argument(std::string(fn) + ": " + m); };
  if (rows < 0) bad("rows must be >= 0, got " + std::to_string(rows));
  if (rows > 0x7fffffff) bad("rows must be <= 2^31 - 1, got " + std::to_string(rows));
  if (V < 1) bad("V must be >= 1, got " + std::to_string(V));
  if (V > 0x7fffffff) bad("V must be <= 2^31 - 1, got " + std::to_string(V));
  if (row_stride < V) bad("row_stride must be >= V = " + std::to_string(V) + ", got " + std::to_string(row_stride));
  if (!workspace || workspace_bytes < cross_entropy_cuda_workspace_bytes(rows))
    bad("workspace_bytes " + std::to_string(workspace_bytes) + " < required " +
        std::to_string(cross_entropy_cuda_workspace_bytes(rows)) + " (or workspace null)");
  if (rows > 0 && (!logits || !targets || !loss_rows)) bad("logits, targets and loss_rows must not be null");
  Record* rec = static_cast<Record*>(workspace);
  unsigned char* status = static_cast<unsigned char*>(workspace) + kRecordBytes;
  if (rows > 0) {
    constexpr int kN = 16 / int(sizeof(T));
    const bool vec = dev::aligned16(logits) && (!dlogits || dev::aligned16(dlogits)) && row_stride % kN == 0;
    // MAMBA_CE_THREADS=512 (benchmarks): two blocks of 512 per SM instead of one of 1024.
    const char* env = std::getenv("MAMBA_CE_THREADS");
    if (env && std::atoi(env) == 512)
      ce_row_kernel<T, 512><<<static_cast<unsigned>(rows), 512, 0, stream>>>(V, row_stride, vec, logits, targets, scale,
                                                                            dlogits, loss_rows, status);
    else
      ce_row_kernel<T, 1024><<<static_cast<unsigned>(rows), 1024, 0, stream>>>(V, row_stride, vec, logits, targets,
                                                                              scale, dlogits, loss_rows, status);
    MAMBA_CUDA_CHECK_LAUNCH(fn);
  }
  ce_finish_kernel<<<1, 1024, 0, stream>>>(rows, loss_rows, status, targets, loss_sum, correct, rec);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

void cross_entropy_check_cuda(const void* workspace, int64_t V, cudaStream_t stream) {
  if (!workspace) throw std::invalid_argument("cross_entropy_check_cuda: workspace must not be null");
  Record rec{};
  MAMBA_CUDA_CHECK("cross_entropy_check_cuda", cudaMemcpyAsync(&rec, workspace, sizeof(rec), cudaMemcpyDeviceToHost, stream));
  MAMBA_CUDA_CHECK("cross_entropy_check_cuda", cudaStreamSynchronize(stream));
  if (rec.bad_row >= 0)
    throw std::invalid_argument("cross_entropy: targets[" + std::to_string(rec.bad_row) + "] = " +
                                std::to_string(rec.bad_value) + " is >= V = " + std::to_string(V));
}

#define MAMBA_CE_INSTANTIATE(T)                                                                                 \
  template void cross_entropy_fwd_bwd_cuda<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, float, T*,   \
                                              float*, float*, int64_t*, void*, size_t, cudaStream_t);
MAMBA_CE_INSTANTIATE(float)
MAMBA_CE_INSTANTIATE(__nv_bfloat16)
#undef MAMBA_CE_INSTANTIATE

}  // namespace mamba::kernels::cuda
