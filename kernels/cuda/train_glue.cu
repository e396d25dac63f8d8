// Plain CUDA kernels of the MambaLM training path (train_glue_cuda.h): a cuBLASLt GEMM with
// transposes and beta, RMSNorm forward from an f32 residual and its backward, the causal
// conv1d + SiLU backward, in-place softmax cross-entropy, embedding backward, casts, the
// global sum of squares and AdamW. Deterministic column sums: rows are cut into fixed chunks,
// each chunk's partial sums go to the workspace, a second kernel adds the chunks in order.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/train_glue_cuda.h"

namespace mamba::kernels::cuda {
namespace {

__device__ __forceinline__ float ldf(const float* p) { return *p; }
__device__ __forceinline__ float ldf(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void stf(float* p, float v) { *p = v; }
__device__ __forceinline__ void stf(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

constexpr int kChunkRows = 256;  // rows per partial in the column sums

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < nw; ++i) t += sh[i];  // same order in every thread
  return t;
}
__device__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = -INFINITY;
  for (int i = 0; i < nw; ++i) t = fmaxf(t, sh[i]);
  return t;
}

// ---- GEMM ---------------------------------------------------------------------------------
template <class TA, class TC>
__global__ void gemm_fallback_kernel(TrainGemmParams p) {
  __shared__ float as[16][17], bs[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
  const TA* A = static_cast<const TA*>(p.a);
  const TA* B = static_cast<const TA*>(p.b);
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < p.k; k0 += 16) {
    const int64_t ar = blockIdx.y * 16 + ty, ak = k0 + tx;
    as[ty][tx] = ar < p.m && ak < p.k ? ldf(p.trans_a ? A + ak * p.lda + ar : A + ar * p.lda + ak) : 0.f;
    const int64_t bk = k0 + ty, bc = blockIdx.x * 16 + tx;
    bs[ty][tx] = bk < p.k && bc < p.n ? ldf(p.trans_b ? B + bc * p.ldb + bk : B + bk * p.ldb + bc) : 0.f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) acc = fmaf(as[ty][kk], bs[kk][tx], acc);
    __syncthreads();
  }
  if (row < p.m && col < p.n) {
    TC* C = static_cast<TC*>(p.c) + row * p.ldc + col;
    float v = p.alpha * acc;
    if (p.beta != 0.f) v += p.beta * ldf(C);
    stf(C, v);
  }
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, int, int, int, int,
                           int, bool>;
std::mutex g_mu;
std::map<int, cublasLtHandle_t> g_handles;
std::map<PlanKey, Plan> g_plans;

cudaDataType_t cuda_type(GemmType t) { return t == GemmType::f32 ? CUDA_R_32F : t == GemmType::bf16 ? CUDA_R_16BF : CUDA_R_16F; }
int align_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

Plan make_plan(cublasLtHandle_t h, const TrainGemmParams& p, size_t ws) {
  Plan pl;
  const cudaDataType_t ab = cuda_type(p.ab_type), ct = cuda_type(p.c_type);
  if (cublasLtMatmulDescCreate(&pl.op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return pl;
  // Column-major view: C^T (n, m) = op(B)^T op(A)^T; cuBLASLt's "A" is our B, its "B" our A.
  const cublasOperation_t ta = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
  cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
  bool ok = true;
  ok &= cublasLtMatrixLayoutCreate(&pl.la, ab, p.trans_b ? p.k : p.n, p.trans_b ? p.n : p.k, p.ldb) == CUBLAS_STATUS_SUCCESS;
  ok &= cublasLtMatrixLayoutCreate(&pl.lb, ab, p.trans_a ? p.m : p.k, p.trans_a ? p.k : p.m, p.lda) == CUBLAS_STATUS_SUCCESS;
  ok &= cublasLtMatrixLayoutCreate(&pl.lc, ct, p.n, p.m, p.ldc) == CUBLAS_STATUS_SUCCESS;
  if (!ok) return pl;
  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return pl;
  uint64_t wsb = ws;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb));
  uint32_t aa = align_of(p.b), ba = align_of(p.a), ca = align_of(p.c);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ba, sizeof(ba));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ca, sizeof(ca));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ca, sizeof(ca));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  if (cublasLtMatmulAlgoGetHeuristic(h, pl.op, pl.la, pl.lb, pl.lc, pl.lc, pref, 1, &res, &found) ==
          CUBLAS_STATUS_SUCCESS &&
      found > 0) {
    pl.algo = res.algo;
    pl.ok = true;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return pl;
}

