// Check + benchmark of the CUDA training kernels (train_kernels_cuda.h) against the CPU
// kernels of mamba/kernels/*.h and plain loops. Every check draws fresh random inputs,
// poisons the outputs with NaN (0xFF bytes) before the run and compares by
// ||out - ref|| / ||ref|| (f32 <= 1e-4, bf16 <= 1e-2; NaN fails); the cross-entropy outputs, which
// are differences of larger terms, by ||out - ref|| / max(||ref||, floor) (see check_ce). One line per check, then
// "train-check: N PASS, M FAIL". --bench: timings at the LM training shape (CUDA events,
// median of 30 after 5 warm-up runs; working sets >> L2), with bytes, GB/s and the fraction
// of a measured 1 GiB cudaMemcpy D2D.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mamba/kernels/causal_conv1d.h"
#include "mamba/kernels/cross_entropy.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/perf_record.h"
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "mamba/kernels/norm.h"
#include "mamba/kernels/rms_norm.h"

namespace kc = mamba::kernels::cuda;
namespace k = mamba::kernels;
using bf16 = __nv_bfloat16;

namespace {

int g_pass = 0, g_fail = 0;
std::mt19937 g_rng(12345);

#define CK(expr) MAMBA_CUDA_CHECK("check", expr)

template <class T> const char* tname() { return std::is_same_v<T, float> ? "f32" : "bf16"; }
inline float to_f(float v) { return v; }
inline float to_f(bf16 v) { return __bfloat162float(v); }
template <class T> T to_t(float v) {
  if constexpr (std::is_same_v<T, float>) return v; else return __float2bfloat16_rn(v);
}

std::vector<float> randn(size_t n, float mean = 0.f, float sd = 1.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

// Device buffer of T; from a host vector it rounds the vector to T in place.
template <class T>
struct Buf {
  T* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) {
    CK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)));
    poison();
  }
  explicit Buf(std::vector<float>& v) : Buf(v.size()) { upload(v); }
  void upload(std::vector<float>& v) {
    std::vector<T> t(v.size());
    for (size_t i = 0; i < v.size(); ++i) { t[i] = to_t<T>(v[i]); v[i] = to_f(t[i]); }
    if (n) CK(cudaMemcpy(p, t.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison() { CK(cudaMemset(p, 0xFF, std::max<size_t>(n, 1) * sizeof(T))); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  std::vector<float> get() const {
    CK(cudaDeviceSynchronize());
    std::vector<T> t(n);
    if (n) CK(cudaMemcpy(t.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = to_f(t[i]);
    return v;
  }
};

struct Ws {
  void* p = nullptr;
  size_t n = 0;
  explicit Ws(size_t bytes) : n(bytes) {
    CK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
    CK(cudaMemset(p, 0xFF, std::max<size_t>(bytes, 16)));
  }
  ~Ws() { cudaFree(p); }
};

double rel(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}
double rel(const std::vector<float>& out, const std::vector<float>& ref) {
  return rel(out, std::vector<double>(ref.begin(), ref.end()));
}
// ||out - ref|| / max(||ref||, floor): the relative error, measured against `floor` instead when
// the reference is smaller than it (a result that is a small difference of large terms).
double rel_floor(const std::vector<float>& out, const std::vector<double>& ref, double floor) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  const double d = std::max(std::sqrt(den), floor);
  return std::sqrt(num) / (d > 0 ? d : 1);
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1e", v);
  return b;
}
template <class T> double tol() { return std::is_same_v<T, float> ? 1e-4 : 1e-2; }

void report(const std::string& name, double err, double limit) {
  const bool ok = std::isfinite(err) && err <= limit;
  (ok ? g_pass : g_fail)++;
  std::printf("%s %-72s rel %.3e (limit %.1e)\n", ok ? "PASS" : "FAIL", name.c_str(), err, limit);
}
void report_bool(const std::string& name, bool ok, const std::string& detail) {
  (ok ? g_pass : g_fail)++;
  std::printf("%s %-72s %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
}
// fn must throw std::invalid_argument whose message contains `needle`.
void expect_throw(const std::string& name, const std::function<void()>& fn, const std::string& needle) {
  std::string what;
  bool threw = false;
  try { fn(); } catch (const std::invalid_argument& e) { threw = true; what = e.what(); } catch (const std::exception& e) { what = std::string("wrong type: ") + e.what(); }
  report_bool("error: " + name, threw && what.find(needle) != std::string::npos, "\"" + what + "\"");
}

// ---- RMSNorm backward --------------------------------------------------------------------------
template <class T>
void check_rms_bwd(int64_t rows, int64_t dim, bool with_add, bool alias) {
  auto r = randn(rows * dim), w = randn(dim, 1.f, 0.3f), dy = randn(rows * dim), da = randn(with_add ? rows * dim : 0);
  const float eps = 1e-5f;
  Buf<float> dr_(r), dw_(w);
  Buf<T> ddy(dy);
  Buf<float> dda(da), ddr(rows * dim), ddw(dim);
  Ws ws(kc::rms_norm_bwd_cuda_workspace_bytes(rows, dim));
  float* out = alias && with_add ? dda.p : ddr.p;
  kc::rms_norm_bwd_cuda<T>(rows, dim, dr_.p, dw_.p, eps, ddy.p, with_add ? dda.p : nullptr, out, ddw.p, ws.p, ws.n, 0);
  std::vector<float> dx_ref(rows * dim), dw_ref(dim);
  k::rms_norm_bwd_ref(rows, dim, r.data(), dim, w.data(), eps, dy.data(), dim, dx_ref.data(), dim, dw_ref.data());
  // The CPU f32 kernel on the same input: its error measures the conditioning (at dim 1,
  // dr = w dy rstd eps / (r^2 + eps) comes from a cancellation that f32 resolves to ~1e-3).
  std::vector<float> dx_cpu(rows * dim), dw_cpu(dim);
  k::rms_norm_bwd(rows, dim, r.data(), dim, w.data(), eps, dy.data(), dim, dx_cpu.data(), dim, dw_cpu.data());
  if (with_add) for (size_t i = 0; i < dx_ref.size(); ++i) { dx_ref[i] += da[i]; dx_cpu[i] += da[i]; }
  const double cond = rel(dx_cpu, dx_ref);
  // And from the inputs: dr_i = t1_i - t2_i with t1_i = rstd w_i dy_i, t2_i = r_i rstd^3 mean_j(w_j dy_j r_j).
  // An f32 evaluation carries relative errors of a few u = 2^-24 in each term (rsqrtf alone is <= 2 ulp,
  // and rstd enters t2 cubed), so its error is up to ~16 u (|t1| + |t2|) whatever the order of the
  // operations: at dim 1 the two terms cancel to eps / (r^2 + eps) of themselves (the first draw: 1.739 -
  // 1.739 = 2.8e-5, u x 16 x 2.5e5 = 0.12), and one f32 kernel's error there depends on its build
  // (the CPU kernel 9.5e-4 built on the GPU machine, 3.4e-4 built by CMake here; the GPU's 3.65e-3 both
  // times). Elsewhere the bound is ~1e-6, under the tolerance.
  double mag = 0, refn = 0;
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0, dot = 0;
    for (int64_t j = 0; j < dim; ++j) {
      const double rv = r[i * dim + j], g = double(w[j]) * dy[i * dim + j];
      ss += rv * rv;
      dot += g * rv;
    }
    const double rs = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t j = 0; j < dim; ++j) {
      const double t1 = rs * w[j] * dy[i * dim + j], t2 = r[i * dim + j] * rs * rs * rs * dot / dim;
      mag += (std::fabs(t1) + std::fabs(t2)) * (std::fabs(t1) + std::fabs(t2));
      refn += double(dx_ref[i * dim + j]) * dx_ref[i * dim + j];
    }
  }
  const double bound = 16 * 0x1p-24 * std::sqrt(mag) / std::max(std::sqrt(refn), 1e-300);
  const auto got = alias && with_add ? dda.get() : ddr.get();
  const std::string nm = std::string("rms_norm_bwd ") + tname<T>() + " rows " + std::to_string(rows) + " dim " +
                         std::to_string(dim) + (with_add ? " +dr_add" : "") + (alias ? " (dr aliases dr_add)" : "");
  report(nm + " dr (cpu f32 " + fmt(cond) + ", f32 bound " + fmt(bound) + ")", rel(got, dx_ref),
         std::max({tol<T>(), 10 * cond, bound}));
  report(nm + " dw", rel(ddw.get(), dw_ref), tol<T>());
}

// ---- gated RMSNorm backward ---------------------------------------------------------------------
template <class T>
void check_gated_bwd(int64_t rows, int64_t dim, int64_t G, bool with_z, bool nbg, int64_t pad) {
  const int64_t st = dim + pad;
  auto x = randn(rows * st), z = randn(with_z ? rows * st : 0), w = randn(dim, 1.f, 0.3f), dy = randn(rows * st);
  const float eps = 1e-5f;
  Buf<T> dx_(x), dz_(z), ddy(dy), ddx(rows * st), ddz(with_z ? rows * st : 0);
  Buf<float> dw_(w), ddw(dim);
  Ws ws(kc::gated_rms_norm_bwd_cuda_workspace_bytes(rows, dim));
  kc::gated_rms_norm_bwd_cuda<T>(rows, dim, G, dx_.p, st, with_z ? dz_.p : nullptr, st, dw_.p, eps, nbg, ddy.p, st,
                                 ddx.p, st, with_z ? ddz.p : nullptr, st, ddw.p, ws.p, ws.n, 0);
  std::vector<float> rdx(rows * st, 0.f), rdz(with_z ? rows * st : 0, 0.f), rdw(dim);
  k::gated_rms_norm_bwd_ref(rows, dim, G, x.data(), st, with_z ? z.data() : nullptr, st, w.data(), eps, nbg, dy.data(),
                            st, rdx.data(), st, with_z ? rdz.data() : nullptr, st, rdw.data());
  std::vector<float> cdx(rows * st, 0.f), cdz(with_z ? rows * st : 0, 0.f), cdw(dim);
  k::gated_rms_norm_bwd(rows, dim, G, x.data(), st, with_z ? z.data() : nullptr, st, w.data(), eps, nbg, dy.data(), st,
                        cdx.data(), st, with_z ? cdz.data() : nullptr, st, cdw.data());
  auto cols = [&](const std::vector<float>& v) {
    std::vector<float> o;
    for (int64_t r = 0; r < rows; ++r) for (int64_t c = 0; c < dim; ++c) o.push_back(v[r * st + c]);
    return o;
  };
  const std::string nm = std::string("gated_rms_norm_bwd ") + tname<T>() + " rows " + std::to_string(rows) + " dim " +
                         std::to_string(dim) + " group " + std::to_string(G) + (with_z ? (nbg ? " z norm_before_gate" : " z gate_first") : " no z") +
                         (pad ? " strided" : "");
  // Limits: max(tol, 10 x the CPU f32 kernel's error), the conditioning (see check_rms_bwd).
  const double cx = rel(cols(cdx), cols(rdx)), cz = with_z ? rel(cols(cdz), cols(rdz)) : 0.0;
  report(nm + " dx (cpu f32 " + fmt(cx) + ")", rel(cols(ddx.get()), cols(rdx)), std::max(tol<T>(), 10 * cx));
  if (with_z) report(nm + " dz (cpu f32 " + fmt(cz) + ")", rel(cols(ddz.get()), cols(rdz)), std::max(tol<T>(), 10 * cz));
  report(nm + " dw", rel(ddw.get(), rdw), tol<T>());
}

// ---- LayerNorm forward + backward ----------------------------------------------------------------
template <class T>
void check_layer_norm(int64_t rows, int64_t dim, bool with_res, bool with_b, bool with_add) {
  auto x = randn(rows * dim), res = randn(with_res ? rows * dim : 0, 0.5f, 1.f), w = randn(dim, 1.f, 0.3f),
       b = randn(dim), dy = randn(rows * dim), da = randn(with_add ? rows * dim : 0);
  const float eps = 1e-5f;
  Buf<T> dx_(x), dy_(dy), dyo(rows * dim);
  Buf<float> dres(res), dw_(w), db_(b), dro(rows * dim), dmean(rows), drstd(rows), dda(da), ddr(rows * dim), ddw(dim), ddb(dim);
  kc::add_layer_norm_cuda<T>(rows, dim, dx_.p, with_res ? dres.p : nullptr, dro.p, dw_.p, with_b ? db_.p : nullptr, eps,
                             dyo.p, dmean.p, drstd.p, 0);
  Ws ws(kc::layer_norm_bwd_cuda_workspace_bytes(rows, dim));
  kc::layer_norm_bwd_cuda<T>(rows, dim, dro.p, dmean.p, drstd.p, dw_.p, dy_.p, with_add ? dda.p : nullptr, ddr.p, ddw.p,
                             with_b ? ddb.p : nullptr, ws.p, ws.n, 0);
  std::vector<float> r(rows * dim), yref(rows * dim);
  for (size_t i = 0; i < r.size(); ++i) r[i] = x[i] + (with_res ? res[i] : 0.f);
  k::layer_norm_f32_ref(rows, dim, r.data(), w.data(), with_b ? b.data() : nullptr, eps, yref.data());
  // Backward reference in f64: xhat = (r - mean) rstd, g = w dy,
  // dr = dr_add + rstd (g - mean(g) - xhat mean(g xhat)), dw = sum dy xhat, db = sum dy.
  std::vector<double> drr(rows * dim), dwr(dim, 0.0), dbr(dim, 0.0), mr(rows), sr(rows);
  for (int64_t i = 0; i < rows; ++i) {
    const float* ri = r.data() + i * dim;
    double mu = 0, var = 0;
    for (int64_t c = 0; c < dim; ++c) mu += ri[c];
    mu /= dim;
    for (int64_t c = 0; c < dim; ++c) var += (ri[c] - mu) * (ri[c] - mu);
    var /= dim;
    const double rs = 1.0 / std::sqrt(var + eps);
    mr[i] = mu; sr[i] = rs;
    double s1 = 0, s2 = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const double xh = (ri[c] - mu) * rs, g = double(w[c]) * dy[i * dim + c];
      s1 += g; s2 += g * xh;
      dwr[c] += dy[i * dim + c] * xh;
      dbr[c] += dy[i * dim + c];
    }
    for (int64_t c = 0; c < dim; ++c) {
      const double xh = (ri[c] - mu) * rs, g = double(w[c]) * dy[i * dim + c];
      drr[i * dim + c] = rs * (g - s1 / dim - xh * s2 / dim) + (with_add ? da[i * dim + c] : 0.0);
    }
  }
  const std::string nm = std::string("layer_norm ") + tname<T>() + " rows " + std::to_string(rows) + " dim " +
                         std::to_string(dim) + (with_res ? " +residual" : "") + (with_b ? " bias" : "") + (with_add ? " +dr_add" : "");
  report(nm + " fwd residual_out", rel(dro.get(), r), 1e-6);
  report(nm + " fwd y", rel(dyo.get(), yref), tol<T>());
  report(nm + " fwd mean", rel(dmean.get(), mr), 1e-5);
  report(nm + " fwd rstd", rel(drstd.get(), sr), 1e-5);
  report(nm + " bwd dr", rel(ddr.get(), drr), tol<T>());
  report(nm + " bwd dw", rel(ddw.get(), dwr), tol<T>());
  if (with_b) report(nm + " bwd db", rel(ddb.get(), dbr), tol<T>());
}

// ---- cross-entropy -----------------------------------------------------------------------------
template <class T>
void check_ce(int64_t rows, int64_t V, int64_t stride, bool inplace, bool with_grad, int ignore_every) {
  auto x = randn(rows * stride, 0.f, 2.f);
  std::vector<int64_t> tg(rows);
  std::uniform_int_distribution<int64_t> U(0, V - 1);
  for (int64_t i = 0; i < rows; ++i) tg[i] = ignore_every && i % ignore_every == 1 ? -100 : U(g_rng);
  Buf<T> dx(x), ddl(rows * stride);
  int64_t* dtg;
  CK(cudaMalloc(&dtg, rows * 8));
  CK(cudaMemcpy(dtg, tg.data(), rows * 8, cudaMemcpyHostToDevice));
  Buf<float> dloss(rows), dsum(1);
  int64_t* dcor;
  CK(cudaMalloc(&dcor, 8));
  CK(cudaMemset(dcor, 0xFF, 8));
  Ws ws(kc::cross_entropy_cuda_workspace_bytes(rows));
  const float scale = 1.f / static_cast<float>(std::max<int64_t>(rows, 1));
  T* out = with_grad ? (inplace ? dx.p : ddl.p) : nullptr;
  kc::cross_entropy_fwd_bwd_cuda<T>(rows, V, stride, dx.p, dtg, scale, out, dloss.p, dsum.p, dcor, ws.p, ws.n, 0);
  kc::cross_entropy_check_cuda(ws.p, V, 0);
  std::vector<float> dref(rows * stride);
  std::vector<double> lref(rows);
  for (int64_t r = 0; r < rows; ++r)
    lref[r] = k::softmax_cross_entropy_ref(1, V, stride, x.data() + r * stride, tg.data() + r, scale, dref.data() + r * stride).loss_sum;
  const auto all = k::softmax_cross_entropy_ref(rows, V, stride, x.data(), tg.data(), scale, nullptr);
  int64_t cor = -1;
  CK(cudaMemcpy(&cor, dcor, 8, cudaMemcpyDeviceToHost));
  const std::string nm = std::string("cross_entropy ") + tname<T>() + " rows " + std::to_string(rows) + " V " +
                         std::to_string(V) + " stride " + std::to_string(stride) + (inplace ? " in-place" : "") +
                         (with_grad ? "" : " (no grad)") + (ignore_every ? " ignored rows" : "");
  // Floors: a row's loss is logsumexp(x) - x[target] = log(sum_j exp(x_j - max)) + max - x[target];
  // the sum is 1 + delta when the target logit is the largest by far, and rounding 1 + delta (and
  // x_j - max) leaves an absolute error of a few ulps of m_r = max(1, max_j |x_rj|) in the loss,
  // however small the loss itself: one draw of the V 3 row measured 3.3e-5 relative against the
  // 1e-5 limit (device round 3, 19:00 UTC; a loss well under 1). The gradient (p - onehot) * scale
  // cancels the same way at the target (p_target ~ 1), so its terms' size is `scale` per counted
  // row. Each floor is the norm of those magnitudes over the rows; when the reference is larger
  // (every case but the near-zero losses), the check is the plain relative one.
  double fl_rows = 0, fl_sum = 0, fl_grad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (tg[r] < 0) continue;  // ignored row: loss 0, gradient 0, exactly
    double m = 1;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, std::fabs(double(x[r * stride + j])));
    fl_rows += m * m;
    fl_sum += m;
    fl_grad += double(scale) * double(scale);
  }
  fl_rows = std::sqrt(fl_rows);
  fl_grad = std::sqrt(fl_grad);
  // (loss_rows and loss_sum are unscaled, as in softmax_cross_entropy_ref; dlogits carry `scale`.)
  report(nm + " loss_rows (floor " + fmt(fl_rows) + ")", rel_floor(dloss.get(), lref, fl_rows), 1e-5);
  report(nm + " loss_sum (floor " + fmt(fl_sum) + ")", rel_floor(dsum.get(), std::vector<double>{all.loss_sum}, fl_sum), 1e-5);
  report_bool(nm + " correct", cor == all.correct, std::to_string(cor) + " vs " + std::to_string(all.correct));
  if (with_grad) {
    const std::vector<float> g = inplace ? dx.get() : ddl.get();
    report(nm + " dlogits (floor " + fmt(fl_grad) + ")", rel_floor(g, std::vector<double>(dref.begin(), dref.end()), fl_grad),
           tol<T>());
  }
  cudaFree(dtg);
  cudaFree(dcor);
}

