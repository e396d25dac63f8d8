// Glue of the MambaLM training path (train_glue_cuda.h): a cuBLASLt GEMM with transposes,
// beta and strided batches, the batched tiled transpose, casts and two elementwise kernels.
// The norms, cross-entropy, conv1d backward, embedding backward, sum of squares and AdamW
// are the shared training kernels of train_kernels_cuda.h.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/train_glue_cuda.h"

#include "device_common.cuh"

namespace mamba::kernels::cuda {
namespace {

__device__ __forceinline__ float ldf(const float* p) { return *p; }
__device__ __forceinline__ float ldf(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void stf(float* p, float v) { *p = v; }
__device__ __forceinline__ void stf(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

// ---- GEMM ---------------------------------------------------------------------------------
template <class TA, class TC>
__global__ void gemm_fallback_kernel(TrainGemmParams p) {
  __shared__ float as[16][17], bs[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
  const TA* A = static_cast<const TA*>(p.a) + blockIdx.z * p.stride_a;
  const TA* B = static_cast<const TA*>(p.b) + blockIdx.z * p.stride_b;
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
    TC* C = static_cast<TC*>(p.c) + blockIdx.z * p.stride_c + row * p.ldc + col;
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
                           int, bool, int64_t, int64_t, int64_t, int64_t>;
std::mutex g_mu;
std::map<int, cublasLtHandle_t> g_handles;
std::map<PlanKey, Plan> g_plans;

cudaDataType_t cuda_type(GemmType t) { return t == GemmType::f32 ? CUDA_R_32F : t == GemmType::bf16 ? CUDA_R_16BF : CUDA_R_16F; }
int esize(GemmType t) { return t == GemmType::f32 ? 4 : 2; }
// The alignment every batch's matrix has: of the pointer and of the batch stride in bytes.
int align_of(const void* p, int64_t stride_bytes = 0) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(stride_bytes);
  int al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}
int align_a(const TrainGemmParams& p) { return align_of(p.a, p.batch > 1 ? p.stride_a * esize(p.ab_type) : 0); }
int align_b(const TrainGemmParams& p) { return align_of(p.b, p.batch > 1 ? p.stride_b * esize(p.ab_type) : 0); }
int align_c(const TrainGemmParams& p) { return align_of(p.c, p.batch > 1 ? p.stride_c * esize(p.c_type) : 0); }

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
  if (p.batch > 1) {
    // cuBLASLt's A is our B, its B our A (see above).
    const int32_t bc = static_cast<int32_t>(p.batch);
    const int64_t sa = p.stride_b, sb = p.stride_a, sc = p.stride_c;
    for (auto [l, st] : {std::make_pair(pl.la, sa), std::make_pair(pl.lb, sb), std::make_pair(pl.lc, sc)}) {
      ok &= cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)) ==
            CUBLAS_STATUS_SUCCESS;
      ok &= cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof(st)) ==
            CUBLAS_STATUS_SUCCESS;
    }
    if (!ok) return pl;
  }
  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return pl;
  uint64_t wsb = ws;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb));
  uint32_t aa = align_b(p), ba = align_a(p), ca = align_c(p);
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
  dim3 block(16, 16), grid(static_cast<unsigned>(cdiv(p.n, 16)), static_cast<unsigned>(cdiv(p.m, 16)),
                           static_cast<unsigned>(p.batch));
  require(grid.y <= 65535, "train_gemm_cuda", "m too large for the fallback kernel");
  require(p.batch <= 65535, "train_gemm_cuda", "batch " + std::to_string(p.batch) + " exceeds 65535");
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

size_t train_gemm_cuda_workspace_bytes() { return size_t{32} << 20; }

