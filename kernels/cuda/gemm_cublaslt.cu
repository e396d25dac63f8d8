// y = x W^T (+ bias) through cuBLASLt, with a plan cache, an m <= 8 kernel and a fallback
// (gemm_cuda.h). Row-major y (m, n) is column-major y^T (n, m) = op(W) (n, k) * x^T (k, m):
// W (n, k) row-major is column-major (k, n), so op(A) = T; W (k, n) row-major (w_kn) is
// column-major (n, k), op(A) = N; x (m, k) row-major is column-major (k, m), op(B) = N.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/gemm_cuda.h"

namespace mamba::kernels::cuda {
namespace {

[[noreturn]] void gemm_fail(const GemmCudaParams& p, const std::string& what) {
  throw std::runtime_error("gemm_cuda (m " + std::to_string(p.m) + ", n " + std::to_string(p.n) + ", k " +
                           std::to_string(p.k) + "): " + what);
}

#define MAMBA_CUBLAS_CHECK(p, expr)                                                                   \
  do {                                                                                                \
    const cublasStatus_t st_ = (expr);                                                                \
    if (st_ != CUBLAS_STATUS_SUCCESS) gemm_fail(p, std::string(#expr) + " failed: status " + std::to_string(st_)); \
  } while (0)

cudaDataType_t cuda_type(GemmType t) {
  switch (t) {
    case GemmType::f32: return CUDA_R_32F;
    case GemmType::bf16: return CUDA_R_16BF;
    case GemmType::f16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

uint32_t alignment_of(const void* ptr) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct PlanKey {
  int device;
  int64_t m, n, k, ldx, ldw, ldy;
  bool w_kn, tf32, bias;
  GemmType in, out;
  uint32_t al_x, al_w, al_y, al_b;
  auto tie() const { return std::tie(device, m, n, k, ldx, ldw, ldy, w_kn, tf32, bias, in, out, al_x, al_w, al_y, al_b); }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  bool ok = false;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct State {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<PlanKey, Plan> plans;
  GemmPlanStats stats;
};
State& state() {
  static State* s = new State;  // never destroyed: plans may be used during static destruction
  return *s;
}

cublasLtHandle_t handle_for(const GemmCudaParams& p, State& s, int device) {
  auto it = s.handles.find(device);
  if (it != s.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  MAMBA_CUBLAS_CHECK(p, cublasLtCreate(&h));
  s.handles[device] = h;
  return h;
}

Plan build_plan(const GemmCudaParams& p, const PlanKey& key, cublasLtHandle_t h) {
  Plan plan;
  const cublasComputeType_t compute =
      p.in_type == GemmType::f32 ? (p.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) : CUBLAS_COMPUTE_32F;
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescCreate(&plan.op, compute, CUDA_R_32F));
  const cublasOperation_t ta = p.w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (key.bias) {
    const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
    MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)));
    const cudaDataType_t bt = cuda_type(p.out_type);
    MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  const cudaDataType_t it = cuda_type(p.in_type), ot = cuda_type(p.out_type);
  if (p.w_kn)
    MAMBA_CUBLAS_CHECK(p, cublasLtMatrixLayoutCreate(&plan.a, it, p.n, p.k, p.ldw));
  else
    MAMBA_CUBLAS_CHECK(p, cublasLtMatrixLayoutCreate(&plan.a, it, p.k, p.n, p.ldw));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatrixLayoutCreate(&plan.b, it, p.k, p.m, p.ldx));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatrixLayoutCreate(&plan.d, ot, p.n, p.m, p.ldy));

  cublasLtMatmulPreference_t pref = nullptr;
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = gemm_cuda_workspace_bytes();
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  // The heuristic assumes 256-byte aligned pointers unless told otherwise.
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.al_w, sizeof(uint32_t)));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.al_x, sizeof(uint32_t)));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.al_y, sizeof(uint32_t)));
  MAMBA_CUBLAS_CHECK(p, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.al_y, sizeof(uint32_t)));
  cublasLtMatmulHeuristicResult_t res{};
  int returned = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, plan.op, plan.a, plan.b, plan.d, plan.d, pref, 1, &res, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && returned > 0) {
    plan.ok = true;
    plan.algo = res.algo;
  }
  return plan;
}

// ---- the m <= 8 kernel: one warp per output column n, W read once in 16-byte pieces ----------

