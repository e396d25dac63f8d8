#include "mamba/ops/ssm.h"
#include "ssm_cuda.h"

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/kernels/ssd.h"

namespace mamba::ops {

namespace {

Tensor f32c(const Tensor& t, const char* op, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is required");
  if (!t.device().is_cpu()) fail(op, std::string(name) + " must be on the CPU");
  if (!dtype_is_float(t.dtype())) fail(op, std::string(name) + " must be a float tensor, got " + t.str());
  return t.to(DType::f32).contiguous();
}

Tensor opt_f32c(const Tensor& t, const Shape& want, const char* op, const char* name) {
  if (!t.defined()) return t;
  Tensor c = f32c(t, op, name);
  check_shape(c, want, op, name);
  return c;
}

}  // namespace

namespace {

// The checked, contiguous f32 inputs of a selective scan and its kernel parameters.
struct ScanSetup {
  Tensor u, delta, A, B, C, D, z, bias, init;
  int64_t b = 0, d = 0, l = 0, n = 0, g = 0;
  Shape B_shape;  // as given: (b, n, l) or (b, g, n, l)
  kernels::SelectiveScanParams p;
};

ScanSetup setup_scan(const char* op, const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                     const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                     const Tensor& bias_in, bool delta_softplus, const Tensor& init_in) {
  ScanSetup s;
  s.u = f32c(u_in, op, "u");
  if (s.u.dim() != 3) fail(op, "u must be (batch, dim, seqlen), got " + s.u.str());
  s.b = s.u.size(0), s.d = s.u.size(1), s.l = s.u.size(2);
  s.delta = f32c(delta_in, op, "delta");
  check_shape(s.delta, s.u.shape(), op, "delta");
  s.A = f32c(A_in, op, "A");
  if (s.A.dim() != 2 || s.A.size(0) != s.d)
    fail(op, "A must be (dim=" + std::to_string(s.d) + ", dstate), got " + s.A.str());
  s.n = s.A.size(1);
  s.B = f32c(B_in, op, "B");
  s.C = f32c(C_in, op, "C");
  s.B_shape = s.B.shape();
  if (s.B.dim() == 3) s.B = s.B.unsqueeze(1);
  if (s.C.dim() == 3) s.C = s.C.unsqueeze(1);
  if (s.B.dim() != 4 || s.B.size(0) != s.b || s.B.size(2) != s.n || s.B.size(3) != s.l)
    fail(op, "B must be (batch, dstate, seqlen) or (batch, groups, dstate, seqlen) = (" + std::to_string(s.b) +
                 ", g, " + std::to_string(s.n) + ", " + std::to_string(s.l) + "), got " + B_in.str());
  s.g = s.B.size(1);
  check_shape(s.C, s.B.shape(), op, "C");
  if (s.g <= 0 || s.d % s.g != 0)
    fail(op, "dim " + std::to_string(s.d) + " is not a multiple of groups " + std::to_string(s.g));
  s.D = opt_f32c(D_in, {s.d}, op, "D");
  s.z = opt_f32c(z_in, s.u.shape(), op, "z");
  s.bias = opt_f32c(bias_in, {s.d}, op, "delta_bias");
  s.init = opt_f32c(init_in, {s.b, s.d, s.n}, op, "initial_state");
  const int64_t d = s.d, l = s.l, n = s.n, g = s.g;
  kernels::SelectiveScanParams& p = s.p;
  p.batch = s.b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
  p.u = {s.u.data<float>(), d * l, l, 1};
  p.delta = {s.delta.data<float>(), d * l, l, 1};
  if (s.z.defined()) p.z = {s.z.data<float>(), d * l, l, 1};
  p.B = {s.B.data<float>(), g * n * l, n * l, l, 1};
  p.C = {s.C.data<float>(), g * n * l, n * l, l, 1};
  p.A = s.A.data<float>();
  p.D = s.D.defined() ? s.D.data<float>() : nullptr;
  p.delta_bias = s.bias.defined() ? s.bias.data<float>() : nullptr;
  p.delta_softplus = delta_softplus;
  p.initial_state = s.init.defined() ? s.init.data<float>() : nullptr;
  return s;
}

}  // namespace

ScanResult selective_scan(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                          const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                          bool delta_softplus, const Tensor& init_in, Impl impl) {
  if (u_in.defined() && u_in.is_cuda())
    return selective_scan_cuda(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus, init_in);
  ScanSetup s = setup_scan("ops::selective_scan", u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                           delta_softplus, init_in);
  ScanResult r{Tensor::empty(s.u.shape()), Tensor::empty({s.b, s.d, s.n})};
  s.p.y = {r.y.data<float>(), s.d * s.l, s.l, 1};
  s.p.final_state = r.last_state.data<float>();
  if (impl == Impl::fast)
    kernels::selective_scan(s.p);
  else
    kernels::selective_scan_ref(s.p);
  return r;
}

ScanGrads selective_scan_backward(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                                  const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                                  bool delta_softplus, const Tensor& init_in, const Tensor& dy_in,
                                  const Tensor& dlast_in, Impl impl) {
  const char* op = "ops::selective_scan_backward";
  ScanSetup s = setup_scan(op, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus, init_in);
  const Tensor dy = f32c(dy_in, op, "dy");
  check_shape(dy, s.u.shape(), op, "dy");
  const Tensor dlast = opt_f32c(dlast_in, {s.b, s.d, s.n}, op, "dlast_state");
  const int64_t d = s.d, l = s.l, n = s.n, g = s.g;
  ScanGrads r;
  r.du = Tensor::empty(s.u.shape());
  r.ddelta = Tensor::empty(s.u.shape());
  r.dA = Tensor::empty(s.A.shape());
  r.dB = Tensor::empty(s.B.shape());
  r.dC = Tensor::empty(s.C.shape());
  if (s.D.defined()) r.dD = Tensor::empty({d});
  if (s.z.defined()) r.dz = Tensor::empty(s.u.shape());
  if (s.bias.defined()) r.ddelta_bias = Tensor::empty({d});
  if (s.init.defined()) r.dinitial_state = Tensor::empty(s.init.shape());
  kernels::SelectiveScanGrads gr;
  gr.du = {r.du.data<float>(), d * l, l, 1};
  gr.ddelta = {r.ddelta.data<float>(), d * l, l, 1};
  if (r.dz.defined()) gr.dz = {r.dz.data<float>(), d * l, l, 1};
  gr.dB = {r.dB.data<float>(), g * n * l, n * l, l, 1};
  gr.dC = {r.dC.data<float>(), g * n * l, n * l, l, 1};
  gr.dA = r.dA.data<float>();
  gr.dD = r.dD.defined() ? r.dD.data<float>() : nullptr;
  gr.ddelta_bias = r.ddelta_bias.defined() ? r.ddelta_bias.data<float>() : nullptr;
  gr.dinitial_state = r.dinitial_state.defined() ? r.dinitial_state.data<float>() : nullptr;
  const kernels::Strided3<const float> dyv{dy.data<float>(), d * l, l, 1};
  const float* dl = dlast.defined() ? dlast.data<float>() : nullptr;
  if (impl == Impl::fast)
    kernels::selective_scan_bwd(s.p, dyv, dl, gr);
  else
    kernels::selective_scan_bwd_ref(s.p, dyv, dl, gr);
  r.dB = r.dB.view(s.B_shape);
  r.dC = r.dC.view(s.B_shape);
  return r;
}

namespace {

// The checked, contiguous f32 inputs of an SSD scan and its kernel parameters (y and
// final_state not set).
struct SsdSetup {
  Tensor x, dt, A, B, C, D, bias, init;
  int64_t b = 0, l = 0, h = 0, p = 0, g = 0, n = 0;
  kernels::SsdParams s;
};

SsdSetup setup_ssd(const char* op, const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                   const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus, int64_t chunk_size,
                   const Tensor& init_in) {
  SsdSetup r;
  r.x = f32c(x_in, op, "x");
  if (r.x.dim() != 4) fail(op, "x must be (batch, seqlen, nheads, headdim), got " + r.x.str());
  const int64_t b = r.x.size(0), l = r.x.size(1), h = r.x.size(2), p = r.x.size(3);
  r.dt = f32c(dt_in, op, "dt");
  check_shape(r.dt, {b, l, h}, op, "dt");
  r.A = f32c(A_in, op, "A");
  check_shape(r.A, {h}, op, "A");
  r.B = f32c(B_in, op, "B");
  r.C = f32c(C_in, op, "C");
  if (r.B.dim() != 4 || r.B.size(0) != b || r.B.size(1) != l)
    fail(op, "B must be (batch, seqlen, ngroups, dstate), got " + r.B.str());
  const int64_t g = r.B.size(2), n = r.B.size(3);
  check_shape(r.C, r.B.shape(), op, "C");
  if (g <= 0 || h % g != 0) fail(op, "nheads " + std::to_string(h) + " is not a multiple of ngroups " + std::to_string(g));
  if (chunk_size <= 0) fail(op, "chunk_size must be positive, got " + std::to_string(chunk_size));
  r.D = opt_f32c(D_in, {h}, op, "D");
  r.bias = opt_f32c(bias_in, {h}, op, "dt_bias");
  r.init = opt_f32c(init_in, {b, h, p, n}, op, "initial_state");
  r.b = b; r.l = l; r.h = h; r.p = p; r.g = g; r.n = n;
  kernels::SsdParams& s = r.s;
  s.batch = b; s.seqlen = l; s.nheads = h; s.headdim = p; s.dstate = n; s.ngroups = g; s.chunk_size = chunk_size;
  s.x = r.x.data<float>(); s.x_sb = l * h * p; s.x_st = h * p; s.x_sh = p;
  s.dt = r.dt.data<float>(); s.dt_sb = l * h; s.dt_st = h; s.dt_sh = 1;
  s.B = r.B.data<float>(); s.B_sb = l * g * n; s.B_st = g * n; s.B_sg = n;
  s.C = r.C.data<float>(); s.C_sb = l * g * n; s.C_st = g * n; s.C_sg = n;
  s.A = r.A.data<float>();
  s.D = r.D.defined() ? r.D.data<float>() : nullptr;
  s.dt_bias = r.bias.defined() ? r.bias.data<float>() : nullptr;
  s.dt_softplus = dt_softplus;
  s.initial_state = r.init.defined() ? r.init.data<float>() : nullptr;
  return r;
}

}  // namespace

ScanResult ssd_scan(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in, const Tensor& C_in,
                    const Tensor& D_in, const Tensor& bias_in, bool dt_softplus, int64_t chunk_size,
                    const Tensor& init_in, Impl impl) {
  SsdSetup su = setup_ssd("ops::ssd_scan", x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus, chunk_size,
                          init_in);
  ScanResult r{Tensor::empty(su.x.shape()), Tensor::empty({su.b, su.h, su.p, su.n})};
  kernels::SsdParams& s = su.s;
  s.y = r.y.data<float>(); s.y_sb = s.x_sb; s.y_st = s.x_st; s.y_sh = s.x_sh;
  s.final_state = r.last_state.data<float>();
  if (impl == Impl::fast)
    kernels::ssd_chunk_scan(s);
  else
    kernels::ssd_scan_ref(s);
  return r;
}

SsdScanGrads ssd_scan_backward(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                               const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus,
                               int64_t chunk_size, const Tensor& init_in, const Tensor& dy_in, const Tensor& dlast_in,
                               Impl impl) {
  const char* op = "ops::ssd_scan_backward";
  SsdSetup su = setup_ssd(op, x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus, chunk_size, init_in);
  const Tensor dy = f32c(dy_in, op, "dy");
  check_shape(dy, su.x.shape(), op, "dy");
  const Tensor dlast = opt_f32c(dlast_in, {su.b, su.h, su.p, su.n}, op, "dlast_state");
  const int64_t l = su.l, h = su.h, p = su.p, g = su.g, n = su.n;
  SsdScanGrads r;
  r.dx = Tensor::empty(su.x.shape());
  r.ddt = Tensor::empty(su.dt.shape());
  r.dA = Tensor::empty({h});
  r.dB = Tensor::empty(su.B.shape());
  r.dC = Tensor::empty(su.C.shape());
  if (su.D.defined()) r.dD = Tensor::empty({h});
  if (su.bias.defined()) r.ddt_bias = Tensor::empty({h});
  if (su.init.defined()) r.dinitial_state = Tensor::empty(su.init.shape());
  kernels::SsdGrads gr;
  gr.dx = r.dx.data<float>(); gr.dx_sb = l * h * p; gr.dx_st = h * p; gr.dx_sh = p;
  gr.ddt = r.ddt.data<float>(); gr.ddt_sb = l * h; gr.ddt_st = h; gr.ddt_sh = 1;
  gr.dB = r.dB.data<float>(); gr.dB_sb = l * g * n; gr.dB_st = g * n; gr.dB_sg = n;
  gr.dC = r.dC.data<float>(); gr.dC_sb = l * g * n; gr.dC_st = g * n; gr.dC_sg = n;
  gr.dA = r.dA.data<float>();
  gr.dD = r.dD.defined() ? r.dD.data<float>() : nullptr;
  gr.ddt_bias = r.ddt_bias.defined() ? r.ddt_bias.data<float>() : nullptr;
  gr.dinitial_state = r.dinitial_state.defined() ? r.dinitial_state.data<float>() : nullptr;
  const float* dl = dlast.defined() ? dlast.data<float>() : nullptr;
  (impl == Impl::fast ? kernels::ssd_scan_bwd : kernels::ssd_scan_bwd_ref)(su.s, dy.data<float>(), l * h * p, h * p,
                                                                           p, dl, gr);
  return r;
}

Tensor causal_conv1d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu, Impl impl) {
  const char* op = "ops::causal_conv1d";
  const Tensor x = f32c(x_in, op, "x");
  if (x.dim() != 3) fail(op, "x must be (batch, seqlen, channels), got " + x.str());
  Tensor w = f32c(w_in, op, "weight");
  if (w.dim() == 3 && w.size(1) == 1) w = w.squeeze(1);
  if (w.dim() != 2 || w.size(0) != x.size(2)) fail(op, "weight must be (channels, width), got " + w_in.str());
  const Tensor bias = opt_f32c(bias_in, {x.size(2)}, op, "bias");
  Tensor out = Tensor::empty(x.shape());
  kernels::CausalConv1dParams p;
  p.batch = x.size(0); p.seqlen = x.size(1); p.channels = x.size(2); p.width = w.size(1);
  p.x = x.data<float>(); p.x_sb = x.size(1) * x.size(2); p.x_st = x.size(2);
  p.weight = w.data<float>(); p.bias = bias.defined() ? bias.data<float>() : nullptr; p.silu = silu;
  p.out = out.data<float>();
  if (impl == Impl::fast)
    kernels::causal_conv1d(p);
  else
    kernels::causal_conv1d_ref(p);
  return out;
}

