#include "mamba/nn/mamba1.h"

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
  refresh_derived();
}

void Mamba1::refresh_derived() { A_ = detail::neg_exp(A_log_); }

std::vector<std::pair<std::string, Tensor*>> Mamba1::parameters() {
  return {{"in_proj.weight", &in_proj_w_}, {"conv1d.weight", &conv_w_}, {"conv1d.bias", &conv_b_},
          {"x_proj.weight", &x_proj_w_},   {"dt_proj.weight", &dt_proj_w_}, {"dt_proj.bias", &dt_proj_b_},
          {"A_log", &A_log_},              {"D", &D_},                  {"out_proj.weight", &out_proj_w_}};
}

LayerState Mamba1::init_state(int64_t batch) const {
  return {Tensor::zeros({batch, cfg_.d_inner(), cfg_.d_conv}), Tensor::zeros({batch, cfg_.d_inner(), cfg_.d_state})};
}

Tensor Mamba1::forward(const Tensor& x_in, LayerState* state) const {
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
  Tensor dt = Tensor::empty({b, l, di});
  detail::linear_rows(xdbl.data<float>(), b * l, xd, dt_proj_w_, dt.data<float>(), di);

  Tensor y = Tensor::empty({b, l, di});
  kernels::SelectiveScanParams sp;
  sp.batch = b; sp.dim = di; sp.seqlen = l; sp.dstate = N; sp.n_groups = 1;
  sp.u = {xc.data<float>(), l * di, 1, di};
  sp.delta = {dt.data<float>(), l * di, 1, di};
  sp.z = {xz.data<float>() + di, l * 2 * di, 1, 2 * di};
  sp.B = {xdbl.data<float>() + R, l * xd, 0, 1, xd};
  sp.C = {xdbl.data<float>() + R + N, l * xd, 0, 1, xd};
  sp.A = A_.data<float>(); sp.D = D_.data<float>(); sp.delta_bias = dt_proj_b_.data<float>(); sp.delta_softplus = true;
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
  return out;
}

Tensor Mamba1::step(const Tensor& x_in, LayerState& state) const {
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