void gemm_fallback(const TrainGemmParams& p, cudaStream_t s) {
  dim3 block(16, 16), grid(static_cast<unsigned>(cdiv(p.n, 16)), static_cast<unsigned>(cdiv(p.m, 16)));
  require(grid.y <= 65535, "train_gemm_cuda", "m too large for the fallback kernel");
  if (p.ab_type == GemmType::f32) {
    require(p.c_type == GemmType::f32, "train_gemm_cuda", "f32 inputs need an f32 C");
    gemm_fallback_kernel<float, float><<<grid, block, 0, s>>>(p);
  } else {
    require(p.ab_type == GemmType::bf16, "train_gemm_cuda", "inputs must be f32 or bf16");
    if (p.c_type == GemmType::f32)
      gemm_fallback_kernel<__nv_bfloat16, float><<<grid, block, 0, s>>>(p);
    else
      gemm_fallback_kernel<__nv_bfloat16, __nv_bfloat16><<<grid, block, 0, s>>>(p);
  }
  MAMBA_CUDA_CHECK_LAUNCH("train_gemm_cuda (fallback)");
}

}  // namespace

bool train_gemm_cuda(const TrainGemmParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "train_gemm_cuda";
  require(p.m >= 0 && p.n >= 0 && p.k >= 0, op, "negative size");
  require(p.a && p.b && p.c, op, "null pointer");
  require(p.lda >= (p.trans_a ? p.m : p.k), op, "lda " + std::to_string(p.lda) + " < the row length of A");
  require(p.ldb >= (p.trans_b ? p.k : p.n), op, "ldb " + std::to_string(p.ldb) + " < the row length of B");
  require(p.ldc >= p.n, op, "ldc " + std::to_string(p.ldc) + " < n " + std::to_string(p.n));
  require(p.c_type == GemmType::f32 || p.c_type == p.ab_type, op, "C must be f32 or the input type");
  if (p.m == 0 || p.n == 0) return true;
  if (p.k == 0 || p.force_fallback) {
    gemm_fallback(p, stream);
    return false;
  }
  int dev = 0;
  MAMBA_CUDA_CHECK(op, cudaGetDevice(&dev));
  Plan plan;
  cublasLtHandle_t h;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto hit = g_handles.find(dev);
    if (hit == g_handles.end()) {
      cublasLtHandle_t nh;
      if (cublasLtCreate(&nh) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("train_gemm_cuda: cublasLtCreate failed");
      hit = g_handles.emplace(dev, nh).first;
    }
    h = hit->second;
    const PlanKey key{dev, p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.trans_a, p.trans_b, static_cast<int>(p.ab_type),
                      static_cast<int>(p.c_type), align_of(p.a), align_of(p.b), align_of(p.c), p.beta != 0.f};
    auto it = g_plans.find(key);
    if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(h, p, workspace_bytes)).first;
    plan = it->second;
  }
  if (plan.ok) {
    const cublasStatus_t st = cublasLtMatmul(h, plan.op, &p.alpha, p.b, plan.la, p.a, plan.lb, &p.beta, p.c, plan.lc,
                                             p.c, plan.lc, &plan.algo, workspace, workspace_bytes, stream);
    if (st == CUBLAS_STATUS_SUCCESS) return true;
  }
  gemm_fallback(p, stream);
  return false;
}

// ---- RMSNorm ------------------------------------------------------------------------------
namespace {
template <class T>
__global__ void rms_fwd_kernel(int64_t dim, const float* r, const float* w, float eps, T* y) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* rr = r + row * dim;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) s += rr[j] * rr[j];
  s = block_sum(s, sh);
  const float rstd = rsqrtf(s / static_cast<float>(dim) + eps);
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) stf(y + row * dim + j, rr[j] * rstd * w[j]);
}

