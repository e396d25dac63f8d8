// Internal to shared-core: adapters from Tensors to the CUDA kernels (only in CUDA builds).
#pragma once
#ifdef MAMBA_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <exception>

#include "mamba/kernels/cuda/gemm_cuda.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#include "mamba/kernels/cuda/tensor_ops_cuda.h"
#include "mamba/tensor/cuda.h"
#include "mamba/tensor/tensor.h"

namespace mamba::cuda_glue {

// The current stream of `device` for the calling thread, as a cudaStream_t.
inline cudaStream_t stream(Device device) { return static_cast<cudaStream_t>(cuda::current_stream(device).native()); }

kernels::cuda::ElemType elem_type(DType d);
kernels::cuda::GemmType gemm_type(DType d, const char* op);

// The cuBLASLt workspace of (device, current stream): 32 MiB from the caching allocator,
// allocated once and kept.
void* gemm_workspace(Device device);

// y[r, :] = W x[r, :] (+ bias) for `rows` rows on the current stream: x rows of `k` = W.size(1)
// elements with row stride x_stride, in W's dtype; y rows with stride y_stride in `out`
// (f32 or W's dtype). W (n, k) contiguous on the device.
void linear_rows(const void* x, int64_t rows, int64_t x_stride, const Tensor& w, void* y, int64_t y_stride, DType out,
                 Device device, const void* bias = nullptr);

// Runs f (a kernel launch or plan); the kernels' std::runtime_error / std::invalid_argument come
// back as mamba::Error naming `op` (a mamba::Error passes through unchanged).
template <class F>
void as_mamba_error(const char* op, F&& f) {
  try {
    f();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(op, e.what());
  }
}

// dst <- src on one device, asynchronously on the current stream (strides / dtypes may differ).
void copy_on_stream(Tensor& dst, const Tensor& src);
// A contiguous copy (or `t` itself when already contiguous), asynchronously.
Tensor contiguous(const Tensor& t);

// The sequence split's workspace for the scan forward call p (kernels/cuda/NOTES.md "Scan forward:
// sequence split"): when the kernel would split p's sequences (a grid that leaves most of the GPU
// idle, e.g. batch-1 prefill), a buffer from the caching allocator that p then points at; keep the
// returned Tensor until the call is enqueued (the allocator reuses it in stream order). An
// undefined Tensor (and p unchanged) when the call would not split.
template <class T>
Tensor scan_seg_workspace(kernels::cuda::SelectiveScanCudaParams<T>& p, Device device) {
  const size_t bytes = kernels::cuda::selective_scan_fwd_cuda_seg_workspace_bytes<T>(p);
  if (!bytes) return Tensor();
  Tensor ws = Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::f32, device);
  p.seg_workspace = static_cast<float*>(ws.raw_data());
  p.seg_workspace_bytes = bytes;
  return ws;
}

}  // namespace mamba::cuda_glue
#endif
