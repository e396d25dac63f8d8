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
  return {Tensor::zeros({batch, cfg_.conv_dim(), cfg_.d_conv}, DType::f32, device_),
          Tensor::zeros({batch, cfg_.nheads(), cfg_.headdim, cfg_.d_state}, DType::f32, device_)};
}

struct Mamba2::Activations final : SavedActivations {
  Tensor x, zxbcdt, xbc, y, yn;  // input, in_proj out, conv+SiLU out, SSD out, gated-normed SSD out
};

namespace {

// The SSD's view of a Mamba2 forward's activations (rows of zxbcdt and xbc).
kernels::SsdParams ssd_params(const Mamba2Config& c, int64_t b, int64_t l, const float* zxbcdt, const float* xbc,
                              const float* A, const float* D, const float* dt_bias) {
  const int64_t di = c.d_inner(), N = c.d_state, G = c.ngroups, cd = c.conv_dim(), dp = c.d_in_proj();
  kernels::SsdParams sp;
  sp.batch = b; sp.seqlen = l; sp.nheads = c.nheads(); sp.headdim = c.headdim; sp.dstate = N; sp.ngroups = G;
  sp.chunk_size = c.chunk_size;
  sp.x = xbc; sp.x_sb = l * cd; sp.x_st = cd; sp.x_sh = c.headdim;
  sp.B = xbc + di; sp.B_sb = l * cd; sp.B_st = cd; sp.B_sg = N;
  sp.C = xbc + di + G * N; sp.C_sb = l * cd; sp.C_st = cd; sp.C_sg = N;
  sp.dt = zxbcdt + di + cd; sp.dt_sb = l * dp; sp.dt_st = dp; sp.dt_sh = 1;
  sp.dt_bias = dt_bias; sp.dt_softplus = true;
  sp.A = A; sp.D = D;
  return sp;
}

}  // namespace

Tensor Mamba2::forward(const Tensor& x_in, LayerState* state) const {
  if (!device_.is_cpu()) return forward_cuda(x_in, state);
  return forward_impl(x_in, state, nullptr);
}

Tensor Mamba2::forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const {
  if (!device_.is_cpu()) fail("Mamba2::forward_train", "training on CUDA is not implemented (move the layer to the CPU)");
  return detail::forward_keeping<Activations>(saved, [&](Activations* a) { return forward_impl(x, nullptr, a); });
}

Tensor Mamba2::forward_impl(const Tensor& x_in, LayerState* state, Activations* keep) const {
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
  const Tensor xbc = detail::short_conv(zp + di, b, l, cd, l * dp, dp, conv_w_, conv_b_, state);

  Tensor y = Tensor::empty({b, l, di});
  kernels::SsdParams sp = ssd_params(cfg_, b, l, zp, xbc.data<float>(), A_.data<float>(), D_.data<float>(),
                                     dt_bias_.data<float>());
  sp.y = y.data<float>(); sp.y_sb = l * di; sp.y_st = di; sp.y_sh = P;
  Tensor final_state;
  if (state) {
    sp.initial_state = state->ssm_state.data<float>();
    final_state = Tensor::empty(state->ssm_state.shape());
    sp.final_state = final_state.data<float>();
  }
  kernels::ssd_chunk_scan(sp);
  if (state) state->ssm_state = final_state;

  // Gate and grouped RMSNorm (in place unless the training path keeps y), then out_proj.
  Tensor yn = keep ? Tensor::empty(y.shape()) : y;
  kernels::gated_rms_norm(b * l, di, di / G, y.data<float>(), di, zp, dp, norm_w_.data<float>(),
                          static_cast<float>(cfg_.rmsnorm_eps), cfg_.norm_before_gate, yn.data<float>(), di);
  detail::linear_rows(yn.data<float>(), b * l, di, out_proj_w_, out.data<float>(), cfg_.d_model);
  if (keep) {
    keep->x = x;
    keep->zxbcdt = zxbcdt;
    keep->xbc = xbc;
    keep->y = y;
    keep->yn = yn;
  }
  return out;
}