// dr = dr_add + rstd * (w dy - r rstd^2 mean(w dy r)); rstd per row kept for dw.
template <class T>
__global__ void rms_bwd_rows_kernel(int64_t dim, const float* r, const float* w, float eps, const T* dy,
                                    const float* dr_add, float* dr, float* rstd_out) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* rr = r + row * dim;
  const T* g = dy + row * dim;
  float ss = 0.f, dot = 0.f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    const float v = rr[j];
    ss += v * v;
    dot += w[j] * ldf(g + j) * v;
  }
  ss = block_sum(ss, sh);
  dot = block_sum(dot, sh);
  const float rstd = rsqrtf(ss / static_cast<float>(dim) + eps);
  const float c = rstd * rstd * dot / static_cast<float>(dim);
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    const float add = dr_add ? dr_add[row * dim + j] : 0.f;
    dr[row * dim + j] = add + rstd * (w[j] * ldf(g + j) - rr[j] * c);
  }
  if (threadIdx.x == 0) rstd_out[row] = rstd;
}

// partial[chunk][j] = sum over the chunk's rows of dy r rstd
template <class T>
__global__ void rms_bwd_dw_partial_kernel(int64_t rows, int64_t dim, const float* r, const T* dy, const float* rstd,
                                          float* partial) {
  const int64_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const int64_t r0 = blockIdx.y * kChunkRows, r1 = min(rows, r0 + kChunkRows);
  float acc = 0.f;
  for (int64_t i = r0; i < r1; ++i) acc += ldf(dy + i * dim + j) * r[i * dim + j] * rstd[i];
  partial[blockIdx.y * dim + j] = acc;
}

__global__ void sum_chunks_kernel(int64_t chunks, int64_t cols, const float* partial, float* out) {
  const int64_t j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  float acc = 0.f;
  for (int64_t c = 0; c < chunks; ++c) acc += partial[c * cols + j];
  out[j] = acc;
}

int norm_threads(int64_t dim) { return dim >= 1024 ? 1024 : dim >= 256 ? 256 : 128; }
}  // namespace

template <class T>
void gt_rms_norm_fwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, T* y,
                          cudaStream_t stream) {
  require(rows >= 0 && dim > 0, "gt_rms_norm_fwd_cuda", "rows >= 0 and dim > 0 required");
  require(rows <= 2147483647, "gt_rms_norm_fwd_cuda", "rows exceeds 2^31 - 1");
  if (rows == 0) return;
  rms_fwd_kernel<T><<<static_cast<unsigned>(rows), norm_threads(dim), 0, stream>>>(dim, r, w, eps, y);
  MAMBA_CUDA_CHECK_LAUNCH("gt_rms_norm_fwd_cuda");
}

size_t gt_rms_norm_bwd_workspace_bytes(int64_t rows, int64_t dim) {
  return static_cast<size_t>(rows + cdiv(rows, kChunkRows) * dim + 64) * sizeof(float);
}

template <class T>
void gt_rms_norm_bwd_cuda(int64_t rows, int64_t dim, const float* r, const float* w, float eps, const T* dy,
                          const float* dr_add, float* dr, float* dw, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream) {
  const char* op = "gt_rms_norm_bwd_cuda";
  require(rows > 0 && dim > 0, op, "rows > 0 and dim > 0 required");
  require(workspace_bytes >= gt_rms_norm_bwd_workspace_bytes(rows, dim), op, "workspace too small");
  float* rstd = static_cast<float*>(workspace);
  float* partial = rstd + rows;
  const int64_t chunks = cdiv(rows, kChunkRows);
  require(chunks <= 65535, op, "rows exceed 65535 * 256");
  rms_bwd_rows_kernel<T><<<static_cast<unsigned>(rows), norm_threads(dim), 0, stream>>>(dim, r, w, eps, dy, dr_add, dr, rstd);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  dim3 grid(static_cast<unsigned>(cdiv(dim, 128)), static_cast<unsigned>(chunks));
  rms_bwd_dw_partial_kernel<T><<<grid, 128, 0, stream>>>(rows, dim, r, dy, rstd, partial);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  sum_chunks_kernel<<<static_cast<unsigned>(cdiv(dim, 128)), 128, 0, stream>>>(chunks, dim, partial, dw);
  MAMBA_CUDA_CHECK_LAUNCH(op);
}

