#include "mamba/ops/ssm.h"
#include "ssm_cuda.h"

#include <type_traits>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/kernels/ssd.h"

namespace mamba::ops {

namespace {

// Every op computes in f64 when its first input is f64 (the plain reference loops, for
// gradient checks) and in f32 otherwise; the other inputs are converted to that type.
bool is_f64(const Tensor& t) { return t.defined() && t.dtype() == DType::f64; }

// A required input as a contiguous CPU tensor of element type T.
template <class T>
Tensor to_c(const Tensor& t, const char* op, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is required");
  if (!t.device().is_cpu()) fail(op, std::string(name) + " must be on the CPU");
  if (!dtype_is_float(t.dtype())) fail(op, std::string(name) + " must be a float tensor, got " + t.str());
  return t.to(dtype_of<T>()).contiguous();
}

template <class T>
Tensor opt_c(const Tensor& t, const Shape& want, const char* op, const char* name) {
  if (!t.defined()) return t;
  Tensor c = to_c<T>(t, op, name);
  check_shape(c, want, op, name);
  return c;
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <class T>
T* mut_ptr_or_null(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}


}  // namespace

namespace {

// The checked, contiguous inputs (element type T) of a selective scan and its kernel
// parameters.
template <class T>
struct ScanSetup {
  Tensor u, delta, A, B, C, D, z, bias, init;
  int64_t b = 0, d = 0, l = 0, n = 0, g = 0;
  Shape B_shape;  // as given: (b, n, l) or (b, g, n, l)
  kernels::SelectiveScanParamsT<T> p;
};

template <class T>
ScanSetup<T> setup_scan(const char* op, const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                     const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                     const Tensor& bias_in, bool delta_softplus, const Tensor& init_in) {
  ScanSetup<T> s;
  s.u = to_c<T>(u_in, op, "u");
  if (s.u.dim() != 3) fail(op, "u must be (batch, dim, seqlen), got " + s.u.str());
  s.b = s.u.size(0), s.d = s.u.size(1), s.l = s.u.size(2);
  s.delta = to_c<T>(delta_in, op, "delta");
  check_shape(s.delta, s.u.shape(), op, "delta");
  s.A = to_c<T>(A_in, op, "A");
  if (s.A.dim() != 2 || s.A.size(0) != s.d)
    fail(op, "A must be (dim=" + std::to_string(s.d) + ", dstate), got " + s.A.str());
  s.n = s.A.size(1);
  s.B = to_c<T>(B_in, op, "B");
  s.C = to_c<T>(C_in, op, "C");
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
  s.D = opt_c<T>(D_in, {s.d}, op, "D");
  s.z = opt_c<T>(z_in, s.u.shape(), op, "z");
  s.bias = opt_c<T>(bias_in, {s.d}, op, "delta_bias");
  s.init = opt_c<T>(init_in, {s.b, s.d, s.n}, op, "initial_state");
  const int64_t d = s.d, l = s.l, n = s.n, g = s.g;
  kernels::SelectiveScanParamsT<T>& p = s.p;
  p.batch = s.b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
  p.u = {s.u.template data<T>(), d * l, l, 1};
  p.delta = {s.delta.template data<T>(), d * l, l, 1};
  if (s.z.defined()) p.z = {s.z.template data<T>(), d * l, l, 1};
  p.B = {s.B.template data<T>(), g * n * l, n * l, l, 1};
  p.C = {s.C.template data<T>(), g * n * l, n * l, l, 1};
  p.A = s.A.template data<T>();
  p.D = ptr_or_null<T>(s.D);
  p.delta_bias = ptr_or_null<T>(s.bias);
  p.delta_softplus = delta_softplus;
  p.initial_state = ptr_or_null<T>(s.init);
  return s;
}

template <class T>
ScanResult selective_scan_t(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                            const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                            bool delta_softplus, const Tensor& init_in, Impl impl) {
  ScanSetup<T> s = setup_scan<T>("ops::selective_scan", u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                                 delta_softplus, init_in);
  ScanResult r{Tensor::empty(s.u.shape(), dtype_of<T>()), Tensor::empty({s.b, s.d, s.n}, dtype_of<T>())};
  s.p.y = {r.y.template data<T>(), s.d * s.l, s.l, 1};
  s.p.final_state = r.last_state.template data<T>();
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::selective_scan(s.p);
      return r;
    }
  }
  kernels::selective_scan_ref(s.p);
  return r;
}

template <class T>
ScanGrads selective_scan_backward_t(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in,
                                    const Tensor& B_in, const Tensor& C_in, const Tensor& D_in, const Tensor& z_in,
                                    const Tensor& bias_in, bool delta_softplus, const Tensor& init_in,
                                    const Tensor& dy_in, const Tensor& dlast_in, Impl impl) {
  const char* op = "ops::selective_scan_backward";
  ScanSetup<T> s = setup_scan<T>(op, u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus, init_in);
  const Tensor dy = to_c<T>(dy_in, op, "dy");
  check_shape(dy, s.u.shape(), op, "dy");
  const Tensor dlast = opt_c<T>(dlast_in, {s.b, s.d, s.n}, op, "dlast_state");
  const int64_t d = s.d, l = s.l, n = s.n, g = s.g;
  const DType dt = dtype_of<T>();
  ScanGrads r;
  r.du = Tensor::empty(s.u.shape(), dt);
  r.ddelta = Tensor::empty(s.u.shape(), dt);
  r.dA = Tensor::empty(s.A.shape(), dt);
  r.dB = Tensor::empty(s.B.shape(), dt);
  r.dC = Tensor::empty(s.C.shape(), dt);
  if (s.D.defined()) r.dD = Tensor::empty({d}, dt);
  if (s.z.defined()) r.dz = Tensor::empty(s.u.shape(), dt);
  if (s.bias.defined()) r.ddelta_bias = Tensor::empty({d}, dt);
  if (s.init.defined()) r.dinitial_state = Tensor::empty(s.init.shape(), dt);
  kernels::SelectiveScanGradsT<T> gr;
  gr.du = {r.du.template data<T>(), d * l, l, 1};
  gr.ddelta = {r.ddelta.template data<T>(), d * l, l, 1};
  if (r.dz.defined()) gr.dz = {r.dz.template data<T>(), d * l, l, 1};
  gr.dB = {r.dB.template data<T>(), g * n * l, n * l, l, 1};
  gr.dC = {r.dC.template data<T>(), g * n * l, n * l, l, 1};
  gr.dA = r.dA.template data<T>();
  gr.dD = mut_ptr_or_null<T>(r.dD);
  gr.ddelta_bias = mut_ptr_or_null<T>(r.ddelta_bias);
  gr.dinitial_state = mut_ptr_or_null<T>(r.dinitial_state);
  const kernels::Strided3<const T> dyv{dy.template data<T>(), d * l, l, 1};
  const T* dl = ptr_or_null<T>(dlast);
  bool done = false;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::selective_scan_bwd(s.p, dyv, dl, gr);
      done = true;
    }
  }
  if (!done) kernels::selective_scan_bwd_ref(s.p, dyv, dl, gr);
  r.dB = r.dB.view(s.B_shape);
  r.dC = r.dC.view(s.B_shape);
  return r;
}

}  // namespace

