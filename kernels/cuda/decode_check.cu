// mamba-decode-check: the persistent MambaLM decode step (versions 2 and 3,
// mamba1_decode_persistent_cuda.h) against a plain CPU step on random weights, then timed.
//
//   mamba-decode-check [--check-only] [--time-only B] [--reps 50] [--layers 24] [--d-model 768] [--vocab 50280]
//
// Checks: small models at awkward sizes (d_model 96 / 100 / 128, 2-3 layers, vocab 301),
// batch 1 2 3 5 8 (and 16 for version 3), 4 steps each (states carried; steps alternate an
// eager launch and a CUDA-graph replay), logits and the conv / ssm states after the steps
// compared by ||gpu - cpu|| / ||cpu|| (f32 < 1e-4, bf16 < 2e-2), the outputs poisoned first.
// The CPU step rounds to bf16 where the GPU path stores bf16 (normed, xz, xc, xdbl, dt, y,
// hidden). Then the full model (d_model 768, 24 layers, vocab 50280): 2 steps of each version
// against the CPU at batch 1, and version 3 against version 2 at batch 4.
// Timing: one step = one CUDA graph (barrier memset, workspace memset, the kernel); CUDA
// events, median of --reps replays after 5 warm-up; floor = (weights read once + states read
// and written) / measured copy bandwidth (read + write); the weights (260 MB bf16) are far
// larger than L2, so nothing is flushed. Breakdown: one launch with %globaltimer stamps per
// block at every grid barrier: per phase, mean over layers of (last arrival - first departure
// from the previous barrier) and of the barrier (last departure - last arrival).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "mamba/kernels/cuda/mamba1_decode_persistent_cuda.h"
#include "mamba/kernels/cuda/perf_record.h"

namespace kc = mamba::kernels::cuda;

namespace {

int g_pass = 0, g_fail = 0;

#define CK(x)                                                                                     \
  do {                                                                                            \
    cudaError_t e_ = (x);                                                                         \
    if (e_ != cudaSuccess) {                                                                      \
      std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      std::exit(2);                                                                               \
    }                                                                                             \
  } while (0)

// Waits for `s` at most 10 s: a kernel that never returns (a barrier bug) ends the program
// with a message instead of hanging the device round.
void sync_or_die(cudaStream_t s, const char* what) {
  cudaEvent_t e;
  CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CK(cudaEventRecord(e, s));
  for (int i = 0; i < 10000; ++i) {
    const cudaError_t q = cudaEventQuery(e);
    if (q == cudaSuccess) {
      cudaEventDestroy(e);
      return;
    }
    if (q != cudaErrorNotReady) {
      std::printf("CUDA error %s while waiting for %s\n", cudaGetErrorString(q), what);
      std::exit(2);
    }
    struct timespec ts{0, 1000000};
    nanosleep(&ts, nullptr);
  }
  std::printf("HANG: %s did not finish in 10 s\n", what);
  std::fflush(stdout);
  std::_Exit(3);
}

float bf16_round(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return s;
  }
  float uni() { return static_cast<float>((next() >> 40) * (1.0 / 16777216.0)) * 2.f - 1.f; }  // [-1, 1)
};

struct Model {
  int64_t d, nl, V, di, N, R, K, xd;
  bool bf16;
  std::vector<float> emb, norm_f;  // emb (V, d) also the LM head
  struct Layer {
    std::vector<float> norm_w, w_in, conv_w, conv_b, w_x, w_dt, dt_bias, A, D, w_out;
  };
  std::vector<Layer> L;
  float r(float v) const { return bf16 ? bf16_round(v) : v; }
};

