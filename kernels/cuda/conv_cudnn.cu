// Convolutions through cuDNN (see mamba/kernels/cuda/conv_cudnn.h).
#include "mamba/kernels/cuda/conv_cudnn.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "mamba/kernels/cuda/cuda_check.h"

#ifdef MAMBA_HAVE_CUDNN
#include <cudnn.h>
#endif

namespace mamba::kernels::cuda {

namespace {

[[noreturn]] void bad_arg(const char* op, const std::string& msg) {
  throw std::invalid_argument(std::string(op) + ": " + msg);
}

void validate(const char* op, const ConvCudnnParams& p) {
  const ConvParams& g = p.g;
  if (p.spatial < 1 || p.spatial > 3) bad_arg(op, "spatial must be 1, 2 or 3, got " + std::to_string(p.spatial));
  if (g.N < 1) bad_arg(op, "N must be >= 1, got " + std::to_string(g.N));
  if (g.groups < 1) bad_arg(op, "groups must be >= 1, got " + std::to_string(g.groups));
  if (g.C_in < 1 || g.C_out < 1)
    bad_arg(op, "C_in and C_out must be >= 1, got " + std::to_string(g.C_in) + " and " + std::to_string(g.C_out));
  if (g.C_in % g.groups || g.C_out % g.groups)
    bad_arg(op, "groups " + std::to_string(g.groups) + " must divide C_in " + std::to_string(g.C_in) + " and C_out " +
                    std::to_string(g.C_out));
  const int off = 3 - p.spatial;
  for (int d = 0; d < 3; ++d) {
    const std::string at = "[" + std::to_string(d) + "]";
    if (d < off) {
      if (g.in[d] != 1 || g.out[d] != 1 || g.k[d] != 1 || g.stride[d] != 1 || g.pad[d] != 0 || g.dilation[d] != 1)
        bad_arg(op, "dim " + std::to_string(d) + " is not used with spatial " + std::to_string(p.spatial) +
                        ": in/out/k/stride/dilation must be 1 and pad 0");
      continue;
    }
    if (g.stride[d] < 1) bad_arg(op, "stride" + at + " must be >= 1, got " + std::to_string(g.stride[d]));
    if (g.dilation[d] < 1) bad_arg(op, "dilation" + at + " must be >= 1, got " + std::to_string(g.dilation[d]));
    if (g.pad[d] < 0) bad_arg(op, "pad" + at + " must be >= 0, got " + std::to_string(g.pad[d]));
    if (g.k[d] < 1) bad_arg(op, "k" + at + " must be >= 1, got " + std::to_string(g.k[d]));
    if (g.in[d] < 1) bad_arg(op, "in" + at + " must be >= 1, got " + std::to_string(g.in[d]));
    const int64_t span = g.in[d] + 2 * g.pad[d] - g.dilation[d] * (g.k[d] - 1) - 1;
    if (span < 0) bad_arg(op, "in" + at + " " + std::to_string(g.in[d]) + " is smaller than the dilated kernel");
    const int64_t expect = span / g.stride[d] + 1;
    if (g.out[d] != expect)
      bad_arg(op, "out" + at + " is " + std::to_string(g.out[d]) + ", expected " + std::to_string(expect) +
                      " from in, k, stride, pad, dilation");
  }
  const int64_t lim = INT_MAX;
  const int64_t nx = g.N * g.C_in * g.in[0] * g.in[1] * g.in[2], ny = g.N * g.C_out * g.out[0] * g.out[1] * g.out[2];
  if (nx > lim || ny > lim)
    bad_arg(op, "tensor of " + std::to_string(nx > ny ? nx : ny) + " elements exceeds cuDNN's limit of 2^31-1");
}

template <class T> __device__ __forceinline__ float ld(const T* p, int64_t i);
template <> __device__ __forceinline__ float ld<float>(const float* p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <> __device__ __forceinline__ float ld<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <class T> __device__ __forceinline__ T cv(float v);
template <> __device__ __forceinline__ float cv<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 cv<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half cv<__half>(float v) { return __float2half_rn(v); }

// Bias gradient, pass 1: block (p, c) sums channel c over row n = p / Q, columns chunk q = p % Q
// (kChunk elements), in f32, into partial[c * P + p]. Pass 2: one thread per channel adds its P
// partials in order. Fixed order throughout: deterministic.
constexpr int64_t kChunk = 16384;
template <class T>
__global__ void bias_grad_partial_kernel(int64_t C, int64_t L, int64_t Q, const T* dy, float* partial, int64_t P) {
  const int64_t p = blockIdx.x, c = blockIdx.y;
  const int64_t n = p / Q, q = p % Q;
  const int64_t lo = q * kChunk, hi = lo + kChunk < L ? lo + kChunk : L;
  const T* row = dy + (n * C + c) * L;
  float acc = 0.f;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += ld(row, i);
  __shared__ float red[256];
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[c * P + p] = red[0];
}
template <class T>
__global__ void bias_grad_final_kernel(int64_t C, int64_t P, const float* partial, T* db) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int64_t p = 0; p < P; ++p) acc += partial[c * P + p];
  db[c] = cv<T>(acc);
}

// y[n, c, l] += bias[c] (in f32, rounded once): grid.y over rows (n, c), grid.x over l.
template <class T>
__global__ void add_bias_kernel(int64_t rows, int64_t C, int64_t L, const T* bias, T* y) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float b = ld(bias, r % C);
    T* yr = y + r * L;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < L; i += int64_t(gridDim.x) * blockDim.x)
      yr[i] = cv<T>(ld(yr, i) + b);
  }
}

