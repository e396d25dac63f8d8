// ops::conv / conv_transpose on cuda tensors and conv_backward_cuda, through cuDNN
// (mamba/kernels/cuda/conv_cudnn.h); geometry from conv.cc (conv_internal.h).
#include "mamba/ops/conv_cuda.h"

#include "conv_internal.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/conv_cudnn.h"
#endif

namespace mamba::ops {

#ifndef MAMBA_HAVE_CUDA

namespace detail {
Tensor conv_cuda(int, const Tensor&, const Tensor&, const Tensor&, const ConvOptions&, bool transpose) {
  fail(transpose ? "ops::conv_transpose (cuda)" : "ops::conv (cuda)", "built without CUDA");
}
}  // namespace detail
ConvGrads conv_backward_cuda(int, bool, const Tensor&, const Tensor&, const Tensor&, const ConvOptions&, bool) {
  fail("ops::conv_backward_cuda", "built without CUDA");
}
bool conv_cuda_available() { return false; }
std::string conv_cuda_plan_info(int, bool, const Tensor&, const Tensor&, const ConvOptions&) {
  fail("ops::conv_cuda_plan_info", "built without CUDA");
}

#else

namespace {

namespace kc = kernels::cuda;

// Workspaces from the caching allocator, on the current stream: freed as soon as the work is
// queued (a block freed on a stream is reused only by later work on that stream).
struct WsCtx {
  int device;
  void* stream;
};
void* ws_alloc(size_t bytes, void* ctx) {
  auto* c = static_cast<WsCtx*>(ctx);
  return cuda::allocate_device(bytes, c->device, c->stream);
}
void ws_release(void* p, void*) { cuda::free_device(p); }

kc::ConvDType conv_dtype(const char* op, const Tensor& x) {
  switch (x.dtype()) {
    case DType::f32: return kc::ConvDType::f32;
    case DType::bf16: return kc::ConvDType::bf16;
    case DType::f16: return kc::ConvDType::f16;
    default: fail(op, "input must be f32, bf16 or f16 on CUDA, got " + x.str());
  }
}

void check_like(const char* op, const Tensor& t, const char* name, const Tensor& x) {
  if (!t.defined()) fail(op, std::string(name) + " is required");
  if (t.device() != x.device()) fail(op, std::string(name) + " is on " + t.device().str() + ", input on " + x.device().str());
  if (t.dtype() != x.dtype()) fail(op, std::string("dtypes differ: input ") + x.str() + ", " + name + " " + t.str());
}

kc::ConvCudnnParams cudnn_params(int spatial, bool transpose, const kernels::ConvParams& user, kc::ConvDType t,
                                 const ConvOptions& opt) {
  kc::ConvCudnnParams P;
  P.g = transpose ? kc::conv_transpose_as_forward(user) : user;
  P.spatial = spatial;
  P.dtype = t;
  P.tf32 = opt.tf32;
  P.search = opt.cudnn_find ? kc::ConvAlgoSearch::find : kc::ConvAlgoSearch::heuristic;
  return P;
}

int64_t prod3(const int64_t* a) { return a[0] * a[1] * a[2]; }

// cuDNN derives a transposed convolution's size from the forward one's floor, so it cannot
// express output_padding >= stride (which PyTorch allows when dilation is larger).
void check_output_padding(const char* op, int spatial, const kernels::ConvParams& U) {
  for (int d = 3 - spatial; d < 3; ++d) {
    const int64_t natural = (U.in[d] - 1) * U.stride[d] - 2 * U.pad[d] + U.dilation[d] * (U.k[d] - 1) + 1;
    const int64_t op_pad = U.out[d] - natural;
    if (op_pad >= U.stride[d])
      fail(op, "output_padding " + std::to_string(op_pad) + " (spatial dim " + std::to_string(d - (3 - spatial)) +
                   ") must be smaller than stride " + std::to_string(U.stride[d]) + " on CUDA (cuDNN)");
  }
}

}  // namespace

namespace detail {

Tensor conv_cuda(int spatial, const Tensor& x0, const Tensor& w0, const Tensor& b0, const ConvOptions& opt,
                 bool transpose) {
  const char* op = transpose ? "ops::conv_transpose (cuda)" : "ops::conv (cuda)";
  const Device dev = x0.device();
  cuda::require_device(dev, op);
  const kc::ConvDType t = conv_dtype(op, x0);
  check_like(op, w0, "weight", x0);
  if (b0.defined()) check_like(op, b0, "bias", x0);
  bool unbatched = false;
  const kernels::ConvParams U = conv_geometry(spatial, x0, w0, b0, opt, transpose, unbatched);
  if (transpose) check_output_padding(op, spatial, U);
  Tensor y = Tensor::empty(conv_out_shape(spatial, U), x0.dtype(), dev);
  if (y.numel() == 0 || x0.numel() == 0) return unbatched ? y.squeeze(0) : y;
  const Tensor x = cuda_glue::contiguous(x0), w = cuda_glue::contiguous(w0);
  const Tensor b = b0.defined() ? cuda_glue::contiguous(b0) : Tensor();
  const kc::ConvCudnnParams P = cudnn_params(spatial, transpose, U, t, opt);
  const cudaStream_t s = cuda_glue::stream(dev);
  WsCtx ctx{dev.index, s};
  const kc::ConvWorkspace ws{ws_alloc, ws_release, &ctx};
  const void* bp = b.defined() ? b.raw_data() : nullptr;
  cuda_glue::as_mamba_error(op, [&] {
    if (!transpose)
      kc::conv_cudnn_forward(P, x.raw_data(), w.raw_data(), bp, y.raw_data(), &ws, s);
    else
      kc::conv_cudnn_backward_data(P, x.raw_data(), w.raw_data(), bp, y.raw_data(), &ws, s);
  });
  return unbatched ? y.squeeze(0) : y;
}

}  // namespace detail

ConvGrads conv_backward_cuda(int spatial, bool transpose, const Tensor& x0, const Tensor& w0, const Tensor& dy0,
                             const ConvOptions& opt, bool bias_grad) {
  const char* op = "ops::conv_backward_cuda";
  if (spatial < 1 || spatial > 3) fail(op, "spatial must be 1, 2 or 3, got " + std::to_string(spatial));
  if (!x0.defined()) fail(op, "input is required");
  const Device dev = x0.device();
  cuda::require_device(dev, op);
  const kc::ConvDType t = conv_dtype(op, x0);
  check_like(op, w0, "weight", x0);
  check_like(op, dy0, "dy", x0);
  bool unbatched = false;
  const kernels::ConvParams U = detail::conv_geometry(spatial, x0, w0, Tensor(), opt, transpose, unbatched);
  if (transpose) check_output_padding(op, spatial, U);
  Shape ys = detail::conv_out_shape(spatial, U);
  Shape dys = dy0.shape();
  if (unbatched) dys.insert(dys.begin(), 1);
  if (dys != ys) {
    Shape want = ys;
    if (unbatched) want.erase(want.begin());
    fail(op, "dy " + dy0.str() + " must have the output's shape " + shape_str(want));
  }
  ConvGrads g;
  g.dx = Tensor::empty(x0.shape(), x0.dtype(), dev);
  g.dw = Tensor::empty(w0.shape(), x0.dtype(), dev);
  if (bias_grad) g.db = Tensor::empty({U.C_out}, x0.dtype(), dev);
  if (x0.numel() == 0 || dy0.numel() == 0) {
    cuda::fill(g.dx, 0.0);
    cuda::fill(g.dw, 0.0);
    if (bias_grad) cuda::fill(g.db, 0.0);
    return g;
  }
  const Tensor x = cuda_glue::contiguous(x0), w = cuda_glue::contiguous(w0), dy = cuda_glue::contiguous(dy0);
  const kc::ConvCudnnParams P = cudnn_params(spatial, transpose, U, t, opt);
  const cudaStream_t s = cuda_glue::stream(dev);
  WsCtx ctx{dev.index, s};
  const kc::ConvWorkspace ws{ws_alloc, ws_release, &ctx};
  cuda_glue::as_mamba_error(op, [&] {
    if (!transpose) {
      kc::conv_cudnn_backward_data(P, dy.raw_data(), w.raw_data(), nullptr, g.dx.raw_data(), &ws, s);
      kc::conv_cudnn_backward_filter(P, x.raw_data(), dy.raw_data(), g.dw.raw_data(), &ws, s);
    } else {  // the transpose is backward-data of P: its input gradient is P's forward, and
              // P's weight gradient takes dy as P's input and x as P's output gradient
      kc::conv_cudnn_forward(P, dy.raw_data(), w.raw_data(), nullptr, g.dx.raw_data(), &ws, s);
      kc::conv_cudnn_backward_filter(P, dy.raw_data(), x.raw_data(), g.dw.raw_data(), &ws, s);
    }
    if (bias_grad) kc::conv_bias_grad_cuda(U.N, U.C_out, prod3(U.out), t, dy.raw_data(), g.db.raw_data(), &ws, s);
  });
  return g;
}

bool conv_cuda_available() { return cuda::is_available() && kc::cudnn_available(); }

std::string conv_cuda_plan_info(int spatial, bool transpose, const Tensor& x, const Tensor& w, const ConvOptions& opt) {
  const char* op = "ops::conv_cuda_plan_info";
  if (spatial < 1 || spatial > 3) fail(op, "spatial must be 1, 2 or 3, got " + std::to_string(spatial));
  if (!x.defined()) fail(op, "input is required");
  const kc::ConvDType t = conv_dtype(op, x);
  check_like(op, w, "weight", x);
  cuda::require_device(x.device(), op);
  bool unbatched = false;
  const kernels::ConvParams U = detail::conv_geometry(spatial, x, w, Tensor(), opt, transpose, unbatched);
  std::string info;
  cuda_glue::as_mamba_error(op, [&] { info = kc::conv_cudnn_plan_info(cudnn_params(spatial, transpose, U, t, opt)); });
  return info;
}

#endif

}  // namespace mamba::ops
