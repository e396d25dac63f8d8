#include "mamba/nn/mamba1.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "layer_util.h"
#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/io/json_config.h"

namespace mamba::nn {

Mamba1Config Mamba1Config::from_json(const nlohmann::json& j, int64_t d_model) {
  const io::JsonConfig cfg(j, "ssm_cfg");
  Mamba1Config c;
  c.d_model = d_model;
  c.d_state = cfg.get_int("d_state", c.d_state);
  c.d_conv = cfg.get_int("d_conv", c.d_conv);
  c.expand = cfg.get_int("expand", c.expand);
  if (cfg.has("dt_rank") && !(j["dt_rank"].is_string() && j["dt_rank"] == "auto")) c.dt_rank = cfg.get_int("dt_rank");
  c.selective = cfg.get_bool("selective", true);
  if (cfg.get_bool("bias", false)) fail("Mamba1Config", "bias=true (linear biases) is not supported");
  if (!cfg.get_bool("conv_bias", true)) fail("Mamba1Config", "conv_bias=false is not supported");
  if (c.d_model <= 0 || c.d_state <= 0 || c.d_conv <= 0 || c.expand <= 0 || c.rank() <= 0)
    fail("Mamba1Config", "d_model, d_state, d_conv, expand and dt_rank must be positive");
  return c;
}

Mamba1::Mamba1(const Mamba1Config& cfg) : cfg_(cfg) {
  const int64_t di = cfg.d_inner(), N = cfg.d_state, R = cfg.rank();
  in_proj_w_ = Tensor::zeros({2 * di, cfg.d_model});
  conv_w_ = Tensor::zeros({di, 1, cfg.d_conv});
  conv_b_ = Tensor::zeros({di});
  x_proj_w_ = Tensor::zeros({R + 2 * N, di});
  dt_proj_w_ = Tensor::zeros({di, R});
  dt_proj_b_ = Tensor::zeros({di});
  A_log_ = Tensor::zeros({di, N});
  D_ = Tensor::zeros({di});
  out_proj_w_ = Tensor::zeros({cfg.d_model, di});
  if (!cfg.selective) {
    B_lti_ = Tensor::zeros({N});
    C_lti_ = Tensor::zeros({N});
  }
  refresh_derived();
}

void Mamba1::refresh_derived() { A_ = detail::neg_exp(A_log_); }

std::vector<std::pair<std::string, Tensor*>> Mamba1::parameters() {
  std::vector<std::pair<std::string, Tensor*>> p = {
      {"in_proj.weight", &in_proj_w_}, {"conv1d.weight", &conv_w_}, {"conv1d.bias", &conv_b_},
      {"x_proj.weight", &x_proj_w_},   {"dt_proj.weight", &dt_proj_w_}, {"dt_proj.bias", &dt_proj_b_},
      {"A_log", &A_log_},              {"D", &D_},                  {"out_proj.weight", &out_proj_w_}};
  if (!cfg_.selective) {
    p.emplace_back("B_lti", &B_lti_);
    p.emplace_back("C_lti", &C_lti_);
  }
  return p;
}

// Without selection, dt, B and C stop depending on the input: the x_proj columns are
// replaced by 0 (so delta = dt_proj.bias), B_lti and C_lti.
void Mamba1::apply_lti(Tensor& xdbl) const {
  if (cfg_.selective) return;
  const int64_t R = cfg_.rank(), N = cfg_.d_state, xd = R + 2 * N, rows = xdbl.numel() / xd;
  float* p = xdbl.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(p + r * xd, p + r * xd + R, 0.f);
    std::copy(B_lti_.data<float>(), B_lti_.data<float>() + N, p + r * xd + R);
    std::copy(C_lti_.data<float>(), C_lti_.data<float>() + N, p + r * xd + R + N);
  }
}

LayerState Mamba1::init_state(int64_t batch) const {
  return {Tensor::zeros({batch, cfg_.d_inner(), cfg_.d_conv}, DType::f32, device_),
          Tensor::zeros({batch, cfg_.d_inner(), cfg_.d_state}, DType::f32, device_)};
}

struct Mamba1::Activations final : SavedActivations {
  Tensor x, xz, xc, xdbl, dt, y;  // input, in_proj out, conv+SiLU out, x_proj out, dt_proj out, gated scan out
};