[[maybe_unused]] void add_bias(int64_t N, int64_t C, int64_t L, ConvDType t, const void* bias, void* y, cudaStream_t s) {
  const int64_t rows = N * C;
  if (rows == 0 || L == 0) return;
  const int threads = 256;
  const int64_t gx = (L + threads - 1) / threads;
  const dim3 grid(static_cast<unsigned>(gx < 4096 ? gx : 4096), static_cast<unsigned>(rows < 65535 ? rows : 65535));
  switch (t) {
    case ConvDType::f32:
      add_bias_kernel<<<grid, threads, 0, s>>>(rows, C, L, static_cast<const float*>(bias), static_cast<float*>(y));
      break;
    case ConvDType::bf16:
      add_bias_kernel<<<grid, threads, 0, s>>>(rows, C, L, static_cast<const __nv_bfloat16*>(bias),
                                               static_cast<__nv_bfloat16*>(y));
      break;
    case ConvDType::f16:
      add_bias_kernel<<<grid, threads, 0, s>>>(rows, C, L, static_cast<const __half*>(bias), static_cast<__half*>(y));
      break;
  }
  MAMBA_CUDA_CHECK_LAUNCH("conv bias add (add_bias_kernel)");
}

[[maybe_unused]] int64_t prod3(const int64_t* a) { return a[0] * a[1] * a[2]; }

}  // namespace

ConvParams conv_transpose_as_forward(const ConvParams& t) {
  ConvParams f = t;
  f.C_in = t.C_out;
  f.C_out = t.C_in;
  for (int d = 0; d < 3; ++d) {
    f.in[d] = t.out[d];
    f.out[d] = t.in[d];
  }
  return f;
}