// ---- causal conv1d backward --------------------------------------------------------------------
template <class T>
void check_conv_bwd(int64_t B, int64_t L, int64_t C, int64_t K, bool silu, bool bias, bool init, bool dinit,
                    int64_t x_pad, int64_t dx_pad) {
  const int64_t xst = C + x_pad, dxst = C + dx_pad;
  auto x = randn(B * L * xst), w = randn(C * K, 0.f, 0.5f), bv = randn(C), h0 = randn(init ? B * C * (K - 1) : 0);
  auto dout = randn(B * L * C);
  Buf<T> dx_(x), ddout(dout), ddx(B * L * dxst);
  Buf<float> dw_(w), db_(bv), dh0(h0), ddw(C * K), ddb(C), ddinit(B * C * std::max<int64_t>(K - 1, 0));
  kc::CausalConv1dCudaParams<T> p;
  p.batch = B; p.seqlen = L; p.channels = C; p.width = K;
  p.x = dx_.p; p.x_sb = L * xst; p.x_st = xst;
  p.weight = dw_.p; p.bias = bias ? db_.p : nullptr; p.initial_state = init ? dh0.p : nullptr; p.silu = silu;
  kc::CausalConv1dCudaParams<float> s;
  s.batch = B; s.seqlen = L; s.channels = C; s.width = K;
  Ws ws(kc::causal_conv1d_bwd_cuda_workspace_bytes(s));
  kc::causal_conv1d_bwd_cuda<T>(p, ddout.p, ddx.p, L * dxst, dxst, ddw.p, bias ? ddb.p : nullptr,
                                dinit && K > 1 ? ddinit.p : nullptr, ws.p, ws.n, 0);
  k::CausalConv1dParams q;
  q.batch = B; q.seqlen = L; q.channels = C; q.width = K;
  q.x = x.data(); q.x_sb = L * xst; q.x_st = xst;
  q.weight = w.data(); q.bias = bias ? bv.data() : nullptr; q.initial_state = init ? h0.data() : nullptr; q.silu = silu;
  std::vector<float> rdx(B * L * dxst, 0.f), rdw(C * K), rdb(C), rdi(B * C * std::max<int64_t>(K - 1, 0));
  k::causal_conv1d_bwd_ref(q, dout.data(), rdx.data(), L * dxst, dxst, rdw.data(), rdb.data(), rdi.data());
  auto gdx = ddx.get();
  std::vector<float> gx, rx;  // only the c < C columns
  for (int64_t i = 0; i < B * L; ++i)
    for (int64_t c = 0; c < C; ++c) { gx.push_back(gdx[i * dxst + c]); rx.push_back(rdx[i * dxst + c]); }
  char buf[200];
  std::snprintf(buf, sizeof buf, "conv1d_bwd %s b%ld l%ld c%ld k%ld%s%s%s%s%s", tname<T>(), long(B), long(L), long(C),
                long(K), silu ? " silu" : "", bias ? " bias" : "", init ? " h0" : "", dinit ? " dh0" : "",
                x_pad || dx_pad ? " strided" : "");
  report(std::string(buf) + " dx", rel(gx, rx), tol<T>());
  report(std::string(buf) + " dweight", rel(ddw.get(), rdw), tol<T>());
  if (bias) report(std::string(buf) + " dbias", rel(ddb.get(), rdb), tol<T>());
  if (dinit && K > 1) report(std::string(buf) + " dinitial_state", rel(ddinit.get(), rdi), tol<T>());
}