Tensor rms_norm(const Tensor& x_in, const Tensor& w_in, double eps, Impl impl) {
  const char* op = "ops::rms_norm";
  const Tensor x = f32c(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor w = f32c(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  Tensor y = Tensor::empty(x.shape());
  const int64_t rows = d ? x.numel() / d : 0;
  (impl == Impl::fast ? kernels::rms_norm : kernels::rms_norm_ref)(rows, d, x.data<float>(), d, w.data<float>(),
                                                                   static_cast<float>(eps), y.data<float>(), d);
  return y;
}

Tensor gated_rms_norm(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size, double eps,
                      bool norm_before_gate, Impl impl) {
  const char* op = "ops::gated_rms_norm";
  const Tensor x = f32c(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor z = opt_f32c(z_in, x.shape(), op, "z");
  const Tensor w = f32c(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  if (group_size <= 0 || d % group_size != 0)
    fail(op, "group_size " + std::to_string(group_size) + " does not divide the last dim " + std::to_string(d));
  Tensor y = Tensor::empty(x.shape());
  const int64_t rows = d ? x.numel() / d : 0;
  (impl == Impl::fast ? kernels::gated_rms_norm : kernels::gated_rms_norm_ref)(
      rows, d, group_size, x.data<float>(), d, z.defined() ? z.data<float>() : nullptr, d, w.data<float>(),
      static_cast<float>(eps), norm_before_gate, y.data<float>(), d);
  return y;
}

NormGrads rms_norm_backward(const Tensor& x_in, const Tensor& w_in, double eps, const Tensor& dy_in, Impl impl) {
  const char* op = "ops::rms_norm_backward";
  const Tensor x = f32c(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor w = f32c(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  const Tensor dy = f32c(dy_in, op, "dy");
  check_shape(dy, x.shape(), op, "dy");
  NormGrads r{Tensor::empty(x.shape()), Tensor(), Tensor::zeros({d})};
  const int64_t rows = d ? x.numel() / d : 0;
  (impl == Impl::fast ? kernels::rms_norm_bwd : kernels::rms_norm_bwd_ref)(
      rows, d, x.data<float>(), d, w.data<float>(), static_cast<float>(eps), dy.data<float>(), d, r.dx.data<float>(),
      d, r.dweight.data<float>());
  return r;
}

NormGrads gated_rms_norm_backward(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size,
                                  double eps, bool norm_before_gate, const Tensor& dy_in, Impl impl) {
  const char* op = "ops::gated_rms_norm_backward";
  const Tensor x = f32c(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor z = opt_f32c(z_in, x.shape(), op, "z");
  const Tensor w = f32c(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  const Tensor dy = f32c(dy_in, op, "dy");
  check_shape(dy, x.shape(), op, "dy");
  if (group_size <= 0 || d % group_size != 0)
    fail(op, "group_size " + std::to_string(group_size) + " does not divide the last dim " + std::to_string(d));
  NormGrads r{Tensor::empty(x.shape()), z.defined() ? Tensor::empty(x.shape()) : Tensor(), Tensor::zeros({d})};
  const int64_t rows = d ? x.numel() / d : 0;
  (impl == Impl::fast ? kernels::gated_rms_norm_bwd : kernels::gated_rms_norm_bwd_ref)(
      rows, d, group_size, x.data<float>(), d, z.defined() ? z.data<float>() : nullptr, d, w.data<float>(),
      static_cast<float>(eps), norm_before_gate, dy.data<float>(), d, r.dx.data<float>(), d,
      r.dz.defined() ? r.dz.data<float>() : nullptr, d, r.dweight.data<float>());
  return r;
}

}  // namespace mamba::ops