template <class T> __device__ __forceinline__ float ld_f(const T* p);
template <> __device__ __forceinline__ float ld_f<float>(const float* p) { return __ldg(p); }
template <> __device__ __forceinline__ float ld_f<__nv_bfloat16>(const __nv_bfloat16* p) { return __bfloat162float(*p); }
template <> __device__ __forceinline__ float ld_f<__half>(const __half* p) { return __half2float(*p); }
// Register values (elements of a local union): never through __ldg, which needs a global address.
__device__ __forceinline__ float cvt_f(float v) { return v; }
__device__ __forceinline__ float cvt_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float cvt_f(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ void st_f(T* p, float v);
template <> __device__ __forceinline__ void st_f<float>(float* p, float v) { *p = v; }
template <> __device__ __forceinline__ void st_f<__nv_bfloat16>(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ void st_f<__half>(__half* p, float v) { *p = __float2half_rn(v); }

constexpr int kWarpsPerBlock = 8;

// SPLIT warps share one output column (k split between them, partial sums added through
// shared memory), so a narrow W (x_proj: n = 80) still spreads over enough blocks to fill the
// chip; 8 / SPLIT columns per block. Loads unrolled so several 16-byte pieces are in flight.
template <class T, class O, int MM, int SPLIT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_small_m_kernel(int m, int64_t n, int64_t k,
                                                                            const T* __restrict__ x, int64_t ldx,
                                                                            const T* __restrict__ w, int64_t ldw,
                                                                            const O* __restrict__ bias, O* __restrict__ y,
                                                                            int64_t ldy) {
  static_assert(kWarpsPerBlock % SPLIT == 0, "SPLIT divides the warps of a block");
  __shared__ float red[kWarpsPerBlock][MM];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % SPLIT;
  const int64_t col = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock / SPLIT) + warp / SPLIT;
  const bool valid = col < n;
  if (SPLIT == 1 && !valid) return;
  const T* wr = w + (valid ? col : 0) * ldw;
  float acc[MM];
#pragma unroll
  for (int i = 0; i < MM; ++i) acc[i] = 0.f;
  constexpr int kVec = 16 / sizeof(T);
  bool vec_ok = (k % kVec) == 0 && (reinterpret_cast<uintptr_t>(wr) & 15) == 0 &&
                (reinterpret_cast<uintptr_t>(x) & 15) == 0 && (ldx % kVec) == 0;
  if (!valid) {
  } else if (vec_ok) {
    const int64_t nv = k / kVec;
#pragma unroll 4
    for (int64_t v = part * 32 + lane; v < nv; v += 32 * SPLIT) {
      union { uint4 u; T e[kVec]; } wb;
      wb.u = __ldg(reinterpret_cast<const uint4*>(wr) + v);
      float wf[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) wf[j] = cvt_f(wb.e[j]);
#pragma unroll
      for (int i = 0; i < MM; ++i) {
        if (i < m) {
          union { uint4 u; T e[kVec]; } xb;
          xb.u = __ldg(reinterpret_cast<const uint4*>(x + i * ldx) + v);
#pragma unroll
          for (int j = 0; j < kVec; ++j) acc[i] = fmaf(wf[j], cvt_f(xb.e[j]), acc[i]);
        }
      }
    }
  } else {
    for (int64_t kk = part * 32 + lane; kk < k; kk += 32 * SPLIT) {
      const float wv = ld_f<T>(wr + kk);
#pragma unroll
      for (int i = 0; i < MM; ++i)
        if (i < m) acc[i] = fmaf(wv, ld_f<T>(x + i * ldx + kk), acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < MM; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
  }
  if constexpr (SPLIT > 1) {
    if (lane == 0)
#pragma unroll
      for (int i = 0; i < MM; ++i) red[warp][i] = acc[i];
    __syncthreads();
    if (part != 0 || !valid) return;
#pragma unroll
    for (int i = 0; i < MM; ++i) {
      float t = 0.f;
#pragma unroll
      for (int q = 0; q < SPLIT; ++q) t += red[warp + q][i];  // fixed order: deterministic
      acc[i] = t;
    }
  }
  if (lane == 0) {
    const float b = bias ? ld_f<O>(bias + col) : 0.f;
#pragma unroll
    for (int i = 0; i < MM; ++i)
      if (i < m) st_f<O>(y + i * ldy + col, acc[i] + b);
  }
}

// Warps per column: the smallest SPLIT (1, 2, 4, 8) that gives at least 2 blocks per SM.
int small_m_split(int64_t n) {
  static const int sms = [] {
    int dev = 0, v = 132;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      v = 132;
    }
    return v;
  }();
  if (const char* e = std::getenv("MAMBA_GEMV_SPLIT")) {
    const int v = std::atoi(e);
    if (v == 1 || v == 2 || v == 4 || v == 8) return v;
  }
  for (int split = 1; split < 8; split *= 2)
    if ((n * split + kWarpsPerBlock - 1) / kWarpsPerBlock >= 2 * sms) return split;
  return 8;
}

template <class T, class O>
void launch_small_m(const GemmCudaParams& p, cudaStream_t s) {
  const int split = small_m_split(p.n);
  const int64_t cols_per_block = kWarpsPerBlock / split;
  const dim3 grid(static_cast<unsigned>((p.n + cols_per_block - 1) / cols_per_block));
  const int m = static_cast<int>(p.m);
  auto args = [&](auto kernel) {
    kernel<<<grid, kWarpsPerBlock * 32, 0, s>>>(m, p.n, p.k, static_cast<const T*>(p.x), p.ldx,
                                                static_cast<const T*>(p.w), p.ldw, static_cast<const O*>(p.bias),
                                                static_cast<O*>(p.y), p.ldy);
  };
  auto by_m = [&](auto split_tag) {
    constexpr int S = decltype(split_tag)::value;
    if (m <= 1) args(gemv_small_m_kernel<T, O, 1, S>);
    else if (m <= 2) args(gemv_small_m_kernel<T, O, 2, S>);
    else if (m <= 4) args(gemv_small_m_kernel<T, O, 4, S>);
    else args(gemv_small_m_kernel<T, O, 8, S>);
  };
  if (split == 1) by_m(std::integral_constant<int, 1>{});
  else if (split == 2) by_m(std::integral_constant<int, 2>{});
  else if (split == 4) by_m(std::integral_constant<int, 4>{});
  else by_m(std::integral_constant<int, 8>{});
  MAMBA_CUDA_CHECK_LAUNCH("gemm_cuda (m <= 8 kernel)");
}

// ---- fallback: 16x16 tiles through shared memory, any layout ------------------------------------

template <class T, class O>
__global__ void gemm_fallback_kernel(int64_t m, int64_t n, int64_t k, const T* __restrict__ x, int64_t ldx,
                                     const T* __restrict__ w, int64_t ldw, bool w_kn, const O* __restrict__ bias,
                                     O* __restrict__ y, int64_t ldy) {
  __shared__ float xs[16][17], ws[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
  float acc = 0.f;
  for (int64_t k0 = 0; k0 < k; k0 += 16) {
    const int64_t xk = k0 + tx;
    xs[ty][tx] = row < m && xk < k ? ld_f<T>(x + row * ldx + xk) : 0.f;
    const int64_t wc = blockIdx.x * 16 + ty, wk = k0 + tx;  // ws[ty][tx] = W[col = wc, k = wk]
    ws[ty][tx] = wc < n && wk < k ? ld_f<T>(w_kn ? w + wk * ldw + wc : w + wc * ldw + wk) : 0.f;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 16; ++j) acc = fmaf(xs[ty][j], ws[tx][j], acc);
    __syncthreads();
  }
  if (row < m && col < n) st_f<O>(y + row * ldy + col, acc + (bias ? ld_f<O>(bias + col) : 0.f));
}

template <class T, class O>
void launch_fallback(const GemmCudaParams& p, cudaStream_t s) {
  if ((p.m + 15) / 16 > 65535) gemm_fail(p, "m too large for the fallback kernel");
  const dim3 grid(static_cast<unsigned>((p.n + 15) / 16), static_cast<unsigned>((p.m + 15) / 16)), block(16, 16);
  gemm_fallback_kernel<T, O><<<grid, block, 0, s>>>(p.m, p.n, p.k, static_cast<const T*>(p.x), p.ldx,
                                                    static_cast<const T*>(p.w), p.ldw, p.w_kn,
                                                    static_cast<const O*>(p.bias), static_cast<O*>(p.y), p.ldy);
  MAMBA_CUDA_CHECK_LAUNCH("gemm_cuda (fallback kernel)");
}

void run_small_m(const GemmCudaParams& p, cudaStream_t s) {
  const bool f32_out = p.out_type == GemmType::f32;
  switch (p.in_type) {
    case GemmType::f32: return launch_small_m<float, float>(p, s);
    case GemmType::bf16: return f32_out ? launch_small_m<__nv_bfloat16, float>(p, s) : launch_small_m<__nv_bfloat16, __nv_bfloat16>(p, s);
    case GemmType::f16: return f32_out ? launch_small_m<__half, float>(p, s) : launch_small_m<__half, __half>(p, s);
  }
}

void run_fallback(const GemmCudaParams& p, cudaStream_t s) {
  const bool f32_out = p.out_type == GemmType::f32;
  switch (p.in_type) {
    case GemmType::f32: return launch_fallback<float, float>(p, s);
    case GemmType::bf16: return f32_out ? launch_fallback<__nv_bfloat16, float>(p, s) : launch_fallback<__nv_bfloat16, __nv_bfloat16>(p, s);
    case GemmType::f16: return f32_out ? launch_fallback<__half, float>(p, s) : launch_fallback<__half, __half>(p, s);
  }
}

void validate(const GemmCudaParams& p) {
  if (p.m < 0 || p.n < 0 || p.k < 0) gemm_fail(p, "negative dimension");
  if (p.out_type != GemmType::f32 && p.out_type != p.in_type)
    gemm_fail(p, "out_type must be f32 or the input type");
  if (p.tf32 && p.in_type != GemmType::f32) gemm_fail(p, "tf32 applies to f32 inputs only");
  if (p.m == 0 || p.n == 0) return;
  if (!p.x || !p.w || !p.y) gemm_fail(p, "null x, w or y");
  if (p.ldx < p.k) gemm_fail(p, "ldx " + std::to_string(p.ldx) + " < k");
  if (p.ldw < (p.w_kn ? p.n : p.k)) gemm_fail(p, "ldw " + std::to_string(p.ldw) + " < the row length of W");
  if (p.ldy < p.n) gemm_fail(p, "ldy " + std::to_string(p.ldy) + " < n");
}

}  // namespace

size_t gemm_cuda_workspace_bytes() { return size_t{32} << 20; }

const char* gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::automatic: return "automatic";
    case GemmPath::cublaslt: return "cublaslt";
    case GemmPath::small_m: return "small_m";
    case GemmPath::fallback: return "fallback";
  }
  return "?";
}

