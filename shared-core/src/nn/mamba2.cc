#include "mamba/nn/mamba2.h"

#include <nlohmann/json.hpp>

#include "layer_util.h"
#include "mamba/io/json_config.h"
#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/kernels/ssd.h"

namespace mamba::nn {

Mamba2Config Mamba2Config::from_json(const nlohmann::json& j, int64_t d_model) {
  const io::JsonConfig cfg(j, "ssm_cfg");
  Mamba2Config c;
  c.d_model = d_model;
  c.d_state = cfg.get_int("d_state", c.d_state);
  c.d_conv = cfg.get_int("d_conv", c.d_conv);
  c.expand = cfg.get_int("expand", c.expand);
  c.headdim = cfg.get_int("headdim", c.headdim);
  c.ngroups = cfg.get_int("ngroups", c.ngroups);
  c.chunk_size = cfg.get_int("chunk_size", c.chunk_size);
  c.rmsnorm_eps = cfg.get_double("rmsnorm_eps", c.rmsnorm_eps);
  c.norm_before_gate = cfg.get_bool("norm_before_gate", c.norm_before_gate);
  if (!cfg.get_bool("rmsnorm", true)) fail("Mamba2Config", "rmsnorm=false is not supported");
  if (cfg.get_int("d_ssm", c.d_inner()) != c.d_inner()) fail("Mamba2Config", "d_ssm different from d_inner is not supported");
  if (cfg.get_bool("D_has_hdim", false)) fail("Mamba2Config", "D_has_hdim=true (per-channel D) is not supported");
  if (cfg.get_bool("bias", false)) fail("Mamba2Config", "bias=true (linear biases) is not supported");
  if (cfg.has("nheads") && cfg.get_int("nheads") != c.nheads())
    fail("Mamba2Config", "nheads " + std::to_string(cfg.get_int("nheads")) +
                             " disagrees with expand*d_model/headdim = " + std::to_string(c.nheads()));
  c.validate();
  return c;
}

void Mamba2Config::validate() const {
  if (d_model <= 0 || d_state <= 0 || d_conv <= 0 || expand <= 0 || headdim <= 0 || ngroups <= 0 || chunk_size <= 0)
    fail("Mamba2Config", "d_model, d_state, d_conv, expand, headdim, ngroups and chunk_size must be positive");
  if (d_inner() % headdim != 0)
    fail("Mamba2Config", "d_inner " + std::to_string(d_inner()) + " is not a multiple of headdim " + std::to_string(headdim));
  if (nheads() % ngroups != 0)
    fail("Mamba2Config", "nheads " + std::to_string(nheads()) + " is not a multiple of ngroups " + std::to_string(ngroups));
}

Mamba2::Mamba2(const Mamba2Config& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t di = cfg.d_inner(), H = cfg.nheads();
  in_proj_w_ = Tensor::zeros({cfg.d_in_proj(), cfg.d_model});
  conv_w_ = Tensor::zeros({cfg.conv_dim(), 1, cfg.d_conv});
  conv_b_ = Tensor::zeros({cfg.conv_dim()});
  dt_bias_ = Tensor::zeros({H});
  A_log_ = Tensor::zeros({H});
  D_ = Tensor::zeros({H});
  norm_w_ = Tensor::zeros({di});
  out_proj_w_ = Tensor::zeros({cfg.d_model, di});
  refresh_derived();
}

void Mamba2::refresh_derived() { A_ = detail::neg_exp(A_log_); }

std::vector<std::pair<std::string, Tensor*>> Mamba2::parameters() {
  return {{"in_proj.weight", &in_proj_w_}, {"conv1d.weight", &conv_w_}, {"conv1d.bias", &conv_b_},
          {"dt_bias", &dt_bias_},          {"A_log", &A_log_},          {"D", &D_},
          {"norm.weight", &norm_w_},       {"out_proj.weight", &out_proj_w_}};
}

LayerState Mamba2::init_state(int64_t batch) const {
  return {Tensor::zeros({batch, cfg_.conv_dim(), cfg_.d_conv}),
          Tensor::zeros({batch, cfg_.nheads(), cfg_.headdim, cfg_.d_state})};
}

Tensor Mamba2::forward(const Tensor& x_in, LayerState* state) const {
  detail::check_input(x_in, 3, cfg_.d_model, "Mamba2::forward");
  const Tensor x = x_in.contiguous();
  const int64_t b = x.size(0), l = x.size(1), di = cfg_.d_inner(), N = cfg_.d_state, G = cfg_.ngroups,
                H = cfg_.nheads(), P = cfg_.headdim, K = cfg_.d_conv, cd = cfg_.conv_dim(), dp = cfg_.d_in_proj();
  if (state) {
    detail::check_state(state->conv_state, {b, cd, K}, "Mamba2::forward", "conv_state");
    detail::check_state(state->ssm_state, {b, H, P, N}, "Mamba2::forward", "ssm_state");
  }
  Tensor out = Tensor::empty({b, l, cfg_.d_model});
  if (b * l == 0) return out;

  // in_proj -> [z (di), xBC (cd), dt (H)] per row.
  Tensor zxbcdt = Tensor::empty({b, l, dp});
  detail::linear_rows(x.data<float>(), b * l, cfg_.d_model, in_proj_w_, zxbcdt.data<float>(), dp);
  const float* zp = zxbcdt.data<float>();
  const float* xbc_in = zp + di;
  const float* dtp = zp + di + cd;

  const Tensor xbc = detail::short_conv(xbc_in, b, l, cd, l * dp, dp, conv_w_, conv_b_, state);

  Tensor y = Tensor::empty({b, l, di});
  kernels::SsdParams sp;
  sp.batch = b; sp.seqlen = l; sp.nheads = H; sp.headdim = P; sp.dstate = N; sp.ngroups = G;
  sp.chunk_size = cfg_.chunk_size;
  const float* xb = xbc.data<float>();
  sp.x = xb; sp.x_sb = l * cd; sp.x_st = cd; sp.x_sh = P;
  sp.B = xb + di; sp.B_sb = l * cd; sp.B_st = cd; sp.B_sg = N;
  sp.C = xb + di + G * N; sp.C_sb = l * cd; sp.C_st = cd; sp.C_sg = N;
  sp.dt = dtp; sp.dt_sb = l * dp; sp.dt_st = dp; sp.dt_sh = 1;
  sp.dt_bias = dt_bias_.data<float>(); sp.dt_softplus = true;
  sp.A = A_.data<float>(); sp.D = D_.data<float>();
  sp.y = y.data<float>(); sp.y_sb = l * di; sp.y_st = di; sp.y_sh = P;
  Tensor final_state;
  if (state) {
    sp.initial_state = state->ssm_state.data<float>();
    final_state = Tensor::empty(state->ssm_state.shape());
    sp.final_state = final_state.data<float>();
  }
  kernels::ssd_chunk_scan(sp);
  if (state) state->ssm_state = final_state;

  // Gate and grouped RMSNorm in place, then out_proj.
  kernels::gated_rms_norm(b * l, di, di / G, y.data<float>(), di, zp, dp, norm_w_.data<float>(),
                          static_cast<float>(cfg_.rmsnorm_eps), cfg_.norm_before_gate, y.data<float>(), di);
  detail::linear_rows(y.data<float>(), b * l, di, out_proj_w_, out.data<float>(), cfg_.d_model);
  return out;
}

Tensor Mamba2::step(const Tensor& x_in, LayerState& state) const {
  detail::check_input(x_in, 2, cfg_.d_model, "Mamba2::step");
  const Tensor x = x_in.contiguous();
  const int64_t b = x.size(0), di = cfg_.d_inner(), N = cfg_.d_state, G = cfg_.ngroups, H = cfg_.nheads(),
                P = cfg_.headdim, K = cfg_.d_conv, cd = cfg_.conv_dim(), dp = cfg_.d_in_proj();
  detail::check_state(state.conv_state, {b, cd, K}, "Mamba2::step", "conv_state");
  detail::check_state(state.ssm_state, {b, H, P, N}, "Mamba2::step", "ssm_state");

  Tensor zxbcdt = Tensor::empty({b, dp});
  detail::linear_rows(x.data<float>(), b, cfg_.d_model, in_proj_w_, zxbcdt.data<float>(), dp);
  const float* zp = zxbcdt.data<float>();
  Tensor xbc = Tensor::empty({b, cd});
  kernels::causal_conv1d_update(b, cd, K, state.conv_state.data<float>(), zp + di, dp, conv_w_.data<float>(),
                                conv_b_.data<float>(), true, xbc.data<float>());
  Tensor y = Tensor::empty({b, di});
  kernels::SsdParams sp;
  sp.batch = b; sp.seqlen = 1; sp.nheads = H; sp.headdim = P; sp.dstate = N; sp.ngroups = G;
  const float* xb = xbc.data<float>();
  sp.x = xb; sp.x_sb = cd; sp.x_sh = P;
  sp.B = xb + di; sp.B_sb = cd; sp.B_sg = N;
  sp.C = xb + di + G * N; sp.C_sb = cd; sp.C_sg = N;
  sp.dt = zp + di + cd; sp.dt_sb = dp; sp.dt_sh = 1;
  sp.dt_bias = dt_bias_.data<float>(); sp.dt_softplus = true;
  sp.A = A_.data<float>(); sp.D = D_.data<float>();
  sp.y = y.data<float>(); sp.y_sb = di; sp.y_sh = P;
  kernels::ssd_state_update(sp, state.ssm_state.data<float>());
  kernels::gated_rms_norm(b, di, di / G, y.data<float>(), di, zp, dp, norm_w_.data<float>(),
                          static_cast<float>(cfg_.rmsnorm_eps), cfg_.norm_before_gate, y.data<float>(), di);
  Tensor out = Tensor::empty({b, cfg_.d_model});
  detail::linear_rows(y.data<float>(), b, di, out_proj_w_, out.data<float>(), cfg_.d_model);
  return out;
}

}  // namespace mamba::nn