ScanResult selective_scan(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                          const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                          bool delta_softplus, const Tensor& init_in, Impl impl) {
  if (u_in.defined() && u_in.is_cuda())
    return selective_scan_cuda(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in, delta_softplus, init_in);
  return is_f64(u_in) ? selective_scan_t<double>(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                                                 delta_softplus, init_in, impl)
                      : selective_scan_t<float>(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                                                delta_softplus, init_in, impl);
}

ScanGrads selective_scan_backward(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                                  const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                                  bool delta_softplus, const Tensor& init_in, const Tensor& dy_in,
                                  const Tensor& dlast_in, Impl impl) {
  return is_f64(u_in) ? selective_scan_backward_t<double>(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                                                          delta_softplus, init_in, dy_in, dlast_in, impl)
                      : selective_scan_backward_t<float>(u_in, delta_in, A_in, B_in, C_in, D_in, z_in, bias_in,
                                                         delta_softplus, init_in, dy_in, dlast_in, impl);
}

namespace {

// The checked, contiguous inputs (element type T) of an SSD scan and its kernel
// parameters (y and final_state not set).
template <class T>
struct SsdSetup {
  Tensor x, dt, A, B, C, D, bias, init;
  int64_t b = 0, l = 0, h = 0, p = 0, g = 0, n = 0;
  kernels::SsdParamsT<T> s;
};

template <class T>
SsdSetup<T> setup_ssd(const char* op, const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                      const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus,
                      int64_t chunk_size, const Tensor& init_in) {
  SsdSetup<T> r;
  r.x = to_c<T>(x_in, op, "x");
  if (r.x.dim() != 4) fail(op, "x must be (batch, seqlen, nheads, headdim), got " + r.x.str());
  const int64_t b = r.x.size(0), l = r.x.size(1), h = r.x.size(2), p = r.x.size(3);
  r.dt = to_c<T>(dt_in, op, "dt");
  check_shape(r.dt, {b, l, h}, op, "dt");
  r.A = to_c<T>(A_in, op, "A");
  check_shape(r.A, {h}, op, "A");
  r.B = to_c<T>(B_in, op, "B");
  r.C = to_c<T>(C_in, op, "C");
  if (r.B.dim() != 4 || r.B.size(0) != b || r.B.size(1) != l)
    fail(op, "B must be (batch, seqlen, ngroups, dstate), got " + r.B.str());
  const int64_t g = r.B.size(2), n = r.B.size(3);
  check_shape(r.C, r.B.shape(), op, "C");
  if (g <= 0 || h % g != 0) fail(op, "nheads " + std::to_string(h) + " is not a multiple of ngroups " + std::to_string(g));
  if (chunk_size <= 0) fail(op, "chunk_size must be positive, got " + std::to_string(chunk_size));
  r.D = opt_c<T>(D_in, {h}, op, "D");
  r.bias = opt_c<T>(bias_in, {h}, op, "dt_bias");
  r.init = opt_c<T>(init_in, {b, h, p, n}, op, "initial_state");
  r.b = b; r.l = l; r.h = h; r.p = p; r.g = g; r.n = n;
  kernels::SsdParamsT<T>& s = r.s;
  s.batch = b; s.seqlen = l; s.nheads = h; s.headdim = p; s.dstate = n; s.ngroups = g; s.chunk_size = chunk_size;
  s.x = r.x.template data<T>(); s.x_sb = l * h * p; s.x_st = h * p; s.x_sh = p;
  s.dt = r.dt.template data<T>(); s.dt_sb = l * h; s.dt_st = h; s.dt_sh = 1;
  s.B = r.B.template data<T>(); s.B_sb = l * g * n; s.B_st = g * n; s.B_sg = n;
  s.C = r.C.template data<T>(); s.C_sb = l * g * n; s.C_st = g * n; s.C_sg = n;
  s.A = r.A.template data<T>();
  s.D = ptr_or_null<T>(r.D);
  s.dt_bias = ptr_or_null<T>(r.bias);
  s.dt_softplus = dt_softplus;
  s.initial_state = ptr_or_null<T>(r.init);
  return r;
}

template <class T>
ScanResult ssd_scan_t(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                      const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus,
                      int64_t chunk_size, const Tensor& init_in, Impl impl) {
  SsdSetup<T> su = setup_ssd<T>("ops::ssd_scan", x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus,
                                chunk_size, init_in);
  ScanResult r{Tensor::empty(su.x.shape(), dtype_of<T>()), Tensor::empty({su.b, su.h, su.p, su.n}, dtype_of<T>())};
  kernels::SsdParamsT<T>& s = su.s;
  s.y = r.y.template data<T>(); s.y_sb = s.x_sb; s.y_st = s.x_st; s.y_sh = s.x_sh;
  s.final_state = r.last_state.template data<T>();
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::ssd_chunk_scan(s);
      return r;
    }
  }
  kernels::ssd_scan_ref(s);
  return r;
}

template <class T>
SsdScanGrads ssd_scan_backward_t(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                                 const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus,
                                 int64_t chunk_size, const Tensor& init_in, const Tensor& dy_in,
                                 const Tensor& dlast_in, Impl impl) {
  const char* op = "ops::ssd_scan_backward";
  SsdSetup<T> su = setup_ssd<T>(op, x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus, chunk_size, init_in);
  const Tensor dy = to_c<T>(dy_in, op, "dy");
  check_shape(dy, su.x.shape(), op, "dy");
  const Tensor dlast = opt_c<T>(dlast_in, {su.b, su.h, su.p, su.n}, op, "dlast_state");
  const int64_t l = su.l, h = su.h, p = su.p, g = su.g, n = su.n;
  const DType dt = dtype_of<T>();
  SsdScanGrads r;
  r.dx = Tensor::empty(su.x.shape(), dt);
  r.ddt = Tensor::empty(su.dt.shape(), dt);
  r.dA = Tensor::empty({h}, dt);
  r.dB = Tensor::empty(su.B.shape(), dt);
  r.dC = Tensor::empty(su.C.shape(), dt);
  if (su.D.defined()) r.dD = Tensor::empty({h}, dt);
  if (su.bias.defined()) r.ddt_bias = Tensor::empty({h}, dt);
  if (su.init.defined()) r.dinitial_state = Tensor::empty(su.init.shape(), dt);
  kernels::SsdGradsT<T> gr;
  gr.dx = r.dx.template data<T>(); gr.dx_sb = l * h * p; gr.dx_st = h * p; gr.dx_sh = p;
  gr.ddt = r.ddt.template data<T>(); gr.ddt_sb = l * h; gr.ddt_st = h; gr.ddt_sh = 1;
  gr.dB = r.dB.template data<T>(); gr.dB_sb = l * g * n; gr.dB_st = g * n; gr.dB_sg = n;
  gr.dC = r.dC.template data<T>(); gr.dC_sb = l * g * n; gr.dC_st = g * n; gr.dC_sg = n;
  gr.dA = r.dA.template data<T>();
  gr.dD = mut_ptr_or_null<T>(r.dD);
  gr.ddt_bias = mut_ptr_or_null<T>(r.ddt_bias);
  gr.dinitial_state = mut_ptr_or_null<T>(r.dinitial_state);
  const T* dl = ptr_or_null<T>(dlast);
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::ssd_scan_bwd(su.s, dy.template data<T>(), l * h * p, h * p, p, dl, gr);
      return r;
    }
  }
  kernels::ssd_scan_bwd_ref(su.s, dy.template data<T>(), l * h * p, h * p, p, dl, gr);
  return r;
}

template <class T>
Tensor causal_conv1d_t(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu, Impl impl) {
  const char* op = "ops::causal_conv1d";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() != 3) fail(op, "x must be (batch, seqlen, channels), got " + x.str());
  Tensor w = to_c<T>(w_in, op, "weight");
  if (w.dim() == 3 && w.size(1) == 1) w = w.squeeze(1);
  if (w.dim() != 2 || w.size(0) != x.size(2)) fail(op, "weight must be (channels, width), got " + w_in.str());
  const Tensor bias = opt_c<T>(bias_in, {x.size(2)}, op, "bias");
  Tensor out = Tensor::empty(x.shape(), dtype_of<T>());
  kernels::CausalConv1dParamsT<T> p;
  p.batch = x.size(0); p.seqlen = x.size(1); p.channels = x.size(2); p.width = w.size(1);
  p.x = x.template data<T>(); p.x_sb = x.size(1) * x.size(2); p.x_st = x.size(2);
  p.weight = w.template data<T>(); p.bias = ptr_or_null<T>(bias); p.silu = silu;
  p.out = out.template data<T>();
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::causal_conv1d(p);
      return out;
    }
  }
  kernels::causal_conv1d_ref(p);
  return out;
}

template <class T>
Conv1dGrads causal_conv1d_backward_t(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu,
                                     const Tensor& dy_in, Impl impl) {
  const char* op = "ops::causal_conv1d_backward";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() != 3) fail(op, "x must be (batch, seqlen, channels), got " + x.str());
  Tensor w = to_c<T>(w_in, op, "weight");
  const Shape w_shape = w.shape();
  if (w.dim() == 3 && w.size(1) == 1) w = w.squeeze(1);
  if (w.dim() != 2 || w.size(0) != x.size(2)) fail(op, "weight must be (channels, width), got " + w_in.str());
  const Tensor bias = opt_c<T>(bias_in, {x.size(2)}, op, "bias");
  const Tensor dy = to_c<T>(dy_in, op, "dy");
  check_shape(dy, x.shape(), op, "dy");
  const DType dt = dtype_of<T>();
  Conv1dGrads r{Tensor::empty(x.shape(), dt), Tensor::empty(w.shape(), dt),
                bias.defined() ? Tensor::empty(bias.shape(), dt) : Tensor()};
  kernels::CausalConv1dParamsT<T> p;
  p.batch = x.size(0); p.seqlen = x.size(1); p.channels = x.size(2); p.width = w.size(1);
  p.x = x.template data<T>(); p.x_sb = x.size(1) * x.size(2); p.x_st = x.size(2);
  p.weight = w.template data<T>(); p.bias = ptr_or_null<T>(bias); p.silu = silu;
  const int64_t sb = x.size(1) * x.size(2), st = x.size(2);
  bool done = false;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::causal_conv1d_bwd(p, dy.data<float>(), r.dx.data<float>(), sb, st, r.dweight.data<float>(),
                                 mut_ptr_or_null<float>(r.dbias), nullptr);
      done = true;
    }
  }
  if (!done)
    kernels::causal_conv1d_bwd_ref(p, dy.template data<T>(), r.dx.template data<T>(), sb, st,
                                   r.dweight.template data<T>(), mut_ptr_or_null<T>(r.dbias), nullptr);
  r.dweight = r.dweight.view(w_shape);
  return r;
}

template <class T>
Tensor rms_norm_t(const Tensor& x_in, const Tensor& w_in, double eps, Impl impl) {
  const char* op = "ops::rms_norm";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor w = to_c<T>(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
  const int64_t rows = d ? x.numel() / d : 0;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::rms_norm(rows, d, x.data<float>(), d, w.data<float>(), static_cast<float>(eps), y.data<float>(), d);
      return y;
    }
  }
  kernels::rms_norm_ref(rows, d, x.template data<T>(), d, w.template data<T>(), static_cast<T>(eps),
                        y.template data<T>(), d);
  return y;
}

template <class T>
Tensor gated_rms_norm_t(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size, double eps,
                        bool norm_before_gate, Impl impl) {
  const char* op = "ops::gated_rms_norm";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor z = opt_c<T>(z_in, x.shape(), op, "z");
  const Tensor w = to_c<T>(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  if (group_size <= 0 || d % group_size != 0)
    fail(op, "group_size " + std::to_string(group_size) + " does not divide the last dim " + std::to_string(d));
  Tensor y = Tensor::empty(x.shape(), dtype_of<T>());
  const int64_t rows = d ? x.numel() / d : 0;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::gated_rms_norm(rows, d, group_size, x.data<float>(), d, ptr_or_null<float>(z), d, w.data<float>(),
                              static_cast<float>(eps), norm_before_gate, y.data<float>(), d);
      return y;
    }
  }
  kernels::gated_rms_norm_ref(rows, d, group_size, x.template data<T>(), d, ptr_or_null<T>(z), d,
                              w.template data<T>(), static_cast<T>(eps), norm_before_gate, y.template data<T>(), d);
  return y;
}

template <class T>
NormGrads rms_norm_backward_t(const Tensor& x_in, const Tensor& w_in, double eps, const Tensor& dy_in, Impl impl) {
  const char* op = "ops::rms_norm_backward";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor w = to_c<T>(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  const Tensor dy = to_c<T>(dy_in, op, "dy");
  check_shape(dy, x.shape(), op, "dy");
  NormGrads r{Tensor::empty(x.shape(), dtype_of<T>()), Tensor(), Tensor::zeros({d}, dtype_of<T>())};
  const int64_t rows = d ? x.numel() / d : 0;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::rms_norm_bwd(rows, d, x.data<float>(), d, w.data<float>(), static_cast<float>(eps), dy.data<float>(),
                            d, r.dx.data<float>(), d, r.dweight.data<float>());
      return r;
    }
  }
  kernels::rms_norm_bwd_ref(rows, d, x.template data<T>(), d, w.template data<T>(), static_cast<T>(eps),
                            dy.template data<T>(), d, r.dx.template data<T>(), d, r.dweight.template data<T>());
  return r;
}

template <class T>
NormGrads gated_rms_norm_backward_t(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size,
                                    double eps, bool norm_before_gate, const Tensor& dy_in, Impl impl) {
  const char* op = "ops::gated_rms_norm_backward";
  const Tensor x = to_c<T>(x_in, op, "x");
  if (x.dim() < 1) fail(op, "x must have at least one dimension");
  const int64_t d = x.size(-1);
  const Tensor z = opt_c<T>(z_in, x.shape(), op, "z");
  const Tensor w = to_c<T>(w_in, op, "weight");
  check_shape(w, {d}, op, "weight");
  const Tensor dy = to_c<T>(dy_in, op, "dy");
  check_shape(dy, x.shape(), op, "dy");
  if (group_size <= 0 || d % group_size != 0)
    fail(op, "group_size " + std::to_string(group_size) + " does not divide the last dim " + std::to_string(d));
  const DType dt = dtype_of<T>();
  NormGrads r{Tensor::empty(x.shape(), dt), z.defined() ? Tensor::empty(x.shape(), dt) : Tensor(),
              Tensor::zeros({d}, dt)};
  const int64_t rows = d ? x.numel() / d : 0;
  if constexpr (std::is_same_v<T, float>) {
    if (impl == Impl::fast) {
      kernels::gated_rms_norm_bwd(rows, d, group_size, x.data<float>(), d, ptr_or_null<float>(z), d, w.data<float>(),
                                  static_cast<float>(eps), norm_before_gate, dy.data<float>(), d, r.dx.data<float>(),
                                  d, mut_ptr_or_null<float>(r.dz), d, r.dweight.data<float>());
      return r;
    }
  }
  kernels::gated_rms_norm_bwd_ref(rows, d, group_size, x.template data<T>(), d, ptr_or_null<T>(z), d,
                                  w.template data<T>(), static_cast<T>(eps), norm_before_gate, dy.template data<T>(), d,
                                  r.dx.template data<T>(), d, mut_ptr_or_null<T>(r.dz), d,
                                  r.dweight.template data<T>());
  return r;
}

}  // namespace