Tensor Mamba2::backward(const SavedActivations& saved_base, const Tensor& dy_in, std::vector<Tensor>& grads) const {
  const auto* saved = dynamic_cast<const Activations*>(&saved_base);
  if (!saved) fail("Mamba2::backward", "saved activations are not from Mamba2::forward_train");
  if (!device_.is_cpu()) fail("Mamba2::backward", "training on CUDA is not implemented (move the layer to the CPU)");
  const Tensor& x = saved->x;
  const int64_t b = x.size(0), l = x.size(1), dm = cfg_.d_model, di = cfg_.d_inner(), N = cfg_.d_state,
                G = cfg_.ngroups, P = cfg_.headdim, K = cfg_.d_conv, cd = cfg_.conv_dim(), dp = cfg_.d_in_proj(),
                rows = b * l;
  check_dtype(dy_in, DType::f32, "Mamba2::backward");
  check_shape(dy_in, x.shape(), "Mamba2::backward", "dy");
  if (rows == 0) fail("Mamba2::backward", "empty input");
  const Tensor dy = dy_in.contiguous();
  using kernels::sgemm;

  Tensor g_in = Tensor::empty(in_proj_w_.shape()), g_convw = Tensor::empty(conv_w_.shape()),
         g_convb = Tensor::empty(conv_b_.shape()), g_dtb = Tensor::empty(dt_bias_.shape()),
         g_Alog = Tensor::empty(A_log_.shape()), g_D = Tensor::empty(D_.shape()), g_norm = Tensor::empty(norm_w_.shape()),
         g_out = Tensor::empty(out_proj_w_.shape());

  // out = yn W_out^T.
  Tensor dyn = Tensor::empty({b, l, di});
  sgemm(false, false, rows, di, dm, 1.f, dy.data<float>(), dm, out_proj_w_.data<float>(), di, 0.f, dyn.data<float>(), di);
  sgemm(true, false, dm, di, rows, 1.f, dy.data<float>(), dm, saved->yn.data<float>(), di, 0.f, g_out.data<float>(), di);

  // Gated RMSNorm backward: dy of the SSD output, and dz straight into dzxbcdt's z columns.
  Tensor dzxbcdt = Tensor::empty({b, l, dp}), dyssd = Tensor::empty({b, l, di}), dxbc = Tensor::empty({b, l, cd});
  const float* zp = saved->zxbcdt.data<float>();
  kernels::gated_rms_norm_bwd(rows, di, di / G, saved->y.data<float>(), di, zp, dp, norm_w_.data<float>(),
                              static_cast<float>(cfg_.rmsnorm_eps), cfg_.norm_before_gate, dyn.data<float>(), di,
                              dyssd.data<float>(), di, dzxbcdt.data<float>(), dp, g_norm.data<float>());

  // SSD backward: dx, dB, dC into dxbc; d(raw dt) into dzxbcdt's dt columns.
  const kernels::SsdParams sp = ssd_params(cfg_, b, l, zp, saved->xbc.data<float>(), A_.data<float>(),
                                           D_.data<float>(), dt_bias_.data<float>());
  Tensor dA = Tensor::empty(A_.shape());
  kernels::SsdGrads sg;
  float* dxb = dxbc.data<float>();
  sg.dx = dxb; sg.dx_sb = l * cd; sg.dx_st = cd; sg.dx_sh = P;
  sg.dB = dxb + di; sg.dB_sb = l * cd; sg.dB_st = cd; sg.dB_sg = N;
  sg.dC = dxb + di + G * N; sg.dC_sb = l * cd; sg.dC_st = cd; sg.dC_sg = N;
  sg.ddt = dzxbcdt.data<float>() + di + cd; sg.ddt_sb = l * dp; sg.ddt_st = dp; sg.ddt_sh = 1;
  sg.dA = dA.data<float>(); sg.dD = g_D.data<float>(); sg.ddt_bias = g_dtb.data<float>();
  kernels::ssd_scan_bwd(sp, dyssd.data<float>(), l * di, di, P, nullptr, sg);
  for (int64_t i = 0; i < dA.numel(); ++i) g_Alog.data<float>()[i] = dA.data<float>()[i] * A_.data<float>()[i];

  // Conv + SiLU backward into dzxbcdt's xBC columns.
  kernels::CausalConv1dParams cp;
  cp.batch = b; cp.seqlen = l; cp.channels = cd; cp.width = K;
  cp.x = zp + di; cp.x_sb = l * dp; cp.x_st = dp;
  cp.weight = conv_w_.data<float>(); cp.bias = conv_b_.data<float>(); cp.silu = true;
  kernels::causal_conv1d_bwd(cp, dxbc.data<float>(), dzxbcdt.data<float>() + di, l * dp, dp, g_convw.data<float>(),
                             g_convb.data<float>(), nullptr);

  // zxbcdt = x W_in^T.
  Tensor dx = Tensor::empty(x.shape());
  sgemm(false, false, rows, dm, dp, 1.f, dzxbcdt.data<float>(), dp, in_proj_w_.data<float>(), dm, 0.f,
        dx.data<float>(), dm);
  sgemm(true, false, dp, dm, rows, 1.f, dzxbcdt.data<float>(), dp, x.data<float>(), dm, 0.f, g_in.data<float>(), dm);

  grads = {g_in, g_convw, g_convb, g_dtb, g_Alog, g_D, g_norm, g_out};  // the order of parameters()
  return dx;
}

Tensor Mamba2::step(const Tensor& x_in, LayerState& state) const {
  if (!device_.is_cpu()) return step_cuda(x_in, state);
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