bool train_gemm_cuda(const TrainGemmParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const char* op = "train_gemm_cuda";
  require(p.m >= 0 && p.n >= 0 && p.k >= 0, op, "negative size");
  require(p.a && p.b && p.c, op, "null pointer");
  require(p.lda >= (p.trans_a ? p.m : p.k), op, "lda " + std::to_string(p.lda) + " < the row length of A");
  require(p.ldb >= (p.trans_b ? p.k : p.n), op, "ldb " + std::to_string(p.ldb) + " < the row length of B");
  require(p.ldc >= p.n, op, "ldc " + std::to_string(p.ldc) + " < n " + std::to_string(p.n));
  require(p.c_type == GemmType::f32 || p.c_type == p.ab_type, op, "C must be f32 or the input type");
  require(p.batch >= 1, op, "batch must be >= 1, got " + std::to_string(p.batch));
  require(p.batch == 1 || (p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= p.m * p.ldc), op,
          "batch strides must be >= 0 and stride_c >= m * ldc (batches of C must not overlap)");
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
                      static_cast<int>(p.c_type), align_a(p), align_b(p), align_c(p), p.beta != 0.f,
                      p.batch, p.stride_a, p.stride_b, p.stride_c};
    auto it = g_plans.find(key);
    if (it == g_plans.end()) it = g_plans.emplace(key, make_plan(h, p, workspace_bytes)).first;
    plan = it->second;
  }
  if (plan.ok) {
    const cublasStatus_t st = cublasLtMatmul(h, plan.op, &p.alpha, p.b, plan.la, p.a, plan.lb, &p.beta, p.c, plan.lc,
                                             p.c, plan.lc, &plan.algo, workspace, workspace_bytes, stream);
    if (st == CUBLAS_STATUS_SUCCESS) return true;
  }
  if (p.batch > 1) {
    // No batched algorithm for this layout: one GEMM per batch (each may still find one).
    bool all = true;
    TrainGemmParams q = p;
    q.batch = 1;
    for (int64_t i = 0; i < p.batch; ++i) {
      q.a = static_cast<const char*>(p.a) + i * p.stride_a * esize(p.ab_type);
      q.b = static_cast<const char*>(p.b) + i * p.stride_b * esize(p.ab_type);
      q.c = static_cast<char*>(p.c) + i * p.stride_c * esize(p.c_type);
      all &= train_gemm_cuda(q, workspace, workspace_bytes, stream);
    }
    return all;
  }
  gemm_fallback(p, stream);
  return false;
}

// ---- elementwise ----------------------------------------------------------------------------
namespace {
__global__ void cast_kernel(int64_t n, const float* x, __nv_bfloat16* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(x[i]);
}
// 8 values per thread and iteration: two 16-byte loads, one 16-byte store (x 16-byte and y
// 16-byte aligned, n % 8 == 0); a grid-stride loop over n / 8 groups.
__global__ void cast8_kernel(int64_t groups, const float4* __restrict__ x, uint4* __restrict__ y) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += stride) {
    const float4 a = __ldg(x + 2 * g), b = __ldg(x + 2 * g + 1);
    const __nv_bfloat162 p0 = __floats2bfloat162_rn(a.x, a.y), p1 = __floats2bfloat162_rn(a.z, a.w);
    const __nv_bfloat162 p2 = __floats2bfloat162_rn(b.x, b.y), p3 = __floats2bfloat162_rn(b.z, b.w);
    uint4 o;
    o.x = *reinterpret_cast<const uint32_t*>(&p0);
    o.y = *reinterpret_cast<const uint32_t*>(&p1);
    o.z = *reinterpret_cast<const uint32_t*>(&p2);
    o.w = *reinterpret_cast<const uint32_t*>(&p3);
    y[g] = o;
  }
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
// out[i] = sum_j src[j * n + i] in order j = 0..batch-1; 4 consecutive i per thread (16-byte
// accesses when n % 4 == 0 and the pointers are 16-byte aligned).
__global__ void sum_batches_kernel(int64_t n, int64_t batch, const float* src, float* out, bool vec) {
  const int64_t i0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 4;
  if (i0 >= n) return;
  if (vec) {
    float4 acc = __ldg(reinterpret_cast<const float4*>(src + i0));
    for (int64_t j = 1; j < batch; ++j) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(src + j * n + i0));
      acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
    }
    *reinterpret_cast<float4*>(out + i0) = acc;
  } else {
    for (int64_t i = i0; i < i0 + 4 && i < n; ++i) {
      float acc = src[i];
      for (int64_t j = 1; j < batch; ++j) acc += src[j * n + i];
      out[i] = acc;
    }
  }
}
}  // namespace