// ---- embedding backward ------------------------------------------------------------------------
template <class T>
void check_emb(int64_t rows, int64_t dim, int64_t vocab) {
  auto dy = randn(rows * dim), tab = randn(vocab * dim);
  std::vector<int64_t> ids(rows);
  std::uniform_int_distribution<int64_t> U(0, vocab - 1);
  for (auto& i : ids) i = U(g_rng);
  Buf<T> ddy(dy);
  Buf<float> dtab(tab);
  int64_t* dids;
  CK(cudaMalloc(&dids, rows * 8));
  CK(cudaMemcpy(dids, ids.data(), rows * 8, cudaMemcpyHostToDevice));
  kc::embedding_bwd_accumulate_cuda<T>(rows, dim, vocab, dids, ddy.p, dtab.p, 0);
  kc::embedding_bwd_check_cuda(0);
  std::vector<double> ref(tab.begin(), tab.end());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < dim; ++c) ref[ids[r] * dim + c] += dy[r * dim + c];
  report(std::string("embedding_bwd_accumulate ") + tname<T>() + " rows " + std::to_string(rows) + " dim " +
             std::to_string(dim) + " vocab " + std::to_string(vocab),
         rel(dtab.get(), ref), 1e-5);
  cudaFree(dids);
}

// ---- AdamW -------------------------------------------------------------------------------------
void check_adamw(const std::vector<int64_t>& sizes, float max_norm, int64_t step) {
  const size_t n = sizes.size();
  std::vector<std::vector<float>> P(n), G(n), M(n), V(n);
  std::vector<Buf<float>*> bufs;
  std::vector<Buf<bf16>*> bb;
  std::vector<kc::AdamWTensorCuda> ts(n);
  std::uniform_real_distribution<float> U(0.f, 1e-2f);
  for (size_t i = 0; i < n; ++i) {
    P[i] = randn(sizes[i]); G[i] = randn(sizes[i], 0.f, 0.1f); M[i] = randn(sizes[i], 0.f, 0.01f);
    V[i].resize(sizes[i]);
    for (auto& v : V[i]) v = U(g_rng);
    auto* a = new Buf<float>(P[i]); auto* b = new Buf<float>(G[i]); auto* c = new Buf<float>(M[i]); auto* d = new Buf<float>(V[i]);
    bufs.insert(bufs.end(), {a, b, c, d});
    auto* e = new Buf<bf16>(i % 2 ? sizes[i] : 0);
    bb.push_back(e);
    ts[i].param = a->p; ts[i].grad = b->p; ts[i].exp_avg = c->p; ts[i].exp_avg_sq = d->p;
    ts[i].param_bf16 = i % 2 ? e->p : nullptr; ts[i].n = sizes[i]; ts[i].weight_decay = i % 3 ? 0.1f : 0.f;
  }
  kc::AdamWHyperCuda h;
  h.lr = 3e-3f; h.beta1 = 0.9f; h.beta2 = 0.95f; h.eps = 1e-8f; h.step = step; h.max_grad_norm = max_norm;
  Buf<float> dsum(1);
  Ws ws(kc::grad_sumsq_cuda_workspace_bytes(n));
  kc::grad_sumsq_cuda(ts.data(), n, dsum.p, ws.p, ws.n, 0);
  kc::adamw_step_cuda(ts.data(), n, h, dsum.p, 0);
  double ss = 0;
  for (auto& g : G) for (float v : g) ss += double(v) * v;
  const std::string nm = "adamw " + std::to_string(n) + " tensors step " + std::to_string(step) +
                         (max_norm > 0 ? " clip " + std::to_string(max_norm) : "");
  report(nm + " grad_sumsq", rel(dsum.get(), std::vector<double>{ss}), 1e-5);
  // The CPU AdamW (shared-core train/optimizer.cc) loop: scalars in double, rounded to f32.
  const double bc1 = 1.0 - std::pow(double(h.beta1), double(step)), bc2 = 1.0 - std::pow(double(h.beta2), double(step));
  const float b1 = h.beta1, omb1 = float(1.0 - double(h.beta1)), b2 = h.beta2, omb2 = float(1.0 - double(h.beta2));
  const float step_size = float(double(h.lr) / bc1), bc2s = float(std::sqrt(bc2)), eps = h.eps;
  const float clip = max_norm > 0 ? std::min(1.f, float(max_norm / (std::sqrt(ss) + 1e-6))) : 1.f;
  std::vector<float> allp, allm, allv, gp, gm, gv, gb, rb;
  for (size_t i = 0; i < n; ++i) {
    const float keep = float(1.0 - double(h.lr) * double(ts[i].weight_decay));
    for (int64_t j = 0; j < sizes[i]; ++j) {
      const float g = G[i][j] * clip;
      const float mi = b1 * M[i][j] + omb1 * g, vi = b2 * V[i][j] + omb2 * (g * g);
      allm.push_back(mi); allv.push_back(vi);
      allp.push_back(P[i][j] * keep - step_size * (mi / (std::sqrt(vi) / bc2s + eps)));
      if (i % 2) rb.push_back(to_f(to_t<bf16>(allp.back())));
    }
    auto a = bufs[4 * i]->get(), c = bufs[4 * i + 2]->get(), d = bufs[4 * i + 3]->get();
    gp.insert(gp.end(), a.begin(), a.end()); gm.insert(gm.end(), c.begin(), c.end()); gv.insert(gv.end(), d.begin(), d.end());
    if (i % 2) { auto e = bb[i]->get(); gb.insert(gb.end(), e.begin(), e.end()); }
  }
  // Relative to the change of the parameters (the update), not to the parameters.
  std::vector<double> dref, dgot;
  size_t o = 0;
  for (size_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < sizes[i]; ++j, ++o) { dref.push_back(allp[o] - P[i][j]); dgot.push_back(gp[o] - P[i][j]); }
  report(nm + " param update", rel(std::vector<float>(dgot.begin(), dgot.end()), dref), 1e-4);
  report(nm + " exp_avg", rel(gm, allm), 1e-5);
  report(nm + " exp_avg_sq", rel(gv, allv), 1e-5);
  report(nm + " param_bf16", rel(gb, rb), 1e-2);
  for (auto* b : bufs) delete b;
  for (auto* b : bb) delete b;
}

