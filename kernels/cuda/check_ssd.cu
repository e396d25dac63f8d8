// SSD (Mamba-2) checks and timings for mamba-cuda-check: ssd_chunk_scan_cuda against the CPU
// reference ssd_scan_ref (mamba/kernels/ssd.h) on fresh random inputs at awkward sizes, then the
// standard shape timed with CUDA events.
//
// Inputs are rounded to the element type first so the reference sees what the GPU sees; outputs
// are poisoned with 0xFF bytes (NaN) before each run; pass when ||out - ref|| / ||ref|| < 1e-3
// (f32) or 1e-2 (bf16) and no output is NaN. z gating (y * silu(z)) is applied to the reference
// output on the CPU (the CPU SSD has no z).
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
#include <stdexcept>
#include <string>
#include <vector>

#include "check_report.h"
#include "check_ssd.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/perf_record.h"
#include "mamba/kernels/cuda/ssd_cuda.h"
#include "mamba/kernels/ssd.h"

namespace {

namespace k = mamba::kernels;
namespace kc = mamba::kernels::cuda;
using bf16 = __nv_bfloat16;

int* g_pass = nullptr;
int* g_fail = nullptr;

template <class T> const char* tname();
template <> const char* tname<float>() { return "f32"; }
template <> const char* tname<bf16>() { return "bf16"; }
template <class T> double tol() { return std::is_same_v<T, float> ? 1e-3 : 1e-2; }
template <class T> T to_t(float v);
template <> float to_t<float>(float v) { return v; }
template <> bf16 to_t<bf16>(float v) { return __float2bfloat16_rn(v); }
float to_f(float v) { return v; }
float to_f(bf16 v) { return __bfloat162float(v); }

template <class T>
struct Buf {
  T* ptr = nullptr;
  size_t count = 0;
  explicit Buf(size_t n) : count(n) {
    if (n) MAMBA_CUDA_CHECK("cudaMalloc", cudaMalloc(&ptr, n * sizeof(T)));
  }
  ~Buf() { if (ptr) cudaFree(ptr); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void poison() { if (ptr) MAMBA_CUDA_CHECK("poison", cudaMemset(ptr, 0xFF, count * sizeof(T))); }
};

template <class T>
void upload_rounded(Buf<T>& d, std::vector<float>& v) {
  std::vector<T> t(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    t[i] = to_t<T>(v[i]);
    v[i] = to_f(t[i]);
  }
  if (!v.empty()) MAMBA_CUDA_CHECK("upload", cudaMemcpy(d.ptr, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
std::vector<float> download(const Buf<T>& d) {
  std::vector<T> t(d.count);
  if (d.count) MAMBA_CUDA_CHECK("download", cudaMemcpy(t.data(), d.ptr, t.size() * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> v(t.size());
  for (size_t i = 0; i < t.size(); ++i) v[i] = to_f(t[i]);
  return v;
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t s) : gen(s) {}
  std::vector<float> normal(size_t n, float mean, float sd) {
    std::normal_distribution<float> d(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
};

// The shared helpers (check_report.h), counting into the caller's passed / failed.
void report(const std::string& name, const std::vector<float>& out, const std::vector<float>& ref, double t,
            const std::vector<char>& mask = {}) {
  kc::check::report(*g_pass, *g_fail, name, out, ref, t, mask, 84);
}
void run_case(const std::string& name, const std::function<void()>& fn) { kc::check::run_case(*g_fail, name, fn); }

struct SsdCase {
  int b, l, h, p, n, g;
  bool D, z, h0, softplus, bias;
  int pad;  // extra elements per time row of x, y, z and of B, C (8: still 16-byte rows; 1: not)
};

std::string case_name(const SsdCase& c) {
  char s[200];
  std::snprintf(s, sizeof s, "b%d l%d h%d p%d n%d g%d%s%s%s%s%s%s", c.b, c.l, c.h, c.p, c.n, c.g, c.D ? " D" : "",
                c.z ? " z" : "", c.h0 ? " h0" : "", c.softplus ? " sp" : "", c.bias ? " bias" : "",
                c.pad ? (" pad" + std::to_string(c.pad)).c_str() : "");
  return s;
}


float silu_ref(float v) { return v / (1.f + std::exp(-v)); }

// Host copies of one case's inputs (rounded to T) and their device twins.
template <class T>
struct SsdInputs {
  SsdCase c;
  int64_t x_st, x_sb, bc_st, bc_sb;
  std::vector<float> x, dt, B, C, z, A, D, bias, h0;
  Buf<T> x_d, dt_d, B_d, C_d, z_d;
  Buf<float> A_d, D_d, bias_d, h0_d;
  SsdInputs(const SsdCase& cc, Rng& rng)
      : c(cc),
        x_st(int64_t(cc.h) * cc.p + cc.pad), x_sb(int64_t(cc.l) * x_st),
        bc_st(int64_t(cc.g) * cc.n + cc.pad), bc_sb(int64_t(cc.l) * bc_st),
        x_d(size_t(cc.b) * x_sb), dt_d(size_t(cc.b) * cc.l * cc.h), B_d(size_t(cc.b) * bc_sb), C_d(size_t(cc.b) * bc_sb),
        z_d(cc.z ? size_t(cc.b) * x_sb : 0), A_d(cc.h), D_d(cc.h), bias_d(cc.h),
        h0_d(cc.h0 ? size_t(cc.b) * cc.h * cc.p * cc.n : 0) {
    x = rng.normal(size_t(c.b) * x_sb, 0.f, 1.f);
    dt = rng.normal(size_t(c.b) * c.l * c.h, c.softplus ? -1.f : 0.3f, c.softplus ? 1.f : 0.1f);
    if (!c.softplus)
      for (auto& v : dt) v = std::fabs(v) + 0.01f;
    B = rng.normal(size_t(c.b) * bc_sb, 0.f, 1.f);
    C = rng.normal(size_t(c.b) * bc_sb, 0.f, 1.f);
    if (c.z) z = rng.normal(size_t(c.b) * x_sb, 0.f, 1.5f);
    A = rng.uniform(c.h, -4.f, -0.5f);
    D = rng.normal(c.h, 0.f, 1.f);
    // Without softplus dt' = dt + bias must stay > 0 (as softplus guarantees): with a negative bias
    // dt' A > 0 makes the state grow by up to exp(0.8) per step and overflow f32 past ~110 steps
    // (round 2 of branch ssd2: NaN at l 257 in the GPU output and inf in the reference), which
    // tests nothing. Same draws, bias in [0, 0.5) then.
    bias = rng.uniform(c.h, c.softplus ? -0.5f : 0.f, 0.5f);
    if (c.h0) h0 = rng.normal(size_t(c.b) * c.h * c.p * c.n, 0.f, 0.5f);
    upload_rounded(x_d, x);
    upload_rounded(dt_d, dt);
    upload_rounded(B_d, B);
    upload_rounded(C_d, C);
    if (c.z) upload_rounded(z_d, z);
    upload_rounded(A_d, A);
    upload_rounded(D_d, D);
    upload_rounded(bias_d, bias);
    if (c.h0) upload_rounded(h0_d, h0);
  }
  k::SsdParams cpu() const {
    k::SsdParams q;
    q.batch = c.b; q.seqlen = c.l; q.nheads = c.h; q.headdim = c.p; q.dstate = c.n; q.ngroups = c.g;
    q.chunk_size = 64;
    q.x = x.data(); q.x_sb = x_sb; q.x_st = x_st; q.x_sh = c.p;
    q.dt = dt.data(); q.dt_sb = int64_t(c.l) * c.h; q.dt_st = c.h; q.dt_sh = 1;
    q.B = B.data(); q.B_sb = bc_sb; q.B_st = bc_st; q.B_sg = c.n;
    q.C = C.data(); q.C_sb = bc_sb; q.C_st = bc_st; q.C_sg = c.n;
    q.A = A.data(); q.D = c.D ? D.data() : nullptr; q.dt_bias = c.bias ? bias.data() : nullptr;
    q.dt_softplus = c.softplus;
    q.initial_state = c.h0 ? h0.data() : nullptr;
    return q;
  }
  kc::SsdCudaParams<T> gpu() const {
    kc::SsdCudaParams<T> q;
    q.batch = c.b; q.seqlen = c.l; q.nheads = c.h; q.headdim = c.p; q.dstate = c.n; q.ngroups = c.g;
    q.x = x_d.ptr; q.x_sb = x_sb; q.x_st = x_st; q.x_sh = c.p;
    q.dt = dt_d.ptr; q.dt_sb = int64_t(c.l) * c.h; q.dt_st = c.h; q.dt_sh = 1;
    q.B = B_d.ptr; q.B_sb = bc_sb; q.B_st = bc_st; q.B_sg = c.n;
    q.C = C_d.ptr; q.C_sb = bc_sb; q.C_st = bc_st; q.C_sg = c.n;
    q.A = A_d.ptr; q.D = c.D ? D_d.ptr : nullptr; q.dt_bias = c.bias ? bias_d.ptr : nullptr;
    q.dt_softplus = c.softplus;
    q.z = c.z ? z_d.ptr : nullptr; q.z_sb = x_sb; q.z_st = x_st; q.z_sh = c.p;
    q.initial_state = c.h0 ? h0_d.ptr : nullptr;
    q.y_sb = x_sb; q.y_st = x_st; q.y_sh = c.p;
    return q;
  }
  // Valid (written) entries of a [b, t, h, p] buffer with x's strides.
  std::vector<char> x_mask() const {
    std::vector<char> m(size_t(c.b) * x_sb, 0);
    for (int bb = 0; bb < c.b; ++bb)
      for (int t = 0; t < c.l; ++t)
        for (int i = 0; i < c.h * c.p; ++i) m[size_t(bb) * x_sb + size_t(t) * x_st + i] = 1;
    return m;
  }
};

template <class T>
void check_fwd(const SsdCase& c, int version, uint64_t seed) {
  const std::string name = std::string("ssd fwd ") + tname<T>() + " v" + std::to_string(version) + " " + case_name(c);
  run_case(name, [&] {
    Rng rng(seed);
    SsdInputs<T> in(c, rng);
    // Reference: y without z, then y * silu(z).
    std::vector<float> yref(size_t(c.b) * in.x_sb, 0.f), fref(size_t(c.b) * c.h * c.p * c.n);
    k::SsdParams q = in.cpu();
    q.y = yref.data(); q.y_sb = in.x_sb; q.y_st = in.x_st; q.y_sh = c.p;
    q.final_state = fref.data();
    k::ssd_scan_ref(q);
    if (c.z)
      for (size_t i = 0; i < yref.size(); ++i) yref[i] *= silu_ref(in.z[i]);
    Buf<T> y(size_t(c.b) * in.x_sb);
    Buf<float> fin(fref.size());
    y.poison();
    fin.poison();
    kc::SsdCudaParams<T> g = in.gpu();
    g.y = y.ptr; g.final_state = fin.ptr; g.version = version;
    const int ran = kc::ssd_cuda_kernel_version(g);
    kc::ssd_chunk_scan_cuda<T>(g, nullptr);
    MAMBA_CUDA_CHECK("ssd fwd", cudaDeviceSynchronize());
    const std::string tag = name + " (ran v" + std::to_string(ran) + ")";
    if (c.l > 0) report(tag + " y", download(y), yref, tol<T>(), in.x_mask());
    report(tag + " final", download(fin), fref, tol<T>());
  });
}


// Backward against ssd_scan_bwd_ref: the reference gets dy = dout * silu(z) (or dout) and the gate's
// dz = dout * y_pre * silu'(z) is formed on the CPU from the reference forward's y_pre.
// h0_bf16: the initial state's draw rounded to bf16 values (the kernel keeps the state entering
// a chunk as a bf16 mma operand), which takes that rounding out of the comparison.
void check_bwd(const SsdCase& c, bool dfinal_on, uint64_t seed, bool h0_bf16 = false) {
  const std::string name = std::string("ssd bwd bf16 ") + case_name(c) + (dfinal_on ? " dfinal" : "") + (h0_bf16 ? " h0 in bf16" : "");
  run_case(name, [&] {
    Rng rng(seed);
    SsdInputs<bf16> in(c, rng);
    if (h0_bf16 && c.h0) {
      for (auto& v : in.h0) v = to_f(to_t<bf16>(v));
      upload_rounded(in.h0_d, in.h0);
    }
    const size_t nx = size_t(c.b) * in.x_sb, nst = size_t(c.b) * c.h * c.p * c.n, ndt = size_t(c.b) * c.l * c.h;
    const size_t nbc = size_t(c.b) * c.l * c.g * c.n;
    std::vector<float> dout = rng.normal(nx, 0.f, 1.f), dfin = dfinal_on ? rng.normal(nst, 0.f, 0.5f) : std::vector<float>();
    Buf<bf16> dout_d(nx);
    Buf<float> dfin_d(dfin.size());
    upload_rounded(dout_d, dout);
    if (dfinal_on) upload_rounded(dfin_d, dfin);
    // Reference.
    k::SsdParams q = in.cpu();
    std::vector<float> ypre(nx, 0.f), dy = dout, dzref(nx, 0.f);
    if (c.z) {
      q.y = ypre.data(); q.y_sb = in.x_sb; q.y_st = in.x_st; q.y_sh = c.p;
      k::ssd_scan_ref(q);
      for (size_t i = 0; i < nx; ++i) {
        const float z = in.z[i], sg = 1.f / (1.f + std::exp(-z));
        dy[i] = dout[i] * z * sg;
        dzref[i] = dout[i] * ypre[i] * sg * (1.f + z * (1.f - sg));
      }
    }
    // The reference wants dB / dC with bc strides; compare on [b, t, g, n] contiguous.
    std::vector<float> rdx(nx, 0.f), rddt(ndt), rdB(nbc), rdC(nbc), rdA(c.h), rdD(c.h), rdbias(c.h), rdh0(nst);
    k::SsdGrads gr;
    gr.dx = rdx.data(); gr.dx_sb = in.x_sb; gr.dx_st = in.x_st; gr.dx_sh = c.p;
    gr.ddt = rddt.data(); gr.ddt_sb = int64_t(c.l) * c.h; gr.ddt_st = c.h; gr.ddt_sh = 1;
    gr.dB = rdB.data(); gr.dB_sb = int64_t(c.l) * c.g * c.n; gr.dB_st = int64_t(c.g) * c.n; gr.dB_sg = c.n;
    gr.dC = rdC.data(); gr.dC_sb = gr.dB_sb; gr.dC_st = gr.dB_st; gr.dC_sg = c.n;
    gr.dA = rdA.data(); gr.dD = rdD.data(); gr.ddt_bias = rdbias.data(); gr.dinitial_state = rdh0.data();
    k::ssd_scan_bwd_ref(q, dy.data(), in.x_sb, in.x_st, c.p, dfinal_on ? dfin.data() : nullptr, gr);
    // GPU.
    Buf<bf16> gdx(nx), gddt(ndt), gdz(c.z ? nx : 0);
    Buf<float> gdB(nbc), gdC(nbc), gdA(c.h), gdD(c.h), gdbias(c.h), gdh0(nst);
    for (auto* b : {&gdx, &gddt, &gdz}) b->poison();
    for (auto* b : {&gdB, &gdC, &gdA, &gdD, &gdbias, &gdh0}) b->poison();
    kc::SsdBwdCudaParams<bf16> g;
    g.fwd = in.gpu();
    g.dout = dout_d.ptr; g.dout_sb = in.x_sb; g.dout_st = in.x_st; g.dout_sh = c.p;
    g.dfinal_state = dfinal_on ? dfin_d.ptr : nullptr;
    g.dx = gdx.ptr; g.dx_sb = in.x_sb; g.dx_st = in.x_st; g.dx_sh = c.p;
    g.ddt = gddt.ptr; g.ddt_sb = int64_t(c.l) * c.h; g.ddt_st = c.h; g.ddt_sh = 1;
    g.dB = gdB.ptr; g.dC = gdC.ptr;
    g.dz = c.z ? gdz.ptr : nullptr; g.dz_sb = in.x_sb; g.dz_st = in.x_st; g.dz_sh = c.p;
    g.dA = gdA.ptr; g.dD = gdD.ptr; g.ddt_bias = gdbias.ptr; g.dinitial_state = gdh0.ptr;
    const size_t ws = kc::ssd_chunk_scan_bwd_cuda_workspace_bytes(g);
    Buf<char> wsb(ws);
    g.workspace = wsb.ptr; g.workspace_bytes = ws;
    kc::ssd_chunk_scan_bwd_cuda(g, nullptr);
    MAMBA_CUDA_CHECK("ssd bwd", cudaDeviceSynchronize());
    const double t = 1e-2;
    const std::vector<char> m = in.x_mask();
    report(name + " dx", download(gdx), rdx, t, m);
    report(name + " ddt", download(gddt), rddt, t);
    report(name + " dB", download(gdB), rdB, t);
    report(name + " dC", download(gdC), rdC, t);
    if (c.z) report(name + " dz", download(gdz), dzref, t, m);
    const std::vector<float> gA = download(gdA);
    report(name + " dA", gA, rdA, t);
    if (c.l <= 3)  // the short cases: the values, for the dA analysis (NOTES.md, branch mends)
      for (int hh = 0; hh < c.h; ++hh) std::printf("     dA[%d] gpu %.7g ref %.7g\n", hh, gA[hh], rdA[hh]);
    report(name + " dD", download(gdD), rdD, t);
    report(name + " ddt_bias", download(gdbias), rdbias, t);
    report(name + " dinitial_state", download(gdh0), rdh0, t);
  });
}

// ---- timing -------------------------------------------------------------------------------------

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27; x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
template <class T>
__global__ void fill_kernel(T* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float r = float(mix64(seed * 0x9e3779b97f4a7c15ull + i) >> 40) * (1.f / 16777216.f);
    const float v = lo + (hi - lo) * r;
    if constexpr (std::is_same_v<T, float>) p[i] = v; else p[i] = __float2bfloat16_rn(v);
  }
}
template <class T>
void fill(Buf<T>& b, uint64_t seed, float lo, float hi) {
  if (!b.count) return;
  fill_kernel<T><<<1024, 256>>>(b.ptr, b.count, seed, lo, hi);
  MAMBA_CUDA_CHECK_LAUNCH("fill");
}

double median_us(const std::function<void()>& fn, int samples = 25, int warmup = 3) {
  if (samples < 3) warmup = 0;  // profiling runs (--ssd-once): as few launches as possible
  cudaEvent_t e0, e1;
  MAMBA_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e0));
  MAMBA_CUDA_CHECK("cudaEventCreate", cudaEventCreate(&e1));
  for (int i = 0; i < warmup; ++i) fn();
  MAMBA_CUDA_CHECK("warm-up", cudaDeviceSynchronize());
  std::vector<double> t;
  for (int s = 0; s < samples; ++s) {
    MAMBA_CUDA_CHECK("cudaEventRecord", cudaEventRecord(e0));
    fn();
    MAMBA_CUDA_CHECK("cudaEventRecord", cudaEventRecord(e1));
    MAMBA_CUDA_CHECK("cudaEventSynchronize", cudaEventSynchronize(e1));
    float ms = 0;
    MAMBA_CUDA_CHECK("cudaEventElapsedTime", cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(1e3 * ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The issue's figures (H100, the reference Triton kernels): forward 989 us, forward + backward
// 5235 us; tensor-core floor about 295 us.
constexpr double kRefFwdUs = 989, kRefFwdBwdUs = 5235, kFloorUs = 295;
// The tensor-core version (the automatic choice); the slower ones were removed (branch prune).
constexpr int kTc = 20;

template <class T>
double time_fwd(int b, int l, int h, int p, int n, bool z_on, int version, int samples = 25) {
  const size_t nx = size_t(b) * l * h * p, nbc = size_t(b) * l * n, ndt = size_t(b) * l * h;
  Buf<T> x(nx), y(nx), z(z_on ? nx : 0), dt(ndt), B(nbc), C(nbc);
  Buf<float> A(h), D(h), bias(h), fin(size_t(b) * h * p * n);
  fill(x, 1, -1.f, 1.f);
  fill(z, 2, -2.f, 2.f);
  fill(dt, 3, -3.f, -1.f);
  fill(B, 4, -1.f, 1.f);
  fill(C, 5, -1.f, 1.f);
  fill(A, 6, -8.f, -1.f);
  fill(D, 7, -1.f, 1.f);
  fill(bias, 8, -0.5f, 0.f);
  kc::SsdCudaParams<T> q;
  q.batch = b; q.seqlen = l; q.nheads = h; q.headdim = p; q.dstate = n; q.ngroups = 1;
  q.x = x.ptr; q.x_sb = int64_t(l) * h * p; q.x_st = int64_t(h) * p; q.x_sh = p;
  q.y = y.ptr; q.y_sb = q.x_sb; q.y_st = q.x_st; q.y_sh = p;
  q.z = z_on ? z.ptr : nullptr; q.z_sb = q.x_sb; q.z_st = q.x_st; q.z_sh = p;
  q.dt = dt.ptr; q.dt_sb = int64_t(l) * h; q.dt_st = h; q.dt_sh = 1;
  q.B = B.ptr; q.B_sb = int64_t(l) * n; q.B_st = n; q.B_sg = n;
  q.C = C.ptr; q.C_sb = q.B_sb; q.C_st = n; q.C_sg = n;
  q.A = A.ptr; q.D = D.ptr; q.dt_bias = bias.ptr; q.dt_softplus = true;
  q.final_state = fin.ptr;
  q.version = version;
  const int ran = kc::ssd_cuda_kernel_version(q);
  const double us = median_us([&] { kc::ssd_chunk_scan_cuda<T>(q, nullptr); }, samples);
  // Executed tensor-core work per (b, h, token): C S^T and the state update (2 x 2 N P)
  // plus the intra-chunk blocks (10 blocks of 16 x 16 per 64-step chunk: 80 (N + P)).
  const double flops = double(b) * l * h * (4.0 * n * p + 80.0 * (n + p));
  const double bytes = double(sizeof(T)) * (2.0 * nx + (z_on ? nx : 0) + 2.0 * nbc + ndt);
  const char* skip = std::getenv("MAMBA_SSD_SKIP");
  std::printf("  time ssd fwd %-4s v%d%s b%d l%d h%d p%d n%d%s%s%s: %8.1f us  %6.1f TFLOP/s (mma work)  %6.0f GB/s  "
              "floor/time %.2f  ref/time %.2f\n",
              tname<T>(), ran, ran != version && version ? " (fallback)" : "", b, l, h, p, n, z_on ? " z" : "",
              skip ? " SKIP=" : "", skip ? skip : "", us, flops / us * 1e-6, bytes / us * 1e-3, kFloorUs / us, kRefFwdUs / us);
  char shape[128];
  std::snprintf(shape, sizeof shape, "b%d l%d h%d p%d n%d chunk 64%s%s%s", b, l, h, p, n, z_on ? " z" : "", skip ? " SKIP=" : "",
                skip ? skip : "");
  kc::perf_record("ssd fwd v" + std::to_string(ran), shape, tname<T>(), us, bytes, std::is_same_v<T, float> ? 0.0 : flops, "tc");
  return us;
}


double time_bwd(int b, int l, int h, int p, int n, bool z_on, double fwd_us) {
  const size_t nx = size_t(b) * l * h * p, nbc = size_t(b) * l * n, ndt = size_t(b) * l * h;
  Buf<bf16> x(nx), z(z_on ? nx : 0), dt(ndt), B(nbc), C(nbc), dout(nx), dx(nx), ddt(ndt), dz(z_on ? nx : 0);
  Buf<float> A(h), D(h), bias(h), dB(nbc), dC(nbc), dA(h), dD(h), dbias(h), dh0(size_t(b) * h * p * n);
  fill(x, 11, -1.f, 1.f);
  fill(z, 12, -2.f, 2.f);
  fill(dt, 13, -3.f, -1.f);
  fill(B, 14, -1.f, 1.f);
  fill(C, 15, -1.f, 1.f);
  fill(dout, 16, -1.f, 1.f);
  fill(A, 17, -8.f, -1.f);
  fill(D, 18, -1.f, 1.f);
  fill(bias, 19, -0.5f, 0.f);
  kc::SsdBwdCudaParams<bf16> g;
  kc::SsdCudaParams<bf16>& q = g.fwd;
  q.batch = b; q.seqlen = l; q.nheads = h; q.headdim = p; q.dstate = n; q.ngroups = 1;
  q.x = x.ptr; q.x_sb = int64_t(l) * h * p; q.x_st = int64_t(h) * p; q.x_sh = p;
  q.z = z_on ? z.ptr : nullptr; q.z_sb = q.x_sb; q.z_st = q.x_st; q.z_sh = p;
  q.dt = dt.ptr; q.dt_sb = int64_t(l) * h; q.dt_st = h; q.dt_sh = 1;
  q.B = B.ptr; q.B_sb = int64_t(l) * n; q.B_st = n; q.B_sg = n;
  q.C = C.ptr; q.C_sb = q.B_sb; q.C_st = n; q.C_sg = n;
  q.A = A.ptr; q.D = D.ptr; q.dt_bias = bias.ptr; q.dt_softplus = true;
  g.dout = dout.ptr; g.dout_sb = q.x_sb; g.dout_st = q.x_st; g.dout_sh = p;
  g.dx = dx.ptr; g.dx_sb = q.x_sb; g.dx_st = q.x_st; g.dx_sh = p;
  g.ddt = ddt.ptr; g.ddt_sb = q.dt_sb; g.ddt_st = h; g.ddt_sh = 1;
  g.dz = z_on ? dz.ptr : nullptr; g.dz_sb = q.x_sb; g.dz_st = q.x_st; g.dz_sh = p;
  g.dB = dB.ptr; g.dC = dC.ptr; g.dA = dA.ptr; g.dD = dD.ptr; g.ddt_bias = dbias.ptr; g.dinitial_state = dh0.ptr;
  const size_t ws = kc::ssd_chunk_scan_bwd_cuda_workspace_bytes(g);
  Buf<char> wsb(ws);
  g.workspace = wsb.ptr; g.workspace_bytes = ws;
  const double us = median_us([&] { kc::ssd_chunk_scan_bwd_cuda(g, nullptr); });
  // bytes: x, z, dt, B, C, dout read, dx, dz, ddt written (bf16), dB, dC written (f32); FLOPs: each
  // of the forward's products differentiated by both operands, twice the forward's tensor work.
  const double bytes = 2.0 * (2.0 * nx + (z_on ? 2.0 * nx : 0) + 2.0 * ndt + 2.0 * nbc + nx) + 8.0 * nbc;
  const double flops = 2.0 * double(b) * l * h * (4.0 * n * p + 80.0 * (n + p));
  char shape[128];
  std::snprintf(shape, sizeof shape, "b%d l%d h%d p%d n%d chunk 64%s", b, l, h, p, n, z_on ? " z" : "");
  kc::perf_record("ssd bwd", shape, "bf16", us, bytes, flops, "tc");
  const double fwd_bytes = 2.0 * (2.0 * nx + (z_on ? nx : 0) + 2.0 * nbc + ndt);
  kc::perf_record("ssd fwd+bwd", shape, "bf16", us + fwd_us, bytes + fwd_bytes, 1.5 * flops, "tc");
  std::printf("  time ssd bwd bf16 b%d l%d h%d p%d n%d%s: %8.1f us  fwd+bwd %8.1f us  (reference fwd+bwd %.0f: ref/time %.2f)  "
              "workspace %.0f MB\n",
              b, l, h, p, n, z_on ? " z" : "", us, us + fwd_us, kRefFwdBwdUs, kRefFwdBwdUs / (us + fwd_us), ws / 1e6);
  std::fflush(stdout);
  return us;
}

// Every SSD check (forward versions, the automatic choice, argument errors, backward).
void ssd_checks() {
  uint64_t seed = 0x55d;
  // Awkward sizes: l 1, 63, 64, 65, 255, 257 (not a multiple of the 64-step chunk), batch 1,
  // heads 1 and 3, dstate 16 / 32 / 64 / 128 (tensor cores) and 8 / 100 / 256 (sequential only),
  // groups 1 and 2, with / without D, z, initial state, softplus, dt_bias, padded rows.
  const SsdCase cases[] = {
      {1, 1, 1, 64, 128, 1, true, true, true, true, true, 0},
      {1, 255, 3, 64, 128, 1, true, false, true, true, true, 0},
      {2, 257, 2, 64, 128, 2, false, true, false, true, false, 0},
      {1, 257, 4, 64, 16, 2, true, true, true, false, true, 0},
      {2, 63, 3, 64, 16, 1, true, false, false, true, true, 8},
      {1, 64, 1, 64, 32, 1, false, false, true, true, true, 0},
      {1, 65, 2, 64, 64, 1, true, true, true, true, false, 8},
      {2, 200, 6, 64, 128, 3, true, true, true, true, true, 8},
      {1, 130, 3, 64, 128, 1, true, true, true, true, true, 1},   // rows not 16-byte aligned: v1
      {1, 0, 2, 64, 128, 1, true, true, true, true, true, 0},     // l 0: final = initial
      {1, 100, 3, 32, 8, 1, true, true, true, true, true, 0},     // shapes only v1 takes
      {2, 77, 2, 5, 100, 2, true, false, true, true, true, 0},
      {1, 40, 1, 128, 256, 1, true, true, true, true, true, 0},
      {1, 1100, 2, 64, 128, 1, true, true, true, true, true, 0},  // many chunks
      // v5 (3 heads of a group per block): groups of 3 heads, batch 2, many chunks, partial last chunk
      {2, 300, 6, 64, 128, 2, true, true, true, true, true, 0},
      {1, 1100, 3, 64, 64, 1, true, false, true, true, false, 8},
      {1, 77, 9, 64, 32, 3, false, true, false, false, true, 0},
      {2, 64, 3, 64, 16, 1, true, true, true, true, true, 0},
      // branch ssd2: lengths 2 and 3, chunk tails 127 / 129 / 191, with and without z
      {1, 2, 1, 64, 128, 1, true, true, true, true, true, 0},
      {2, 3, 2, 64, 64, 1, true, false, true, true, false, 0},
      {1, 3, 3, 64, 16, 3, false, true, false, true, true, 8},
      {1, 129, 2, 64, 128, 1, true, false, false, true, true, 0},
      {2, 127, 2, 64, 32, 2, true, true, true, false, true, 0},
      {1, 191, 4, 64, 128, 2, true, true, true, true, true, 8},
  };
  for (const auto& c : cases) {
    check_fwd<float>(c, 1, ++seed);
    check_fwd<bf16>(c, 1, ++seed);
    seed += 4;  // the removed v2-v5 had the next four draws: v1 keeps its inputs of earlier rounds
  }
  // v20 with the draws it had in branch ssd2's rounds (the first of 17 versions per case there),
  // then the automatic choice (0 = 20 where the shape fits) on fresh draws.
  seed = 0x6000;
  for (const auto& c : cases) {
    check_fwd<bf16>(c, kTc, seed + 1);
    seed += 17;
  }
  seed = 0x7000;
  for (const auto& c : cases) check_fwd<bf16>(c, 0, ++seed);
  // A removed version number is an error naming the field.
  {
    kc::SsdCudaParams<bf16> bad;
    bad.version = 2;
    std::string msg;
    try {
      kc::ssd_cuda_kernel_version(bad);
    } catch (const std::invalid_argument& e) {
      msg = e.what();
    }
    const bool ok = msg.find("version") != std::string::npos;
    ++(ok ? *g_pass : *g_fail);
    std::printf("%-4s ssd fwd version 2 (removed): %s\n", ok ? "ok" : "FAIL", msg.empty() ? "no exception" : msg.c_str());
  }
  // Backward: the tensor-core shapes (headdim 64, dstate 16 / 32 / 64 / 128, 16-byte rows).
  const SsdCase bwd_cases[] = {
      {1, 1, 1, 64, 128, 1, true, true, true, true, true, 0},
      {1, 255, 3, 64, 128, 1, true, false, true, true, true, 0},
      {2, 257, 2, 64, 128, 2, false, true, false, true, false, 0},
      {1, 257, 4, 64, 16, 2, true, true, true, false, true, 0},
      {2, 63, 3, 64, 16, 1, true, false, false, true, true, 8},
      {1, 64, 1, 64, 32, 1, false, false, true, true, true, 0},
      {1, 65, 2, 64, 64, 1, true, true, true, true, false, 8},
      {2, 200, 6, 64, 128, 3, true, true, true, true, true, 8},
      {1, 1100, 2, 64, 128, 1, true, true, true, true, true, 0},
      {1, 128, 1, 64, 128, 1, false, false, false, true, false, 0},
      // short and chunk-boundary lengths (the l 1 case failed before the gated dy kept its
      // bf16 remainder): with and without z, h0, dfinal alternating.
      {1, 1, 1, 64, 128, 1, true, true, true, true, true, 0},
      {1, 1, 2, 64, 128, 1, true, false, true, true, true, 0},
      {1, 2, 1, 64, 128, 1, true, true, true, true, true, 0},
      {1, 2, 2, 64, 64, 1, true, true, false, true, true, 0},
      {1, 3, 1, 64, 128, 1, true, true, true, true, true, 0},
      {2, 3, 2, 64, 32, 2, true, false, true, true, false, 0},
      {1, 255, 2, 64, 128, 1, true, true, true, true, true, 0},
      {1, 257, 2, 64, 128, 1, true, true, true, true, true, 0},
      {1, 257, 1, 64, 64, 1, true, false, false, true, true, 8},
  };
  seed = 0x55d + 56;  // the backward cases' inputs do not depend on how many forward checks ran
  bool dfin = false;
  for (const auto& c : bwd_cases) {
    check_bwd(c, dfin, ++seed);
    dfin = !dfin;
  }
  // The l 2 case with z and h0 (seed 0x55d + 69; dA was 2.37e-2 off before branch mends) again with
  // the initial state in bf16 values: what remains of dA's error there is the state's rounding.
  check_bwd(bwd_cases[12], false, 0x55d + 69, true);
}

}  // namespace

bool run_ssd_cuda_checks(int argc, char** argv, int& passed, int& failed) {
  bool check_only = false, ssd_only = false, once = false, timings_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--check-only") == 0) check_only = true;
    if (std::strcmp(argv[i], "--timings-only") == 0) timings_only = true;
    if (std::strcmp(argv[i], "--ssd-only") == 0) ssd_only = true;
    if (std::strcmp(argv[i], "--ssd-once") == 0) once = true;
  }
  g_pass = &passed;
  g_fail = &failed;
  if (once) {  // for a profiler: the standard shape, the tensor-core forward, one launch
    time_fwd<bf16>(8, 4096, 48, 64, 128, false, kTc, 1);
    return true;
  }
  const int p0 = passed, f0 = failed;
  if (!timings_only) ssd_checks();
  std::printf("ssd-check: %d passed, %d failed\n", passed - p0, failed - f0);
  if (check_only) return ssd_only;
  try {
    // Most important first (the run may be cut short): the versions at the standard shape, the
    // backward, then the stage costs and the other shapes.
    auto T = [](int v, bool z = false) { return time_fwd<bf16>(8, 4096, 48, 64, 128, z, v); };
    T(0);  // the automatic choice (prints the version it ran)
    const double f0 = T(0), f1 = T(kTc);  // again: the spread
    const double fbest = std::min(f0, f1);
    std::printf("ssd summary: fwd bf16 b8 l4096 h48 p64 n128: v%d %.1f / %.1f us (target <= 500, reference %.0f, floor %.0f)\n",
                kTc, f0, f1, kRefFwdUs, kFloorUs);
    std::fflush(stdout);
    const double fz = T(kTc, true);
    std::printf("ssd summary: fwd z: v%d %.1f us\n", kTc, fz);
    const double bwd = time_bwd(8, 4096, 48, 64, 128, false, fbest);
    std::printf("ssd summary: fwd+bwd bf16 b8 l4096 h48 p64 n128: %.1f us (fwd %.1f + bwd %.1f; reference %.0f)\n",
                fbest + bwd, fbest, bwd, kRefFwdBwdUs);
    std::fflush(stdout);
    // Stage costs by leaving parts out (wrong results; timing only): 1 intra-chunk, 2 C S^T, 4 state
    // update, 8 y stores, 16 C / B loads, 32 x / z loads, 64 dt loads.
    std::printf("  SKIP (timing only): 1 -intra, 2 -C S^T, 4 -state update, 8 -y stores, 16 -C/B loads, 32 -x/z loads, 64 -dt\n");
    for (int sk : {7, 8, 16, 32, 1}) {
      setenv("MAMBA_SSD_SKIP", std::to_string(sk).c_str(), 1);
      T(kTc);
    }
    unsetenv("MAMBA_SSD_SKIP");
    time_fwd<bf16>(1, 4096, 48, 64, 128, false, kTc);
    for (int n : {16, 32, 64}) time_fwd<bf16>(8, 4096, 48, 64, n, false, kTc);
    time_fwd<float>(1, 512, 8, 64, 128, false, 0);  // f32: the sequential kernel
    time_bwd(8, 4096, 48, 64, 128, true, fz);
  } catch (const std::exception& e) {
    std::printf("ssd timing failed: %s\n", e.what());
    ++failed;
  }
  return ssd_only;
}