void gt_cast_f32_to_bf16_cuda(int64_t n, const float* x, __nv_bfloat16* y, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (reinterpret_cast<uintptr_t>(y) & 15) == 0) {
    // (MAMBA_GT_CAST=plain: the one-element kernel, for A/B runs.)
    static const bool plain = [] {
      const char* e = std::getenv("MAMBA_GT_CAST");
      return e && std::string(e) == "plain";
    }();
    if (!plain) {
      const int64_t groups = n / 8;
      const unsigned grid = static_cast<unsigned>(std::min<int64_t>(cdiv(groups, 256), 4096));
      cast8_kernel<<<grid, 256, 0, stream>>>(groups, reinterpret_cast<const float4*>(x), reinterpret_cast<uint4*>(y));
      MAMBA_CUDA_CHECK_LAUNCH("gt_cast_f32_to_bf16_cuda");
      return;
    }
  }
  cast_kernel<<<blocks(n), 256, 0, stream>>>(n, x, y);
  MAMBA_CUDA_CHECK_LAUNCH("gt_cast_f32_to_bf16_cuda");
}
void gt_sum_batches_cuda(int64_t n, int64_t batch, const float* src, float* out, cudaStream_t stream) {
  const char* op = "gt_sum_batches_cuda";
  require(n >= 0 && batch >= 1, op, "n must be >= 0 and batch >= 1");
  if (n == 0) return;
  require(src && out, op, "src and out must not be null");
  const bool vec = n % 4 == 0 && (reinterpret_cast<uintptr_t>(src) & 15) == 0 && (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  sum_batches_kernel<<<blocks(cdiv(n, 4)), 256, 0, stream>>>(n, batch, src, out, vec);
  MAMBA_CUDA_CHECK_LAUNCH(op);
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
// MAMBA_GT_TRANSPOSE_PAIRS=0: every transpose through the 32 x 32 element kernel (A/B runs).
bool pairs_enabled() {
  static const bool v = [] {
    const char* e = std::getenv("MAMBA_GT_TRANSPOSE_PAIRS");
    return !(e && std::string(e) == "0");
  }();
  return v;
}
// bf16 -> bf16 with even sizes, strides and 4-byte aligned bases: 64 x 64 tiles, bf16 pairs
// (4-byte accesses: a warp moves 128 contiguous bytes per row in both phases).
__global__ void transpose_bf16x2_kernel(int64_t P, int64_t Q, const __nv_bfloat16* src, int64_t sld, int64_t sbs,
                                        __nv_bfloat16* dst, int64_t dld, int64_t dbs) {
  __shared__ __nv_bfloat16 tile[64][66];
  const int64_t bt = blockIdx.z;
  const int64_t p0 = static_cast<int64_t>(blockIdx.y) * 64, q0 = static_cast<int64_t>(blockIdx.x) * 64;
  const __nv_bfloat16* sp = src + bt * sbs;
  __nv_bfloat16* dp = dst + bt * dbs;
  const int tx = threadIdx.x;
  for (int i = threadIdx.y; i < 64; i += 8) {
    const int64_t p = p0 + i, q = q0 + 2 * tx;
    if (p < P && q < Q) {
      const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(sp + p * sld + q);
      tile[i][2 * tx] = v.x;
      tile[i][2 * tx + 1] = v.y;
    }
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 64; i += 8) {
    const int64_t q = q0 + i, p = p0 + 2 * tx;
    if (p < P && q < Q) {
      __nv_bfloat162 v;
      v.x = tile[2 * tx][i];
      v.y = tile[2 * tx + 1][i];
      *reinterpret_cast<__nv_bfloat162*>(dp + q * dld + p) = v;
    }
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
  const bool pairs = src_bf16 && dst_bf16 && P % 2 == 0 && Q % 2 == 0 && src_ld % 2 == 0 && dst_ld % 2 == 0 &&
                     src_bs % 2 == 0 && dst_bs % 2 == 0 && (reinterpret_cast<uintptr_t>(src) & 3) == 0 &&
                     (reinterpret_cast<uintptr_t>(dst) & 3) == 0 && pairs_enabled();
  if (pairs) {
    dim3 g2(static_cast<unsigned>(cdiv(Q, 64)), static_cast<unsigned>(cdiv(P, 64)), static_cast<unsigned>(batch));
    transpose_bf16x2_kernel<<<g2, block, 0, stream>>>(P, Q, static_cast<const bf*>(src), src_ld, src_bs,
                                                      static_cast<bf*>(dst), dst_ld, dst_bs);
  } else if (!src_bf16 && !dst_bf16)
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


}  // namespace mamba::kernels::cuda