namespace {

// The scan's view of a Mamba1 forward's activations, all (b, l, ·) row-major.
kernels::SelectiveScanParams scan_params(int64_t b, int64_t l, int64_t di, int64_t N, int64_t R, const float* xc,
                                         const float* dt, const float* xz, const float* xdbl, const float* A,
                                         const float* D, const float* dt_bias) {
  const int64_t xd = R + 2 * N;
  kernels::SelectiveScanParams sp;
  sp.batch = b; sp.dim = di; sp.seqlen = l; sp.dstate = N; sp.n_groups = 1;
  sp.u = {xc, l * di, 1, di};
  sp.delta = {dt, l * di, 1, di};
  sp.z = {xz + di, l * 2 * di, 1, 2 * di};
  sp.B = {xdbl + R, l * xd, 0, 1, xd};
  sp.C = {xdbl + R + N, l * xd, 0, 1, xd};
  sp.A = A; sp.D = D; sp.delta_bias = dt_bias; sp.delta_softplus = true;
  return sp;
}

}  // namespace

Tensor Mamba1::forward(const Tensor& x_in, LayerState* state) const {
  if (device_.kind == Device::Kind::cuda) return forward_cuda(x_in, state);
  return forward_impl(x_in, state, nullptr);
}

Tensor Mamba1::forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const {
  if (device_.kind == Device::Kind::cuda) fail("Mamba1::forward_train", "training on CUDA is not implemented (move the layer to the CPU)");
  return detail::forward_keeping<Activations>(saved, [&](Activations* a) { return forward_impl(x, nullptr, a); });
}

Tensor Mamba1::forward_impl(const Tensor& x_in, LayerState* state, Activations* keep) const {
  detail::check_input(x_in, 3, cfg_.d_model, "Mamba1::forward");
  const Tensor x = x_in.contiguous();
  const int64_t b = x.size(0), l = x.size(1), di = cfg_.d_inner(), N = cfg_.d_state, R = cfg_.rank(), K = cfg_.d_conv;
  const int64_t xd = R + 2 * N;
  if (state) {
    detail::check_state(state->conv_state, {b, di, K}, "Mamba1::forward", "conv_state");
    detail::check_state(state->ssm_state, {b, di, N}, "Mamba1::forward", "ssm_state");
  }
  Tensor out = Tensor::empty({b, l, cfg_.d_model});
  if (b * l == 0) return out;

  // in_proj -> xz (b*l, 2*di): x in columns [0, di), z in [di, 2*di).
  Tensor xz = Tensor::empty({b, l, 2 * di});
  detail::linear_rows(x.data<float>(), b * l, cfg_.d_model, in_proj_w_, xz.data<float>(), 2 * di);

  // Causal depthwise conv + SiLU over the x half.
  const Tensor xc = detail::short_conv(xz.data<float>(), b, l, di, l * 2 * di, 2 * di, conv_w_, conv_b_, state);

  // x_proj -> [dt (R), B (N), C (N)]; dt_proj (no bias: it is the scan's delta_bias).
  Tensor xdbl = Tensor::empty({b, l, xd});
  detail::linear_rows(xc.data<float>(), b * l, di, x_proj_w_, xdbl.data<float>(), xd);
  apply_lti(xdbl);
  Tensor dt = Tensor::empty({b, l, di});
  detail::linear_rows(xdbl.data<float>(), b * l, xd, dt_proj_w_, dt.data<float>(), di);

  Tensor y = Tensor::empty({b, l, di});
  kernels::SelectiveScanParams sp = scan_params(b, l, di, N, R, xc.data<float>(), dt.data<float>(), xz.data<float>(),
                                                xdbl.data<float>(), A_.data<float>(), D_.data<float>(),
                                                dt_proj_b_.data<float>());
  Tensor final_state;
  if (state) {
    sp.initial_state = state->ssm_state.data<float>();
    final_state = Tensor::empty(state->ssm_state.shape());
    sp.final_state = final_state.data<float>();
  }
  sp.y = {y.data<float>(), l * di, 1, di};
  kernels::selective_scan(sp);
  if (state) state->ssm_state = final_state;

  detail::linear_rows(y.data<float>(), b * l, di, out_proj_w_, out.data<float>(), cfg_.d_model);
  if (keep) {
    keep->x = x;
    keep->xz = xz;
    keep->xc = xc;
    keep->xdbl = xdbl;
    keep->dt = dt;
    keep->y = y;
  }
  return out;
}