// ---- error cases --------------------------------------------------------------------------------
void check_errors() {
  Ws ws(1 << 16);
  Buf<float> a(64), b(64);
  expect_throw("rms_norm_bwd dim 0", [&] { kc::rms_norm_bwd_cuda<float>(2, 0, a.p, a.p, 1e-5f, a.p, nullptr, a.p, b.p, ws.p, ws.n, 0); }, "dim");
  expect_throw("rms_norm_bwd small workspace", [&] { kc::rms_norm_bwd_cuda<float>(4, 16, a.p, a.p, 1e-5f, a.p, nullptr, a.p, b.p, ws.p, 8, 0); }, "workspace_bytes");
  expect_throw("cross_entropy row_stride < V", [&] { kc::cross_entropy_fwd_bwd_cuda<float>(1, 8, 4, a.p, nullptr, 1.f, nullptr, b.p, nullptr, nullptr, ws.p, ws.n, 0); }, "row_stride");
  expect_throw("cross_entropy V 0", [&] { kc::cross_entropy_fwd_bwd_cuda<float>(1, 0, 4, a.p, nullptr, 1.f, nullptr, b.p, nullptr, nullptr, ws.p, ws.n, 0); }, "V must");
  {
    // A target >= V: reported by cross_entropy_check_cuda, naming the row and value.
    std::vector<int64_t> tg{1, 7, -100, 3};
    int64_t* d;
    CK(cudaMalloc(&d, 32));
    CK(cudaMemcpy(d, tg.data(), 32, cudaMemcpyHostToDevice));
    kc::cross_entropy_fwd_bwd_cuda<float>(4, 5, 8, a.p, d, 1.f, b.p, a.p + 32, nullptr, nullptr, ws.p, ws.n, 0);
    expect_throw("cross_entropy target >= V", [&] { kc::cross_entropy_check_cuda(ws.p, 5, 0); }, "targets[1] = 7");
    std::vector<int64_t> ok{1, 2, -100, 3};
    CK(cudaMemcpy(d, ok.data(), 32, cudaMemcpyHostToDevice));
    kc::cross_entropy_fwd_bwd_cuda<float>(4, 5, 8, a.p, d, 1.f, b.p, a.p + 32, nullptr, nullptr, ws.p, ws.n, 0);
    bool threw = false;
    try { kc::cross_entropy_check_cuda(ws.p, 5, 0); } catch (const std::exception&) { threw = true; }
    report_bool("cross_entropy check after good targets", !threw, threw ? "threw" : "no error");
    std::vector<int64_t> ids{0, 9, 1};
    CK(cudaMemcpy(d, ids.data(), 24, cudaMemcpyHostToDevice));
    kc::embedding_bwd_accumulate_cuda<float>(3, 4, 5, d, a.p, b.p, 0);
    expect_throw("embedding id >= vocab", [&] { kc::embedding_bwd_check_cuda(0); }, "ids[1] = 9");
    cudaFree(d);
  }
  kc::CausalConv1dCudaParams<float> p;
  p.batch = 1; p.seqlen = 4; p.channels = 4; p.width = 5; p.x = a.p; p.weight = a.p;
  expect_throw("conv1d_bwd width 5", [&] { kc::causal_conv1d_bwd_cuda<float>(p, a.p, b.p, 16, 4, b.p, nullptr, nullptr, ws.p, ws.n, 0); }, "width");
  p.width = 4; p.batch = 0;
  expect_throw("conv1d_bwd batch 0", [&] { kc::causal_conv1d_bwd_cuda<float>(p, a.p, b.p, 16, 4, b.p, nullptr, nullptr, ws.p, ws.n, 0); }, "batch");
  kc::AdamWTensorCuda t; t.param = a.p; t.grad = a.p; t.exp_avg = nullptr; t.exp_avg_sq = b.p; t.n = 4;
  kc::AdamWHyperCuda h;
  expect_throw("adamw null exp_avg", [&] { kc::adamw_step_cuda(&t, 1, h, nullptr, 0); }, "tensors[0]");
  t.exp_avg = b.p; h.beta1 = 1.f;
  expect_throw("adamw beta1 1", [&] { kc::adamw_step_cuda(&t, 1, h, nullptr, 0); }, "beta1");
  h.beta1 = 0.9f; h.max_grad_norm = 1.f;
  expect_throw("adamw clip without sumsq", [&] { kc::adamw_step_cuda(&t, 1, h, nullptr, 0); }, "grad_sumsq");
  CK(cudaDeviceSynchronize());
}

// ---- benchmark ----------------------------------------------------------------------------------
struct Timer {
  cudaEvent_t a, b;
  Timer() { CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b)); }
  ~Timer() { cudaEventDestroy(a); cudaEventDestroy(b); }
  // Median ms of `reps` runs after `warm` runs.
  double median(const std::function<void()>& f, int warm = 5, int reps = 30) {
    for (int i = 0; i < warm; ++i) f();
    CK(cudaDeviceSynchronize());
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      CK(cudaEventRecord(a));
      f();
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

double g_copy_gbs = 0;
void bench_line(const char* name, double ms, double bytes) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("bench %-58s %9.3f ms %9.1f MB %8.1f GB/s %5.1f%% of copy\n", name, ms, bytes / 1e6, gbs,
              100.0 * gbs / g_copy_gbs);
  kc::perf_record_label(name, "", 1e3 * ms, bytes);
}

template <class T>
void fill_dev(T* p, size_t n, float sd) {
  std::vector<T> h(std::min<size_t>(n, size_t(1) << 22));
  std::normal_distribution<float> d(0.f, sd);
  for (auto& v : h) v = to_t<T>(d(g_rng));
  for (size_t o = 0; o < n; o += h.size()) CK(cudaMemcpy(p + o, h.data(), std::min(h.size(), n - o) * sizeof(T), cudaMemcpyHostToDevice));
}

// The timed shapes that bench() and run_once() share: gated RMSNorm backward (rows 16384 dim 1536
// bf16, with z) and conv1d backward (b8 l2048 c3072 k4 bf16, silu, bias), on filled buffers.
struct GatedBwdShape {
  const int64_t rows = 16384, dim = 1536;
  Buf<bf16> x{size_t(rows * dim)}, z{size_t(rows * dim)}, dy{size_t(rows * dim)}, dx{size_t(rows * dim)}, dz{size_t(rows * dim)};
  Buf<float> w{size_t(dim)}, dw{size_t(dim)};
  Ws ws{kc::gated_rms_norm_bwd_cuda_workspace_bytes(rows, dim)};
  GatedBwdShape() { fill_dev(x.p, x.n, 1.f); fill_dev(z.p, z.n, 1.f); fill_dev(dy.p, dy.n, 1.f); fill_dev(w.p, w.n, 1.f); }
  void run(int64_t group, bool norm_before_gate) {
    kc::gated_rms_norm_bwd_cuda<bf16>(rows, dim, group, x.p, dim, z.p, dim, w.p, 1e-5f, norm_before_gate, dy.p, dim, dx.p, dim, dz.p,
                                      dim, dw.p, ws.p, ws.n, 0);
  }
};
struct ConvBwdShape {
  const int64_t B = 8, L = 2048, C = 3072, K = 4;
  Buf<bf16> x{size_t(B * L * C)}, dout{size_t(B * L * C)}, dx{size_t(B * L * C)};
  Buf<float> w{size_t(C * K)}, bias{size_t(C)}, dw{size_t(C * K)}, db{size_t(C)};
  kc::CausalConv1dCudaParams<bf16> p;
  Ws ws{workspace_bytes(B, L, C, K)};
  static size_t workspace_bytes(int64_t B, int64_t L, int64_t C, int64_t K) {
    kc::CausalConv1dCudaParams<float> s;
    s.batch = B; s.seqlen = L; s.channels = C; s.width = K;
    return kc::causal_conv1d_bwd_cuda_workspace_bytes(s);
  }
  ConvBwdShape() {
    fill_dev(x.p, x.n, 1.f); fill_dev(dout.p, dout.n, 1.f); fill_dev(w.p, w.n, 0.5f); fill_dev(bias.p, bias.n, 0.5f);
    p.batch = B; p.seqlen = L; p.channels = C; p.width = K; p.x = x.p; p.x_sb = L * C; p.x_st = C;
    p.weight = w.p; p.bias = bias.p; p.silu = true;
  }
  void run() { kc::causal_conv1d_bwd_cuda<bf16>(p, dout.p, dx.p, L * C, C, dw.p, db.p, nullptr, ws.p, ws.n, 0); }
};

void bench() {
  Timer tm;
  {
    const size_t bytes = size_t(1) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 1, bytes));
    const double ms = tm.median([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
    g_copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
    std::printf("bench cudaMemcpy D2D 1 GiB: %.3f ms, %.1f GB/s (read + write)\n", ms, g_copy_gbs);
    kc::perf_record("memcpy d2d", "1 GiB", "-", 1e3 * ms, 2.0 * bytes);
    cudaFree(a); cudaFree(b);
  }
  const int64_t rows = 8 * 2048;
  for (const char* slots : {"264", "528"}) {
    // rms_norm_bwd with other slot counts (MAMBA_NORM_SLOTS; default 1024 below).
    const int64_t dim = 768;
    setenv("MAMBA_NORM_SLOTS", slots, 1);
    Buf<float> r(rows * dim), w(dim), da(rows * dim), dr(rows * dim), dw(dim);
    Buf<bf16> dy(rows * dim);
    fill_dev(r.p, r.n, 1.f); fill_dev(w.p, w.n, 1.f); fill_dev(da.p, da.n, 1.f); fill_dev(dy.p, dy.n, 1.f);
    Ws ws(kc::rms_norm_bwd_cuda_workspace_bytes(rows, dim));
    const double ms = tm.median([&] { kc::rms_norm_bwd_cuda<bf16>(rows, dim, r.p, w.p, 1e-5f, dy.p, da.p, dr.p, dw.p, ws.p, ws.n, 0); });
    char nm[128];
    std::snprintf(nm, sizeof nm, "rms_norm_bwd bf16 rows %ld dim %ld (+dr_add) slots %s", long(rows), long(dim), slots);
    bench_line(nm, ms, double(rows) * dim * (4 + 2 + 4 + 4));
    unsetenv("MAMBA_NORM_SLOTS");
  }
  for (int64_t dim : {768, 1536}) {
    // The prefetching variant (MAMBA_NORM_PREFETCH=1).
    setenv("MAMBA_NORM_PREFETCH", "1", 1);
    Buf<float> r(rows * dim), w(dim), da(rows * dim), dr(rows * dim), dw(dim);
    Buf<bf16> dy(rows * dim);
    fill_dev(r.p, r.n, 1.f); fill_dev(w.p, w.n, 1.f); fill_dev(da.p, da.n, 1.f); fill_dev(dy.p, dy.n, 1.f);
    Ws ws(kc::rms_norm_bwd_cuda_workspace_bytes(rows, dim));
    const double ms = tm.median([&] { kc::rms_norm_bwd_cuda<bf16>(rows, dim, r.p, w.p, 1e-5f, dy.p, da.p, dr.p, dw.p, ws.p, ws.n, 0); });
    char nm[128];
    std::snprintf(nm, sizeof nm, "rms_norm_bwd bf16 rows %ld dim %ld (+dr_add) prefetch", long(rows), long(dim));
    bench_line(nm, ms, double(rows) * dim * (4 + 2 + 4 + 4));
    unsetenv("MAMBA_NORM_PREFETCH");
  }
  for (int64_t dim : {768, 1536}) {
    Buf<float> r(rows * dim), w(dim), da(rows * dim), dr(rows * dim), dw(dim);
    Buf<bf16> dy(rows * dim);
    fill_dev(r.p, r.n, 1.f); fill_dev(w.p, w.n, 1.f); fill_dev(da.p, da.n, 1.f); fill_dev(dy.p, dy.n, 1.f);
    Ws ws(kc::rms_norm_bwd_cuda_workspace_bytes(rows, dim));
    for (int rep = 0; rep < 2; ++rep)
      for (const char* v : {"2", "1"}) {  // v2 (warp per row, dim <= 1024) and v1
        setenv("MAMBA_NORM_BWD_VERSION", v, 1);
        const double ms = tm.median([&] { kc::rms_norm_bwd_cuda<bf16>(rows, dim, r.p, w.p, 1e-5f, dy.p, da.p, dr.p, dw.p, ws.p, ws.n, 0); });
        char nm[128];
        std::snprintf(nm, sizeof nm, "rms_norm_bwd bf16 rows %ld dim %ld (+dr_add) v%s", long(rows), long(dim), v);
        bench_line(nm, ms, double(rows) * dim * (4 + 2 + 4 + 4));
      }
    unsetenv("MAMBA_NORM_BWD_VERSION");
  }
  {
    const int64_t dim = 768;
    Buf<float> r(rows * dim), w(dim), b(dim), da(rows * dim), dr(rows * dim), dw(dim), db(dim), mean(rows), rstd(rows);
    Buf<bf16> x(rows * dim), y(rows * dim), dy(rows * dim);
    fill_dev(r.p, r.n, 1.f); fill_dev(w.p, w.n, 1.f); fill_dev(b.p, b.n, 1.f); fill_dev(da.p, da.n, 1.f);
    fill_dev(x.p, x.n, 1.f); fill_dev(dy.p, dy.n, 1.f);
    double ms = tm.median([&] { kc::add_layer_norm_cuda<bf16>(rows, dim, x.p, r.p, r.p, w.p, b.p, 1e-5f, y.p, mean.p, rstd.p, 0); });
    bench_line("add_layer_norm bf16 rows 16384 dim 768 (residual in place)", ms, double(rows) * dim * (2 + 4 + 4 + 2));
    Ws ws(kc::layer_norm_bwd_cuda_workspace_bytes(rows, dim));
    for (int rep = 0; rep < 2; ++rep)
      for (const char* v : {"2", "1"}) {
        setenv("MAMBA_NORM_BWD_VERSION", v, 1);
        ms = tm.median([&] { kc::layer_norm_bwd_cuda<bf16>(rows, dim, r.p, mean.p, rstd.p, w.p, dy.p, da.p, dr.p, dw.p, db.p, ws.p, ws.n, 0); });
        bench_line((std::string("layer_norm_bwd bf16 rows 16384 dim 768 (+dr_add) v") + v).c_str(), ms, double(rows) * dim * (4 + 2 + 4 + 4));
      }
    unsetenv("MAMBA_NORM_BWD_VERSION");
  }
  {
    const int64_t dim = 1536;
    GatedBwdShape gb;
    for (int rep = 0; rep < 2; ++rep)
      for (const char* v : {"0", "2", "3", "4", "1"}) {  // 0: the default dispatch
        setenv("MAMBA_GATED_BWD_VERSION", v, 1);
        const double ms = tm.median([&] { gb.run(gb.dim, false); });
        bench_line((std::string("gated_rms_norm_bwd bf16 rows 16384 dim 1536 (z, gate first) v") + v).c_str(), ms, double(rows) * dim * 2 * 5);
      }
    unsetenv("MAMBA_GATED_BWD_VERSION");
    for (const char* v : {"0", "2", "4", "1"}) {
      setenv("MAMBA_GATED_BWD_VERSION", v, 1);
      const double ms = tm.median([&] { gb.run(128, true); });
      bench_line((std::string("gated_rms_norm_bwd bf16 rows 16384 dim 1536 group 128 (z, norm first) v") + v).c_str(), ms, double(rows) * dim * 2 * 5);
    }
    unsetenv("MAMBA_GATED_BWD_VERSION");
  }
  {
    const int64_t V = 50280;
    Buf<bf16> x(rows * V);
    fill_dev(x.p, x.n, 2.f);
    std::vector<int64_t> tg(rows);
    for (int64_t i = 0; i < rows; ++i) tg[i] = (i * 7919) % V;
    int64_t* dtg;
    CK(cudaMalloc(&dtg, rows * 8));
    CK(cudaMemcpy(dtg, tg.data(), rows * 8, cudaMemcpyHostToDevice));
    Buf<float> loss(rows), sum(1);
    Ws ws(kc::cross_entropy_cuda_workspace_bytes(rows));
    Buf<bf16> dl(rows * V);
    double ms = tm.median([&] { kc::cross_entropy_fwd_bwd_cuda<bf16>(rows, V, V, x.p, dtg, 1.f / rows, dl.p, loss.p, sum.p, nullptr, ws.p, ws.n, 0); });
    bench_line("cross_entropy bf16 rows 16384 V 50280 (fwd+bwd, out of place)", ms, double(rows) * V * 4);
    setenv("MAMBA_CE_THREADS", "1024", 1);
    ms = tm.median([&] { kc::cross_entropy_fwd_bwd_cuda<bf16>(rows, V, V, x.p, dtg, 1.f / rows, dl.p, loss.p, sum.p, nullptr, ws.p, ws.n, 0); });
    bench_line("cross_entropy bf16 rows 16384 V 50280 (fwd+bwd) 1024 threads", ms, double(rows) * V * 4);
    unsetenv("MAMBA_CE_THREADS");
    ms = tm.median([&] { kc::cross_entropy_fwd_bwd_cuda<bf16>(rows, V, V, x.p, dtg, 1.f / rows, x.p, loss.p, sum.p, nullptr, ws.p, ws.n, 0); });
    bench_line("cross_entropy bf16 rows 16384 V 50280 (fwd+bwd, in place)", ms, double(rows) * V * 4);
    ms = tm.median([&] { kc::cross_entropy_fwd_bwd_cuda<bf16>(rows, V, V, x.p, dtg, 1.f / rows, nullptr, loss.p, sum.p, nullptr, ws.p, ws.n, 0); });
    bench_line("cross_entropy bf16 rows 16384 V 50280 (loss only)", ms, double(rows) * V * 2);
    cudaFree(dtg);
  }
  {
    ConvBwdShape cb;
    for (int rep = 0; rep < 2; ++rep)
      for (const char* v : {"3", "1"}) {
        setenv("MAMBA_CONV_BWD_VERSION", v, 1);
        const double ms = tm.median([&] { cb.run(); });
        bench_line((std::string("causal_conv1d_bwd bf16 b8 l2048 c3072 k4 silu v") + v).c_str(), ms, double(cb.B) * cb.L * cb.C * 6);
      }
    unsetenv("MAMBA_CONV_BWD_VERSION");
  }
  {
    const int64_t dim = 768, vocab = 50280;
    Buf<bf16> dy(rows * dim);
    Buf<float> tab(vocab * dim);
    fill_dev(dy.p, dy.n, 1.f); fill_dev(tab.p, tab.n, 1.f);
    std::vector<int64_t> ids(rows);
    for (int64_t i = 0; i < rows; ++i) ids[i] = (i * 104729) % vocab;
    int64_t* d;
    CK(cudaMalloc(&d, rows * 8));
    CK(cudaMemcpy(d, ids.data(), rows * 8, cudaMemcpyHostToDevice));
    const double ms = tm.median([&] { kc::embedding_bwd_accumulate_cuda<bf16>(rows, dim, vocab, d, dy.p, tab.p, 0); });
    bench_line("embedding_bwd_accumulate bf16 rows 16384 dim 768", ms, double(rows) * dim * (2 + 4 + 4));
    cudaFree(d);
  }
  {
    // About a 130M-parameter LM: the 50280 x 768 embedding and 48 tensors of 1.5M.
    std::vector<int64_t> sizes{50280 * 768};
    for (int i = 0; i < 48; ++i) sizes.push_back(1536 * 1024 - 17 * i);
    int64_t total = 0;
    for (auto s : sizes) total += (s + 3) / 4 * 4;
    float* big;
    CK(cudaMalloc(&big, total * 4 * 4));
    __nv_bfloat16* pb;
    CK(cudaMalloc(&pb, total * 2));
    fill_dev(big, total * 3, 0.1f);
    CK(cudaMemset(big + 3 * total, 0, total * 4));
    std::vector<kc::AdamWTensorCuda> ts(sizes.size());
    int64_t o = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      ts[i].param = big + o; ts[i].grad = big + total + o; ts[i].exp_avg = big + 2 * total + o;
      ts[i].exp_avg_sq = big + 3 * total + o; ts[i].param_bf16 = pb + o; ts[i].n = sizes[i]; ts[i].weight_decay = 0.1f;
      o += (sizes[i] + 3) / 4 * 4;
    }
    Buf<float> ss(1);
    Ws ws(kc::grad_sumsq_cuda_workspace_bytes(ts.size()));
    kc::AdamWHyperCuda h;
    h.max_grad_norm = 1.f;
    double ms = tm.median([&] { kc::grad_sumsq_cuda(ts.data(), ts.size(), ss.p, ws.p, ws.n, 0); });
    char nm[128];
    std::snprintf(nm, sizeof nm, "grad_sumsq %zu tensors, %.1fM elements", ts.size(), total / 1e6);
    bench_line(nm, ms, double(total) * 4);
    ms = tm.median([&] { kc::adamw_step_cuda(ts.data(), ts.size(), h, ss.p, 0); });
    std::snprintf(nm, sizeof nm, "adamw_step (+bf16 copy, clip) %zu tensors, %.1fM", ts.size(), total / 1e6);
    bench_line(nm, ms, double(total) * (4 * 4 + 3 * 4 + 2));
    cudaFree(big); cudaFree(pb);
  }
}

}  // namespace

// --once: one launch each of gated_rms_norm_bwd v1 / v2 (rows 16384 dim 1536 bf16) and
// conv1d_bwd v1 / v3 (b8 l2048 c3072 k4 bf16), for a profiler.
int run_once() {
  {
    GatedBwdShape gb;
    for (const char* v : {"1", "2", "3", "4"}) {
      setenv("MAMBA_GATED_BWD_VERSION", v, 1);
      gb.run(gb.dim, false);
    }
    unsetenv("MAMBA_GATED_BWD_VERSION");
  }
  {
    ConvBwdShape cb;
    for (const char* v : {"1", "3"}) {
      setenv("MAMBA_CONV_BWD_VERSION", v, 1);
      cb.run();
    }
    unsetenv("MAMBA_CONV_BWD_VERSION");
  }
  CK(cudaDeviceSynchronize());
  std::printf("train once done\n");
  return 0;
}

int main(int argc, char** argv) {
  bool do_bench = false, once = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--bench")) do_bench = true;
    if (!std::strcmp(argv[i], "--once")) once = true;
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("train-check: no CUDA device\n");
    return 2;
  }
  if (once) {
    try { return run_once(); } catch (const std::exception& e) { std::printf("once exception: %s\n", e.what()); return 3; }
  }
  try {
    for (int pass = 0; pass < 2; ++pass) {
      const bool bf = pass == 1;
      auto rms = [&](int64_t r, int64_t d, bool a, bool al) { bf ? check_rms_bwd<bf16>(r, d, a, al) : check_rms_bwd<float>(r, d, a, al); };
      rms(1, 1, false, false); rms(3, 7, true, false); rms(5, 768, true, true); rms(17, 1000, false, false);
      rms(4, 4097, true, false); rms(2, 20001, true, false); rms(1100, 33, true, false); rms(64, 1536, true, false);
      setenv("MAMBA_NORM_PREFETCH", "1", 1);
      std::printf("(rms_norm_bwd with MAMBA_NORM_PREFETCH=1)\n");
      rms(3, 7, true, false); rms(5, 768, true, true); rms(1100, 33, true, false); rms(64, 1536, true, false);
      rms(2100, 1536, true, false);
      unsetenv("MAMBA_NORM_PREFETCH");
      // v2 (warp per row; dim % 8 == 0, dim <= 1024): rows not a multiple of the 4 warps, 1..4 pieces per lane.
      rms(1, 768, true, false); rms(2999, 768, true, false); rms(37, 1024, false, false); rms(9, 8, true, true);
      rms(5, 512, true, true); rms(70, 264, false, false);
      setenv("MAMBA_NORM_BWD_VERSION", "1", 1);
      std::printf("(rms_norm_bwd / layer_norm_bwd with MAMBA_NORM_BWD_VERSION=1)\n");
      rms(2999, 768, true, false); rms(5, 768, true, true);
      unsetenv("MAMBA_NORM_BWD_VERSION");
      auto gb = [&](int64_t r, int64_t d, int64_t G, bool wz, bool nbg, int64_t pad) { bf ? check_gated_bwd<bf16>(r, d, G, wz, nbg, pad) : check_gated_bwd<float>(r, d, G, wz, nbg, pad); };
      gb(1, 1, 1, true, false, 0); gb(3, 12, 4, true, true, 0); gb(5, 1536, 1536, true, false, 3); gb(7, 1000, 250, true, true, 0);
      gb(4, 4097, 4097, false, false, 0); gb(1100, 64, 16, true, false, 0); gb(2, 9000, 9000, true, true, 0);
      // v2 (warp per row) shapes: aligned rows (pad a multiple of 8), 1..8 pieces per lane, many
      // groups, rows not a multiple of the 4 warps, a partial last piece run, no z, norm before gate.
      gb(1, 1536, 1536, true, false, 0); gb(37, 1536, 1536, true, false, 8); gb(2999, 1536, 1536, true, false, 0);
      gb(5, 1536, 768, true, true, 0); gb(9, 2048, 2048, true, false, 0); gb(6, 1000, 200, true, false, 0);
      gb(13, 40, 8, true, true, 0); gb(300, 1024, 128, false, false, 8); gb(3, 1792, 1792, true, true, 16);
      gb(1, 8, 8, true, false, 0); gb(70, 520, 520, true, false, 0);
      setenv("MAMBA_GATED_BWD_VERSION", "1", 1);
      std::printf("(gated_rms_norm_bwd with MAMBA_GATED_BWD_VERSION=1)\n");
      gb(37, 1536, 1536, true, false, 8); gb(5, 1536, 768, true, true, 0);
      setenv("MAMBA_GATED_BWD_VERSION", "2", 1);
      std::printf("(gated_rms_norm_bwd with MAMBA_GATED_BWD_VERSION=2: one warp per row)\n");
      gb(37, 1536, 1536, true, false, 8); gb(2999, 1536, 1536, true, false, 0); gb(9, 2048, 2048, true, false, 0);
      gb(3, 1792, 1792, true, true, 16); gb(70, 520, 520, true, false, 0);
      setenv("MAMBA_GATED_BWD_VERSION", "3", 1);
      std::printf("(gated_rms_norm_bwd with MAMBA_GATED_BWD_VERSION=3: two warps per row)\n");
      gb(1, 1536, 1536, true, false, 0); gb(37, 1536, 1536, true, false, 8); gb(2999, 1536, 1536, true, false, 0);
      gb(5, 1536, 768, true, true, 0); gb(9, 2048, 2048, true, false, 0); gb(6, 1000, 200, true, false, 0);
      gb(13, 40, 8, true, true, 0); gb(300, 1024, 128, false, false, 8); gb(70, 520, 520, true, false, 0);
      setenv("MAMBA_GATED_BWD_VERSION", "4", 1);
      std::printf("(gated_rms_norm_bwd with MAMBA_GATED_BWD_VERSION=4: two warps per row, 128 registers)\n");
      gb(1, 1536, 1536, true, false, 0); gb(37, 1536, 1536, true, false, 8); gb(2999, 1536, 1536, true, false, 0);
      gb(5, 1536, 768, true, true, 0); gb(9, 2048, 2048, true, false, 0); gb(13, 40, 8, true, true, 0);
      gb(300, 1024, 128, false, false, 8);
      unsetenv("MAMBA_GATED_BWD_VERSION");
      auto ln = [&](int64_t r, int64_t d, bool re, bool b, bool a) { bf ? check_layer_norm<bf16>(r, d, re, b, a) : check_layer_norm<float>(r, d, re, b, a); };
      ln(1, 1, false, false, false); ln(3, 7, true, true, true); ln(5, 768, true, true, false); ln(4, 4097, true, false, true);
      ln(1100, 33, true, true, true); ln(2, 20001, true, true, true);
      ln(1, 768, true, true, true); ln(2999, 768, true, true, true); ln(37, 1024, false, true, false); ln(9, 8, true, false, true);
      ln(70, 264, true, true, true);
      setenv("MAMBA_NORM_BWD_VERSION", "1", 1);
      std::printf("(layer_norm_bwd with MAMBA_NORM_BWD_VERSION=1)\n");
      ln(2999, 768, true, true, true); ln(5, 768, true, true, false);
      unsetenv("MAMBA_NORM_BWD_VERSION");
      auto ce = [&](int64_t r, int64_t V, int64_t s, bool ip, bool g, int ig) { bf ? check_ce<bf16>(r, V, s, ip, g, ig) : check_ce<float>(r, V, s, ip, g, ig); };
      ce(1, 3, 3, false, true, 0); ce(5, 3, 8, false, true, 3); ce(6, 50280, 50280, false, true, 4);
      ce(3, 50280, 50288, true, true, 0); ce(4, 1000, 1003, false, true, 2); ce(3, 70001, 70001, true, true, 0);
      ce(5, 50280, 50280, false, false, 2); ce(1, 1, 1, false, true, 0);
      setenv("MAMBA_CE_THREADS", "1024", 1);
      std::printf("(cross_entropy with MAMBA_CE_THREADS=1024)\n");
      ce(6, 50280, 50280, true, true, 4); ce(3, 70001, 70003, false, true, 0);
      unsetenv("MAMBA_CE_THREADS");
      auto cv = [&](int64_t B, int64_t L, int64_t C, int64_t K, bool si, bool bi, bool in, bool di, int64_t xp, int64_t dp) {
        bf ? check_conv_bwd<bf16>(B, L, C, K, si, bi, in, di, xp, dp) : check_conv_bwd<float>(B, L, C, K, si, bi, in, di, xp, dp);
      };
      cv(1, 1, 4, 4, true, true, true, true, 0, 0); cv(2, 37, 12, 3, true, true, false, true, 0, 0);
      cv(3, 130, 18, 2, false, true, true, true, 0, 0); cv(1, 5, 8, 1, true, false, false, false, 0, 0);
      cv(2, 200, 64, 4, true, true, true, true, 24, 8); cv(1, 67, 7, 4, true, false, true, true, 3, 1);
      cv(2, 129, 256, 4, true, true, false, false, 0, 0);
      // v3 (cp.async ring, runs chosen per wave): several runs per row, lengths not multiples of 8,
      // runs that end inside the halo, strided x / dx.
      cv(3, 1000, 96, 4, true, true, true, true, 0, 0); cv(2, 777, 40, 3, true, false, true, true, 8, 4);
      cv(1, 4099, 3072, 4, true, true, true, true, 0, 0); cv(5, 65, 16, 2, false, true, false, true, 0, 0);
      cv(2, 9, 8, 4, true, true, true, true, 0, 0); cv(4, 513, 1024, 4, true, true, false, false, 0, 0);
      // v1 (the unaligned path's kernel, every case above with an odd channel count or stride) on
      // aligned rows too. (Variant 4 and v2, MAMBA_CONV_BWD_U=4, were removed on branch prune.)
      setenv("MAMBA_CONV_BWD_VERSION", "1", 1);
      std::printf("(conv1d_bwd with MAMBA_CONV_BWD_VERSION=1)\n");
      cv(3, 1000, 96, 4, true, true, true, true, 0, 0); cv(2, 200, 64, 4, true, true, true, true, 24, 8);
      cv(1, 3, 8, 4, true, true, true, true, 0, 0); cv(1, 1, 4, 4, true, true, true, true, 0, 0);
      cv(2, 777, 40, 3, true, false, true, true, 8, 4); cv(5, 65, 16, 2, false, true, false, true, 0, 0);
      unsetenv("MAMBA_CONV_BWD_VERSION");
      auto em = [&](int64_t r, int64_t d, int64_t v) { bf ? check_emb<bf16>(r, d, v) : check_emb<float>(r, d, v); };
      em(1, 1, 3); em(100, 7, 3); em(300, 768, 1000); em(50, 33, 50280);
    }
    check_adamw({1, 5, 1000, 4097, 100003}, 0.f, 1);
    check_adamw({3, 7, 64, 100003, 1}, 0.5f, 7);
    std::vector<int64_t> many;
    for (int i = 0; i < 60; ++i) many.push_back(1 + 37 * i);
    check_adamw(many, 100.f, 2);
    check_errors();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++g_fail;
  }
  std::printf("train-check: %d PASS, %d FAIL\n", g_pass, g_fail);
  if (do_bench) {
    try { bench(); } catch (const std::exception& e) { std::printf("bench exception: %s\n", e.what()); return 3; }
  }
  return g_fail ? 1 : 0;
}