// ---- conv1d backward ------------------------------------------------------------------------
namespace {
// g[b, t, c] = dout * silu'(pre), pre = bias + sum_k w[c, k] x[b, t - (K-1) + k, c]
template <class T>
__global__ void conv_bwd_g_kernel(int64_t batch, int64_t l, int64_t C, int K, const T* x, int64_t x_sb, int64_t x_st,
                                  const float* w, const float* bias, const T* dout, float* g) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= batch * l * C) return;
  const int64_t c = idx % C, t = (idx / C) % l, b = idx / (C * l);
  float pre = bias ? bias[c] : 0.f;
  for (int k = 0; k < K; ++k) {
    const int64_t s = t - (K - 1) + k;
    if (s >= 0) pre = fmaf(w[c * K + k], ldf(x + b * x_sb + s * x_st + c), pre);
  }
  const float sg = 1.f / (1.f + __expf(-pre));
  g[idx] = ldf(dout + idx) * sg * (1.f + pre * (1.f - sg));
}
template <class T>
__global__ void conv_bwd_dx_kernel(int64_t batch, int64_t l, int64_t C, int K, const float* w, const float* g, T* dx,
                                   int64_t dx_sb, int64_t dx_st) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= batch * l * C) return;
  const int64_t c = idx % C, s = (idx / C) % l, b = idx / (C * l);
  float acc = 0.f;
  for (int k = 0; k < K; ++k) {
    const int64_t t = s + (K - 1) - k;
    if (t < l) acc = fmaf(w[c * K + k], g[(b * l + t) * C + c], acc);
  }
  stf(dx + b * dx_sb + s * dx_st + c, acc);
}
// partial[chunk][c][k] (k < K: dweight, k == K: dbias) over the chunk's (b, t) rows
template <class T>
__global__ void conv_bwd_dw_partial_kernel(int64_t rows, int64_t l, int64_t C, int K, const T* x, int64_t x_sb,
                                           int64_t x_st, const float* g, float* partial) {
  const int64_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = blockIdx.y * kChunkRows, r1 = min(rows, r0 + kChunkRows);
  float acc[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / l, t = r % l;
    const float gv = g[r * C + c];
    acc[4] += gv;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k >= K) break;
      const int64_t s = t - (K - 1) + k;
      if (s >= 0) acc[k] = fmaf(gv, ldf(x + b * x_sb + s * x_st + c), acc[k]);
    }
  }
  float* o = partial + (blockIdx.y * C + c) * (K + 1);
  for (int k = 0; k < K; ++k) o[k] = acc[k];
  o[K] = acc[4];
}
__global__ void conv_bwd_dw_final_kernel(int64_t chunks, int64_t C, int K, const float* partial, float* dweight,
                                         float* dbias) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= C * (K + 1)) return;
  float acc = 0.f;
  for (int64_t ch = 0; ch < chunks; ++ch) acc += partial[ch * C * (K + 1) + i];
  const int64_t c = i / (K + 1);
  const int k = static_cast<int>(i % (K + 1));
  if (k < K)
    dweight[c * K + k] = acc;
  else if (dbias)
    dbias[c] = acc;
}
}  // namespace

size_t gt_conv1d_bwd_workspace_bytes(int64_t batch, int64_t seqlen, int64_t channels, int64_t width) {
  const int64_t rows = batch * seqlen;
  return static_cast<size_t>(rows * channels + cdiv(rows, kChunkRows) * channels * (width + 1) + 64) * sizeof(float);
}