Tensor Mamba1::backward(const SavedActivations& saved_base, const Tensor& dy_in, std::vector<Tensor>& grads) const {
  const auto* saved = dynamic_cast<const Activations*>(&saved_base);
  if (!saved) fail("Mamba1::backward", "saved activations are not from Mamba1::forward_train");
  const Tensor& x = saved->x;
  const int64_t b = x.size(0), l = x.size(1), dm = cfg_.d_model, di = cfg_.d_inner(), N = cfg_.d_state,
                R = cfg_.rank(), K = cfg_.d_conv, xd = R + 2 * N, rows = b * l;
  check_dtype(dy_in, DType::f32, "Mamba1::backward");
  check_shape(dy_in, x.shape(), "Mamba1::backward", "dy");
  const Tensor dy = dy_in.contiguous();
  using kernels::sgemm;
  auto gemm_nn = [](int64_t M, int64_t Nn, int64_t Kk, const float* A, int64_t lda, const float* B, int64_t ldb,
                    float* C, int64_t ldc, float beta) { sgemm(false, false, M, Nn, Kk, 1.f, A, lda, B, ldb, beta, C, ldc); };
  auto gemm_tn = [](int64_t M, int64_t Nn, int64_t Kk, const float* A, int64_t lda, const float* B, int64_t ldb,
                    float* C, int64_t ldc) { sgemm(true, false, M, Nn, Kk, 1.f, A, lda, B, ldb, 0.f, C, ldc); };

  Tensor g_in = Tensor::empty(in_proj_w_.shape()), g_convw = Tensor::empty(conv_w_.shape()),
         g_convb = Tensor::empty(conv_b_.shape()), g_xproj = Tensor::empty(x_proj_w_.shape()),
         g_dtw = Tensor::empty(dt_proj_w_.shape()), g_dtb = Tensor::empty(dt_proj_b_.shape()),
         g_Alog = Tensor::empty(A_log_.shape()), g_D = Tensor::empty(D_.shape()), g_out = Tensor::empty(out_proj_w_.shape());

  // out = y W_out^T:  dY = dy W_out;  dW_out = dy^T y.
  Tensor dY = Tensor::empty({b, l, di});
  if (rows == 0) fail("Mamba1::backward", "empty input");
  gemm_nn(rows, di, dm, dy.data<float>(), dm, out_proj_w_.data<float>(), di, dY.data<float>(), di, 0.f);
  gemm_tn(dm, di, rows, dy.data<float>(), dm, saved->y.data<float>(), di, g_out.data<float>(), di);

  // Selective scan backward, written straight into the layouts of dxz / dxdbl / dxc / ddt.
  Tensor dxz = Tensor::empty({b, l, 2 * di}), dxdbl = Tensor::empty({b, l, xd}), dxc = Tensor::empty({b, l, di}),
         ddt = Tensor::empty({b, l, di}), dA = Tensor::empty(A_.shape());
  const kernels::SelectiveScanParams sp =
      scan_params(b, l, di, N, R, saved->xc.data<float>(), saved->dt.data<float>(), saved->xz.data<float>(),
                  saved->xdbl.data<float>(), A_.data<float>(), D_.data<float>(), dt_proj_b_.data<float>());
  kernels::SelectiveScanGrads sg;
  sg.du = {dxc.data<float>(), l * di, 1, di};
  sg.ddelta = {ddt.data<float>(), l * di, 1, di};
  sg.dz = {dxz.data<float>() + di, l * 2 * di, 1, 2 * di};
  sg.dB = {dxdbl.data<float>() + R, l * xd, 0, 1, xd};
  sg.dC = {dxdbl.data<float>() + R + N, l * xd, 0, 1, xd};
  sg.dA = dA.data<float>();
  sg.dD = g_D.data<float>();
  sg.ddelta_bias = g_dtb.data<float>();
  kernels::selective_scan_bwd(sp, {dY.data<float>(), l * di, 1, di}, nullptr, sg);
  // A = -exp(A_log): dA_log = dA * A.
  for (int64_t i = 0; i < dA.numel(); ++i) g_Alog.data<float>()[i] = dA.data<float>()[i] * A_.data<float>()[i];

  // dt = xdbl[:, :R] W_dt^T:  dxdbl[:, :R] = ddt W_dt;  dW_dt = ddt^T xdbl[:, :R].
  gemm_nn(rows, R, di, ddt.data<float>(), di, dt_proj_w_.data<float>(), R, dxdbl.data<float>(), xd, 0.f);
  Tensor g_Blti, g_Clti;
  if (!cfg_.selective) {  // the constant columns collect their gradient; x_proj gets none
    g_Blti = Tensor::zeros({N});
    g_Clti = Tensor::zeros({N});
    float* dp = dxdbl.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        g_Blti.data<float>()[n] += dp[r * xd + R + n];
        g_Clti.data<float>()[n] += dp[r * xd + R + N + n];
      }
      std::fill(dp + r * xd, dp + (r + 1) * xd, 0.f);
    }
  }
  gemm_tn(di, R, rows, ddt.data<float>(), di, saved->xdbl.data<float>(), xd, g_dtw.data<float>(), R);
  // xdbl = xc W_x^T:  dxc += dxdbl W_x;  dW_x = dxdbl^T xc.
  gemm_nn(rows, di, xd, dxdbl.data<float>(), xd, x_proj_w_.data<float>(), di, dxc.data<float>(), di, 1.f);
  gemm_tn(xd, di, rows, dxdbl.data<float>(), xd, saved->xc.data<float>(), di, g_xproj.data<float>(), di);

  // Conv + SiLU backward into the x half of dxz.
  kernels::CausalConv1dParams cp;
  cp.batch = b; cp.seqlen = l; cp.channels = di; cp.width = K;
  cp.x = saved->xz.data<float>(); cp.x_sb = l * 2 * di; cp.x_st = 2 * di;
  cp.weight = conv_w_.data<float>(); cp.bias = conv_b_.data<float>(); cp.silu = true;
  kernels::causal_conv1d_bwd(cp, dxc.data<float>(), dxz.data<float>(), l * 2 * di, 2 * di, g_convw.data<float>(),
                             g_convb.data<float>(), nullptr);

  // xz = x W_in^T:  dx = dxz W_in;  dW_in = dxz^T x.
  Tensor dx = Tensor::empty(x.shape());
  gemm_nn(rows, dm, 2 * di, dxz.data<float>(), 2 * di, in_proj_w_.data<float>(), dm, dx.data<float>(), dm, 0.f);
  gemm_tn(2 * di, dm, rows, dxz.data<float>(), 2 * di, x.data<float>(), dm, g_in.data<float>(), dm);

  grads = {g_in, g_convw, g_convb, g_xproj, g_dtw, g_dtb, g_Alog, g_D, g_out};  // the order of parameters()
  if (!cfg_.selective) {
    grads.push_back(g_Blti);
    grads.push_back(g_Clti);
  }
  return dx;
}

