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

#include "layer_cuda.h"
#include "layer_util.h"
#include "mamba/nn/mamba1.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#endif

namespace mamba::nn {

void Mamba1::to(Device device, DType compute) {
  const char* op = "Mamba1::to";
  if (device.is_cpu()) {
    if (compute != DType::f32) fail(op, "the CPU path computes in f32");
  } else {
    detail::check_cuda_target(device, compute, cfg_.d_conv, op);
    if (!cfg_.selective) fail(op, "the non-selective (LTI) ablation has no CUDA path");
    if (cfg_.d_state > 256) fail(op, "d_state " + std::to_string(cfg_.d_state) + " exceeds the CUDA limit 256");
  }
  detail::move_params({&in_proj_w_, &x_proj_w_, &dt_proj_w_, &out_proj_w_}, {&conv_w_, &conv_b_, &dt_proj_b_, &A_log_, &D_, &A_},
                      device, compute);
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

}  // namespace

Tensor Mamba1::forward_cuda(const Tensor& x_in, LayerState* state) const {
  const char* op = "Mamba1::forward";
  detail::check_input_device(x_in, 3, cfg_.d_model, device_, compute_, op);
  const Tensor x = cuda_glue::contiguous(x_in);
  const int64_t b = x.size(0), l = x.size(1), di = cfg_.d_inner(), N = cfg_.d_state, R = cfg_.rank(), K = cfg_.d_conv;
  const int64_t xd = R + 2 * N, dm = cfg_.d_model;
  detail::check_cuda_states(state, {b, di, K}, {b, di, N}, device_, op);
  Tensor out = Tensor::empty({b, l, dm}, compute_, device_);
  if (b * l == 0) return out;
  const bool bf = compute_ == DType::bf16;

  Tensor xz = Tensor::empty({b, l, 2 * di}, compute_, device_);
  cuda_glue::linear_rows(x.raw_data(), b * l, dm, in_proj_w_, xz.raw_data(), 2 * di, compute_, device_);
  Tensor xc = Tensor::empty({b, l, di}, compute_, device_);
  detail::short_conv_cuda(xz, 0, di, conv_w_, conv_b_, state, xc);
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
  detail::check_cuda_states(&state, {b, di, K}, {b, di, N}, device_, op);
  if (!buf.xz.defined() || buf.xz.shape() != Shape{b, 2 * di} || buf.xdbl.shape() != Shape{b, xd} ||
      buf.xc.shape() != Shape{b, di} || buf.dt.shape() != Shape{b, di} || buf.y.shape() != Shape{b, di})
    fail(op, "step buffers are not for batch " + std::to_string(b) + " (make_step_buffers)");
  if (b == 0) return;
  const bool bf = compute_ == DType::bf16;
  cuda_glue::linear_rows(x.raw_data(), b, dm, in_proj_w_, buf.xz.raw_data(), 2 * di, compute_, device_);
  detail::conv_update_cuda(buf.xz, 0, di, conv_w_, conv_b_, state, buf.xc);
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