GemmPlanStats gemm_cuda_plan_stats() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  GemmPlanStats r = s.stats;
  r.plans = s.plans.size();
  return r;
}

GemmPath gemm_cuda(const GemmCudaParams& p, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  validate(p);
  if (p.m == 0 || p.n == 0) return GemmPath::automatic;
  State& s = state();
  if (p.k == 0) {  // y = bias (or 0): the fallback kernel handles it without reading x or W
    run_fallback(p, stream);
    return GemmPath::fallback;
  }
  const bool small_ok = p.m <= 8 && !p.w_kn && !p.tf32;
  if (p.force == GemmPath::small_m && !small_ok) gemm_fail(p, "the m <= 8 kernel needs m <= 8, W (n, k) and no tf32");
  if (p.force == GemmPath::small_m || (p.force == GemmPath::automatic && small_ok)) {
    run_small_m(p, stream);
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.stats.small_m;
    return GemmPath::small_m;
  }
  if (p.force != GemmPath::fallback) {
    int device = 0;
    MAMBA_CUDA_CHECK("gemm_cuda", cudaGetDevice(&device));
    PlanKey key{device, p.m, p.n, p.k, p.ldx, p.ldw, p.ldy, p.w_kn, p.tf32, p.bias != nullptr, p.in_type, p.out_type,
                alignment_of(p.x), alignment_of(p.w), alignment_of(p.y), alignment_of(p.bias)};
    std::lock_guard<std::mutex> lock(s.mu);
    cublasLtHandle_t h = handle_for(p, s, device);
    auto it = s.plans.find(key);
    if (it == s.plans.end()) {
      ++s.stats.misses;
      it = s.plans.emplace(key, build_plan(p, key, h)).first;
    } else {
      ++s.stats.hits;
    }
    Plan& plan = it->second;
    if (plan.ok) {
      if (workspace_bytes < gemm_cuda_workspace_bytes() || !workspace)
        gemm_fail(p, "workspace of " + std::to_string(workspace_bytes) + " bytes, need " +
                         std::to_string(gemm_cuda_workspace_bytes()));
      if (key.bias)
        MAMBA_CUBLAS_CHECK(p, cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias,
                                                             sizeof(p.bias)));
      const float alpha = 1.f, beta = 0.f;
      MAMBA_CUBLAS_CHECK(p, cublasLtMatmul(h, plan.op, &alpha, p.w, plan.a, p.x, plan.b, &beta, p.y, plan.d, p.y, plan.d,
                                           &plan.algo, workspace, gemm_cuda_workspace_bytes(), stream));
      return GemmPath::cublaslt;
    }
    if (p.force == GemmPath::cublaslt) gemm_fail(p, "cuBLASLt has no algorithm for this layout");
    ++s.stats.fallbacks;
  } else {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.stats.fallbacks;
  }
  run_fallback(p, stream);
  return GemmPath::fallback;
}

}  // namespace mamba::kernels::cuda