Tensor Mamba1::step(const Tensor& x_in, LayerState& state) const {
  if (device_.kind == Device::Kind::cuda) {
    detail::check_input_device(x_in, 2, cfg_.d_model, device_, compute_, "Mamba1::step");
    StepBuffers buf = make_step_buffers(x_in.size(0));
    Tensor out = Tensor::empty({x_in.size(0), cfg_.d_model}, compute_, device_);
    step_into(x_in.contiguous(), state, buf, out);
    return out;
  }
  detail::check_input(x_in, 2, cfg_.d_model, "Mamba1::step");
  const Tensor x = x_in.contiguous();
  const int64_t b = x.size(0), di = cfg_.d_inner(), N = cfg_.d_state, R = cfg_.rank(), K = cfg_.d_conv;
  const int64_t xd = R + 2 * N;
  detail::check_state(state.conv_state, {b, di, K}, "Mamba1::step", "conv_state");
  detail::check_state(state.ssm_state, {b, di, N}, "Mamba1::step", "ssm_state");

  Tensor xz = Tensor::empty({b, 2 * di});
  detail::linear_rows(x.data<float>(), b, cfg_.d_model, in_proj_w_, xz.data<float>(), 2 * di);
  Tensor xc = Tensor::empty({b, di});
  kernels::causal_conv1d_update(b, di, K, state.conv_state.data<float>(), xz.data<float>(), 2 * di,
                                conv_w_.data<float>(), conv_b_.data<float>(), true, xc.data<float>());
  Tensor xdbl = Tensor::empty({b, xd});
  detail::linear_rows(xc.data<float>(), b, di, x_proj_w_, xdbl.data<float>(), xd);
  apply_lti(xdbl);
  Tensor dt = Tensor::empty({b, di});
  detail::linear_rows(xdbl.data<float>(), b, xd, dt_proj_w_, dt.data<float>(), di);

  Tensor y = Tensor::empty({b, di});
  kernels::SelectiveStateUpdateParams up;
  up.batch = b; up.dim = di; up.dstate = N; up.n_groups = 1;
  up.state = state.ssm_state.data<float>();
  up.x = xc.data<float>(); up.x_stride = di;
  up.delta = dt.data<float>(); up.delta_stride = di;
  up.z = xz.data<float>() + di; up.z_stride = 2 * di;
  up.B = xdbl.data<float>() + R; up.B_stride = xd;
  up.C = xdbl.data<float>() + R + N; up.C_stride = xd;
  up.A = A_.data<float>(); up.D = D_.data<float>(); up.delta_bias = dt_proj_b_.data<float>(); up.delta_softplus = true;
  up.y = y.data<float>(); up.y_stride = di;
  kernels::selective_state_update(up);

  Tensor out = Tensor::empty({b, cfg_.d_model});
  detail::linear_rows(y.data<float>(), b, di, out_proj_w_, out.data<float>(), cfg_.d_model);
  return out;
}

}  // namespace mamba::nn