void conv_bias_grad_cuda(int64_t N, int64_t C, int64_t L, ConvDType t, const void* dy, void* db,
                         const ConvWorkspace* ws, cudaStream_t s) {
  const char* op = "conv_bias_grad_cuda";
  if (N < 1 || C < 1 || L < 1)
    bad_arg(op, "N, C and L must be >= 1, got " + std::to_string(N) + ", " + std::to_string(C) + ", " +
                    std::to_string(L));
  if (C > 65535) bad_arg(op, "C must be <= 65535, got " + std::to_string(C));
  if (!dy || !db) bad_arg(op, "dy and db must not be null");
  const int64_t Q = (L + kChunk - 1) / kChunk, P = N * Q;
  if (P > INT_MAX) bad_arg(op, "N * ceil(L / 16384) must be <= 2^31-1");
  float* partial = nullptr;
  const size_t bytes = static_cast<size_t>(C * P) * sizeof(float);
  const bool own = !(ws && ws->alloc);
  if (own) {
    MAMBA_CUDA_CHECK(op, cudaMallocAsync(reinterpret_cast<void**>(&partial), bytes, s));
  } else {
    partial = static_cast<float*>(ws->alloc(bytes, ws->ctx));
    if (!partial) throw std::runtime_error(std::string(op) + ": workspace allocation of " + std::to_string(bytes) +
                                           " bytes failed");
  }
  const dim3 g1(static_cast<unsigned>(P), static_cast<unsigned>(C));
  const unsigned g2 = static_cast<unsigned>((C + 127) / 128);
  switch (t) {
    case ConvDType::f32:
      bias_grad_partial_kernel<<<g1, 256, 0, s>>>(C, L, Q, static_cast<const float*>(dy), partial, P);
      MAMBA_CUDA_CHECK_LAUNCH("conv_bias_grad_cuda (bias_grad_partial_kernel)");
      bias_grad_final_kernel<<<g2, 128, 0, s>>>(C, P, partial, static_cast<float*>(db));
      break;
    case ConvDType::bf16:
      bias_grad_partial_kernel<<<g1, 256, 0, s>>>(C, L, Q, static_cast<const __nv_bfloat16*>(dy), partial, P);
      MAMBA_CUDA_CHECK_LAUNCH("conv_bias_grad_cuda (bias_grad_partial_kernel)");
      bias_grad_final_kernel<<<g2, 128, 0, s>>>(C, P, partial, static_cast<__nv_bfloat16*>(db));
      break;
    case ConvDType::f16:
      bias_grad_partial_kernel<<<g1, 256, 0, s>>>(C, L, Q, static_cast<const __half*>(dy), partial, P);
      MAMBA_CUDA_CHECK_LAUNCH("conv_bias_grad_cuda (bias_grad_partial_kernel)");
      bias_grad_final_kernel<<<g2, 128, 0, s>>>(C, P, partial, static_cast<__half*>(db));
      break;
  }
  MAMBA_CUDA_CHECK_LAUNCH("conv_bias_grad_cuda (bias_grad_final_kernel)");
  if (own)
    MAMBA_CUDA_CHECK(op, cudaFreeAsync(partial, s));
  else if (ws->release)
    ws->release(partial, ws->ctx);
}

#ifndef MAMBA_HAVE_CUDNN

bool cudnn_available() { return false; }
std::string cudnn_version_string() { return "not built"; }
namespace {
[[noreturn]] void no_cudnn(const char* op) { throw std::runtime_error(std::string(op) + ": built without cuDNN"); }
}  // namespace
void conv_cudnn_forward(const ConvCudnnParams& p, const void*, const void*, const void*, void*, const ConvWorkspace*,
                        cudaStream_t) {
  validate("conv_cudnn_forward", p);
  no_cudnn("conv_cudnn_forward");
}
void conv_cudnn_backward_data(const ConvCudnnParams& p, const void*, const void*, const void*, void*,
                              const ConvWorkspace*, cudaStream_t) {
  validate("conv_cudnn_backward_data", p);
  no_cudnn("conv_cudnn_backward_data");
}
void conv_cudnn_backward_filter(const ConvCudnnParams& p, const void*, const void*, void*, const ConvWorkspace*,
                                cudaStream_t) {
  validate("conv_cudnn_backward_filter", p);
  no_cudnn("conv_cudnn_backward_filter");
}
std::string conv_cudnn_plan_info(const ConvCudnnParams& p) {
  validate("conv_cudnn_plan_info", p);
  no_cudnn("conv_cudnn_plan_info");
}
ConvPlanStats conv_cudnn_plan_stats() { return {}; }
void conv_cudnn_clear_plans() {}

#else  // MAMBA_HAVE_CUDNN

