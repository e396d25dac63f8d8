// Mamba2 on the GPU: weights moved once, the parallel forward (prefill) and the recurrent
// step through cuBLASLt + the kernels of kernels/cuda. Activations in the compute dtype (f32
// or bf16); conv weights, A, D, dt bias, the norm weight and the states f32 (ARCHITECTURE.md,
// Precision).
//
// Parallel forward (rows = b * l), every intermediate read in place through strides:
//   zxbcdt = x W_in^T (rows, 2di + 2GN + H) = [z, xBC, dt]
//   conv1d + SiLU over the xBC columns -> xbc (rows, di + 2GN) = [x, B, C]
//   SSD over (x, dt, B, C) with D, dt bias + softplus inside the kernel, from / into the
//   state's ssm_state -> y (rows, di); yn = gated grouped RMSNorm(y, z); out = yn W_out^T.
// Step: the same on (b, ·) rows with the conv update and the Mamba-2 state update kernels.
#include "layer_cuda.h"
#include "layer_util.h"
#include "mamba/nn/mamba2.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#include "mamba/kernels/cuda/ssd_cuda.h"
#include "mamba/kernels/cuda/ssd_state_update_cuda.h"
#endif

namespace mamba::nn {

void Mamba2::to(Device device, DType compute) {
  const char* op = "Mamba2::to";
  if (device.is_cpu()) {
    if (compute != DType::f32) fail(op, "the CPU path computes in f32");
  } else {
    detail::check_cuda_target(device, compute, cfg_.d_conv, op);
    if (cfg_.headdim > 128) fail(op, "headdim " + std::to_string(cfg_.headdim) + " exceeds the CUDA limit 128");
    if (cfg_.d_state > 256) fail(op, "d_state " + std::to_string(cfg_.d_state) + " exceeds the CUDA limit 256");
  }
  detail::move_params({&in_proj_w_, &out_proj_w_}, {&conv_w_, &conv_b_, &dt_bias_, &A_log_, &D_, &norm_w_, &A_},
                      device, compute);
  device_ = device;
  compute_ = compute;
}

#ifndef MAMBA_HAVE_CUDA

Tensor Mamba2::forward_cuda(const Tensor&, LayerState*) const { fail("Mamba2::forward", "built without CUDA"); }
Tensor Mamba2::step_cuda(const Tensor&, LayerState&) const { fail("Mamba2::step", "built without CUDA"); }

#else

namespace {

const float* f32(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }

// The SSD scan over xbc (b, l, cd) = [x, B, C] and the dt columns of zxbcdt (b, l, dp) into
// y (b, l, di); init / fin: the entering / final states (b, H, P, N) f32, or null.
template <class T>
void ssd_scan(const Mamba2Config& c, int64_t b, int64_t l, const Tensor& zxbcdt, const Tensor& xbc, const Tensor& A,
              const Tensor& D, const Tensor& dt_bias, const float* init, float* fin, Tensor& y) {
  const int64_t di = c.d_inner(), N = c.d_state, G = c.ngroups, P = c.headdim, cd = c.conv_dim(), dp = c.d_in_proj();
  const T* xb = static_cast<const T*>(xbc.raw_data());
  const T* dt = static_cast<const T*>(zxbcdt.raw_data()) + di + cd;
  kernels::cuda::SsdCudaParams<T> sp;
  sp.batch = b; sp.seqlen = l; sp.nheads = c.nheads(); sp.headdim = P; sp.dstate = N; sp.ngroups = G;
  sp.x = xb; sp.x_sb = l * cd; sp.x_st = cd; sp.x_sh = P;
  sp.dt = dt; sp.dt_sb = l * dp; sp.dt_st = dp; sp.dt_sh = 1;
  sp.B = xb + di; sp.B_sb = l * cd; sp.B_st = cd; sp.B_sg = N;
  sp.C = xb + di + G * N; sp.C_sb = l * cd; sp.C_st = cd; sp.C_sg = N;
  sp.A = f32(A); sp.D = f32(D); sp.dt_bias = f32(dt_bias); sp.dt_softplus = true;
  sp.initial_state = init;
  sp.final_state = fin;
  sp.y = static_cast<T*>(y.raw_data()); sp.y_sb = l * di; sp.y_st = di; sp.y_sh = P;
  kernels::cuda::ssd_chunk_scan_cuda<T>(sp, cuda_glue::stream(y.device()));
}

// One token: the state (b, H, P, N) updated in place, y (b, di), from (b, ·) rows.
template <class T>
void state_update(const Mamba2Config& c, int64_t b, const Tensor& zxbcdt, const Tensor& xbc, const Tensor& A,
                  const Tensor& D, const Tensor& dt_bias, LayerState& state, Tensor& y) {
  const int64_t di = c.d_inner(), N = c.d_state, G = c.ngroups, cd = c.conv_dim(), dp = c.d_in_proj();
  const T* xb = static_cast<const T*>(xbc.raw_data());
  kernels::cuda::SsdStateUpdateCudaParams<T> up;
  up.batch = b; up.nheads = c.nheads(); up.headdim = c.headdim; up.dstate = N; up.ngroups = G;
  up.state = static_cast<float*>(state.ssm_state.raw_data());
  up.x = xb; up.x_sb = cd;
  up.dt = static_cast<const T*>(zxbcdt.raw_data()) + di + cd; up.dt_sb = dp;
  up.B = xb + di; up.B_sb = cd;
  up.C = xb + di + G * N; up.C_sb = cd;
  up.A = f32(A); up.D = f32(D); up.dt_bias = f32(dt_bias); up.dt_softplus = true;
  up.y = static_cast<T*>(y.raw_data()); up.y_sb = di;
  kernels::cuda::ssd_state_update_cuda<T>(up, cuda_glue::stream(y.device()));
}

// yn = gated grouped RMSNorm of y (rows, di) with the z columns of zxbcdt (row stride dp).
template <class T>
void gated_norm(const Mamba2Config& c, int64_t rows, const Tensor& y, const Tensor& zxbcdt, const Tensor& w,
                Tensor& yn) {
  const int64_t di = c.d_inner();
  kernels::cuda::gated_rms_norm_cuda<T>(rows, di, di / c.ngroups, static_cast<const T*>(y.raw_data()), di,
                                        static_cast<const T*>(zxbcdt.raw_data()), c.d_in_proj(), f32(w),
                                        static_cast<float>(c.rmsnorm_eps), c.norm_before_gate,
                                        static_cast<T*>(yn.raw_data()), di, cuda_glue::stream(y.device()));
}

using cuda_glue::as_mamba_error;

}  // namespace

Tensor Mamba2::forward_cuda(const Tensor& x_in, LayerState* state) const {
  const char* op = "Mamba2::forward";
  detail::check_input_device(x_in, 3, cfg_.d_model, device_, compute_, op);
  const Tensor x = cuda_glue::contiguous(x_in);
  const int64_t b = x.size(0), l = x.size(1), di = cfg_.d_inner(), H = cfg_.nheads(), P = cfg_.headdim,
                N = cfg_.d_state, K = cfg_.d_conv, cd = cfg_.conv_dim(), dp = cfg_.d_in_proj(), dm = cfg_.d_model;
  detail::check_cuda_states(state, {b, cd, K}, {b, H, P, N}, device_, op);
  Tensor out = Tensor::empty({b, l, dm}, compute_, device_);
  if (b * l == 0) return out;
  const bool bf = compute_ == DType::bf16;

  Tensor zxbcdt = Tensor::empty({b, l, dp}, compute_, device_);
  cuda_glue::linear_rows(x.raw_data(), b * l, dm, in_proj_w_, zxbcdt.raw_data(), dp, compute_, device_);
  Tensor xbc = Tensor::empty({b, l, cd}, compute_, device_);
  detail::short_conv_cuda(zxbcdt, di, cd, conv_w_, conv_b_, state, xbc);

  Tensor y = Tensor::empty({b, l, di}, compute_, device_), final_state;
  const float* init = nullptr;
  if (state) {
    init = f32(state->ssm_state);
    final_state = Tensor::empty({b, H, P, N}, DType::f32, device_);
  }
  float* fin = final_state.defined() ? static_cast<float*>(final_state.raw_data()) : nullptr;
  Tensor yn = Tensor::empty({b, l, di}, compute_, device_);
  as_mamba_error(op, [&] {
    if (bf) {
      ssd_scan<__nv_bfloat16>(cfg_, b, l, zxbcdt, xbc, A_, D_, dt_bias_, init, fin, y);
      gated_norm<__nv_bfloat16>(cfg_, b * l, y, zxbcdt, norm_w_, yn);
    } else {
      ssd_scan<float>(cfg_, b, l, zxbcdt, xbc, A_, D_, dt_bias_, init, fin, y);
      gated_norm<float>(cfg_, b * l, y, zxbcdt, norm_w_, yn);
    }
  });
  if (state) cuda_glue::copy_on_stream(state->ssm_state, final_state);  // in place: the state keeps its address
  cuda_glue::linear_rows(yn.raw_data(), b * l, di, out_proj_w_, out.raw_data(), dm, compute_, device_);
  return out;
}

Tensor Mamba2::step_cuda(const Tensor& x_in, LayerState& state) const {
  const char* op = "Mamba2::step";
  detail::check_input_device(x_in, 2, cfg_.d_model, device_, compute_, op);
  const Tensor x = cuda_glue::contiguous(x_in);
  const int64_t b = x.size(0), di = cfg_.d_inner(), H = cfg_.nheads(), P = cfg_.headdim, N = cfg_.d_state,
                K = cfg_.d_conv, cd = cfg_.conv_dim(), dp = cfg_.d_in_proj(), dm = cfg_.d_model;
  detail::check_cuda_states(&state, {b, cd, K}, {b, H, P, N}, device_, op);
  Tensor out = Tensor::empty({b, dm}, compute_, device_);
  if (b == 0) return out;
  const bool bf = compute_ == DType::bf16;

  Tensor zxbcdt = Tensor::empty({b, dp}, compute_, device_);
  cuda_glue::linear_rows(x.raw_data(), b, dm, in_proj_w_, zxbcdt.raw_data(), dp, compute_, device_);
  Tensor xbc = Tensor::empty({b, cd}, compute_, device_);
  detail::conv_update_cuda(zxbcdt, di, cd, conv_w_, conv_b_, state, xbc);
  Tensor y = Tensor::empty({b, di}, compute_, device_), yn = Tensor::empty({b, di}, compute_, device_);
  as_mamba_error(op, [&] {
    if (bf) {
      state_update<__nv_bfloat16>(cfg_, b, zxbcdt, xbc, A_, D_, dt_bias_, state, y);
      gated_norm<__nv_bfloat16>(cfg_, b, y, zxbcdt, norm_w_, yn);
    } else {
      state_update<float>(cfg_, b, zxbcdt, xbc, A_, D_, dt_bias_, state, y);
      gated_norm<float>(cfg_, b, y, zxbcdt, norm_w_, yn);
    }
  });
  cuda_glue::linear_rows(yn.raw_data(), b, di, out_proj_w_, out.raw_data(), dm, compute_, device_);
  return out;
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn
