// Mamba1 on the GPU: weights moved once, the parallel forward (prefill) and the recurrent
// step through cuBLASLt + the kernels of kernels/cuda. Activations in the compute dtype (f32
// or bf16); conv weights, A, D, dt bias and the states f32 (ARCHITECTURE.md, Precision).
//
// Parallel forward, per layer (rows = b * l):
//   xz = x W_in^T (rows, 2di) -> conv1d + SiLU over the x half (strided, no copy) -> xc
//   xdbl = xc W_x^T (rows, R + 2N); dt = xdbl[:, :R] W_dt^T (the dt bias and softplus run
//   inside the scan); the scan wants (b, d, l) / (b, 1, N, l): u, delta, z, B, C are
//   transposed by the strided-copy kernel; y (b, d, l) back to (b, l, d); out = y W_out^T.
// Step (step_into): the same GEMMs on (b, ·) rows, the conv update and the state update
// kernels reading their strided rows in place; no transposes, no allocation.
#include <nlohmann/json.hpp>

#include "layer_util.h"
#include "mamba/nn/mamba1.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#endif

namespace mamba::nn {

void Mamba1::to(Device device, DType compute) {
  const char* op = "Mamba1::to";
  if (device.is_cpu()) {
    if (compute != DType::f32) fail(op, "the CPU path computes in f32");
  } else {
    cuda::require_device(device, op);
    if (compute != DType::f32 && compute != DType::bf16)
      fail(op, std::string("compute dtype must be f32 or bf16 on CUDA, got ") + dtype_name(compute));
    if (!cfg_.selective) fail(op, "the non-selective (LTI) ablation has no CUDA path");
    if (cfg_.d_state > 256) fail(op, "d_state " + std::to_string(cfg_.d_state) + " exceeds the CUDA limit 256");
    if (cfg_.d_conv > 4) fail(op, "d_conv " + std::to_string(cfg_.d_conv) + " exceeds the CUDA conv limit 4");
  }
  for (Tensor* w : {&in_proj_w_, &x_proj_w_, &dt_proj_w_, &out_proj_w_}) *w = w->to(Device::cpu()).to(compute).to(device);
  for (Tensor* t : {&conv_w_, &conv_b_, &dt_proj_b_, &A_log_, &D_, &A_})
    *t = t->to(Device::cpu()).to(DType::f32).to(device);
  if (B_lti_.defined()) B_lti_ = B_lti_.to(device);
  if (C_lti_.defined()) C_lti_ = C_lti_.to(device);
  device_ = device;
  compute_ = compute;
}

Mamba1::StepBuffers Mamba1::make_step_buffers(int64_t b) const {
  const int64_t di = cfg_.d_inner(), xd = cfg_.rank() + 2 * cfg_.d_state;
  StepBuffers s;
  s.xz = Tensor::empty({b, 2 * di}, compute_, device_);
  s.xc = Tensor::empty({b, di}, compute_, device_);
  s.xdbl = Tensor::empty({b, xd}, compute_, device_);
  s.dt = Tensor::empty({b, di}, compute_, device_);
  s.y = Tensor::empty({b, di}, compute_, device_);
  return s;
}

#ifndef MAMBA_HAVE_CUDA

Tensor Mamba1::forward_cuda(const Tensor&, LayerState*) const { fail("Mamba1::forward", "built without CUDA"); }
void Mamba1::step_into(const Tensor&, LayerState&, StepBuffers&, Tensor&) const {
  fail("Mamba1::step_into", "built without CUDA");
}

#else

namespace {

template <class T>
void scan_and_conv(const Mamba1Config& cfg, int64_t b, int64_t l, const Tensor& xz, const Tensor& conv_w,
                   const Tensor& conv_b, LayerState* state, Tensor& xc) {
  const int64_t di = cfg.d_inner(), K = cfg.d_conv;
  const Device dev = xz.device();
  Tensor hist;
  kernels::cuda::CausalConv1dCudaParams<T> cp;
  cp.batch = b; cp.seqlen = l; cp.channels = di; cp.width = K;
  cp.x = static_cast<const T*>(xz.raw_data()); cp.x_sb = l * 2 * di; cp.x_st = 2 * di;
  cp.weight = static_cast<const float*>(conv_w.raw_data());
  cp.bias = static_cast<const float*>(conv_b.raw_data());
  cp.silu = true;
  if (state && K > 1) {
    hist = cuda_glue::contiguous(state->conv_state.slice(2, 1, K));
    cp.initial_state = static_cast<const float*>(hist.raw_data());
  }
  cp.out = static_cast<T*>(xc.raw_data());
  kernels::cuda::causal_conv1d_fwd_cuda<T>(cp, cuda_glue::stream(dev));
  if (state)
    kernels::cuda::conv_state_advance_cuda(b, di, K, static_cast<float*>(state->conv_state.raw_data()), xz.raw_data(),
                                           cuda_glue::elem_type(xz.dtype()), l * 2 * di, 2 * di, l,
                                           cuda_glue::stream(dev));
}

// (b, l, c) strided view -> contiguous (b, c, l).
Tensor to_bdl(const Tensor& v) {
  Tensor out = Tensor::empty({v.size(0), v.size(2), v.size(1)}, v.dtype(), v.device());
  Tensor dst_view = out.permute({0, 2, 1});
  cuda_glue::copy_on_stream(dst_view, v);
  return out;
}

template <class T>
void run_scan(int64_t b, int64_t di, int64_t l, int64_t N, const Tensor& u, const Tensor& delta, const Tensor& z,
              const Tensor& Bm, const Tensor& Cm, const Tensor& A, const Tensor& D, const Tensor& dt_bias,
              const float* init, float* final_state, Tensor& y) {
  kernels::cuda::SelectiveScanCudaParams<T> sp;
  sp.batch = b; sp.dim = di; sp.seqlen = l; sp.dstate = N; sp.n_groups = 1;
  sp.u = static_cast<const T*>(u.raw_data());
  sp.delta = static_cast<const T*>(delta.raw_data());
  sp.z = static_cast<const T*>(z.raw_data());
  sp.B = static_cast<const T*>(Bm.raw_data());
  sp.C = static_cast<const T*>(Cm.raw_data());
  sp.A = static_cast<const float*>(A.raw_data());
  sp.D = static_cast<const float*>(D.raw_data());
  sp.delta_bias = static_cast<const float*>(dt_bias.raw_data());
  sp.delta_softplus = true;
  sp.initial_state = init;
  sp.final_state = final_state;
  sp.y = static_cast<T*>(y.raw_data());
  const Tensor seg = cuda_glue::scan_seg_workspace(sp, u.device());  // small grids: the sequence split
  kernels::cuda::selective_scan_fwd_cuda<T>(sp, cuda_glue::stream(u.device()));
}

template <class T>
void state_update(int64_t b, int64_t di, int64_t N, int64_t R, LayerState& state, Mamba1::StepBuffers& buf,
                  const Tensor& A, const Tensor& D, const Tensor& dt_bias) {
  const int64_t xd = R + 2 * N;
  kernels::cuda::SelectiveStateUpdateCudaParams<T> up;
  up.batch = b; up.dim = di; up.dstate = N; up.n_groups = 1;
  up.state = static_cast<float*>(state.ssm_state.raw_data());
  up.x = static_cast<const T*>(buf.xc.raw_data()); up.x_stride = di;
  up.delta = static_cast<const T*>(buf.dt.raw_data()); up.delta_stride = di;
  up.z = static_cast<const T*>(buf.xz.raw_data()) + di; up.z_stride = 2 * di;
  up.B = static_cast<const T*>(buf.xdbl.raw_data()) + R; up.B_stride = xd;
  up.C = static_cast<const T*>(buf.xdbl.raw_data()) + R + N; up.C_stride = xd;
  up.A = static_cast<const float*>(A.raw_data());
  up.D = static_cast<const float*>(D.raw_data());
  up.delta_bias = static_cast<const float*>(dt_bias.raw_data());
  up.delta_softplus = true;
  up.y = static_cast<T*>(buf.y.raw_data()); up.y_stride = di;
  kernels::cuda::selective_state_update_cuda<T>(up, cuda_glue::stream(state.ssm_state.device()));
}

template <class T>
void conv_update(int64_t b, int64_t di, int64_t K, LayerState& state, Mamba1::StepBuffers& buf, const Tensor& w,
                 const Tensor& bias) {
  kernels::cuda::causal_conv1d_update_cuda<T>(b, di, K, static_cast<float*>(state.conv_state.raw_data()),
                                              static_cast<const T*>(buf.xz.raw_data()), 2 * di,
                                              static_cast<const float*>(w.raw_data()),
                                              static_cast<const float*>(bias.raw_data()), true,
                                              static_cast<T*>(buf.xc.raw_data()), cuda_glue::stream(w.device()));
}

void check_cuda_state(const LayerState* s, int64_t b, int64_t di, int64_t K, int64_t N, Device dev, const char* op) {
  if (!s) return;
  detail::check_state(s->conv_state, {b, di, K}, op, "conv_state");
  detail::check_state(s->ssm_state, {b, di, N}, op, "ssm_state");
  if (s->conv_state.device() != dev || s->ssm_state.device() != dev)
    fail(op, "the states must be on " + dev.str() + " (make them with init_state / new_cache)");
}

}  // namespace

Tensor Mamba1::forward_cuda(const Tensor& x_in, LayerState* state) const {
  const char* op = "Mamba1::forward";
  detail::check_input_device(x_in, 3, cfg_.d_model, device_, compute_, op);
  const Tensor x = cuda_glue::contiguous(x_in);
  const int64_t b = x.size(0), l = x.size(1), di = cfg_.d_inner(), N = cfg_.d_state, R = cfg_.rank(), K = cfg_.d_conv;
  const int64_t xd = R + 2 * N, dm = cfg_.d_model;
  check_cuda_state(state, b, di, K, N, device_, op);
  Tensor out = Tensor::empty({b, l, dm}, compute_, device_);
  if (b * l == 0) return out;
  const bool bf = compute_ == DType::bf16;

  Tensor xz = Tensor::empty({b, l, 2 * di}, compute_, device_);
  cuda_glue::linear_rows(x.raw_data(), b * l, dm, in_proj_w_, xz.raw_data(), 2 * di, compute_, device_);
  Tensor xc = Tensor::empty({b, l, di}, compute_, device_);
  if (bf)
    scan_and_conv<__nv_bfloat16>(cfg_, b, l, xz, conv_w_, conv_b_, state, xc);
  else
    scan_and_conv<float>(cfg_, b, l, xz, conv_w_, conv_b_, state, xc);
  Tensor xdbl = Tensor::empty({b, l, xd}, compute_, device_);
  cuda_glue::linear_rows(xc.raw_data(), b * l, di, x_proj_w_, xdbl.raw_data(), xd, compute_, device_);
  Tensor dt = Tensor::empty({b, l, di}, compute_, device_);
  cuda_glue::linear_rows(xdbl.raw_data(), b * l, xd, dt_proj_w_, dt.raw_data(), di, compute_, device_);

  const Tensor u = to_bdl(xc), delta = to_bdl(dt), z = to_bdl(xz.slice(2, di, 2 * di));
  const Tensor Bm = to_bdl(xdbl.slice(2, R, R + N)), Cm = to_bdl(xdbl.slice(2, R + N, xd));
  Tensor y_bdl = Tensor::empty({b, di, l}, compute_, device_);
  Tensor final_state;
  const float* init = nullptr;
  if (state) {
    init = static_cast<const float*>(state->ssm_state.raw_data());
    final_state = Tensor::empty({b, di, N}, DType::f32, device_);
  }
  float* fin = final_state.defined() ? static_cast<float*>(final_state.raw_data()) : nullptr;
  if (bf)
    run_scan<__nv_bfloat16>(b, di, l, N, u, delta, z, Bm, Cm, A_, D_, dt_proj_b_, init, fin, y_bdl);
  else
    run_scan<float>(b, di, l, N, u, delta, z, Bm, Cm, A_, D_, dt_proj_b_, init, fin, y_bdl);
  if (state) cuda_glue::copy_on_stream(state->ssm_state, final_state);  // in place: the state keeps its address
  const Tensor y = cuda_glue::contiguous(y_bdl.permute({0, 2, 1}));
  cuda_glue::linear_rows(y.raw_data(), b * l, di, out_proj_w_, out.raw_data(), dm, compute_, device_);
  return out;
}

void Mamba1::step_into(const Tensor& x, LayerState& state, StepBuffers& buf, Tensor& out) const {
  const char* op = "Mamba1::step";
  detail::check_input_device(x, 2, cfg_.d_model, device_, compute_, op);
  if (!x.is_contiguous() || !out.is_contiguous() || out.shape() != x.shape() || out.dtype() != compute_ ||
      out.device() != device_)
    fail(op, "x and out must be contiguous (batch, d_model) " + std::string(dtype_name(compute_)) + " on " +
                 device_.str());
  const int64_t b = x.size(0), di = cfg_.d_inner(), N = cfg_.d_state, R = cfg_.rank(), K = cfg_.d_conv;
  const int64_t xd = R + 2 * N, dm = cfg_.d_model;
  check_cuda_state(&state, b, di, K, N, device_, op);
  if (!buf.xz.defined() || buf.xz.shape() != Shape{b, 2 * di} || buf.xdbl.shape() != Shape{b, xd} ||
      buf.xc.shape() != Shape{b, di} || buf.dt.shape() != Shape{b, di} || buf.y.shape() != Shape{b, di})
    fail(op, "step buffers are not for batch " + std::to_string(b) + " (make_step_buffers)");
  if (b == 0) return;
  const bool bf = compute_ == DType::bf16;
  cuda_glue::linear_rows(x.raw_data(), b, dm, in_proj_w_, buf.xz.raw_data(), 2 * di, compute_, device_);
  if (bf)
    conv_update<__nv_bfloat16>(b, di, K, state, buf, conv_w_, conv_b_);
  else
    conv_update<float>(b, di, K, state, buf, conv_w_, conv_b_);
  cuda_glue::linear_rows(buf.xc.raw_data(), b, di, x_proj_w_, buf.xdbl.raw_data(), xd, compute_, device_);
  cuda_glue::linear_rows(buf.xdbl.raw_data(), b, xd, dt_proj_w_, buf.dt.raw_data(), di, compute_, device_);
  if (bf)
    state_update<__nv_bfloat16>(b, di, N, R, state, buf, A_, D_, dt_proj_b_);
  else
    state_update<float>(b, di, N, R, state, buf, A_, D_, dt_proj_b_);
  cuda_glue::linear_rows(buf.y.raw_data(), b, di, out_proj_w_, out.raw_data(), dm, compute_, device_);
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn
