// mamba-cuda-check: every CUDA kernel against the CPU reference at awkward sizes, then
// timings at the standard shapes. Exits non-zero when any check fails.
//
// Checks: random inputs (fresh per case), rounded to the element type first so the CPU
// reference sees exactly what the GPU sees; GPU outputs poisoned with 0xFF bytes (NaN) before
// each run; pass when ||out - ref|| / ||ref|| < 1e-3 (f32) or 1e-2 (bf16) and no output is NaN.
// Timings: CUDA events, warm-up, median of 25 samples; bytes = each input read once + each
// output written once; memory floor = bytes / measured device-to-device copy bandwidth.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mamba/kernels/causal_conv1d.h"
#include "check_report.h"
#include "check_ssd.h"
#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/gemm_cuda.h"
#include "mamba/kernels/cuda/perf_record.h"
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#include "mamba/kernels/cuda_runtime_info.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/kernels/selective_scan.h"
#include "mamba/kernels/ssd.h"
#include "mamba/kernels/cuda/ssd_state_update_cuda.h"
#include "device_common.cuh"
#include "scan_fwd_v6_launch.cuh"

namespace k = mamba::kernels;
namespace kc = mamba::kernels::cuda;
using bf16 = __nv_bfloat16;

namespace {

int g_passed = 0, g_failed = 0;

template <class T> const char* type_name();
template <> const char* type_name<float>() { return "f32"; }
template <> const char* type_name<bf16>() { return "bf16"; }
template <class T> double tolerance() { return std::is_same_v<T, float> ? 1e-3 : 1e-2; }

template <class T> __host__ __device__ T to_t(float v);
template <> __host__ __device__ float to_t<float>(float v) { return v; }
template <> __host__ __device__ bf16 to_t<bf16>(float v) { return __float2bfloat16_rn(v); }
float to_f(float v) { return v; }
float to_f(bf16 v) { return __bfloat162float(v); }

// Device buffer owning `count` elements of T.
template <class T>
struct DevBuf {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DevBuf(size_t n) : count(n) {
    if (n) MAMBA_CUDA_CHECK("cudaMalloc", cudaMalloc(&ptr, n * sizeof(T)));
  }
  ~DevBuf() { if (ptr) cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : ptr(o.ptr), count(o.count) { o.ptr = nullptr; o.count = 0; }
  DevBuf& operator=(DevBuf&&) = delete;
  void poison() { if (ptr) MAMBA_CUDA_CHECK("poison", cudaMemset(ptr, 0xFF, count * sizeof(T))); }
};

// Rounds v to T in place and uploads it as T.
template <class T>
DevBuf<T> upload_rounded(std::vector<float>& v) {
  std::vector<T> t(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    t[i] = to_t<T>(v[i]);
    v[i] = to_f(t[i]);
  }
  DevBuf<T> d(v.size());
  if (!v.empty()) MAMBA_CUDA_CHECK("upload", cudaMemcpy(d.ptr, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
std::vector<float> download(const DevBuf<T>& d) {
  std::vector<T> t(d.count);
  if (d.count) MAMBA_CUDA_CHECK("download", cudaMemcpy(t.data(), d.ptr, t.size() * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> v(t.size());
  for (size_t i = 0; i < t.size(); ++i) v[i] = to_f(t[i]);
  return v;
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  std::vector<float> normal(size_t n, float mean = 0.f, float sd = 1.f) {
    std::normal_distribution<float> dist(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
  }
};

// The shared helpers (check_report.h), counting into g_passed / g_failed.
void report(const std::string& name, const std::vector<float>& out, const std::vector<float>& ref, double tol,
            const std::vector<bool>& mask = {}) {
  kc::check::report(g_passed, g_failed, name, out, ref, tol, mask);
}
void run_case(const std::string& name, const std::function<void()>& fn) { kc::check::run_case(g_failed, name, fn); }

struct ScanCase { int b, d, l, n, g; bool z, init, softplus, bias, D; };

int g_softplus1 = 0;  // SelectiveScanCudaParams::softplus1 for check_scan (the v6 measurement variant)
int g_block = 0;      // SelectiveScanCudaParams::block for check_scan / check_scan_varlen (v6: 32 = one-warp blocks)
int g_opt = 0;        // SelectiveScanCudaParams::opt for check_scan / check_scan_varlen / the checkpoint forward (--scan7)
int g_segments = -1;  // --scanseg: SelectiveScanCudaParams::segments, with a seg_workspace (-1: none given), same users

// The sequence split's workspace for q when g_segments >= 0 (its size from the size query,
// NaN-poisoned); q points at it. The name suffix says how many bytes the call uses (0: no split).
template <class T>
DevBuf<float> attach_seg_workspace(kc::SelectiveScanCudaParams<T>& q, std::string* name = nullptr) {
  if (g_segments < 0) return DevBuf<float>(0);
  q.segments = g_segments;
  const size_t bytes = kc::selective_scan_fwd_cuda_seg_workspace_bytes<T>(q);
  DevBuf<float> ws(std::max<size_t>((bytes + 3) / 4, 4));
  ws.poison();
  q.seg_workspace = ws.ptr;
  q.seg_workspace_bytes = std::max<size_t>(bytes, 16);
  if (name) *name += " [seg " + std::to_string(g_segments) + " ws " + std::to_string(bytes) + "]";
  return ws;
}

// version / split: forced kernel choice (0 = automatic), see SelectiveScanCudaParams.
template <class T>
void check_scan(const ScanCase& c, uint64_t seed, int version = 0, int split = 0, int poly = 0, int unroll = 0, int tile = 0) {
  char name[160];
  char forced[48] = "";
  if (version) std::snprintf(forced, sizeof forced, " [v%d%s%d]", version, split ? " S" : "", split);
  if (version && !split) std::snprintf(forced, sizeof forced, " [v%d]", version);
  if (poly || unroll) std::snprintf(forced, sizeof forced, " [v%d S%d P%d U%d]", version, split, poly, unroll);
  if (tile) std::snprintf(forced, sizeof forced, " [v%d S%d P%d U%d T%d%s%s]", version, split, poly, unroll, tile,
                         g_softplus1 ? " SP1" : "", g_block == 32 ? " W1" : "");
  std::snprintf(name, sizeof name, "scan %s b%d d%d l%d n%d g%d%s%s%s%s%s%s", type_name<T>(), c.b, c.d, c.l, c.n, c.g,
                c.z ? " z" : "", c.init ? " h0" : "", c.softplus ? " softplus" : "", c.bias ? " bias" : "",
                c.D ? " D" : "", forced);
  if (g_opt) std::snprintf(name + std::strlen(name), sizeof name - std::strlen(name), " [opt %d %s]", g_opt,
                           kc::selective_scan_fwd_v6_opt_name(g_opt));
  run_case(name, [&] {
    Rng r(seed);
    const size_t nbdl = size_t(c.b) * c.d * c.l, nbc = size_t(c.b) * c.g * c.n * c.l, nst = size_t(c.b) * c.d * c.n;
    auto u = r.normal(nbdl);
    auto delta = c.softplus ? r.normal(nbdl, -2.f, 1.f) : r.uniform(nbdl, 0.001f, 0.2f);
    auto z = r.normal(c.z ? nbdl : 0);
    auto B = r.normal(nbc), C = r.normal(nbc);
    auto A = r.uniform(size_t(c.d) * c.n, -12.f, -0.3f);
    auto D = r.normal(c.D ? c.d : 0);
    auto bias = c.softplus ? r.uniform(c.bias ? c.d : 0, -1.f, 0.5f) : r.uniform(c.bias ? c.d : 0, 0.f, 0.05f);
    auto h0 = r.normal(c.init ? nst : 0);
    auto du = upload_rounded<T>(u), ddelta = upload_rounded<T>(delta), dz = upload_rounded<T>(z);
    auto dB = upload_rounded<T>(B), dC = upload_rounded<T>(C);
    auto dA = upload_rounded<float>(A), dD = upload_rounded<float>(D), dbias = upload_rounded<float>(bias);
    auto dh0 = upload_rounded<float>(h0);
    DevBuf<T> dy(nbdl);
    DevBuf<float> dhT(nst);

    std::vector<float> y_ref(nbdl), hT_ref(nst);
    k::SelectiveScanParams p;
    p.batch = c.b; p.dim = c.d; p.seqlen = c.l; p.dstate = c.n; p.n_groups = c.g;
    const int64_t L = c.l;
    p.u = {u.data(), int64_t(c.d) * L, L, 1};
    p.delta = {delta.data(), int64_t(c.d) * L, L, 1};
    if (c.z) p.z = {z.data(), int64_t(c.d) * L, L, 1};
    p.B = {B.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    p.C = {C.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    p.A = A.data();
    p.D = c.D ? D.data() : nullptr;
    p.delta_bias = c.bias ? bias.data() : nullptr;
    p.delta_softplus = c.softplus;
    p.initial_state = c.init ? h0.data() : nullptr;
    p.y = {y_ref.data(), int64_t(c.d) * L, L, 1};
    p.final_state = hT_ref.data();
    k::selective_scan_ref(p);

    kc::SelectiveScanCudaParams<T> q;
    q.batch = c.b; q.dim = c.d; q.seqlen = c.l; q.dstate = c.n; q.n_groups = c.g;
    q.u = du.ptr; q.delta = ddelta.ptr; q.z = c.z ? dz.ptr : nullptr; q.B = dB.ptr; q.C = dC.ptr;
    q.A = dA.ptr; q.D = c.D ? dD.ptr : nullptr; q.delta_bias = c.bias ? dbias.ptr : nullptr;
    q.delta_softplus = c.softplus; q.initial_state = c.init ? dh0.ptr : nullptr;
    q.y = dy.ptr; q.final_state = dhT.ptr;
    q.version = version; q.split = split; q.poly = poly; q.unroll = unroll; q.tile = tile; q.softplus1 = g_softplus1; q.block = g_block;
    q.opt = g_opt;
    std::string nm(name);
    auto segws = attach_seg_workspace(q, &nm);
    dy.poison();
    dhT.poison();
    kc::selective_scan_fwd_cuda<T>(q, nullptr);
    MAMBA_CUDA_CHECK("selective_scan_fwd_cuda", cudaDeviceSynchronize());
    report(nm + " y", download(dy), y_ref, tolerance<T>());
    report(nm + " final_state", download(dhT), hT_ref, 1e-3);
  });
}

// ---- selective scan backward ----------------------------------------------------------------
// Against the plain CPU backward (selective_scan_bwd_ref) on the same (T-rounded) inputs; every
// GPU output and the workspace poisoned with NaN first. dinitial_state is requested only when
// the case has an initial state (the null path otherwise); dfinal seeds the adjoint.
template <class T>
// fwd_ckpt: the checkpoints come from a v6 forward call (SelectiveScanCudaParams::bwd_workspace)
// into the NaN-poisoned workspace, and the backward skips its pass A (checkpoints_from_forward).
// layout: SelectiveScanBwdCudaParams::v4_layout (0: automatic).
void check_scan_bwd(const ScanCase& c, bool dfinal, uint64_t seed, int version = 0, bool fwd_ckpt = false, int layout = 0) {
  char name[160], lay[16] = "";
  if (layout) std::snprintf(lay, sizeof lay, " L%d", layout);
  std::snprintf(name, sizeof name, "scan bwd %s b%d d%d l%d n%d g%d%s%s%s%s%s%s [v%d%s%s]", type_name<T>(), c.b, c.d, c.l,
                c.n, c.g, c.z ? " z" : "", c.init ? " h0" : "", c.softplus ? " softplus" : "", c.bias ? " bias" : "",
                c.D ? " D" : "", dfinal ? " dfinal" : "", version ? version : 2, lay, fwd_ckpt ? " fwd-ckpt" : "");
  run_case(name, [&] {
    Rng r(seed);
    const size_t nbdl = size_t(c.b) * c.d * c.l, nbc = size_t(c.b) * c.g * c.n * c.l, nst = size_t(c.b) * c.d * c.n;
    auto u = r.normal(nbdl);
    auto delta = c.softplus ? r.normal(nbdl, -2.f, 1.f) : r.uniform(nbdl, 0.001f, 0.2f);
    auto z = r.normal(c.z ? nbdl : 0);
    auto B = r.normal(nbc), C = r.normal(nbc);
    auto A = r.uniform(size_t(c.d) * c.n, -12.f, -0.3f);
    auto D = r.normal(c.D ? c.d : 0);
    auto bias = c.softplus ? r.uniform(c.bias ? c.d : 0, -1.f, 0.5f) : r.uniform(c.bias ? c.d : 0, 0.f, 0.05f);
    auto h0 = r.normal(c.init ? nst : 0);
    auto dy = r.normal(nbdl);
    auto dhT = r.normal(dfinal ? nst : 0);
    auto du_ = upload_rounded<T>(u), ddelta_ = upload_rounded<T>(delta), dz_ = upload_rounded<T>(z);
    auto dB_ = upload_rounded<T>(B), dC_ = upload_rounded<T>(C), ddy = upload_rounded<T>(dy);
    auto dA_ = upload_rounded<float>(A), dD_ = upload_rounded<float>(D), dbias_ = upload_rounded<float>(bias);
    auto dh0_ = upload_rounded<float>(h0), ddhT = upload_rounded<float>(dhT);

    const int64_t L = c.l;
    k::SelectiveScanParams p;
    p.batch = c.b; p.dim = c.d; p.seqlen = c.l; p.dstate = c.n; p.n_groups = c.g;
    p.u = {u.data(), int64_t(c.d) * L, L, 1};
    p.delta = {delta.data(), int64_t(c.d) * L, L, 1};
    if (c.z) p.z = {z.data(), int64_t(c.d) * L, L, 1};
    p.B = {B.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    p.C = {C.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    p.A = A.data();
    p.D = c.D ? D.data() : nullptr;
    p.delta_bias = c.bias ? bias.data() : nullptr;
    p.delta_softplus = c.softplus;
    p.initial_state = c.init ? h0.data() : nullptr;
    std::vector<float> r_du(nbdl), r_ddelta(nbdl), r_dz(c.z ? nbdl : 0), r_dB(nbc), r_dC(nbc), r_dA(size_t(c.d) * c.n),
        r_dD(c.d), r_dbias(c.d), r_dh0(c.init ? nst : 0);
    k::SelectiveScanGrads gr;
    gr.du = {r_du.data(), int64_t(c.d) * L, L, 1};
    gr.ddelta = {r_ddelta.data(), int64_t(c.d) * L, L, 1};
    if (c.z) gr.dz = {r_dz.data(), int64_t(c.d) * L, L, 1};
    gr.dB = {r_dB.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    gr.dC = {r_dC.data(), int64_t(c.g) * c.n * L, int64_t(c.n) * L, L, 1};
    gr.dA = r_dA.data();
    gr.dD = r_dD.data();
    gr.ddelta_bias = r_dbias.data();
    gr.dinitial_state = c.init ? r_dh0.data() : nullptr;
    k::selective_scan_bwd_ref(p, {dy.data(), int64_t(c.d) * L, L, 1}, dfinal ? dhT.data() : nullptr, gr);

    DevBuf<T> o_du(nbdl), o_ddelta(nbdl), o_dz(c.z ? nbdl : 0);
    DevBuf<float> o_dB(nbc), o_dC(nbc), o_dA(size_t(c.d) * c.n), o_dD(c.d), o_dbias(c.d), o_dh0(c.init ? nst : 0);
    kc::SelectiveScanBwdCudaParams<T> q;
    q.batch = c.b; q.dim = c.d; q.seqlen = c.l; q.dstate = c.n; q.n_groups = c.g;
    q.u = du_.ptr; q.delta = ddelta_.ptr; q.z = c.z ? dz_.ptr : nullptr; q.B = dB_.ptr; q.C = dC_.ptr;
    q.A = dA_.ptr; q.D = c.D ? dD_.ptr : nullptr; q.delta_bias = c.bias ? dbias_.ptr : nullptr;
    q.delta_softplus = c.softplus; q.initial_state = c.init ? dh0_.ptr : nullptr;
    q.dout = ddy.ptr; q.dfinal_state = dfinal ? ddhT.ptr : nullptr;
    q.du = o_du.ptr; q.ddelta = o_ddelta.ptr; q.dz = c.z ? o_dz.ptr : nullptr;
    q.dA = o_dA.ptr; q.dB = o_dB.ptr; q.dC = o_dC.ptr; q.dD = o_dD.ptr; q.ddelta_bias = o_dbias.ptr;
    q.dinitial_state = c.init ? o_dh0.ptr : nullptr;
    q.version = version;
    q.v4_layout = layout;
    const size_t wsb = kc::selective_scan_bwd_cuda_workspace_bytes<T>(q);
    DevBuf<float> ws((wsb + 3) / 4);
    q.workspace = ws.ptr; q.workspace_bytes = wsb;
    for (auto* bufp : {&o_dB, &o_dC, &o_dA, &o_dD, &o_dbias, &o_dh0, &ws}) bufp->poison();
    o_du.poison(); o_ddelta.poison(); o_dz.poison();
    if (fwd_ckpt) {
      DevBuf<T> y(nbdl);
      kc::SelectiveScanCudaParams<T> f;
      f.batch = c.b; f.dim = c.d; f.seqlen = c.l; f.dstate = c.n; f.n_groups = c.g;
      f.u = q.u; f.delta = q.delta; f.z = q.z; f.B = q.B; f.C = q.C; f.A = q.A; f.D = q.D;
      f.delta_bias = q.delta_bias; f.delta_softplus = q.delta_softplus; f.initial_state = q.initial_state;
      f.y = y.ptr; f.version = 6; f.bwd_workspace = ws.ptr; f.opt = g_opt;
      f.split = g_opt ? 2 : 0;  // the variants are compiled for split 2
      std::string fn(name);
      auto segws = attach_seg_workspace(f, &fn);
      if (g_segments >= 0) std::printf("     %s: forward%s\n", name, fn.substr(std::strlen(name)).c_str());
      kc::selective_scan_fwd_cuda<T>(f, nullptr);
      MAMBA_CUDA_CHECK("selective_scan_fwd_cuda (checkpoints)", cudaDeviceSynchronize());
      q.checkpoints_from_forward = true;
    }
    kc::selective_scan_bwd_cuda<T>(q, nullptr);
    MAMBA_CUDA_CHECK("selective_scan_bwd_cuda", cudaDeviceSynchronize());
    const double tol = tolerance<T>();
    const std::string nm(name);
    report(nm + " du", download(o_du), r_du, tol);
    report(nm + " ddelta", download(o_ddelta), r_ddelta, tol);
    if (c.z) report(nm + " dz", download(o_dz), r_dz, tol);
    report(nm + " dB", download(o_dB), r_dB, tol);
    report(nm + " dC", download(o_dC), r_dC, tol);
    report(nm + " dA", download(o_dA), r_dA, tol);
    report(nm + " dD", download(o_dD), r_dD, tol);
    report(nm + " ddelta_bias", download(o_dbias), r_dbias, tol);
    if (c.init) report(nm + " dinitial_state", download(o_dh0), r_dh0, tol);
  });
}

// v4 takes dstate <= 16 only: a larger one is refused with std::invalid_argument naming it;
// layout != 0: a v4_layout outside 0..2 (dstate 16) is refused naming the field.
void check_scan_bwd_v4_refuses(const ScanCase& c, int layout = 0) {
  kc::SelectiveScanBwdCudaParams<float> q;
  q.batch = c.b; q.dim = c.d; q.seqlen = c.l; q.dstate = c.n; q.n_groups = c.g;
  DevBuf<float> big(size_t(1) << 16);
  q.u = q.delta = q.B = q.C = q.dout = big.ptr; q.A = big.ptr;
  q.du = q.ddelta = big.ptr; q.dA = q.dB = q.dC = big.ptr;
  q.workspace = big.ptr; q.workspace_bytes = sizeof(float) << 16;
  q.version = 4;
  q.v4_layout = layout;
  if (layout) q.dstate = 16;
  char name[96];
  if (layout) std::snprintf(name, sizeof name, "scan bwd v4 refuses v4_layout %d", layout);
  else std::snprintf(name, sizeof name, "scan bwd v4 refuses dstate %d", c.n);
  bool ok = false;
  std::string msg = "no exception";
  try {
    kc::selective_scan_bwd_cuda<float>(q, nullptr);
  } catch (const std::invalid_argument& e) {
    msg = e.what();
    ok = layout ? msg.find("v4_layout") != std::string::npos
                : msg.find("version 4") != std::string::npos && msg.find("dstate") != std::string::npos;
  } catch (const std::exception& e) {
    msg = std::string("wrong exception: ") + e.what();
  }
  (ok ? g_passed : g_failed)++;
  std::printf("%-4s %s: %s\n", ok ? "ok" : "FAIL", name, msg.c_str());
}

// ---- causal conv1d ------------------------------------------------------------------------
struct ConvCase { int b, l, c, k; bool bias, silu, init, strided; };

template <class T>
void check_conv(const ConvCase& c, uint64_t seed) {
  char name[160];
  std::snprintf(name, sizeof name, "conv1d %s b%d l%d c%d k%d%s%s%s%s", type_name<T>(), c.b, c.l, c.c, c.k,
                c.bias ? " bias" : "", c.silu ? " silu" : "", c.init ? " state0" : "", c.strided ? " strided" : "");
  run_case(name, [&] {
    Rng r(seed);
    // x lives inside a wider (b, l, xc) buffer at column offset `off` when strided.
    const int xc = c.strided ? 2 * c.c + 3 : c.c, off = c.strided ? 1 : 0;
    auto xbuf = r.normal(size_t(c.b) * c.l * xc);
    auto w = r.normal(size_t(c.c) * c.k, 0.f, 0.5f);
    auto bias = r.normal(c.bias ? c.c : 0);
    auto s0 = r.normal(c.init ? size_t(c.b) * c.c * (c.k - 1) : 0);
    auto dx = upload_rounded<T>(xbuf);
    auto dw = upload_rounded<float>(w), dbias = upload_rounded<float>(bias), ds0 = upload_rounded<float>(s0);
    const size_t nout = size_t(c.b) * c.l * c.c;
    DevBuf<T> dout(nout);
    std::vector<float> ref(nout);
    k::CausalConv1dParams p;
    p.batch = c.b; p.seqlen = c.l; p.channels = c.c; p.width = c.k;
    p.x = xbuf.data() + off; p.x_sb = int64_t(c.l) * xc; p.x_st = xc;
    p.weight = w.data(); p.bias = c.bias ? bias.data() : nullptr;
    p.initial_state = c.init && c.k > 1 ? s0.data() : nullptr;
    p.silu = c.silu; p.out = ref.data();
    k::causal_conv1d_ref(p);
    kc::CausalConv1dCudaParams<T> q;
    q.batch = c.b; q.seqlen = c.l; q.channels = c.c; q.width = c.k;
    q.x = dx.ptr + off; q.x_sb = p.x_sb; q.x_st = p.x_st;
    q.weight = dw.ptr; q.bias = c.bias ? dbias.ptr : nullptr;
    q.initial_state = c.init && c.k > 1 ? ds0.ptr : nullptr;
    q.silu = c.silu; q.out = dout.ptr;
    dout.poison();
    kc::causal_conv1d_fwd_cuda<T>(q, nullptr);
    MAMBA_CUDA_CHECK("causal_conv1d_fwd_cuda", cudaDeviceSynchronize());
    report(name, download(dout), ref, tolerance<T>());
  });
}

template <class T>
void check_conv_update(int b, int ch, int kw, bool bias_on, bool silu, uint64_t seed) {
  char name[160];
  std::snprintf(name, sizeof name, "conv1d_update %s b%d c%d k%d%s%s", type_name<T>(), b, ch, kw, bias_on ? " bias" : "",
                silu ? " silu" : "");
  run_case(name, [&] {
    Rng r(seed);
    const int x_sb = ch + 5;
    auto x = r.normal(size_t(b) * x_sb);
    auto st = r.normal(size_t(b) * ch * kw);
    auto w = r.normal(size_t(ch) * kw, 0.f, 0.5f);
    auto bias = r.normal(bias_on ? ch : 0);
    auto dx = upload_rounded<T>(x);
    auto dst = upload_rounded<float>(st), dw = upload_rounded<float>(w), dbias = upload_rounded<float>(bias);
    DevBuf<T> dout(size_t(b) * ch);
    std::vector<float> ref(size_t(b) * ch), st_ref = st;
    k::causal_conv1d_update(b, ch, kw, st_ref.data(), x.data(), x_sb, w.data(), bias_on ? bias.data() : nullptr, silu,
                            ref.data());
    dout.poison();
    kc::causal_conv1d_update_cuda<T>(b, ch, kw, dst.ptr, dx.ptr, x_sb, dw.ptr, bias_on ? dbias.ptr : nullptr, silu,
                                     dout.ptr, nullptr);
    MAMBA_CUDA_CHECK("causal_conv1d_update_cuda", cudaDeviceSynchronize());
    report(std::string(name) + " out", download(dout), ref, tolerance<T>());
    report(std::string(name) + " conv_state", download(dst), st_ref, 1e-6);
  });
}

// ---- selective state update ----------------------------------------------------------------
struct UpdateCase { int b, d, n, g; bool z, softplus, strided; };

template <class T>
void check_state_update(const UpdateCase& c, uint64_t seed) {
  char name[160];
  std::snprintf(name, sizeof name, "state_update %s b%d d%d n%d g%d%s%s%s", type_name<T>(), c.b, c.d, c.n, c.g,
                c.z ? " z" : "", c.softplus ? " softplus" : "", c.strided ? " strided" : "");
  run_case(name, [&] {
    Rng r(seed);
    const int xs = c.strided ? c.d + 3 : c.d, bs = c.strided ? c.g * c.n + 2 : c.g * c.n;
    auto x = r.normal(size_t(c.b) * xs);
    auto dt = c.softplus ? r.normal(size_t(c.b) * xs, -2.f, 1.f) : r.uniform(size_t(c.b) * xs, 0.001f, 0.2f);
    auto z = r.normal(size_t(c.b) * xs);
    auto B = r.normal(size_t(c.b) * bs), C = r.normal(size_t(c.b) * bs);
    auto A = r.uniform(size_t(c.d) * c.n, -12.f, -0.3f);
    auto D = r.normal(c.d);
    auto bias = c.softplus ? r.uniform(c.d, -1.f, 0.5f) : r.uniform(c.d, 0.f, 0.05f);
    auto st = r.normal(size_t(c.b) * c.d * c.n);
    auto dx = upload_rounded<T>(x), ddt = upload_rounded<T>(dt), dz = upload_rounded<T>(z);
    auto dB = upload_rounded<T>(B), dC = upload_rounded<T>(C);
    auto dA = upload_rounded<float>(A), dD = upload_rounded<float>(D), dbias = upload_rounded<float>(bias);
    auto dst = upload_rounded<float>(st);
    // y is written into a strided buffer: entries between rows must stay poisoned.
    DevBuf<T> dy(size_t(c.b) * xs);
    std::vector<float> y_ref(size_t(c.b) * xs, 0.f), st_ref = st;
    k::SelectiveStateUpdateParams p;
    p.batch = c.b; p.dim = c.d; p.dstate = c.n; p.n_groups = c.g;
    p.state = st_ref.data();
    p.x = x.data(); p.x_stride = xs; p.delta = dt.data(); p.delta_stride = xs;
    p.z = c.z ? z.data() : nullptr; p.z_stride = xs;
    p.B = B.data(); p.B_stride = bs; p.C = C.data(); p.C_stride = bs;
    p.A = A.data(); p.D = D.data(); p.delta_bias = bias.data(); p.delta_softplus = c.softplus;
    p.y = y_ref.data(); p.y_stride = xs;
    k::selective_state_update(p);
    kc::SelectiveStateUpdateCudaParams<T> q;
    q.batch = c.b; q.dim = c.d; q.dstate = c.n; q.n_groups = c.g;
    q.state = dst.ptr;
    q.x = dx.ptr; q.x_stride = xs; q.delta = ddt.ptr; q.delta_stride = xs;
    q.z = c.z ? dz.ptr : nullptr; q.z_stride = xs;
    q.B = dB.ptr; q.B_stride = bs; q.C = dC.ptr; q.C_stride = bs;
    q.A = dA.ptr; q.D = dD.ptr; q.delta_bias = dbias.ptr; q.delta_softplus = c.softplus;
    q.y = dy.ptr; q.y_stride = xs;
    dy.poison();
    kc::selective_state_update_cuda<T>(q, nullptr);
    MAMBA_CUDA_CHECK("selective_state_update_cuda", cudaDeviceSynchronize());
    std::vector<bool> mask(y_ref.size());
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = int(i % xs) < c.d;
    report(std::string(name) + " y", download(dy), y_ref, tolerance<T>(), mask);
    report(std::string(name) + " state", download(dst), st_ref, 1e-4);
  });
}


// ---- rms norm -----------------------------------------------------------------------------
template <class T>
void check_add_rms_norm(int rows, int dim, bool res_on, uint64_t seed) {
  char name[160];
  std::snprintf(name, sizeof name, "add_rms_norm %s rows%d dim%d%s", type_name<T>(), rows, dim,
                res_on ? " residual" : "");
  run_case(name, [&] {
    Rng r(seed);
    const size_t n = size_t(rows) * dim;
    auto x = r.normal(n);
    auto res = r.normal(res_on ? n : 0, 0.f, 2.f);
    auto w = r.normal(dim, 1.f, 0.3f);
    auto dx = upload_rounded<T>(x);
    auto dres = upload_rounded<float>(res), dw = upload_rounded<float>(w);
    std::vector<float> ro_ref(n), y_ref(n);
    const float eps = 1e-5f;
    k::add_rms_norm(rows, dim, x.data(), res_on ? res.data() : nullptr, ro_ref.data(), w.data(), eps, y_ref.data());
    DevBuf<float> dro(n);
    DevBuf<T> dy(n);
    dro.poison();
    dy.poison();
    kc::add_rms_norm_cuda<T>(rows, dim, dx.ptr, res_on ? dres.ptr : nullptr, dro.ptr, dw.ptr, eps, dy.ptr, nullptr);
    MAMBA_CUDA_CHECK("add_rms_norm_cuda", cudaDeviceSynchronize());
    report(std::string(name) + " residual_out", download(dro), ro_ref, 1e-5);
    report(std::string(name) + " y", download(dy), y_ref, tolerance<T>());
    if (res_on) {  // in place: residual_out == residual_in
      dy.poison();
      kc::add_rms_norm_cuda<T>(rows, dim, dx.ptr, dres.ptr, dres.ptr, dw.ptr, eps, dy.ptr, nullptr);
      MAMBA_CUDA_CHECK("add_rms_norm_cuda", cudaDeviceSynchronize());
      report(std::string(name) + " in-place residual_out", download(dres), ro_ref, 1e-5);
      report(std::string(name) + " in-place y", download(dy), y_ref, tolerance<T>());
    }
  });
}

template <class T>
void check_gated_rms_norm(int rows, int dim, int gsz, bool z_on, bool nbg, bool strided, uint64_t seed) {
  char name[160];
  std::snprintf(name, sizeof name, "gated_rms_norm %s rows%d dim%d group%d%s%s%s", type_name<T>(), rows, dim, gsz,
                z_on ? " z" : "", nbg ? " norm_before_gate" : " gate_before_norm", strided ? " strided" : "");
  run_case(name, [&] {
    Rng r(seed);
    const int xs = strided ? dim + 9 : dim, zs = strided ? 2 * dim + 8 : dim;
    auto x = r.normal(size_t(rows) * xs);
    auto z = r.normal(z_on ? size_t(rows) * zs : 0, 0.f, 2.f);
    auto w = r.normal(dim, 1.f, 0.3f);
    auto dx = upload_rounded<T>(x);
    auto dz = upload_rounded<T>(z);
    auto dw = upload_rounded<float>(w);
    const size_t n = size_t(rows) * dim;
    std::vector<float> y_ref(n);
    const float eps = 1e-5f;
    k::gated_rms_norm_ref(rows, dim, gsz, x.data(), xs, z_on ? z.data() : nullptr, zs, w.data(), eps, nbg,
                          y_ref.data(), dim);
    DevBuf<T> dy(n);
    dy.poison();
    kc::gated_rms_norm_cuda<T>(rows, dim, gsz, dx.ptr, xs, z_on ? dz.ptr : nullptr, zs, dw.ptr, eps, nbg, dy.ptr,
                               dim, nullptr);
    MAMBA_CUDA_CHECK("gated_rms_norm_cuda", cudaDeviceSynchronize());
    report(name, download(dy), y_ref, tolerance<T>());
  });
}

// ---- timing -------------------------------------------------------------------------------
__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27; x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
template <class T>
__global__ void fill_uniform_kernel(T* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float r = float(mix64(seed * 0x9e3779b97f4a7c15ull + i) >> 40) * (1.f / 16777216.f);
    p[i] = to_t<T>(lo + (hi - lo) * r);
  }
}

template <class T>
void fill_uniform(T* p, size_t n, uint64_t seed, float lo, float hi) {
  if (!n) return;
  fill_uniform_kernel<T><<<1024, 256>>>(p, n, seed, lo, hi);
  MAMBA_CUDA_CHECK_LAUNCH("fill_uniform");
}

// Median time of one call of fn(i) in microseconds: `warmup` untimed calls, then `samples`
// samples of `inner` back-to-back calls each between two events.
double median_us(const std::function<void(int)>& fn, int inner = 1, int samples = 25, int warmup = 3) {
  cudaEvent_t e0, e1;
  MAMBA_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e0));
  MAMBA_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e1));
  int it = 0;
  for (int i = 0; i < warmup; ++i) fn(it++);
  MAMBA_CUDA_CHECK("warm-up", cudaDeviceSynchronize());
  std::vector<double> t;
  for (int s = 0; s < samples; ++s) {
    MAMBA_CUDA_CHECK("cudaEventRecord", cudaEventRecord(e0));
    for (int i = 0; i < inner; ++i) fn(it++);
    MAMBA_CUDA_CHECK("cudaEventRecord", cudaEventRecord(e1));
    MAMBA_CUDA_CHECK("cudaEventSynchronize", cudaEventSynchronize(e1));
    float ms = 0;
    MAMBA_CUDA_CHECK("cudaEventElapsedTime", cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(1e3 * ms / inner);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double g_copy_gbs = 0;  // device-to-device copy bandwidth, read + write, GB/s

constexpr double kExpRate = 4.15e12;  // MUFU ex2 per second (H100: 132 SMs x 16 / clock x 1.965 GHz)

struct Row { std::string kernel, shape; double us, bytes, exps, fwd_us; };
std::vector<Row> g_rows;
bool g_rows_relabelled = false;  // set while a caller times through add_row to re-add the row itself (no record)

// One timed row: bytes moved at least, exps = the exponentials the kernel needs (0: none
// counted), fwd_us = the forward's time for a backward row. Also one perf record (perf_record.h)
// for the device round's summary table.
void add_row(const std::string& kernel, const std::string& shape, double us, double bytes, double exps = 0,
             double fwd_us = 0) {
  g_rows.push_back({kernel, shape, us, bytes, exps, fwd_us});
  std::printf("  timed %-22s %-34s %10.1f us\n", kernel.c_str(), shape.c_str(), us);
  if (!g_rows_relabelled) kc::perf_record_label(kernel, shape, us, bytes, exps, "exp");
}

void time_copy() {
  const size_t bytes = size_t(1) << 30;
  DevBuf<char> a(bytes), b(bytes);
  MAMBA_CUDA_CHECK("memset", cudaMemset(a.ptr, 1, bytes));
  const double us = median_us([&](int) { MAMBA_CUDA_CHECK("cudaMemcpy D2D", cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice)); }, 1, 20);
  g_copy_gbs = 2.0 * bytes / (us * 1e-6) / 1e9;
  add_row("memcpy d2d", "1 GiB", us, 2.0 * bytes);
}

template <class T>
double time_scan(int b, int d, int l, int n, int version = 0, int split = 0, int block = 0) {
  const size_t nbdl = size_t(b) * d * l, nbc = size_t(b) * n * l;
  DevBuf<T> u(nbdl), delta(nbdl), z(nbdl), y(nbdl), B(nbc), C(nbc);
  DevBuf<float> A(size_t(d) * n), D(d), bias(d), hT(size_t(b) * d * n);
  fill_uniform(u.ptr, nbdl, 1, -1.f, 1.f);
  fill_uniform(delta.ptr, nbdl, 2, -4.f, -1.f);
  fill_uniform(z.ptr, nbdl, 3, -2.f, 2.f);
  fill_uniform(B.ptr, nbc, 4, -1.f, 1.f);
  fill_uniform(C.ptr, nbc, 5, -1.f, 1.f);
  fill_uniform(A.ptr, size_t(d) * n, 6, -16.f, -1.f);
  fill_uniform(D.ptr, size_t(d), 7, -1.f, 1.f);
  fill_uniform(bias.ptr, size_t(d), 8, -0.5f, 0.f);
  kc::SelectiveScanCudaParams<T> q;
  q.batch = b; q.dim = d; q.seqlen = l; q.dstate = n; q.n_groups = 1;
  q.u = u.ptr; q.delta = delta.ptr; q.z = z.ptr; q.B = B.ptr; q.C = C.ptr;
  q.A = A.ptr; q.D = D.ptr; q.delta_bias = bias.ptr; q.delta_softplus = true;
  q.y = y.ptr; q.final_state = hT.ptr;
  q.version = version; q.split = split; q.block = block;
  const double us = median_us([&](int) { kc::selective_scan_fwd_cuda<T>(q, nullptr); });
  const double bytes = 4.0 * nbdl * sizeof(T) + 2.0 * nbc * sizeof(T) + 4.0 * (size_t(b) * d * n + size_t(d) * n + 2 * d);
  char shape[96], which[32] = " auto";
  std::snprintf(shape, sizeof shape, "b%d d%d l%d n%d z", b, d, l, n);
  if (version && split) std::snprintf(which, sizeof which, " v%d S%d", version, split);
  else if (version) std::snprintf(which, sizeof which, " v%d", version);
  if (block == 32) std::strcat(which, " W1");
  add_row(std::string("scan fwd ") + type_name<T>() + which, shape, us, bytes, double(nbdl) * n);
  return us;
}

// Backward at the forward's timing shape and data (softplus, bias, D, z, h0, dfinal); bytes =
// the inputs u, delta, z, dout, B, C read once + du, ddelta, dz, dB, dC (f32) written once;
// exp floor = one exponential per (b, d, t, n), as for the forward (this design does three).
// fwd_ckpt: a v6 forward writes the checkpoints into the workspace once first, and the timed
// calls take them (checkpoints_from_forward: no pass A, the training path).
template <class T>
void time_scan_bwd(int b, int d, int l, int n, double fwd_us, const char* tag = "", int version = 0, bool fwd_ckpt = false,
                   int layout = 0) {
  const size_t nbdl = size_t(b) * d * l, nbc = size_t(b) * n * l, nst = size_t(b) * d * n;
  DevBuf<T> u(nbdl), delta(nbdl), z(nbdl), dout(nbdl), B(nbc), C(nbc), du(nbdl), ddelta(nbdl), dz(nbdl);
  DevBuf<float> A(size_t(d) * n), D(d), bias(d), h0(nst), dhT(nst), dB(nbc), dC(nbc), dA(size_t(d) * n), dD(d),
      dbias(d), dh0(nst);
  fill_uniform(u.ptr, nbdl, 1, -1.f, 1.f);
  fill_uniform(delta.ptr, nbdl, 2, -4.f, -1.f);
  fill_uniform(z.ptr, nbdl, 3, -2.f, 2.f);
  fill_uniform(B.ptr, nbc, 4, -1.f, 1.f);
  fill_uniform(C.ptr, nbc, 5, -1.f, 1.f);
  fill_uniform(A.ptr, size_t(d) * n, 6, -16.f, -1.f);
  fill_uniform(D.ptr, size_t(d), 7, -1.f, 1.f);
  fill_uniform(bias.ptr, size_t(d), 8, -0.5f, 0.f);
  fill_uniform(dout.ptr, nbdl, 9, -1.f, 1.f);
  fill_uniform(h0.ptr, nst, 10, -1.f, 1.f);
  fill_uniform(dhT.ptr, nst, 14, -1.f, 1.f);
  kc::SelectiveScanBwdCudaParams<T> q;
  q.batch = b; q.dim = d; q.seqlen = l; q.dstate = n; q.n_groups = 1;
  q.u = u.ptr; q.delta = delta.ptr; q.z = z.ptr; q.B = B.ptr; q.C = C.ptr;
  q.A = A.ptr; q.D = D.ptr; q.delta_bias = bias.ptr; q.delta_softplus = true; q.initial_state = h0.ptr;
  q.dout = dout.ptr; q.dfinal_state = dhT.ptr;
  q.du = du.ptr; q.ddelta = ddelta.ptr; q.dz = dz.ptr; q.dA = dA.ptr; q.dB = dB.ptr; q.dC = dC.ptr;
  q.dD = dD.ptr; q.ddelta_bias = dbias.ptr; q.dinitial_state = dh0.ptr;
  q.version = version;
  q.v4_layout = layout;
  const size_t wsb = kc::selective_scan_bwd_cuda_workspace_bytes<T>(q);
  DevBuf<float> ws((wsb + 3) / 4);
  q.workspace = ws.ptr; q.workspace_bytes = wsb;
  if (fwd_ckpt) {
    DevBuf<T> y(nbdl);
    kc::SelectiveScanCudaParams<T> f;
    f.batch = b; f.dim = d; f.seqlen = l; f.dstate = n; f.n_groups = 1;
    f.u = q.u; f.delta = q.delta; f.z = q.z; f.B = q.B; f.C = q.C; f.A = q.A; f.D = q.D;
    f.delta_bias = q.delta_bias; f.delta_softplus = true; f.initial_state = q.initial_state;
    f.y = y.ptr; f.version = 6; f.bwd_workspace = ws.ptr;
    kc::selective_scan_fwd_cuda<T>(f, nullptr);
    MAMBA_CUDA_CHECK("selective_scan_fwd_cuda (checkpoints)", cudaDeviceSynchronize());
    q.checkpoints_from_forward = true;
  }
  const double us = median_us([&](int) { kc::selective_scan_bwd_cuda<T>(q, nullptr); });
  const double bytes = 7.0 * nbdl * sizeof(T) + 2.0 * nbc * sizeof(T) + 8.0 * nbc +
                       4.0 * (3 * nst + 2 * size_t(d) * n + 4 * d);
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%d d%d l%d n%d z (ws %.0f MB)", b, d, l, n, wsb / 1e6);
  const std::string which = (version ? " v" + std::to_string(version) : std::string(" auto")) +
                            (layout ? " L" + std::to_string(layout) : std::string()) + (fwd_ckpt ? " ckpt-from-fwd" : "");
  add_row(std::string("scan bwd ") + type_name<T>() + which + tag, shape, us, bytes, double(nbdl) * n, fwd_us);
}

template <class T>
void time_conv(int b, int l, int c, int kw) {
  const size_t nx = size_t(b) * l * c;
  DevBuf<T> x(nx), out(nx);
  DevBuf<float> w(size_t(c) * kw), bias(c);
  fill_uniform(x.ptr, nx, 11, -1.f, 1.f);
  fill_uniform(w.ptr, size_t(c) * kw, 12, -0.5f, 0.5f);
  fill_uniform(bias.ptr, size_t(c), 13, -0.5f, 0.5f);
  kc::CausalConv1dCudaParams<T> q;
  q.batch = b; q.seqlen = l; q.channels = c; q.width = kw;
  q.x = x.ptr; q.x_sb = int64_t(l) * c; q.x_st = c;
  q.weight = w.ptr; q.bias = bias.ptr; q.silu = true; q.out = out.ptr;
  const double us = median_us([&](int) { kc::causal_conv1d_fwd_cuda<T>(q, nullptr); });
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%d l%d c%d k%d silu", b, l, c, kw);
  const char* cv = std::getenv("MAMBA_CONV_VERSION");
  add_row(std::string("conv1d fwd ") + type_name<T>() + (cv ? std::string(" v") + cv : std::string()), shape, us, 2.0 * nx * sizeof(T) + 4.0 * c * (kw + 1));
}

// The decode step's buffers fit in L2 at small batch; rotate among enough independent sets
// (>= 256 MB in all) that each call reads from device memory.
template <class T>
void time_state_update(int b, int d, int n) {
  const size_t per_state = size_t(b) * d * n, per_row = size_t(b) * d, per_bc = size_t(b) * n;
  const double set_bytes = 4.0 * per_state + 4.0 * per_row * sizeof(T) + 2.0 * per_bc * sizeof(T);
  const int sets = static_cast<int>(std::clamp(std::ceil(256e6 / set_bytes), 1.0, 4096.0));
  DevBuf<float> state(per_state * sets), A(size_t(d) * n), D(d), bias(d);
  DevBuf<T> x(per_row * sets), dt(per_row * sets), z(per_row * sets), y(per_row * sets), B(per_bc * sets),
      C(per_bc * sets);
  fill_uniform(state.ptr, state.count, 21, -1.f, 1.f);
  fill_uniform(x.ptr, x.count, 22, -1.f, 1.f);
  fill_uniform(dt.ptr, dt.count, 23, -4.f, -1.f);
  fill_uniform(z.ptr, z.count, 24, -2.f, 2.f);
  fill_uniform(B.ptr, B.count, 25, -1.f, 1.f);
  fill_uniform(C.ptr, C.count, 26, -1.f, 1.f);
  fill_uniform(A.ptr, A.count, 27, -16.f, -1.f);
  fill_uniform(D.ptr, D.count, 28, -1.f, 1.f);
  fill_uniform(bias.ptr, bias.count, 29, -0.5f, 0.f);
  auto run = [&](int it) {
    const size_t s = size_t(it % sets);
    kc::SelectiveStateUpdateCudaParams<T> q;
    q.batch = b; q.dim = d; q.dstate = n; q.n_groups = 1;
    q.state = state.ptr + s * per_state;
    q.x = x.ptr + s * per_row; q.x_stride = d;
    q.delta = dt.ptr + s * per_row; q.delta_stride = d;
    q.z = z.ptr + s * per_row; q.z_stride = d;
    q.B = B.ptr + s * per_bc; q.B_stride = n;
    q.C = C.ptr + s * per_bc; q.C_stride = n;
    q.A = A.ptr; q.D = D.ptr; q.delta_bias = bias.ptr; q.delta_softplus = true;
    q.y = y.ptr + s * per_row; q.y_stride = d;
    kc::selective_state_update_cuda<T>(q, nullptr);
  };
  const double us = median_us(run, 20);
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%d d%d n%d z (%d sets)", b, d, n, sets);
  // The state is read and written (set_bytes counts it once).
  add_row(std::string("state_update ") + type_name<T>(), shape, us, set_bytes + 4.0 * per_state + 4.0 * (size_t(d) * n + 2 * d),
          double(per_state));
}

template <class T>
void time_add_rms_norm(int rows, int dim) {
  const size_t n = size_t(rows) * dim;
  DevBuf<T> x(n), y(n);
  DevBuf<float> res(n), ro(n), w(dim);
  fill_uniform(x.ptr, n, 31, -1.f, 1.f);
  fill_uniform(res.ptr, n, 32, -1.f, 1.f);
  fill_uniform(w.ptr, size_t(dim), 33, 0.5f, 1.5f);
  const double us = median_us([&](int) { kc::add_rms_norm_cuda<T>(rows, dim, x.ptr, res.ptr, ro.ptr, w.ptr, 1e-5f, y.ptr, nullptr); });
  char shape[96];
  std::snprintf(shape, sizeof shape, "rows%d dim%d residual", rows, dim);
  add_row(std::string("add_rms_norm ") + type_name<T>(), shape, us, 2.0 * n * sizeof(T) + 8.0 * n + 4.0 * dim);
}

template <class T>
void time_gated_rms_norm(int rows, int dim, int gsz, bool nbg) {
  const size_t n = size_t(rows) * dim;
  DevBuf<T> x(n), z(n), y(n);
  DevBuf<float> w(dim);
  fill_uniform(x.ptr, n, 34, -1.f, 1.f);
  fill_uniform(z.ptr, n, 35, -2.f, 2.f);
  fill_uniform(w.ptr, size_t(dim), 36, 0.5f, 1.5f);
  const double us = median_us([&](int) {
    kc::gated_rms_norm_cuda<T>(rows, dim, gsz, x.ptr, dim, z.ptr, dim, w.ptr, 1e-5f, nbg, y.ptr, dim, nullptr);
  });
  char shape[96];
  std::snprintf(shape, sizeof shape, "rows%d dim%d group%d z%s", rows, dim, gsz, nbg ? " nbg" : "");
  add_row(std::string("gated_rms_norm ") + type_name<T>(), shape, us, 3.0 * n * sizeof(T) + 4.0 * dim);
}

// GEMM y = x W^T, bf16 in and out (f32 accumulation; gemm_cuda's automatic path), x (m, k),
// W (n, k): bytes = x, W read once and y written once; 2 m n k tensor-core FLOPs.
void time_gemm(int64_t m, int64_t n, int64_t k, const char* what) {
  DevBuf<bf16> x(size_t(m) * k), w(size_t(n) * k), y(size_t(m) * n);
  DevBuf<char> ws(kc::gemm_cuda_workspace_bytes());
  fill_uniform(x.ptr, x.count, 51, -1.f, 1.f);
  fill_uniform(w.ptr, w.count, 52, -0.05f, 0.05f);
  kc::GemmCudaParams q;
  q.m = m; q.n = n; q.k = k;
  q.x = x.ptr; q.ldx = k; q.w = w.ptr; q.ldw = k; q.y = y.ptr; q.ldy = n;
  q.in_type = kc::GemmType::bf16; q.out_type = kc::GemmType::bf16;
  const double us = median_us([&](int) { kc::gemm_cuda(q, ws.ptr, ws.count, nullptr); });
  char shape[96];
  std::snprintf(shape, sizeof shape, "m%lld n%lld k%lld (%s)", (long long)m, (long long)n, (long long)k, what);
  const double bytes = 2.0 * (double(m) * k + double(n) * k + double(m) * n);
  g_rows_relabelled = true;  // the record below carries the FLOPs
  add_row("gemm bf16", shape, us, bytes);
  g_rows_relabelled = false;
  kc::perf_record("gemm", shape, "bf16", us, bytes, 2.0 * m * n * k, "tc");
}

void print_table() {
  std::printf("\n| kernel | shape | time us | GB/s | mem floor us | x mem floor | exp floor us | x exp floor | x fwd |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : g_rows) {
    const double gbs = r.bytes / (r.us * 1e-6) / 1e9;
    const double floor_us = g_copy_gbs > 0 ? r.bytes / (g_copy_gbs * 1e9) * 1e6 : 0;
    std::printf("| %s | %s | %.1f | %.0f | %.1f | %.2f |", r.kernel.c_str(), r.shape.c_str(), r.us, gbs, floor_us,
                floor_us > 0 ? r.us / floor_us : 0.0);
    const double exp_floor_us = r.exps / kExpRate * 1e6;
    if (r.exps > 0)
      std::printf(" %.1f | %.2f |", exp_floor_us, r.us / exp_floor_us);
    else
      std::printf(" - | - |");
    if (r.fwd_us > 0)
      std::printf(" %.2f |\n", r.us / r.fwd_us);
    else
      std::printf(" - |\n");
  }
  std::printf("(x floor = measured time / floor; memory floor uses the measured copy bandwidth %.0f GB/s, read+write;\n"
              " exp floor = b*d*l*n exponentials at 4.15e12/s; x fwd = backward time / forward (auto) time, same shape)\n",
              g_copy_gbs);
}

#include "mamba_cuda_check_fast.inc"  // --fast: scan forward v6 / v3, decode, conv and the floors table
#include "mamba_cuda_check_v6.inc"    // --scan6: scan forward v6 checks and the v3 / v6 timings
#include "mamba_cuda_check_v7.inc"    // --scan7: the v6 variants of branch scanfwd (opt), checks and timings
#include "mamba_cuda_check_seg.inc"   // --scanseg: the sequence split of v6, checks and timings

#include "mamba_cuda_check_bw80.inc"  // --bw80: state update and conv1d forward versions (branch bw80)
#include "mamba_cuda_check_bw.inc"    // --bw (= --bw80), --bw-once (branch bwkern)
#include "mamba_cuda_check_bw81.inc"  // --bw81: conv1d / state update versions, 1-call / back-to-back / graph timings

}  // namespace

// --decode-kernels: the Mamba-1 state update checked and timed under each variant
// (MAMBA_SSU_VERSION unset = the default dispatch, 11, 10), and conv1d forward timed (the default).
int decode_kernels_main() {
  std::printf("device 0: %s\n", k::cuda_device_description(0).c_str());
  uint64_t seed = 7000;
  const UpdateCase upd_cases[] = {
      {1, 5, 1, 1, true, true, false},  {3, 48, 16, 2, true, true, true},
      {2, 64, 64, 1, false, false, false}, {4, 40, 16, 2, true, true, true},
      {1, 3, 256, 1, true, true, false},  {5, 70, 16, 1, true, false, false},
      {40, 3400, 16, 2, true, true, false}, {48, 3000, 16, 1, true, true, true},
      {2, 300, 32, 3, true, true, true},  {256, 3072, 16, 1, true, true, false},
  };
  for (const char* v : {"", "11", "10"}) {
    if (*v) setenv("MAMBA_SSU_VERSION", v, 1); else unsetenv("MAMBA_SSU_VERSION");
    std::printf("== state update checks, MAMBA_SSU_VERSION=%s\n", *v ? v : "(default)");
    for (const auto& c : upd_cases) {
      check_state_update<float>(c, ++seed);
      check_state_update<bf16>(c, ++seed);
    }
  }
  unsetenv("MAMBA_SSU_VERSION");
  std::printf("cuda-check: %d passed, %d failed\n", g_passed, g_failed);
  try {
    time_copy();
    for (int rep = 0; rep < 2; ++rep)  // twice: the spread
      for (const char* v : {"", "11", "10"}) {
        if (*v) setenv("MAMBA_SSU_VERSION", v, 1); else unsetenv("MAMBA_SSU_VERSION");
        const size_t first = g_rows.size();
        for (int b : {1, 16, 256}) time_state_update<bf16>(b, 3072, 16);
        time_state_update<float>(256, 3072, 16);
        for (size_t i = first; i < g_rows.size(); ++i)
          g_rows[i].kernel += std::string(" ssu=") + (*v ? v : "default") + " pass" + std::to_string(rep);
      }
    unsetenv("MAMBA_SSU_VERSION");
    time_conv<bf16>(8, 2048, 3072, 4);
    time_conv<bf16>(8, 2048, 3072, 4);
    time_conv<float>(8, 2048, 3072, 4);
    print_table();
  } catch (const std::exception& e) {
    std::printf("timing failed: %s\n", e.what());
    ++g_failed;
  }
  std::printf("cuda-check: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}

// The scan forward / backward, conv1d, state update and norm checks of the default run.
void run_checks() {
  uint64_t seed = 1000;
  const ScanCase scan_cases[] = {
      {1, 4, 1, 16, 1, true, false, true, true, true},
      {2, 6, 7, 1, 2, false, true, true, true, true},
      {1, 8, 300, 16, 2, true, true, true, true, true},
      {1, 4, 512, 16, 1, true, true, true, true, true},
      {2, 4, 2049, 64, 1, true, true, true, true, true},
      {1, 4, 2049, 16, 2, false, false, false, false, false},
      {1, 2, 513, 256, 1, true, true, true, true, true},
      {2, 3, 4100, 3, 1, false, true, true, true, true},
      {1, 2, 0, 16, 1, true, true, true, true, true},
      // several blocks per group with a partial last block, aligned rows (l % 16 == 0)
      {2, 200, 256, 16, 2, true, true, true, true, true},
      {1, 130, 96, 8, 1, true, false, false, true, true},
      {1, 70, 40, 32, 1, false, true, true, false, true},
  };
  for (const auto& c : scan_cases) {
    check_scan<float>(c, ++seed);
    check_scan<bf16>(c, ++seed);
  }
  // v1 (the kernel for dstate > 64) forced on the last three cases (v2 ran here until branch
  // prune removed it).
  for (int i : {9, 10, 11}) {
    check_scan<float>(scan_cases[i], ++seed, 1);
    check_scan<bf16>(scan_cases[i], ++seed, 1);
  }
  // v3 with each split forced: n 8 / 16 / 32 / 64 (splits a state count cannot take are
  // clamped), several blocks per group with a partial last block (d 200, g 2: 100 channels per
  // group), l 168 (16-byte aligned rows, partial last tile) and l 77 (unaligned rows, tail);
  // n 5 and 3 (state counts between template sizes).
  const ScanCase v3_cases[] = {
      {2, 200, 168, 8, 2, true, true, true, true, true},   {2, 200, 168, 16, 2, true, true, true, true, true},
      {1, 200, 168, 32, 2, true, false, true, false, true}, {1, 200, 168, 64, 2, false, true, true, true, true},
      {2, 200, 77, 16, 2, true, true, false, true, true},   {1, 70, 77, 5, 1, true, true, true, true, false},
      {1, 36, 9, 3, 1, true, true, true, true, true},
  };
  for (int split : {1, 2, 4})
    for (const auto& c : v3_cases) {
      check_scan<float>(c, ++seed, 3, split);
      check_scan<bf16>(c, ++seed, 3, split);
    }
  // Backward against the CPU backward: l 1, l not a multiple of the 8-step chunk, batch 1,
  // dstate 1 / 3 / 5 / 16 / 32 / 64 / 256 (slices of 16), groups 1 and 2, several blocks per
  // group with a partial last block, with and without z / D / delta_bias / softplus / h0 / dfinal.
  const ScanCase bwd_cases[] = {
      {1, 4, 1, 16, 1, true, false, true, true, true},    {2, 6, 7, 1, 2, false, true, true, true, true},
      {1, 8, 300, 5, 2, true, true, true, true, true},    {2, 200, 77, 16, 2, true, true, true, true, true},
      {1, 130, 96, 16, 1, true, false, false, true, true}, {1, 70, 40, 64, 1, false, true, true, false, true},
      {2, 3, 4100, 3, 1, false, true, true, true, true},   {1, 4, 2049, 16, 2, false, false, false, false, false},
      {1, 2, 513, 256, 1, true, true, true, true, true},   {1, 2, 0, 16, 1, true, true, true, true, true},
      {3, 64, 168, 32, 1, true, true, true, true, false},  {1, 96, 1024, 16, 1, true, true, true, true, true},
      {2, 128, 2048, 16, 2, true, true, true, true, true}, {1, 33, 13, 8, 1, true, false, true, false, true},
  };
  {
    bool dfin = false;
    for (const auto& c : bwd_cases) {
      dfin = !dfin;
      for (int v : {1, 2}) {
        check_scan_bwd<float>(c, dfin, ++seed, v);
        check_scan_bwd<bf16>(c, !dfin, ++seed, v);
      }
      // the next four draws (once the removed v3's): v4, then two unused (the 4-channels-per-lane
      // variant's, removed: slower); dstate > 16: v4 must refuse with std::invalid_argument
      if (c.n <= 16) {
        check_scan_bwd<float>(c, dfin, ++seed, 4);
        check_scan_bwd<bf16>(c, !dfin, ++seed, 4);
      } else {
        seed += 2;
        check_scan_bwd_v4_refuses(c);
      }
      seed += 2;
    }
  }
  // v4 fed by the v6 forward's checkpoints (checkpoints_from_forward), own seeds (the draws of
  // the checks after this one stay as they were)
  {
    uint64_t s4 = 0x4b0d4000;
    bool dfin = true;
    for (const auto& c : bwd_cases) {
      if (c.n > 16) continue;
      dfin = !dfin;
      check_scan_bwd<float>(c, dfin, ++s4, 4, true);
      check_scan_bwd<bf16>(c, !dfin, ++s4, 4, true);
    }
  }
  // v4's lane layouts, each forced (1: 2 channels per lane, 64 per block; 2: 1, 32; the
  // automatic choice above takes 2 at these small shapes), alone and fed by the forward's
  // checkpoints, own seeds
  for (int bad : {-1, 3}) check_scan_bwd_v4_refuses(bwd_cases[0], bad);
  // a grid of 141 128-lane blocks (between one and two per SM on a 132-SM device): the bf16 forward
  // takes one-warp blocks by itself (not when it writes the backward's checkpoints); its output, and
  // the checkpoints feeding the backward
  {
    const ScanCase w1{1, 9024, 37, 16, 1, true, true, true, true, true};
    check_scan<bf16>(w1, 0x3a11, 6, 0);
    check_scan<float>(w1, 0x3a12, 6, 0);
    check_scan_bwd<bf16>(w1, true, 0x3a13, 4, true);
    check_scan_bwd<float>(w1, false, 0x3a14, 4, true);
  }
  {
    uint64_t s5 = 0x4b0d5000;
    bool dfin = false;
    for (const auto& c : bwd_cases) {
      if (c.n > 16) continue;
      dfin = !dfin;
      for (int lay : {1, 2})
        for (bool ck : {false, true}) {
          check_scan_bwd<float>(c, dfin, ++s5, 4, ck, lay);
          check_scan_bwd<bf16>(c, !dfin, ++s5, 4, ck, lay);
        }
    }
  }
  const ConvCase conv_cases[] = {
      {1, 1, 5, 4, true, true, false, false},   {2, 7, 33, 4, true, true, true, false},
      {1, 300, 130, 3, false, true, false, true}, {2, 2049, 64, 4, true, true, true, true},
      {1, 5, 8, 2, true, false, true, false},   {1, 17, 9, 1, true, true, false, false},
      // v2 (16-byte pieces along c): contiguous, c a multiple of 8, several time tiles
      {2, 2049, 64, 4, true, true, true, false}, {1, 77, 136, 3, false, true, true, false},
      // v3 (8-step tiles, halo loads): K 1 and 2, seqlen shorter than / not a multiple of a tile
      {1, 13, 16, 1, true, true, false, false}, {3, 9, 24, 2, false, true, true, false},
      {2, 5, 32, 4, true, true, true, false},
  };
  for (const char* ver : {"1", "9"}) {  // the scalar walk and the default 16-byte path
    setenv("MAMBA_CONV_VERSION", ver, 1);
    for (const auto& c : conv_cases) {
      check_conv<float>(c, ++seed);
      check_conv<bf16>(c, ++seed);
    }
  }
  unsetenv("MAMBA_CONV_VERSION");
  check_conv_update<float>(1, 5, 4, true, true, ++seed);
  check_conv_update<bf16>(3, 130, 4, true, true, ++seed);
  check_conv_update<float>(2, 33, 3, false, false, ++seed);
  check_conv_update<bf16>(1, 7, 1, true, false, ++seed);
  const UpdateCase upd_cases[] = {
      {1, 5, 1, 1, true, true, false},  {3, 48, 16, 2, true, true, true},
      {2, 64, 64, 1, false, false, false}, {4, 40, 16, 2, true, true, true},
      {1, 3, 256, 1, true, true, false},
      {5, 70, 16, 1, true, false, false},
      // v3 with 2 pieces per lane (>= 132 * 4096 lanes): partial last block, groups, strides
      {40, 3400, 16, 2, true, true, false}, {48, 3000, 16, 1, true, true, true},
      {2, 300, 32, 3, true, true, true},
  };
  for (const auto& c : upd_cases) {
    check_state_update<float>(c, ++seed);
    check_state_update<bf16>(c, ++seed);
  }
  for (int rows : {1, 3, 257})
    for (int dim : {1, 7, 768, 1536, 2049})
      for (bool res_on : {false, true}) {
        check_add_rms_norm<float>(rows, dim, res_on, ++seed);
        check_add_rms_norm<bf16>(rows, dim, res_on, ++seed);
      }
  check_add_rms_norm<float>(3, 20000, true, ++seed);  // past the register cache (16384)
  check_add_rms_norm<bf16>(3, 20001, true, ++seed);
  const int gated_shapes[][2] = {{1, 1}, {7, 7}, {768, 768}, {768, 64}, {1536, 1536}, {1536, 192},
                                 {2049, 2049}, {2049, 683}, {20000, 20000}, {20008, 5002}};
  for (int rows : {1, 3, 257})
    for (const auto& dg : gated_shapes) {
      if (rows == 257 && dg[0] >= 20000) continue;
      for (bool z_on : {false, true})
        for (bool nbg : {false, true}) {
          check_gated_rms_norm<float>(rows, dg[0], dg[1], z_on, nbg, false, ++seed);
          check_gated_rms_norm<bf16>(rows, dg[0], dg[1], z_on, nbg, false, ++seed);
        }
    }
  for (bool nbg : {false, true}) {  // unaligned row strides for x and z (element fallback)
    check_gated_rms_norm<float>(3, 768, 256, true, nbg, true, ++seed);
    check_gated_rms_norm<bf16>(3, 768, 256, true, nbg, true, ++seed);
    check_gated_rms_norm<bf16>(5, 1536, 1536, true, nbg, true, ++seed);
  }
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--decode-kernels") == 0 && k::cuda_device_count() > 0) return decode_kernels_main();
  // --bwd-once (before the --bw prefix below): the training path's backward (v4 fed by the v6 forward's checkpoints) at the
  // standard shape, for ncu (-k regex:scan_bwd_v4 -c 1: the first timed launch)
  // --bwd-once train: the 24 x 768 MambaLM's training shape (b8 d_inner 1536; the automatic layout)
  if (argc > 1 && std::strcmp(argv[1], "--bwd-once") == 0 && k::cuda_device_count() > 0) {
    const bool train = argc > 2 && std::strcmp(argv[2], "train") == 0;
    time_scan_bwd<bf16>(8, train ? 1536 : 3072, 2048, 16, 0.0, "", 4, true);
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "--bw-once") == 0 && k::cuda_device_count() > 0) return bw_once();
  if (argc > 1 && std::strncmp(argv[1], "--bw81", 6) == 0 && k::cuda_device_count() > 0)
    return bw81_main(std::strcmp(argv[1], "--bw81-check") != 0);
  if (argc > 1 && std::strncmp(argv[1], "--bw80", 6) == 0 && k::cuda_device_count() > 0)
    return bw80_main(std::strcmp(argv[1], "--bw80-check") != 0);
  if (argc > 1 && std::strncmp(argv[1], "--bw", 4) == 0 && k::cuda_device_count() > 0)
    return bw_main(std::strcmp(argv[1], "--bw-check") != 0);
  // Flags of the default run (any position): --check-only (no timings), --timings-only (no checks
  // but the SSD ones), --no-ssd (skip the SSD part, check_ssd.cu), --ssd-only (only it).
  auto has = [&](const char* f) {
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], f) == 0) return true;
    return false;
  };
  const bool check_only = has("--check-only"), timings_only = has("--timings-only"), no_ssd = has("--no-ssd");
  if (argc > 1 && std::strncmp(argv[1], "--fast", 6) == 0 && k::cuda_device_count() > 0)
    return fast_main(std::strcmp(argv[1], "--fast-check") != 0);
  if (argc > 1 && std::strcmp(argv[1], "--scan-once") == 0 && k::cuda_device_count() > 0) return scan_once(), 0;
  if (argc > 1 && std::strncmp(argv[1], "--scan6", 7) == 0 && k::cuda_device_count() > 0)
    return scan6_main(argv[1] + 7);  // --scan6, --scan6-check, --scan6-once
  if (argc > 1 && std::strncmp(argv[1], "--scan7", 7) == 0 && k::cuda_device_count() > 0)
    return scan7_main(argv[1] + 7);  // --scan7, --scan7-check, --scan7-once
  if (argc > 1 && std::strncmp(argv[1], "--scanseg", 9) == 0 && k::cuda_device_count() > 0)
    return scanseg_main(argv[1] + 9);  // --scanseg, --scanseg-check, --scanseg-time
  const int ndev = k::cuda_device_count();
  if (ndev == 0) {
    std::printf("cuda-check: no CUDA device (%s)\n", k::cuda_device_description(0).c_str());
    return 2;
  }
  std::printf("device 0: %s\n", k::cuda_device_description(0).c_str());
  if (!no_ssd && run_ssd_cuda_checks(argc, argv, g_passed, g_failed)) return g_failed ? 1 : 0;  // check_ssd.cu

  if (!timings_only) run_checks();
  std::printf("cuda-check: %d passed, %d failed\n", g_passed, g_failed);
  if (check_only) return g_failed ? 1 : 0;

  try {
    time_copy();
    // v3 and the automatic choice (v6 with its split heuristic) side by side.
    double fwd[4] = {0, 0, 0, 0};  // auto forward: bf16 / f32 at l 2048, bf16 / f32 at l 8192
    for (int v : {3, 0}) fwd[0] = time_scan<bf16>(8, 3072, 2048, 16, v);
    time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", 1);
    for (int v : {2, 2, 0}) time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", v);  // twice: the spread
    // Stage costs by leaving one out (wrong results; timing only): dB / dC channel sums,
    // pass A (checkpoints), the chunk recompute.
    for (const char* sk : {"1", "2", "4"}) {
      setenv("MAMBA_SCAN_BWD_SKIP", sk, 1);
      time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], sk[0] == '1' ? " -sums" : sk[0] == '2' ? " -passA" : " -recompute", 2);
    }
    unsetenv("MAMBA_SCAN_BWD_SKIP");
    // v4 (four states x 2 channels per lane): twice (the spread), with the forward's checkpoints
    // (the training path), without the dB / dC sums (wrong results); v2 with the forward's
    // checkpoints beside it
    for (int r = 0; r < 2; ++r) time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", 4);
    time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", 4, true);
    // the layouts with the forward's checkpoints: the standard shape and the 24 x 768 MambaLM's
    // training shape (b8 d_inner 1536 l2048)
    for (int lay : {1, 2}) time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", 4, true, lay);
    {
      const double f8 = time_scan<bf16>(8, 1536, 2048, 16, 0), f4 = time_scan<bf16>(4, 1536, 2048, 16, 0);
      for (int s : {2, 4}) time_scan<bf16>(8, 1536, 2048, 16, 6, s);  // the forward's lanes per channel there
      for (int b : {8, 4}) time_scan<bf16>(b, 1536, 2048, 16, 6, 2, 32);  // one-warp blocks: 4x the blocks
      for (int lay : {1, 2, 1, 2}) time_scan_bwd<bf16>(8, 1536, 2048, 16, f8, "", 4, true, lay);
      setenv("MAMBA_SCAN_BWD_SKIP", "1", 1);  // layout 2 without the dB / dC sums (wrong results)
      time_scan_bwd<bf16>(8, 1536, 2048, 16, f8, " -sums", 4, true, 2);
      unsetenv("MAMBA_SCAN_BWD_SKIP");
      for (int lay : {1, 2}) time_scan_bwd<bf16>(4, 1536, 2048, 16, f4, "", 4, true, lay);
    }
    time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], "", 2, true);
    setenv("MAMBA_SCAN_BWD_SKIP", "1", 1);
    time_scan_bwd<bf16>(8, 3072, 2048, 16, fwd[0], " -sums", 4, true);
    unsetenv("MAMBA_SCAN_BWD_SKIP");
    for (int s : {1, 2, 4}) time_scan<bf16>(8, 3072, 2048, 16, 3, s);
    for (int v : {3, 0}) fwd[1] = time_scan<float>(8, 3072, 2048, 16, v);
    time_scan_bwd<float>(8, 3072, 2048, 16, fwd[1], "", 1);
    time_scan_bwd<float>(8, 3072, 2048, 16, fwd[1], "", 2);
    time_scan_bwd<float>(8, 3072, 2048, 16, fwd[1], "", 4);
    time_scan_bwd<float>(8, 3072, 2048, 16, fwd[1], "", 4, true);
    for (int s : {2, 4}) time_scan<float>(8, 3072, 2048, 16, 3, s);
    for (int v : {3, 0}) fwd[2] = time_scan<bf16>(8, 3072, 8192, 16, v);
    time_scan_bwd<bf16>(8, 3072, 8192, 16, fwd[2], "", 2);
    time_scan_bwd<bf16>(8, 3072, 8192, 16, fwd[2], "", 4);
    time_scan_bwd<bf16>(8, 3072, 8192, 16, fwd[2], "", 4, true);
    for (int v : {3, 0}) fwd[3] = time_scan<float>(8, 3072, 8192, 16, v);
    time_scan_bwd<float>(8, 3072, 8192, 16, fwd[3], "", 2);
    time_scan_bwd<float>(8, 3072, 8192, 16, fwd[3], "", 4);
    for (int v : {3, 0}) time_scan<bf16>(1, 2048, 2048, 16, v);
    for (int v : {3, 0}) time_scan<bf16>(64, 3072, 512, 16, v);
    time_conv<bf16>(8, 2048, 3072, 4);
    for (int b : {1, 16, 256}) time_state_update<bf16>(b, 3072, 16);
    for (int b : {1, 16, 256}) time_state_update<float>(b, 3072, 16);
    // The Mamba-2 decode update at the standard shape: 48 heads of 64, d_state 128.
    for (int b : {1, 16, 256}) time_ssd_update<bf16>(b, 48, 64, 128);
    time_ssd_update<float>(256, 48, 64, 128);
    time_add_rms_norm<bf16>(16384, 768);
    time_add_rms_norm<bf16>(2048, 3072);
    time_gated_rms_norm<bf16>(16384, 768, 768, false);
    time_gated_rms_norm<bf16>(2048, 3072, 3072, false);
    time_gated_rms_norm<bf16>(2048, 3072, 3072, true);
    time_gated_rms_norm<bf16>(2048, 3072, 384, false);
    // The linear layers of a 24 x 768 MambaLM step on 8 x 2048 tokens (d_inner 1536, vocab 50280).
    time_gemm(16384, 3072, 768, "in_proj");
    time_gemm(16384, 768, 1536, "out_proj");
    time_gemm(16384, 50280, 768, "lm_head");
    print_table();
  } catch (const std::exception& e) {
    std::printf("timing failed: %s\n", e.what());
    ++g_failed;
  }
  std::printf("cuda-check: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
