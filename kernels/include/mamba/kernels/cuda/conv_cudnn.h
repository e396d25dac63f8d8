// Convolutions 1-3D and their transposes on the GPU through cuDNN 9 (legacy convolution API),
// forward, backward-data, backward-filter and the bias gradient.
//
// Every call describes the FORWARD convolution (mamba/kernels/conv.h's ConvParams):
//   x [N, C_in, in...], w [C_out, C_in/groups, k...], y [N, C_out, out...], contiguous,
//   out = (in + 2 pad - dilation (k-1) - 1) / stride + 1 (checked).
// A transposed convolution with input X [N, Ci, in_t], weight W [Ci, Co/groups, k] and output
// Y [N, Co, out_t] is the forward convolution with C_in = Co, C_out = Ci, in = out_t, out = in_t
// (conv_transpose_as_forward builds it): its output is conv_cudnn_backward_data(X as dy), its
// input gradient conv_cudnn_forward(dY), its weight gradient conv_cudnn_backward_filter(x = dY,
// dy = X); W has exactly cuDNN's filter layout for that convolution. output_padding is implied by
// out_t (the floor in the formula above).
// `spatial` (1, 2, 3) says how many trailing dims of ConvParams are real; 1-D runs as 2-D with a
// unit leading dim. Types f32 / bf16 / f16 (x, w, y, bias one type), accumulation in f32; f32 runs
// plain FMA kernels unless `tf32` (opt-in, the same switch as the GEMM's).
// Plans: descriptors and each direction's algorithm are chosen once per (device, shape, type,
// params, tf32, search) and cached; `search` heuristic asks cudnnGet*_v7, find times the
// candidates once on the first call's buffers (cudnnFind*Ex). The workspace comes from the
// caller's ConvWorkspace (the tensor backend: the caching allocator), else from an internal
// per-device cudaMalloc'd buffer that grows.
// Asynchronous on `stream`. Errors: bad arguments throw std::invalid_argument naming the field and
// the limit; every cuDNN / CUDA call is checked (std::runtime_error naming the op, the call and
// cuDNN's status string). Thread-safe (one cuDNN handle per thread and device, a locked cache).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "mamba/kernels/conv.h"

namespace mamba::kernels::cuda {

enum class ConvDType : uint8_t { f32, bf16, f16 };
enum class ConvAlgoSearch : uint8_t { heuristic, find };

struct ConvCudnnParams {
  ConvParams g;  // the forward convolution
  int spatial = 3;
  ConvDType dtype = ConvDType::f32;
  bool tf32 = false;
  ConvAlgoSearch search = ConvAlgoSearch::heuristic;
};

// Workspace from the caller: alloc(bytes) returns device memory usable on the call's stream,
// release(ptr) gives it back once the work is queued (stream-ordered reuse). Either may be null
// in a null ConvWorkspace pointer (then the internal buffer is used).
struct ConvWorkspace {
  void* (*alloc)(size_t bytes, void* ctx) = nullptr;
  void (*release)(void* ptr, void* ctx) = nullptr;
  void* ctx = nullptr;
};

// The forward convolution of a transposed one (see above): p holds the transpose's view
// (C_in = Ci, C_out = Co, in = in_t, out = out_t, k, stride, pad, dilation).
ConvParams conv_transpose_as_forward(const ConvParams& transposed);

// True when built with cuDNN (MAMBA_HAVE_CUDNN); the calls below throw otherwise.
bool cudnn_available();
std::string cudnn_version_string();  // "9.19.0 (headers 9.19.0)" or "not built"

// y = conv(x, w) (+ bias [C_out] when not null).
void conv_cudnn_forward(const ConvCudnnParams& p, const void* x, const void* w, const void* bias, void* y,
                        const ConvWorkspace* ws, cudaStream_t stream);
// dx = conv^T(dy, w) (+ bias [C_in] when not null: the transposed convolution's bias).
void conv_cudnn_backward_data(const ConvCudnnParams& p, const void* dy, const void* w, const void* bias, void* dx,
                              const ConvWorkspace* ws, cudaStream_t stream);
// dw[co, ci, k] = sum_{n,t} dy[n, co, t] x[n, g ci, t stride - pad + k dilation].
void conv_cudnn_backward_filter(const ConvCudnnParams& p, const void* x, const void* dy, void* dw,
                                const ConvWorkspace* ws, cudaStream_t stream);
// db[c] = sum_{n, t} dy[n, c, t] (f32 accumulation, fixed order: deterministic) for dy [N, C, L]
// of `dtype`, C <= 65535. Two kernels: partial sums of 16384-element chunks, then per channel;
// the C * N * ceil(L / 16384) f32 partials come from `ws` (else cudaMallocAsync on the stream).
void conv_bias_grad_cuda(int64_t N, int64_t C, int64_t L, ConvDType dtype, const void* dy, void* db,
                         const ConvWorkspace* ws, cudaStream_t stream);

// The algorithms the plan of p uses ("fwd IMPLICIT_PRECOMP_GEMM (tensor op) ws 0 B, ..."),
// choosing them first if needed (needs no buffers in heuristic mode; "" in find mode until run).
std::string conv_cudnn_plan_info(const ConvCudnnParams& p);

struct ConvPlanStats {
  uint64_t plans = 0, hits = 0, misses = 0;
};
ConvPlanStats conv_cudnn_plan_stats();
void conv_cudnn_clear_plans();  // drops every cached plan (tests)

}  // namespace mamba::kernels::cuda
