#include "layer_cuda.h"

#include <string>

#include "layer_util.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#endif

namespace mamba::nn::detail {

void check_cuda_target(Device device, DType compute, int64_t d_conv, const char* op) {
  cuda::require_device(device, op);
  if (compute != DType::f32 && compute != DType::bf16)
    fail(op, std::string("compute dtype must be f32 or bf16 on CUDA, got ") + dtype_name(compute));
  if (d_conv > 4) fail(op, "d_conv " + std::to_string(d_conv) + " exceeds the CUDA conv limit 4");
}

void move_params(std::initializer_list<Tensor*> linear, std::initializer_list<Tensor*> f32, Device device,
                 DType compute) {
  for (Tensor* w : linear) *w = w->to(Device::cpu()).to(compute).to(device);
  for (Tensor* t : f32) *t = t->to(Device::cpu()).to(DType::f32).to(device);
}

#ifdef MAMBA_HAVE_CUDA

void check_cuda_states(const LayerState* s, const Shape& conv, const Shape& ssm, Device dev, const char* op) {
  if (!s) return;
  check_state(s->conv_state, conv, op, "conv_state");
  check_state(s->ssm_state, ssm, op, "ssm_state");
  if (s->conv_state.device() != dev || s->ssm_state.device() != dev)
    fail(op, "the states must be on " + dev.str() + " (make them with init_state / new_cache)");
}

namespace {

template <class T>
const T* column(const Tensor& src, int64_t col0) {
  return static_cast<const T*>(src.raw_data()) + col0;
}

template <class T>
void conv_fwd(const Tensor& src, int64_t col0, int64_t c, const Tensor& w, const Tensor& bias, LayerState* state,
              Tensor& out) {
  const int64_t b = src.size(0), l = src.size(1), width = src.size(2), K = w.size(-1);
  const Device dev = src.device();
  Tensor hist;
  kernels::cuda::CausalConv1dCudaParams<T> cp;
  cp.batch = b; cp.seqlen = l; cp.channels = c; cp.width = K;
  cp.x = column<T>(src, col0); cp.x_sb = l * width; cp.x_st = width;
  cp.weight = static_cast<const float*>(w.raw_data());
  cp.bias = static_cast<const float*>(bias.raw_data());
  cp.silu = true;
  if (state && K > 1) {
    hist = cuda_glue::contiguous(state->conv_state.slice(2, 1, K));
    cp.initial_state = static_cast<const float*>(hist.raw_data());
  }
  cp.out = static_cast<T*>(out.raw_data());
  kernels::cuda::causal_conv1d_fwd_cuda<T>(cp, cuda_glue::stream(dev));
  if (state)
    kernels::cuda::conv_state_advance_cuda(b, c, K, static_cast<float*>(state->conv_state.raw_data()),
                                           column<T>(src, col0), cuda_glue::elem_type(src.dtype()), l * width, width,
                                           l, cuda_glue::stream(dev));
}

template <class T>
void conv_step(const Tensor& src, int64_t col0, int64_t c, const Tensor& w, const Tensor& bias, LayerState& state,
               Tensor& out) {
  kernels::cuda::causal_conv1d_update_cuda<T>(src.size(0), c, w.size(-1),
                                              static_cast<float*>(state.conv_state.raw_data()), column<T>(src, col0),
                                              src.size(1), static_cast<const float*>(w.raw_data()),
                                              static_cast<const float*>(bias.raw_data()), true,
                                              static_cast<T*>(out.raw_data()), cuda_glue::stream(w.device()));
}

}  // namespace

void short_conv_cuda(const Tensor& src, int64_t col0, int64_t c, const Tensor& w, const Tensor& bias,
                     LayerState* state, Tensor& out) {
  if (src.dtype() == DType::bf16)
    conv_fwd<__nv_bfloat16>(src, col0, c, w, bias, state, out);
  else
    conv_fwd<float>(src, col0, c, w, bias, state, out);
}

void conv_update_cuda(const Tensor& src, int64_t col0, int64_t c, const Tensor& w, const Tensor& bias,
                      LayerState& state, Tensor& out) {
  if (src.dtype() == DType::bf16)
    conv_step<__nv_bfloat16>(src, col0, c, w, bias, state, out);
  else
    conv_step<float>(src, col0, c, w, bias, state, out);
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn::detail