template <class T>
void gt_conv1d_bwd_cuda(int64_t batch, int64_t seqlen, int64_t channels, int64_t width, const T* x, int64_t x_sb,
                        int64_t x_st, const float* weight, const float* bias, const T* dout, T* dx, int64_t dx_sb,
                        int64_t dx_st, float* dweight, float* dbias, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream) {
  const char* op = "gt_conv1d_bwd_cuda";
  require(width >= 1 && width <= 4, op, "width " + std::to_string(width) + " outside [1, 4]");
  require(batch > 0 && seqlen > 0 && channels > 0, op, "empty input");
  require(workspace_bytes >= gt_conv1d_bwd_workspace_bytes(batch, seqlen, channels, width), op, "workspace too small");
  const int64_t rows = batch * seqlen, n = rows * channels, chunks = cdiv(rows, kChunkRows);
  require(chunks <= 65535, op, "batch * seqlen exceeds 65535 * 256");
  float* g = static_cast<float*>(workspace);
  float* partial = g + n;
  const int K = static_cast<int>(width);
  conv_bwd_g_kernel<T><<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(batch, seqlen, channels, K, x, x_sb,
                                                                                 x_st, weight, bias, dout, g);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  conv_bwd_dx_kernel<T><<<static_cast<unsigned>(cdiv(n, 256)), 256, 0, stream>>>(batch, seqlen, channels, K, weight, g,
                                                                                  dx, dx_sb, dx_st);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  dim3 grid(static_cast<unsigned>(cdiv(channels, 128)), static_cast<unsigned>(chunks));
  conv_bwd_dw_partial_kernel<T><<<grid, 128, 0, stream>>>(rows, seqlen, channels, K, x, x_sb, x_st, g, partial);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  conv_bwd_dw_final_kernel<<<static_cast<unsigned>(cdiv(channels * (K + 1), 256)), 256, 0, stream>>>(
      chunks, channels, K, partial, dweight, dbias);
  MAMBA_CUDA_CHECK_LAUNCH(op);
}

// ---- cross-entropy ----------------------------------------------------------------------------
namespace {
template <class T>
__global__ void ce_rows_kernel(int64_t V, int64_t stride, T* logits, const int64_t* targets, float scale,
                               float* loss_rows) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  T* x = logits + row * stride;
  const int64_t tgt = targets[row];
  if (tgt < 0) {
    for (int64_t j = threadIdx.x; j < stride; j += blockDim.x) stf(x + j, 0.f);
    if (threadIdx.x == 0) loss_rows[row] = 0.f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, ldf(x + j));
  mx = block_max(mx, sh);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += __expf(ldf(x + j) - mx);
  s = block_sum(s, sh);
  const float xt = ldf(x + tgt);  // read before anyone writes (block_sum ended with a barrier)
  __syncthreads();
  const float lse = mx + logf(s);
  for (int64_t j = threadIdx.x; j < stride; j += blockDim.x) {
    float d = 0.f;
    if (j < V) d = (__expf(ldf(x + j) - lse) - (j == tgt ? 1.f : 0.f)) * scale;
    stf(x + j, d);
  }
  if (threadIdx.x == 0) loss_rows[row] = lse - xt;
}
__global__ void sum_all_kernel(int64_t n, const float* v, float* out) {
  __shared__ float sh[32];
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += v[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) *out = acc;
}
}  // namespace

size_t gt_cross_entropy_workspace_bytes(int64_t rows) { return static_cast<size_t>(rows + 64) * sizeof(float); }

template <class T>
void gt_cross_entropy_cuda(int64_t rows, int64_t V, int64_t row_stride, T* logits, const int64_t* targets,
                           float scale, float* loss_sum, void* workspace, size_t workspace_bytes,
                           cudaStream_t stream) {
  const char* op = "gt_cross_entropy_cuda";
  require(rows > 0 && V > 0 && row_stride >= V, op, "rows > 0, V > 0 and row_stride >= V required");
  require(rows <= 2147483647, op, "rows exceeds 2^31 - 1");
  require(workspace_bytes >= gt_cross_entropy_workspace_bytes(rows), op, "workspace too small");
  float* loss_rows = static_cast<float*>(workspace);
  ce_rows_kernel<T><<<static_cast<unsigned>(rows), 1024, 0, stream>>>(V, row_stride, logits, targets, scale, loss_rows);
  MAMBA_CUDA_CHECK_LAUNCH(op);
  sum_all_kernel<<<1, 1024, 0, stream>>>(rows, loss_rows, loss_sum);
  MAMBA_CUDA_CHECK_LAUNCH(op);
}

// ---- embedding backward, elementwise ----------------------------------------------------------
namespace {
__global__ void emb_bwd_kernel(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const float* dy,
                               float* dtable) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= rows * dim) return;
  const int64_t r = idx / dim, j = idx % dim, id = ids[r];
  if (id < 0 || id >= vocab) return;
  atomicAdd(dtable + id * dim + j, dy[idx]);
}
__global__ void cast_kernel(int64_t n, const float* x, __nv_bfloat16* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(x[i]);
}
__global__ void neg_exp_kernel(int64_t n, const float* x, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = -expf(x[i]);
}
__global__ void mul_kernel(int64_t n, const float* a, const float* b, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = a[i] * b[i];
}
unsigned blocks(int64_t n, int t = 256) { return static_cast<unsigned>(cdiv(n, t)); }
}  // namespace