Model make_model(int64_t d, int64_t nl, int64_t V, bool bf16, uint64_t seed) {
  Model m;
  m.d = d; m.nl = nl; m.V = V; m.di = 2 * d; m.N = 16; m.R = (d + 15) / 16; m.K = 4; m.xd = m.R + 2 * m.N;
  m.bf16 = bf16;
  Rng g(seed);
  auto fill = [&](std::vector<float>& v, size_t n, float scale, float offset, bool round) {
    v.resize(n);
    for (auto& x : v) x = offset + scale * g.uni();
    if (round)
      for (auto& x : v) x = m.r(x);
  };
  fill(m.emb, V * d, 1.f, 0.f, true);
  fill(m.norm_f, d, 0.2f, 1.f, false);
  m.L.resize(nl);
  for (auto& l : m.L) {
    fill(l.norm_w, d, 0.2f, 1.f, false);
    fill(l.w_in, 2 * m.di * d, 1.7f / std::sqrt(float(d)), 0.f, true);
    fill(l.conv_w, m.di * m.K, 0.5f, 0.f, false);
    fill(l.conv_b, m.di, 0.2f, 0.f, false);
    fill(l.w_x, m.xd * m.di, 1.7f / std::sqrt(float(m.di)), 0.f, true);
    fill(l.w_dt, m.di * m.R, 1.7f / std::sqrt(float(m.R)), 0.f, true);
    fill(l.dt_bias, m.di, 1.0f, -3.f, false);
    l.A.resize(m.di * m.N);
    for (int64_t c = 0; c < m.di; ++c)
      for (int64_t n = 0; n < m.N; ++n) l.A[c * m.N + n] = -static_cast<float>(n + 1) * (1.f + 0.1f * g.uni());
    fill(l.D, m.di, 0.5f, 1.f, false);
    fill(l.w_out, d * m.di, 1.7f / std::sqrt(float(m.di)), 0.f, true);
  }
  return m;
}

float silu(float x) { return x / (1.f + std::exp(-x)); }
float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }

// The CPU step, one (conv (B, di, K), ssm (B, di, N)) pair per layer, updated in place.
struct CpuState {
  std::vector<std::vector<float>> conv, ssm;
};

void cpu_step_all(const Model& m, const std::vector<int64_t>& ids, CpuState& st, std::vector<float>& logits) {
  const int64_t B = static_cast<int64_t>(ids.size()), d = m.d, di = m.di, N = m.N, R = m.R, K = m.K, xd = m.xd;
  std::vector<float> res(B * d, 0.f), hid(B * d), xs(d), xz(2 * di), xc(di), xdbl(xd), y(di);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < d; ++k) hid[b * d + k] = m.emb[ids[b] * d + k];
  auto norm = [&](const float* v, const std::vector<float>& w) {
    double ss = 0;
    for (int64_t k = 0; k < d; ++k) ss += double(v[k]) * v[k];
    const float sc = 1.f / std::sqrt(static_cast<float>(ss / d) + 1e-5f);
    for (int64_t k = 0; k < d; ++k) xs[k] = m.r(v[k] * sc * w[k]);
  };
  for (int64_t li = 0; li < m.nl; ++li) {
    const auto& L = m.L[li];
    std::vector<float>& conv = st.conv[li];
    std::vector<float>& ssm = st.ssm[li];
    for (int64_t b = 0; b < B; ++b) {
      float* v = &res[b * d];
      for (int64_t k = 0; k < d; ++k) v[k] += hid[b * d + k];
      norm(v, L.norm_w);
      for (int64_t o = 0; o < 2 * di; ++o) {
        float a = 0;
        const float* w = &L.w_in[o * d];
        for (int64_t k = 0; k < d; ++k) a += w[k] * xs[k];
        xz[o] = m.r(a);
      }
      for (int64_t c = 0; c < di; ++c) {
        float* s = &conv[(b * di + c) * K];
        float a = L.conv_b[c];
        for (int64_t k = 0; k + 1 < K; ++k) {
          s[k] = s[k + 1];
          a += L.conv_w[c * K + k] * s[k];
        }
        s[K - 1] = xz[c];
        a += L.conv_w[c * K + K - 1] * xz[c];
        xc[c] = m.r(silu(a));
      }
      for (int64_t o = 0; o < xd; ++o) {
        float a = 0;
        const float* w = &L.w_x[o * di];
        for (int64_t c = 0; c < di; ++c) a += w[c] * xc[c];
        xdbl[o] = m.r(a);
      }
      for (int64_t c = 0; c < di; ++c) {
        float dr = 0;
        for (int64_t q = 0; q < R; ++q) dr += xdbl[q] * L.w_dt[c * R + q];
        const float dt = softplus(m.r(dr) + L.dt_bias[c]);
        float* h = &ssm[(b * di + c) * N];
        float yy = 0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * L.A[c * N + n]) * h[n] + dt * xc[c] * xdbl[R + n];
          yy += h[n] * xdbl[R + N + n];
        }
        yy += L.D[c] * xc[c];
        yy *= silu(xz[di + c]);
        y[c] = m.r(yy);
      }
      for (int64_t o = 0; o < d; ++o) {
        float a = 0;
        const float* w = &L.w_out[o * di];
        for (int64_t c = 0; c < di; ++c) a += w[c] * y[c];
        hid[b * d + o] = m.r(a);
      }
    }
  }
  logits.assign(B * m.V, 0.f);
  std::vector<float> v(d);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < d; ++k) v[k] = res[b * d + k] + hid[b * d + k];
    norm(v.data(), m.norm_f);
    for (int64_t o = 0; o < m.V; ++o) {
      float a = 0;
      const float* w = &m.emb[o * d];
      for (int64_t k = 0; k < d; ++k) a += w[k] * xs[k];
      logits[b * m.V + o] = a;
    }
  }
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