ScanResult ssd_scan(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in, const Tensor& C_in,
                    const Tensor& D_in, const Tensor& bias_in, bool dt_softplus, int64_t chunk_size,
                    const Tensor& init_in, Impl impl) {
  return is_f64(x_in) ? ssd_scan_t<double>(x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus, chunk_size,
                                           init_in, impl)
                      : ssd_scan_t<float>(x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus, chunk_size,
                                          init_in, impl);
}

SsdScanGrads ssd_scan_backward(const Tensor& x_in, const Tensor& dt_in, const Tensor& A_in, const Tensor& B_in,
                               const Tensor& C_in, const Tensor& D_in, const Tensor& bias_in, bool dt_softplus,
                               int64_t chunk_size, const Tensor& init_in, const Tensor& dy_in, const Tensor& dlast_in,
                               Impl impl) {
  return is_f64(x_in) ? ssd_scan_backward_t<double>(x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus,
                                                    chunk_size, init_in, dy_in, dlast_in, impl)
                      : ssd_scan_backward_t<float>(x_in, dt_in, A_in, B_in, C_in, D_in, bias_in, dt_softplus,
                                                   chunk_size, init_in, dy_in, dlast_in, impl);
}

Tensor causal_conv1d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu, Impl impl) {
  return is_f64(x_in) ? causal_conv1d_t<double>(x_in, w_in, bias_in, silu, impl)
                      : causal_conv1d_t<float>(x_in, w_in, bias_in, silu, impl);
}

Conv1dGrads causal_conv1d_backward(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, bool silu,
                                   const Tensor& dy_in, Impl impl) {
  return is_f64(x_in) ? causal_conv1d_backward_t<double>(x_in, w_in, bias_in, silu, dy_in, impl)
                      : causal_conv1d_backward_t<float>(x_in, w_in, bias_in, silu, dy_in, impl);
}

Tensor rms_norm(const Tensor& x_in, const Tensor& w_in, double eps, Impl impl) {
  return is_f64(x_in) ? rms_norm_t<double>(x_in, w_in, eps, impl) : rms_norm_t<float>(x_in, w_in, eps, impl);
}

Tensor gated_rms_norm(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size, double eps,
                      bool norm_before_gate, Impl impl) {
  return is_f64(x_in) ? gated_rms_norm_t<double>(x_in, z_in, w_in, group_size, eps, norm_before_gate, impl)
                      : gated_rms_norm_t<float>(x_in, z_in, w_in, group_size, eps, norm_before_gate, impl);
}

NormGrads rms_norm_backward(const Tensor& x_in, const Tensor& w_in, double eps, const Tensor& dy_in, Impl impl) {
  return is_f64(x_in) ? rms_norm_backward_t<double>(x_in, w_in, eps, dy_in, impl)
                      : rms_norm_backward_t<float>(x_in, w_in, eps, dy_in, impl);
}

NormGrads gated_rms_norm_backward(const Tensor& x_in, const Tensor& z_in, const Tensor& w_in, int64_t group_size,
                                  double eps, bool norm_before_gate, const Tensor& dy_in, Impl impl) {
  return is_f64(x_in)
             ? gated_rms_norm_backward_t<double>(x_in, z_in, w_in, group_size, eps, norm_before_gate, dy_in, impl)
             : gated_rms_norm_backward_t<float>(x_in, z_in, w_in, group_size, eps, norm_before_gate, dy_in, impl);
}

}  // namespace mamba::ops