void gt_embedding_bwd_accumulate_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const float* dy,
                                      float* dtable, cudaStream_t stream) {
  if (rows * dim == 0) return;
  emb_bwd_kernel<<<blocks(rows * dim), 256, 0, stream>>>(rows, dim, vocab, ids, dy, dtable);
  MAMBA_CUDA_CHECK_LAUNCH("gt_embedding_bwd_accumulate_cuda");
}
void gt_cast_f32_to_bf16_cuda(int64_t n, const float* x, __nv_bfloat16* y, cudaStream_t stream) {
  if (n == 0) return;
  cast_kernel<<<blocks(n), 256, 0, stream>>>(n, x, y);
  MAMBA_CUDA_CHECK_LAUNCH("gt_cast_f32_to_bf16_cuda");
}
void gt_neg_exp_cuda(int64_t n, const float* x, float* y, cudaStream_t stream) {
  if (n == 0) return;
  neg_exp_kernel<<<blocks(n), 256, 0, stream>>>(n, x, y);
  MAMBA_CUDA_CHECK_LAUNCH("gt_neg_exp_cuda");
}
void gt_mul_cuda(int64_t n, const float* a, const float* b, float* y, cudaStream_t stream) {
  if (n == 0) return;
  mul_kernel<<<blocks(n), 256, 0, stream>>>(n, a, b, y);
  MAMBA_CUDA_CHECK_LAUNCH("gt_mul_cuda");
}

// ---- transpose ----------------------------------------------------------------------------------
namespace {
template <class TI, class TO>
__global__ void transpose_kernel(int64_t P, int64_t Q, const TI* src, int64_t sld, int64_t sbs, TO* dst, int64_t dld,
                                 int64_t dbs) {
  __shared__ float tile[32][33];
  const int64_t bt = blockIdx.z;
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * 32, q0 = static_cast<int64_t>(blockIdx.x) * 32;
  const TI* s = src + bt * sbs;
  TO* d = dst + bt * dbs;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t p = p0 + i, q = q0 + threadIdx.x;
    if (p < P && q < Q) tile[i][threadIdx.x] = ldf(s + p * sld + q);
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t q = q0 + i, p = p0 + threadIdx.x;
    if (p < P && q < Q) stf(d + q * dld + p, tile[threadIdx.x][i]);
  }
}
}  // namespace

void gt_transpose_cuda(int64_t batch, int64_t P, int64_t Q, const void* src, bool src_bf16, int64_t src_ld,
                       int64_t src_bs, void* dst, bool dst_bf16, int64_t dst_ld, int64_t dst_bs, cudaStream_t stream) {
  const char* op = "gt_transpose_cuda";
  require(batch >= 0 && P >= 0 && Q >= 0, op, "negative size");
  if (batch == 0 || P == 0 || Q == 0) return;
  require(batch <= 65535 && cdiv(P, 32) <= 65535, op, "batch and P / 32 must be <= 65535");
  dim3 grid(static_cast<unsigned>(cdiv(Q, 32)), static_cast<unsigned>(cdiv(P, 32)), static_cast<unsigned>(batch));
  dim3 block(32, 8);
  using bf = __nv_bfloat16;
  if (!src_bf16 && !dst_bf16)
    transpose_kernel<float, float><<<grid, block, 0, stream>>>(P, Q, static_cast<const float*>(src), src_ld, src_bs,
                                                               static_cast<float*>(dst), dst_ld, dst_bs);
  else if (!src_bf16 && dst_bf16)
    transpose_kernel<float, bf><<<grid, block, 0, stream>>>(P, Q, static_cast<const float*>(src), src_ld, src_bs,
                                                            static_cast<bf*>(dst), dst_ld, dst_bs);
  else if (src_bf16 && !dst_bf16)
    transpose_kernel<bf, float><<<grid, block, 0, stream>>>(P, Q, static_cast<const bf*>(src), src_ld, src_bs,
                                                            static_cast<float*>(dst), dst_ld, dst_bs);
  else
    transpose_kernel<bf, bf><<<grid, block, 0, stream>>>(P, Q, static_cast<const bf*>(src), src_ld, src_bs,
                                                         static_cast<bf*>(dst), dst_ld, dst_bs);
  MAMBA_CUDA_CHECK_LAUNCH(op);
}