void verdict(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void verdict(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::printf("  %s ", ok ? "ok  " : "FAIL");
  std::vprintf(fmt, ap);
  std::printf("\n");
  va_end(ap);
  (ok ? g_pass : g_fail)++;
}

template <class T>
T* upload(const std::vector<float>& v) {
  std::vector<T> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = static_cast<T>(v[i]);
  T* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(T)));
  CK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
template <>
__nv_bfloat16* upload<__nv_bfloat16>(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = __float2bfloat16_rn(v[i]);
  __nv_bfloat16* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(1, h.size()) * 2));
  CK(cudaMemcpy(p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return p;
}

std::vector<float> download(const float* p, size_t n) {
  std::vector<float> h(n);
  CK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
  return h;
}

// The model on the device for one dtype and batch, both kernel versions.
template <class T>
struct Gpu {
  const Model& m;
  int64_t B;
  std::vector<kc::PersistentDecodeLayer<T>> layers;
  std::vector<void*> owned;
  kc::PersistentDecodeLayer<T>* d_layers = nullptr;
  T *emb = nullptr, *hidden = nullptr, *xz = nullptr, *xc = nullptr, *xdbl = nullptr, *y = nullptr;
  float *norm_f = nullptr, *res0 = nullptr, *res1 = nullptr, *logits = nullptr, *work = nullptr;
  int64_t* ids = nullptr;
  unsigned* barrier = nullptr;
  cudaStream_t s = nullptr;

  template <class U> U* own(U* p) { owned.push_back(p); return p; }
  Gpu(const Model& mm, int64_t batch, const CpuState& init) : m(mm), B(batch) {
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int64_t d = m.d, di = m.di;
    emb = own(upload<T>(m.emb));
    norm_f = own(upload<float>(m.norm_f));
    layers.resize(m.nl);
    for (int64_t i = 0; i < m.nl; ++i) {
      const auto& L = m.L[i];
      auto& e = layers[i];
      e.norm_w = own(upload<float>(L.norm_w));
      e.w_in = own(upload<T>(L.w_in));
      e.conv_state = own(upload<float>(init.conv[i]));
      e.conv_w = own(upload<float>(L.conv_w));
      e.conv_b = own(upload<float>(L.conv_b));
      e.w_x = own(upload<T>(L.w_x));
      e.w_dt = own(upload<T>(L.w_dt));
      e.dt_bias = own(upload<float>(L.dt_bias));
      e.A = own(upload<float>(L.A));
      e.D = own(upload<float>(L.D));
      e.ssm_state = own(upload<float>(init.ssm[i]));
      e.w_out = own(upload<T>(L.w_out));
      T *wxt = nullptr, *wot = nullptr;
      CK(cudaMalloc(&wxt, di * m.xd * sizeof(T)));
      CK(cudaMalloc(&wot, di * d * sizeof(T)));
      own(wxt); own(wot);
      kc::transpose_rows_cuda<T>(e.w_x, m.xd, di, wxt, s);
      kc::transpose_rows_cuda<T>(e.w_out, d, di, wot, s);
      e.w_x_t = wxt;
      e.w_out_t = wot;
    }
    CK(cudaMalloc(&d_layers, std::max<size_t>(1, layers.size()) * sizeof(layers[0])));
    CK(cudaMemcpy(d_layers, layers.data(), layers.size() * sizeof(layers[0]), cudaMemcpyHostToDevice));
    CK(cudaMalloc(&hidden, B * d * sizeof(T)));
    CK(cudaMalloc(&xz, B * 2 * di * sizeof(T)));
    CK(cudaMalloc(&xc, B * di * sizeof(T)));
    CK(cudaMalloc(&xdbl, B * m.xd * sizeof(T)));
    CK(cudaMalloc(&y, B * di * sizeof(T)));
    CK(cudaMalloc(&res0, B * d * 4));
    CK(cudaMalloc(&res1, B * d * 4));
    CK(cudaMalloc(&logits, B * m.V * 4));
    CK(cudaMalloc(&work, kc::persistent_decode_workspace_floats<T>(B, d, m.R, m.N) * 4));
    CK(cudaMalloc(&ids, B * 8));
    CK(cudaMalloc(&barrier, 4));
    CK(cudaStreamSynchronize(s));
  }
  ~Gpu() {
    for (void* p : owned) cudaFree(p);
    cudaFree(d_layers); cudaFree(hidden); cudaFree(xz); cudaFree(xc); cudaFree(xdbl); cudaFree(y);
    cudaFree(res0); cudaFree(res1); cudaFree(logits); cudaFree(work); cudaFree(ids); cudaFree(barrier);
    cudaStreamDestroy(s);
  }
  kc::PersistentDecodeParams<T> params(int version, unsigned long long* stamps = nullptr) const {
    kc::PersistentDecodeParams<T> p;
    p.batch = B; p.n_layers = m.nl; p.d_model = m.d; p.d_inner = m.di; p.d_conv = m.K; p.dstate = m.N; p.dt_rank = m.R;
    p.vocab_rows = m.V; p.eps = 1e-5f; p.ids = ids; p.embedding = emb; p.head = emb; p.norm_f_w = norm_f;
    p.layers = d_layers; p.hidden = hidden; p.residual[0] = res0; p.residual[1] = res1; p.xz = xz; p.xc = xc;
    p.xdbl = xdbl; p.y = y; p.logits = logits; p.barrier = barrier; p.prefetch = true;
    p.p3_smem = (m.R % 8) == 0 && (m.N % 4) == 0;
    p.version = version; p.work = work; p.stamps = stamps;
    return p;
  }
  int grid(int version) const { return kc::persistent_decode_grid_for<T>(params(version)); }
  void set_ids(const std::vector<int64_t>& v) {
    CK(cudaMemcpyAsync(ids, v.data(), B * 8, cudaMemcpyHostToDevice, s));
    sync_or_die(s, "set_ids");
  }
  void launch(int version, unsigned long long* stamps = nullptr) {
    kc::persistent_decode_cuda<T>(params(version, stamps), grid(version), s);
  }
  std::vector<float> get_logits() {
    sync_or_die(s, "a decode step");
    return download(logits, B * m.V);
  }
  void poison() { CK(cudaMemsetAsync(logits, 0xff, B * m.V * 4, s)); }
  std::vector<float> state(int64_t li, bool conv) {
    sync_or_die(s, "a decode step");
    return conv ? download(layers[li].conv_state, B * m.di * m.K) : download(layers[li].ssm_state, B * m.di * m.N);
  }
};

CpuState init_state(const Model& m, int64_t B, uint64_t seed) {
  CpuState st;
  Rng g(seed);
  st.conv.resize(m.nl);
  st.ssm.resize(m.nl);
  for (int64_t i = 0; i < m.nl; ++i) {
    st.conv[i].resize(B * m.di * m.K);
    st.ssm[i].resize(B * m.di * m.N);
    for (auto& x : st.conv[i]) x = 0.5f * g.uni();
    for (auto& x : st.ssm[i]) x = 0.5f * g.uni();
  }
  return st;
}

struct Graph {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t e = nullptr;
  ~Graph() {
    if (e) cudaGraphExecDestroy(e);
    if (g) cudaGraphDestroy(g);
  }
};

template <class T>
void capture(Gpu<T>& gpu, int version, Graph& gr) {
  CK(cudaStreamBeginCapture(gpu.s, cudaStreamCaptureModeThreadLocal));
  gpu.launch(version);
  CK(cudaStreamEndCapture(gpu.s, &gr.g));
  CK(cudaGraphInstantiate(&gr.e, gr.g, 0));
}

template <class T>
void check_case(int64_t d, int64_t nl, int64_t V, int64_t B, int version, int steps, const char* tname) {
  const bool bf = sizeof(T) == 2;
  Model m = make_model(d, nl, V, bf, 1000 + d + nl);
  CpuState cs = init_state(m, B, 77 + B);
  Gpu<T> gpu(m, B, cs);
  if (gpu.grid(version) < 1) {
    verdict(false, "%s v%d d_model %lld layers %lld batch %lld: no grid", tname, version, (long long)d, (long long)nl,
            (long long)B);
    return;
  }
  Graph gr;
  double worst = 0;
  for (int t = 0; t < steps; ++t) {
    std::vector<int64_t> ids(B);
    for (int64_t i = 0; i < B; ++i) ids[i] = (t * 17 + i * 29 + 1) % V;
    gpu.set_ids(ids);
    gpu.poison();
    if (t % 2 == 0) {
      gpu.launch(version);
    } else {
      if (!gr.e) capture(gpu, version, gr);
      CK(cudaGraphLaunch(gr.e, gpu.s));
    }
    CK(cudaGetLastError());
    std::vector<float> ref;
    cpu_step_all(m, ids, cs, ref);
    worst = std::max(worst, rel_err(gpu.get_logits(), ref));
  }
  double ws = 0;
  for (int64_t li = 0; li < nl; ++li) {
    ws = std::max(ws, rel_err(gpu.state(li, true), cs.conv[li]));
    ws = std::max(ws, rel_err(gpu.state(li, false), cs.ssm[li]));
  }
  const double tol = bf ? 2e-2 : 1e-4;
  verdict(worst < tol && ws < tol, "%s v%d d_model %lld layers %lld vocab %lld batch %lld: %d steps logits rel %.2e, states rel %.2e",
          tname, version, (long long)d, (long long)nl, (long long)V, (long long)B, steps, worst, ws);
}

double measure_copy_gbs() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> t;
  for (int i = 0; i < 8; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (t[t.size() / 2] * 1e-3) / 1e9;
}

template <class T>
double time_graph(Gpu<T>& gpu, int version, int reps) {
  Graph gr;
  capture(gpu, version, gr);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> t;
  for (int i = -5; i < reps; ++i) {
    cudaEventRecord(e0, gpu.s);
    cudaGraphLaunch(gr.e, gpu.s);
    cudaEventRecord(e1, gpu.s);
    sync_or_die(gpu.s, "a graph replay");
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 0) t.push_back(ms * 1000.f);
  }
  CK(cudaGetLastError());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One stamped launch: per phase kind, the mean over layers of the work span and the barrier.
template <class T>
void breakdown(Gpu<T>& gpu, int version, const char* label) {
  const int G = gpu.grid(version);
  const int phases = version == 3 ? 2 : 4;
  const int64_t nbar = phases * gpu.m.nl;
  const size_t n = static_cast<size_t>(nbar + 1) * G * 2;
  unsigned long long* st = nullptr;
  CK(cudaMalloc(&st, n * 8));
  CK(cudaMemset(st, 0, n * 8));
  gpu.launch(version, st);
  sync_or_die(gpu.s, "the stamped launch");
  std::vector<unsigned long long> h(n);
  CK(cudaMemcpy(h.data(), st, n * 8, cudaMemcpyDeviceToHost));
  cudaFree(st);
  auto at = [&](int64_t e, int b, int k) { return static_cast<double>(h[(static_cast<size_t>(e) * G + b) * 2 + k]); };
  double t0 = 1e300, tend = 0;
  for (int b = 0; b < G; ++b) { t0 = std::min(t0, at(0, b, 0)); tend = std::max(tend, at(0, b, 1)); }
  std::vector<double> work(phases, 0), bar(phases, 0), skew(phases, 0);
  double prev_leave_first = t0;
  for (int64_t e = 1; e <= nbar; ++e) {
    double arr_last = 0, arr_first = 1e300, leave_last = 0, leave_first = 1e300;
    for (int b = 0; b < G; ++b) {
      arr_last = std::max(arr_last, at(e, b, 0));
      arr_first = std::min(arr_first, at(e, b, 0));
      leave_last = std::max(leave_last, at(e, b, 1));
      leave_first = std::min(leave_first, at(e, b, 1));
    }
    const int ph = static_cast<int>((e - 1) % phases);
    work[ph] += arr_last - prev_leave_first;
    bar[ph] += leave_last - arr_last;
    skew[ph] += arr_last - arr_first;
    prev_leave_first = leave_first;
  }
  const double nl = static_cast<double>(gpu.m.nl);
  std::printf("  breakdown %s (one stamped launch, %d blocks, %%globaltimer ns): kernel %.1f us, head+final %.1f us\n",
              label, G, (tend - t0) / 1e3, (tend - prev_leave_first) / 1e3);
  double per_layer = 0;
  for (int ph = 0; ph < phases; ++ph) {
    std::printf("    phase %d: work %.2f us (arrival spread %.2f us), barrier %.2f us  [per layer]\n", ph + 1,
                work[ph] / nl / 1e3, skew[ph] / nl / 1e3, bar[ph] / nl / 1e3);
    per_layer += (work[ph] + bar[ph]) / nl / 1e3;
  }
  std::printf("    per layer %.2f us\n", per_layer);
}

template <class T>
void bench(int64_t d, int64_t nl, int64_t V, int reps, double copy_gbs, bool full_check, const char* tname,
           int64_t only_batch = 0) {
  const bool bf = sizeof(T) == 2;
  Model m = make_model(d, nl, V, bf, 5);
  uint64_t wbytes = 0;
  const uint64_t st = sizeof(T);
  wbytes += V * d * st + d * 4;
  wbytes += nl * (2 * m.di * d * st + m.xd * m.di * st + m.di * m.R * st + d * m.di * st +
                  4 * (d + m.di * m.K + m.di + m.di + m.di * m.N + m.di));
  std::printf("== decode one token: d_model %lld, %lld layers, vocab %lld, %s (weights %.1f MB), copy %.0f GB/s\n",
              (long long)d, (long long)nl, (long long)V, tname, wbytes / 1e6, copy_gbs);
  for (int64_t B : {1, 4, 8, 16}) {
    if (only_batch > 0 && B != only_batch) continue;
    CpuState cs = init_state(m, B, 3);
    Gpu<T> gpu(m, B, cs);
    std::vector<int64_t> ids(B);
    for (int64_t i = 0; i < B; ++i) ids[i] = (i * 31 + 7) % V;
    gpu.set_ids(ids);
    const uint64_t state_bytes = static_cast<uint64_t>(nl) * B * m.di * (m.K + m.N) * 4;
    const double floor_us = (wbytes + 2.0 * state_bytes) / (copy_gbs * 1e9) * 1e6;
    if (full_check && (B == 1 || B == 4)) {
      // Versions against the CPU (batch 1) / each other (batch 4), fresh states each.
      std::vector<float> l2, l3;
      for (int v : {2, 3}) {
        if (gpu.grid(v) < 1) continue;
        CpuState c2 = cs;
        Gpu<T> g2(m, B, cs);
        double w = 0;
        for (int t = 0; t < 2; ++t) {
          std::vector<int64_t> id2(B);
          for (int64_t i = 0; i < B; ++i) id2[i] = (t * 1009 + i * 31 + 7) % V;
          g2.set_ids(id2);
          g2.poison();
          g2.launch(v);
          const std::vector<float> lg = g2.get_logits();
          if (B == 1) {
            std::vector<float> ref;
            cpu_step_all(m, id2, c2, ref);
            w = std::max(w, rel_err(lg, ref));
          }
          if (t == 1) (v == 2 ? l2 : l3) = lg;
        }
        if (B == 1)
          verdict(w < (bf ? 2e-2 : 1e-4), "%s full model batch 1 v%d: 2 steps vs CPU logits rel %.2e", tname, v, w);
      }
      if (!l2.empty() && !l3.empty())
        verdict(rel_err(l3, l2) < (bf ? 2e-2 : 1e-4), "%s full model batch %lld: v3 vs v2 second-step logits rel %.2e",
                tname, (long long)B, rel_err(l3, l2));
    }
    for (int v : {2, 3}) {
      const int G = gpu.grid(v);
      if (G < 1) {
        std::printf("  batch %3lld v%d: not supported\n", (long long)B, v);
        continue;
      }
      const double us = time_graph(gpu, v, reps);
      std::printf("  batch %3lld v%d: grid %d, graph %8.1f us, floor %6.1f us, x floor %5.2f, %8.0f tokens/s\n",
                  (long long)B, v, G, us, floor_us, us / floor_us, B / (us * 1e-6));
      // FLOPs: one multiply-add per matrix weight and token (the in / x / dt / out projections, the head).
      const double mat = double(V) * d + double(nl) * (2.0 * m.di * d + double(m.xd) * m.di + double(m.di) * m.R + double(d) * m.di);
      char shape[96];
      std::snprintf(shape, sizeof shape, "%lldx%lld V%lld batch %lld (graph)", (long long)nl, (long long)d, (long long)V,
                    (long long)B);
      kc::perf_record("mamba_lm decode step v" + std::to_string(v) + " persistent", shape, tname, us,
                      wbytes + 2.0 * state_bytes, 2.0 * mat * B, bf ? "tc" : "fma");
      if (B == 1 || B == 4) breakdown(gpu, v, v == 2 ? "v2" : "v3");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool check_only = false;
  int reps = 50;
  int64_t time_only = 0;  // --time-only B: no checks, bf16 timing of batch B only
  int64_t layers = 24, d_model = 768, vocab = 50280;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> long long { return i + 1 < argc ? std::atoll(argv[++i]) : 0; };
    if (a == "--check-only") check_only = true;
    else if (a == "--reps") reps = static_cast<int>(next());
    else if (a == "--time-only") time_only = next();
    else if (a == "--layers") layers = next();
    else if (a == "--d-model") d_model = next();
    else if (a == "--vocab") vocab = next();
    else {
      std::fprintf(stderr, "usage: mamba-decode-check [--check-only] [--reps R] [--layers N] [--d-model D] [--vocab V]\n");
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (time_only > 0) {
    const double bw = measure_copy_gbs();
    const char* st = std::getenv("MAMBA_DECODE_STAGES");
    std::printf("copy %.0f GB/s; MAMBA_DECODE_STAGES=%s\n", bw, st ? st : "(auto)");
    bench<__nv_bfloat16>(d_model, layers, vocab, reps, bw, false, "bf16", time_only);
    return 0;
  }
  std::printf("== checks vs the CPU step\n");
  for (int v : {2, 3}) {
    for (int64_t B : {1, 2, 3, 5, 8, 16}) {
      if (v == 2 && B > 8) continue;
      check_case<float>(128, 3, 301, B, v, 4, "f32");
      check_case<__nv_bfloat16>(128, 3, 301, B, v, 4, "bf16");
    }
    check_case<float>(96, 2, 301, 3, v, 4, "f32");
    check_case<__nv_bfloat16>(100, 2, 301, 2, v, 4, "bf16");
    check_case<float>(100, 3, 301, 1, v, 4, "f32");
    check_case<__nv_bfloat16>(128, 0, 301, 2, v, 2, "bf16");
  }
  if (!check_only) {
    const double bw = measure_copy_gbs();
    std::printf("copy bandwidth (device to device, 1 GiB, read + write): %.0f GB/s\n", bw);
    bench<__nv_bfloat16>(d_model, layers, vocab, reps, bw, true, "bf16");
    bench<float>(d_model, layers, vocab, std::max(10, reps / 2), bw, false, "f32");
  }
  std::printf("decode-check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