namespace {

[[noreturn]] void throw_cudnn(const char* op, const char* expr, cudnnStatus_t s, const char* file, int line) {
  throw std::runtime_error(std::string(op) + ": " + expr + " failed: " + cudnnGetErrorString(s) + " (status " +
                           std::to_string(static_cast<int>(s)) + ") at " + file + ":" + std::to_string(line));
}
#define MAMBA_CUDNN_CHECK(op, expr)                                          \
  do {                                                                       \
    const cudnnStatus_t mamba_cudnn_st_ = (expr);                            \
    if (mamba_cudnn_st_ != CUDNN_STATUS_SUCCESS)                             \
      throw_cudnn(op, #expr, mamba_cudnn_st_, __FILE__, __LINE__);           \
  } while (0)

cudnnDataType_t cudnn_type(ConvDType t) {
  switch (t) {
    case ConvDType::f32: return CUDNN_DATA_FLOAT;
    case ConvDType::bf16: return CUDNN_DATA_BFLOAT16;
    case ConvDType::f16: return CUDNN_DATA_HALF;
  }
  return CUDNN_DATA_FLOAT;
}

// One handle per (thread, device); destroyed at thread exit.
struct HandleSet {
  std::map<int, cudnnHandle_t> h;
  ~HandleSet() {
    for (auto& kv : h) cudnnDestroy(kv.second);
  }
};
cudnnHandle_t handle_for(const char* op, cudaStream_t stream) {
  thread_local HandleSet set;
  int dev = 0;
  MAMBA_CUDA_CHECK(op, cudaGetDevice(&dev));
  auto it = set.h.find(dev);
  if (it == set.h.end()) {
    cudnnHandle_t h = nullptr;
    MAMBA_CUDNN_CHECK(op, cudnnCreate(&h));
    it = set.h.emplace(dev, h).first;
  }
  MAMBA_CUDNN_CHECK(op, cudnnSetStream(it->second, stream));
  return it->second;
}

enum Dir { kFwd = 0, kBwdData = 1, kBwdFilter = 2 };

struct Plan {
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd[3] = {nullptr, nullptr, nullptr};  // one per direction (math type differs)
  bool chosen[3] = {false, false, false};
  int algo[3] = {0, 0, 0};
  cudnnMathType_t math[3] = {CUDNN_DEFAULT_MATH, CUDNN_DEFAULT_MATH, CUDNN_DEFAULT_MATH};
  size_t ws[3] = {0, 0, 0};
  std::mutex mu;  // guards choosing
  ~Plan() {
    if (xd) cudnnDestroyTensorDescriptor(xd);
    if (yd) cudnnDestroyTensorDescriptor(yd);
    if (wd) cudnnDestroyFilterDescriptor(wd);
    for (auto* c : cd)
      if (c) cudnnDestroyConvolutionDescriptor(c);
  }
};

using Key = std::vector<int64_t>;
Key make_key(const ConvCudnnParams& p, int dev) {
  const ConvParams& g = p.g;
  Key k{dev, p.spatial, int64_t(p.dtype), p.tf32, int64_t(p.search), g.N, g.C_in, g.C_out, g.groups};
  for (int d = 0; d < 3; ++d) {
    k.push_back(g.in[d]);
    k.push_back(g.out[d]);
    k.push_back(g.k[d]);
    k.push_back(g.stride[d]);
    k.push_back(g.pad[d]);
    k.push_back(g.dilation[d]);
  }
  return k;
}

std::mutex g_cache_mu;
std::map<Key, std::shared_ptr<Plan>>& cache() {
  static auto* c = new std::map<Key, std::shared_ptr<Plan>>;
  return *c;
}
ConvPlanStats g_stats;

void set_tensor(const char* op, cudnnTensorDescriptor_t d, cudnnDataType_t t, int spatial, int64_t N, int64_t C,
                const int64_t* sp) {
  // 1-D runs as 2-D (a unit H); 2-D as 4-D tensors; 3-D as 5-D.
  const int nd = spatial == 3 ? 5 : 4;
  int dims[5], strides[5];
  dims[0] = int(N);
  dims[1] = int(C);
  if (nd == 5) {
    dims[2] = int(sp[0]);
    dims[3] = int(sp[1]);
    dims[4] = int(sp[2]);
  } else {
    dims[2] = int(sp[1]);
    dims[3] = int(sp[2]);
  }
  strides[nd - 1] = 1;
  for (int i = nd - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims[i + 1];
  MAMBA_CUDNN_CHECK(op, cudnnSetTensorNdDescriptor(d, t, nd, dims, strides));
}

std::shared_ptr<Plan> get_plan(const char* op, const ConvCudnnParams& p) {
  int dev = 0;
  MAMBA_CUDA_CHECK(op, cudaGetDevice(&dev));
  const Key key = make_key(p, dev);
  std::lock_guard<std::mutex> lock(g_cache_mu);
  auto it = cache().find(key);
  if (it != cache().end()) {
    ++g_stats.hits;
    return it->second;
  }
  ++g_stats.misses;
  auto plan = std::make_shared<Plan>();
  const ConvParams& g = p.g;
  const cudnnDataType_t t = cudnn_type(p.dtype);
  MAMBA_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&plan->xd));
  MAMBA_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&plan->yd));
  MAMBA_CUDNN_CHECK(op, cudnnCreateFilterDescriptor(&plan->wd));
  set_tensor(op, plan->xd, t, p.spatial, g.N, g.C_in, g.in);
  set_tensor(op, plan->yd, t, p.spatial, g.N, g.C_out, g.out);
  const int nd = p.spatial == 3 ? 5 : 4, ns = nd - 2, off = 3 - ns;
  int wdims[5] = {int(g.C_out), int(g.C_in / g.groups), 1, 1, 1};
  int pad[3], stride[3], dil[3];
  for (int i = 0; i < ns; ++i) {
    wdims[2 + i] = int(g.k[off + i]);
    pad[i] = int(g.pad[off + i]);
    stride[i] = int(g.stride[off + i]);
    dil[i] = int(g.dilation[off + i]);
  }
  MAMBA_CUDNN_CHECK(op, cudnnSetFilterNdDescriptor(plan->wd, t, CUDNN_TENSOR_NCHW, nd, wdims));
  for (int dir = 0; dir < 3; ++dir) {
    MAMBA_CUDNN_CHECK(op, cudnnCreateConvolutionDescriptor(&plan->cd[dir]));
    MAMBA_CUDNN_CHECK(op, cudnnSetConvolutionNdDescriptor(plan->cd[dir], ns, pad, stride, dil,
                                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MAMBA_CUDNN_CHECK(op, cudnnSetConvolutionGroupCount(plan->cd[dir], int(g.groups)));
    // f32 without TF32: FMA kernels only. TF32 / 16-bit types: tensor cores allowed.
    const cudnnMathType_t m =
        (p.dtype == ConvDType::f32 && !p.tf32) ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    MAMBA_CUDNN_CHECK(op, cudnnSetConvolutionMathType(plan->cd[dir], m));
  }
  // The output shape cuDNN derives must be ours.
  int outdims[5] = {0, 0, 0, 0, 0};
  MAMBA_CUDNN_CHECK(op, cudnnGetConvolutionNdForwardOutputDim(plan->cd[0], plan->xd, plan->wd, nd, outdims));
  for (int i = 0; i < ns; ++i)
    if (outdims[2 + i] != g.out[off + i])
      throw std::runtime_error(std::string(op) + ": cuDNN's output size " + std::to_string(outdims[2 + i]) +
                               " differs from out[" + std::to_string(off + i) + "] " + std::to_string(g.out[off + i]));
  cache().emplace(key, plan);
  g_stats.plans = cache().size();
  return plan;
}

// A perf result is usable when it succeeded and, for strict f32, does not run TF32.
bool usable(const ConvCudnnParams& p, cudnnStatus_t st, cudnnMathType_t m, size_t mem) {
  if (st != CUDNN_STATUS_SUCCESS) return false;
  if (p.dtype == ConvDType::f32 && !p.tf32 && m != CUDNN_FMA_MATH && m != CUDNN_DEFAULT_MATH) return false;
  return mem <= (size_t{8} << 30);
}

constexpr size_t kFindWorkspace = size_t{1} << 30;  // the heuristics' picks need up to ~1 GiB on 3-D shapes

// Internal workspace (no ConvWorkspace given): one growing buffer per device.
void* internal_ws(const char* op, size_t bytes) {
  static std::mutex mu;
  static auto* bufs = new std::map<int, std::pair<void*, size_t>>;
  int dev = 0;
  MAMBA_CUDA_CHECK(op, cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  auto& b = (*bufs)[dev];
  if (b.second < bytes) {
    if (b.first) {
      MAMBA_CUDA_CHECK(op, cudaDeviceSynchronize());
      MAMBA_CUDA_CHECK(op, cudaFree(b.first));
      b = {nullptr, 0};
    }
    MAMBA_CUDA_CHECK(op, cudaMalloc(&b.first, bytes));
    b.second = bytes;
  }
  return b.first;
}

struct WsLease {
  const ConvWorkspace* ws;
  void* ptr = nullptr;
  WsLease(const char* op, const ConvWorkspace* w, size_t bytes) : ws(w) {
    if (bytes == 0) return;
    if (ws && ws->alloc) {
      ptr = ws->alloc(bytes, ws->ctx);
      if (!ptr) throw std::runtime_error(std::string(op) + ": workspace allocation of " + std::to_string(bytes) +
                                         " bytes failed");
    } else {
      ptr = internal_ws(op, bytes);
    }
  }
  ~WsLease() {
    if (ptr && ws && ws->alloc && ws->release) ws->release(ptr, ws->ctx);
  }
};

template <class Perf>
void take(Plan& pl, int dir, const ConvCudnnParams& p, const Perf* perf, int n, const char* op) {
  for (int i = 0; i < n; ++i)
    if (usable(p, perf[i].status, perf[i].mathType, perf[i].memory)) {
      pl.algo[dir] = int(perf[i].algo);
      pl.math[dir] = perf[i].mathType;
      pl.ws[dir] = perf[i].memory;
      pl.chosen[dir] = true;
      return;
    }
  throw std::runtime_error(std::string(op) + ": cuDNN offers no usable algorithm for this convolution (" +
                           std::to_string(n) + " candidates" +
                           (p.dtype == ConvDType::f32 && !p.tf32 ? ", TF32 excluded" : "") + ")");
}

// Chooses the algorithm of `dir` (heuristic, or find on the given buffers: a, b inputs, c output).
void choose(const char* op, Plan& pl, int dir, const ConvCudnnParams& p, cudnnHandle_t h, const void* a,
            const void* b, void* c, const ConvWorkspace* ws) {
  std::lock_guard<std::mutex> lock(pl.mu);
  if (pl.chosen[dir]) return;
  const bool find = p.search == ConvAlgoSearch::find;
  if (dir == kFwd) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    if (find) {
      WsLease l(op, ws, kFindWorkspace);
      MAMBA_CUDNN_CHECK(op, cudnnFindConvolutionForwardAlgorithmEx(h, pl.xd, a, pl.wd, b, pl.cd[dir], pl.yd, c,
                                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf,
                                                                   l.ptr, kFindWorkspace));
    } else {
      MAMBA_CUDNN_CHECK(op, cudnnGetConvolutionForwardAlgorithm_v7(h, pl.xd, pl.wd, pl.cd[dir], pl.yd,
                                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
    }
    take(pl, dir, p, perf, n, op);
  } else if (dir == kBwdData) {  // a = dy, b = w, c = dx
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    if (find) {
      WsLease l(op, ws, kFindWorkspace);
      MAMBA_CUDNN_CHECK(op, cudnnFindConvolutionBackwardDataAlgorithmEx(h, pl.wd, b, pl.yd, a, pl.cd[dir], pl.xd, c,
                                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
                                                                        perf, l.ptr, kFindWorkspace));
    } else {
      MAMBA_CUDNN_CHECK(op, cudnnGetConvolutionBackwardDataAlgorithm_v7(h, pl.wd, pl.yd, pl.cd[dir], pl.xd,
                                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
                                                                        perf));
    }
    take(pl, dir, p, perf, n, op);
  } else {  // a = x, b = dy, c = dw
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    if (find) {
      WsLease l(op, ws, kFindWorkspace);
      MAMBA_CUDNN_CHECK(op, cudnnFindConvolutionBackwardFilterAlgorithmEx(
                                h, pl.xd, a, pl.yd, b, pl.cd[dir], pl.wd, c, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                &n, perf, l.ptr, kFindWorkspace));
    } else {
      MAMBA_CUDNN_CHECK(op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                                h, pl.xd, pl.yd, pl.cd[dir], pl.wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n,
                                perf));
    }
    take(pl, dir, p, perf, n, op);
  }
  MAMBA_CUDNN_CHECK(op, cudnnSetConvolutionMathType(pl.cd[dir], pl.math[dir]));
}

const char* fwd_name(int a) {
  static const char* n[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
                            "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < 8 ? n[a] : "?";
}
const char* bwd_data_name(int a) {
  static const char* n[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < 6 ? n[a] : "?";
}
const char* bwd_filter_name(int a) {
  static const char* n[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  return a >= 0 && a < 7 ? n[a] : "?";
}
const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op+conv";
    case CUDNN_FMA_MATH: return "fma";
  }
  return "?";
}

const float kOne = 1.f, kZero = 0.f;

}  // namespace

bool cudnn_available() { return true; }
std::string cudnn_version_string() {
  const size_t v = cudnnGetVersion();
  return std::to_string(v / 10000) + "." + std::to_string((v % 10000) / 100) + "." + std::to_string(v % 100) +
         " (headers " + std::to_string(CUDNN_MAJOR) + "." + std::to_string(CUDNN_MINOR) + "." +
         std::to_string(CUDNN_PATCHLEVEL) + ")";
}

void conv_cudnn_forward(const ConvCudnnParams& p, const void* x, const void* w, const void* bias, void* y,
                        const ConvWorkspace* ws, cudaStream_t stream) {
  const char* op = "conv_cudnn_forward";
  validate(op, p);
  if (!x || !w || !y) bad_arg(op, "x, w and y must not be null");
  auto pl = get_plan(op, p);
  cudnnHandle_t h = handle_for(op, stream);
  choose(op, *pl, kFwd, p, h, x, w, y, ws);
  WsLease l(op, ws, pl->ws[kFwd]);
  MAMBA_CUDNN_CHECK(op, cudnnConvolutionForward(h, &kOne, pl->xd, x, pl->wd, w, pl->cd[kFwd],
                                                cudnnConvolutionFwdAlgo_t(pl->algo[kFwd]), l.ptr, pl->ws[kFwd],
                                                &kZero, pl->yd, y));
  if (bias) add_bias(p.g.N, p.g.C_out, prod3(p.g.out), p.dtype, bias, y, stream);
}

void conv_cudnn_backward_data(const ConvCudnnParams& p, const void* dy, const void* w, const void* bias, void* dx,
                              const ConvWorkspace* ws, cudaStream_t stream) {
  const char* op = "conv_cudnn_backward_data";
  validate(op, p);
  if (!dy || !w || !dx) bad_arg(op, "dy, w and dx must not be null");
  auto pl = get_plan(op, p);
  cudnnHandle_t h = handle_for(op, stream);
  choose(op, *pl, kBwdData, p, h, dy, w, dx, ws);
  WsLease l(op, ws, pl->ws[kBwdData]);
  MAMBA_CUDNN_CHECK(op, cudnnConvolutionBackwardData(h, &kOne, pl->wd, w, pl->yd, dy, pl->cd[kBwdData],
                                                     cudnnConvolutionBwdDataAlgo_t(pl->algo[kBwdData]), l.ptr,
                                                     pl->ws[kBwdData], &kZero, pl->xd, dx));
  if (bias) add_bias(p.g.N, p.g.C_in, prod3(p.g.in), p.dtype, bias, dx, stream);
}

void conv_cudnn_backward_filter(const ConvCudnnParams& p, const void* x, const void* dy, void* dw,
                                const ConvWorkspace* ws, cudaStream_t stream) {
  const char* op = "conv_cudnn_backward_filter";
  validate(op, p);
  if (!x || !dy || !dw) bad_arg(op, "x, dy and dw must not be null");
  auto pl = get_plan(op, p);
  cudnnHandle_t h = handle_for(op, stream);
  choose(op, *pl, kBwdFilter, p, h, x, dy, dw, ws);
  WsLease l(op, ws, pl->ws[kBwdFilter]);
  MAMBA_CUDNN_CHECK(op, cudnnConvolutionBackwardFilter(h, &kOne, pl->xd, x, pl->yd, dy, pl->cd[kBwdFilter],
                                                       cudnnConvolutionBwdFilterAlgo_t(pl->algo[kBwdFilter]), l.ptr,
                                                       pl->ws[kBwdFilter], &kZero, pl->wd, dw));
}

std::string conv_cudnn_plan_info(const ConvCudnnParams& p) {
  const char* op = "conv_cudnn_plan_info";
  validate(op, p);
  auto pl = get_plan(op, p);
  if (p.search == ConvAlgoSearch::heuristic) {
    cudnnHandle_t h = handle_for(op, nullptr);
    for (int d = 0; d < 3; ++d) choose(op, *pl, d, p, h, nullptr, nullptr, nullptr, nullptr);
  }
  std::lock_guard<std::mutex> lock(pl->mu);
  std::string s;
  const char* names[3] = {"fwd", "bwd-data", "bwd-filter"};
  for (int d = 0; d < 3; ++d) {
    if (!s.empty()) s += ", ";
    s += names[d];
    s += " ";
    if (!pl->chosen[d]) {
      s += "(not chosen yet)";
      continue;
    }
    s += d == 0 ? fwd_name(pl->algo[d]) : d == 1 ? bwd_data_name(pl->algo[d]) : bwd_filter_name(pl->algo[d]);
    s += std::string(" (") + math_name(pl->math[d]) + ", ws " + std::to_string(pl->ws[d] >> 10) + " KiB)";
  }
  return s;
}

ConvPlanStats conv_cudnn_plan_stats() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return g_stats;
}
void conv_cudnn_clear_plans() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  cache().clear();
  g_stats.plans = 0;
}

#endif  // MAMBA_HAVE_CUDNN

}  // namespace mamba::kernels::cuda