// ---- optimiser ----------------------------------------------------------------------------------
namespace {
constexpr int kSumBlocks = 1024;
__global__ void sumsq_partial_kernel(int64_t n, const float* x, float* partial) {
  __shared__ float sh[32];
  float acc = 0.f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    acc = fmaf(x[i], x[i], acc);
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
__global__ void adamw_kernel(int64_t n, float* p, float* g, float* m, float* v, __nv_bfloat16* pb, float lr, float b1,
                             float b2, float eps, float wd, float bc1, float bc2_sqrt, float max_norm,
                             const float* sumsq) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float gv = g[i];
  if (max_norm > 0.f) {
    const float coef = max_norm / (sqrtf(*sumsq) + 1e-6f);
    if (coef < 1.f) {
      gv *= coef;
      g[i] = gv;
    }
  }
  float pv = p[i];
  if (wd != 0.f) pv *= 1.f - lr * wd;
  const float mv = b1 * m[i] + (1.f - b1) * gv;
  const float vv = b2 * v[i] + (1.f - b2) * gv * gv;
  m[i] = mv;
  v[i] = vv;
  pv -= (lr / bc1) * mv / (sqrtf(vv) / bc2_sqrt + eps);
  p[i] = pv;
  if (pb) pb[i] = __float2bfloat16(pv);
}
}  // namespace

size_t gt_sumsq_workspace_bytes() { return kSumBlocks * sizeof(float); }

void gt_sumsq_cuda(int64_t n, const float* x, float* sumsq, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream) {
  require(workspace_bytes >= gt_sumsq_workspace_bytes(), "gt_sumsq_cuda", "workspace too small");
  float* partial = static_cast<float*>(workspace);
  sumsq_partial_kernel<<<kSumBlocks, 256, 0, stream>>>(n, x, partial);
  MAMBA_CUDA_CHECK_LAUNCH("gt_sumsq_cuda");
  sum_all_kernel<<<1, 1024, 0, stream>>>(kSumBlocks, partial, sumsq);
  MAMBA_CUDA_CHECK_LAUNCH("gt_sumsq_cuda");
}

void gt_adamw_cuda(int64_t n, float* param, float* grad, float* exp_avg, float* exp_avg_sq, __nv_bfloat16* param_bf16,
                   float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step, float max_grad_norm,
                   const float* grad_sumsq, cudaStream_t stream) {
  require(step >= 1, "gt_adamw_cuda", "step must be >= 1");
  if (n == 0) return;
  // Bias corrections in double on the host, as the CPU optimiser computes them.
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_kernel<<<blocks(n), 256, 0, stream>>>(n, param, grad, exp_avg, exp_avg_sq, param_bf16, lr, beta1, beta2, eps,
                                              weight_decay, static_cast<float>(bc1),
                                              static_cast<float>(std::sqrt(bc2)), max_grad_norm, grad_sumsq);
  MAMBA_CUDA_CHECK_LAUNCH("gt_adamw_cuda");
}

#define MAMBA_GT_INST(T)                                                                                              \
  template void gt_rms_norm_fwd_cuda<T>(int64_t, int64_t, const float*, const float*, float, T*, cudaStream_t);     \
  template void gt_rms_norm_bwd_cuda<T>(int64_t, int64_t, const float*, const float*, float, const T*, const float*, \
                                        float*, float*, void*, size_t, cudaStream_t);                                \
  template void gt_conv1d_bwd_cuda<T>(int64_t, int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const float*,  \
                                      const float*, const T*, T*, int64_t, int64_t, float*, float*, void*, size_t,   \
                                      cudaStream_t);                                                                 \
  template void gt_cross_entropy_cuda<T>(int64_t, int64_t, int64_t, T*, const int64_t*, float, float*, void*, size_t, \
                                         cudaStream_t);
MAMBA_GT_INST(float)
MAMBA_GT_INST(__nv_bfloat16)
#undef MAMBA_GT_INST

}  // namespace mamba::kernels::cuda
