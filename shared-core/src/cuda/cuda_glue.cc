// Tensor -> CUDA kernel adapters (cuda_glue.h) and ops::linear_cuda.
#include "mamba/ops/linear_cuda.h"

#include <map>
#include <mutex>

#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "cuda_glue.h"
#include "mamba/kernels/cuda/cuda_check.h"
#endif

namespace mamba {

#ifdef MAMBA_HAVE_CUDA
namespace cuda_glue {

kernels::cuda::ElemType elem_type(DType d) {
  using E = kernels::cuda::ElemType;
  switch (d) {
    case DType::f32: return E::f32;
    case DType::f64: return E::f64;
    case DType::bf16: return E::bf16;
    case DType::f16: return E::f16;
    case DType::i32: return E::i32;
    case DType::i64: return E::i64;
    case DType::u8: return E::u8;
  }
  return E::f32;
}

kernels::cuda::GemmType gemm_type(DType d, const char* op) {
  switch (d) {
    case DType::f32: return kernels::cuda::GemmType::f32;
    case DType::bf16: return kernels::cuda::GemmType::bf16;
    case DType::f16: return kernels::cuda::GemmType::f16;
    default: fail(op, std::string("GEMM operands must be f32, bf16 or f16, got ") + dtype_name(d));
  }
}

void* gemm_workspace(Device device) {
  static std::mutex mu;
  static auto* buffers = new std::map<std::pair<int, void*>, Tensor>;  // never freed: reused by every GEMM
  const cuda::Stream s = cuda::current_stream(device);
  std::lock_guard<std::mutex> lock(mu);
  Tensor& t = (*buffers)[{device.index, s.native()}];
  if (!t.defined())
    t = Tensor::empty({static_cast<int64_t>(kernels::cuda::gemm_cuda_workspace_bytes())}, DType::u8, device);
  return t.raw_data();
}

void linear_rows(const void* x, int64_t rows, int64_t x_stride, const Tensor& w, void* y, int64_t y_stride, DType out,
                 Device device, const void* bias) {
  kernels::cuda::GemmCudaParams p;
  p.m = rows;
  p.n = w.size(0);
  p.k = w.size(1);
  p.x = x;
  p.ldx = x_stride;
  p.w = w.raw_data();
  p.ldw = w.size(1);
  p.bias = bias;
  p.y = y;
  p.ldy = y_stride;
  p.in_type = gemm_type(w.dtype(), "linear (cuda)");
  p.out_type = gemm_type(out, "linear (cuda)");
  kernels::cuda::gemm_cuda(p, gemm_workspace(device), kernels::cuda::gemm_cuda_workspace_bytes(), stream(device));
}

void copy_on_stream(Tensor& dst, const Tensor& src) { cuda::copy_async(dst, src, cuda::current_stream(dst.device())); }

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy_on_stream(c, t);
  return c;
}

}  // namespace cuda_glue
#endif

namespace ops {

Tensor linear_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearCudaOptions& opt) {
  const char* op = "ops::linear_cuda";
  if (!x.defined() || !w.defined()) fail(op, "x and W are required");
  cuda::require_device(x.device(), op);
  if (w.device() != x.device()) fail(op, "W is on " + w.device().str() + ", x on " + x.device().str());
  if (w.dtype() != x.dtype()) fail(op, std::string("W is ") + w.str() + ", x is " + x.str() + ": dtypes differ");
  if (x.dim() < 1 || w.dim() != 2) fail(op, "x must be (..., in) and W 2-D, got " + x.str() + " and " + w.str());
  if (!w.is_contiguous()) fail(op, "W must be contiguous");
  const int64_t in = x.size(-1), out = opt.w_kn ? w.size(1) : w.size(0);
  if ((opt.w_kn ? w.size(0) : w.size(1)) != in)
    fail(op, "x " + x.str() + " does not match W " + w.str() + (opt.w_kn ? " (in, out)" : " (out, in)"));
  const DType out_dt = opt.out_f32 ? DType::f32 : x.dtype();
  if (bias.defined()) {
    if (bias.device() != x.device() || bias.dtype() != out_dt || bias.numel() != out || !bias.is_contiguous())
      fail(op, "bias must be a contiguous (" + std::to_string(out) + ") " + dtype_name(out_dt) + " tensor on " +
                   x.device().str() + ", got " + bias.str());
  }
#ifndef MAMBA_HAVE_CUDA
  (void)out_dt;
  fail(op, "built without CUDA");
#else
  // Rows: all leading dims flattened; they must be one stride apart (a view of rows).
  Tensor xr = x;
  if (x.stride(-1) != 1) xr = cuda_glue::contiguous(x);
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  int64_t ldx = in;
  if (xr.dim() >= 2) {
    // Rows must be evenly spaced: true when the leading dims collapse (else copy).
    bool even = true;
    for (int64_t d = 0; d + 2 < xr.dim(); ++d)
      if (xr.size(d) != 1 && xr.stride(d) != xr.stride(d + 1) * xr.size(d + 1)) even = false;
    if (!even) xr = cuda_glue::contiguous(xr);
    ldx = xr.stride(-2);
    if (rows <= 1) ldx = std::max<int64_t>(in, 1);
  }
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y = Tensor::empty(shape, out_dt, x.device());
  kernels::cuda::GemmCudaParams p;
  p.m = rows;
  p.n = out;
  p.k = in;
  p.x = xr.raw_data();
  p.ldx = std::max<int64_t>(ldx, 1);
  p.w = w.raw_data();
  p.ldw = w.size(1);
  p.w_kn = opt.w_kn;
  p.bias = bias.defined() ? bias.raw_data() : nullptr;
  p.y = y.raw_data();
  p.ldy = std::max<int64_t>(out, 1);
  p.in_type = cuda_glue::gemm_type(x.dtype(), op);
  p.out_type = cuda_glue::gemm_type(out_dt, op);
  p.tf32 = opt.tf32;
  if (opt.force_path < 0 || opt.force_path > 3) fail(op, "force_path must be 0..3");
  p.force = static_cast<kernels::cuda::GemmPath>(opt.force_path);
  if (p.ldx < p.k) p.ldx = p.k;
  const Device dev = x.device();
  kernels::cuda::GemmPath path;
  try {
    path = kernels::cuda::gemm_cuda(p, cuda_glue::gemm_workspace(dev), kernels::cuda::gemm_cuda_workspace_bytes(),
                                    cuda_glue::stream(dev));
  } catch (const std::runtime_error& e) {
    fail(op, e.what());
  }
  if (opt.path_taken) *opt.path_taken = kernels::cuda::gemm_path_name(path);
  return y;
#endif
}

}  // namespace ops
}  // namespace mamba
