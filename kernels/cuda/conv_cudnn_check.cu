// mamba-conv-cudnn-check: the cuDNN convolutions (conv_cudnn.h) against the CPU kernels
// (mamba/kernels/conv.h's reference loops; the weight and bias gradients as plain loops here),
// every combination of 1D/2D/3D x normal/transposed x fwd / bwd-data / bwd-filter / bias-grad,
// f32 (TF32 off, and on), bf16, f16; outputs poisoned with NaN first; bad arguments; then with
// --bench the U-Mamba-like 3D shapes (CUDA events, median of 20 after warm-up, L2 flushed).
//   mamba-conv-cudnn-check [--bench] [--bench-only] [--find]
// Exit status 1 when any check fails.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "mamba/kernels/conv.h"
#include "mamba/kernels/cuda/conv_cudnn.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/perf_record.h"

namespace {

namespace k = mamba::kernels;
namespace kc = mamba::kernels::cuda;

int g_pass = 0, g_fail = 0;
std::map<std::string, double> g_worst;  // "bf16 transposed bwd-data" -> worst relative error

size_t bytes_of(kc::ConvDType t) { return t == kc::ConvDType::f32 ? 4 : 2; }
const char* tname(kc::ConvDType t) { return t == kc::ConvDType::f32 ? "f32" : t == kc::ConvDType::bf16 ? "bf16" : "f16"; }

// Rounds v to t in place and returns the device buffer's bytes.
std::vector<unsigned char> encode(std::vector<float>& v, kc::ConvDType t) {
  std::vector<unsigned char> b(v.size() * bytes_of(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == kc::ConvDType::f32) {
      std::memcpy(&b[i * 4], &v[i], 4);
    } else if (t == kc::ConvDType::bf16) {
      const __nv_bfloat16 h = __float2bfloat16_rn(v[i]);
      v[i] = __bfloat162float(h);
      std::memcpy(&b[i * 2], &h, 2);
    } else {
      const __half h = __float2half_rn(v[i]);
      v[i] = __half2float(h);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}
std::vector<float> decode(const std::vector<unsigned char>& b, kc::ConvDType t) {
  const size_t n = b.size() / bytes_of(t);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == kc::ConvDType::f32) {
      std::memcpy(&v[i], &b[i * 4], 4);
    } else if (t == kc::ConvDType::bf16) {
      __nv_bfloat16 h;
      std::memcpy(&h, &b[i * 2], 2);
      v[i] = __bfloat162float(h);
    } else {
      __half h;
      std::memcpy(&h, &b[i * 2], 2);
      v[i] = __half2float(h);
    }
  }
  return v;
}

struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  kc::ConvDType t;
  Buf(size_t n, kc::ConvDType ty) : bytes(n * bytes_of(ty)), t(ty) {
    MAMBA_CUDA_CHECK("check cudaMalloc", cudaMalloc(&p, bytes ? bytes : 1));
    MAMBA_CUDA_CHECK("check poison", cudaMemset(p, 0xFF, bytes));  // NaN in f32, bf16 and f16
  }
  Buf(std::vector<float>& v, kc::ConvDType ty) : Buf(v.size(), ty) {
    auto b = encode(v, ty);
    MAMBA_CUDA_CHECK("check upload", cudaMemcpy(p, b.data(), bytes, cudaMemcpyHostToDevice));
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  std::vector<float> get() const {
    MAMBA_CUDA_CHECK("check sync", cudaDeviceSynchronize());
    std::vector<unsigned char> b(bytes);
    MAMBA_CUDA_CHECK("check download", cudaMemcpy(b.data(), p, bytes, cudaMemcpyDeviceToHost));
    return decode(b, t);
  }
};

double rel_err(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

std::vector<float> randn(std::mt19937& g, size_t n) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

int64_t p3(const int64_t* a) { return a[0] * a[1] * a[2]; }

// Weight gradient of the forward convolution G, plain loops in double:
// dw[co, ci, k] = sum_{n, t} dy[n, co, t] x[n, grp*cin_g + ci, t s - p + k d].
std::vector<double> ref_wgrad(const k::ConvParams& G, const std::vector<float>& x, const std::vector<float>& dy) {
  const int64_t cin_g = G.C_in / G.groups, cout_g = G.C_out / G.groups, K = p3(G.k);
  std::vector<double> dw(static_cast<size_t>(G.C_out * cin_g * K), 0.0);
  for (int64_t n = 0; n < G.N; ++n)
    for (int64_t co = 0; co < G.C_out; ++co) {
      const int64_t grp = co / cout_g;
      for (int64_t ci = 0; ci < cin_g; ++ci)
        for (int64_t a = 0; a < G.k[0]; ++a)
          for (int64_t b = 0; b < G.k[1]; ++b)
            for (int64_t c = 0; c < G.k[2]; ++c) {
              double acc = 0;
              for (int64_t o0 = 0; o0 < G.out[0]; ++o0) {
                const int64_t i0 = o0 * G.stride[0] - G.pad[0] + a * G.dilation[0];
                if (i0 < 0 || i0 >= G.in[0]) continue;
                for (int64_t o1 = 0; o1 < G.out[1]; ++o1) {
                  const int64_t i1 = o1 * G.stride[1] - G.pad[1] + b * G.dilation[1];
                  if (i1 < 0 || i1 >= G.in[1]) continue;
                  for (int64_t o2 = 0; o2 < G.out[2]; ++o2) {
                    const int64_t i2 = o2 * G.stride[2] - G.pad[2] + c * G.dilation[2];
                    if (i2 < 0 || i2 >= G.in[2]) continue;
                    acc += double(dy[(((n * G.C_out + co) * G.out[0] + o0) * G.out[1] + o1) * G.out[2] + o2]) *
                           x[(((n * G.C_in + grp * cin_g + ci) * G.in[0] + i0) * G.in[1] + i1) * G.in[2] + i2];
                  }
                }
              }
              dw[static_cast<size_t>((((co * cin_g + ci) * G.k[0] + a) * G.k[1] + b) * G.k[2] + c)] += acc;
            }
    }
  return dw;
}
std::vector<double> ref_bgrad(int64_t N, int64_t C, int64_t L, const std::vector<float>& dy) {
  std::vector<double> db(static_cast<size_t>(C), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t l = 0; l < L; ++l) db[size_t(c)] += dy[size_t((n * C + c) * L + l)];
  return db;
}
std::vector<double> to_d(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// One problem in the user's terms (the transposed convolution's own view when transpose).
struct Case {
  int spatial;
  bool transpose;
  int64_t N, C_in, C_out, groups;
  int64_t in[3], k[3], stride[3], pad[3], dil[3], outpad[3];
};

std::string describe(const Case& c, kc::ConvDType t, bool tf32) {
  char b[400];
  std::snprintf(b, sizeof b, "%dD%s %s%s N%lld C%lld->%lld g%lld in %lldx%lldx%lld k %lldx%lldx%lld s %lld,%lld,%lld p %lld,%lld,%lld d %lld,%lld,%lld",
                c.spatial, c.transpose ? " transposed" : "", tname(t), tf32 ? "+tf32" : "", (long long)c.N,
                (long long)c.C_in, (long long)c.C_out, (long long)c.groups, (long long)c.in[0], (long long)c.in[1],
                (long long)c.in[2], (long long)c.k[0], (long long)c.k[1], (long long)c.k[2], (long long)c.stride[0],
                (long long)c.stride[1], (long long)c.stride[2], (long long)c.pad[0], (long long)c.pad[1],
                (long long)c.pad[2], (long long)c.dil[0], (long long)c.dil[1], (long long)c.dil[2]);
  return b;
}

void report(const std::string& what, const char* dir, double err, double tol, const std::string& tag = "") {
  const bool ok = err < tol;
  if (!tag.empty()) {
    const std::string key = tag + " " + dir;
    if (!g_worst.count(key) || err > g_worst[key] || std::isnan(err)) g_worst[key] = err;
  }
  (ok ? g_pass : g_fail)++;
  std::printf("%s %-10s rel %.3e (tol %.0e)  %s\n", ok ? "ok  " : "FAIL", dir, err, tol, what.c_str());
}

void run_case(const Case& c, kc::ConvDType t, bool tf32, unsigned seed) {
  // The user's view as ConvParams (for the transpose: the transpose's own view).
  k::ConvParams U;
  U.N = c.N;
  U.C_in = c.C_in;
  U.C_out = c.C_out;
  U.groups = c.groups;
  for (int d = 0; d < 3; ++d) {
    U.in[d] = c.in[d];
    U.k[d] = c.k[d];
    U.stride[d] = c.stride[d];
    U.pad[d] = c.pad[d];
    U.dilation[d] = c.dil[d];
    U.out[d] = c.transpose ? (c.in[d] - 1) * c.stride[d] - 2 * c.pad[d] + c.dil[d] * (c.k[d] - 1) + c.outpad[d] + 1
                           : (c.in[d] + 2 * c.pad[d] - c.dil[d] * (c.k[d] - 1) - 1) / c.stride[d] + 1;
  }
  const k::ConvParams G = c.transpose ? kc::conv_transpose_as_forward(U) : U;
  kc::ConvCudnnParams P;
  P.g = G;
  P.spatial = c.spatial;
  P.dtype = t;
  P.tf32 = tf32;
  const double tol = t == kc::ConvDType::f32 ? (tf32 ? 5e-3 : 1e-4) : 1e-2;
  const std::string what = describe(c, t, tf32);
  const std::string tag = std::string(tname(t)) + (tf32 ? "+tf32" : "") + (c.transpose ? " transposed" : " conv");
  std::mt19937 gen(seed);
  const int64_t Lin = p3(U.in), Lout = p3(U.out), K = p3(U.k);
  const size_t nx = size_t(U.N * U.C_in * Lin), ny = size_t(U.N * U.C_out * Lout);
  // w: conv [C_out, C_in/g, k]; transpose [C_in, C_out/g, k]: both G.C_out * (G.C_in/g) * K.
  const size_t nw = size_t(G.C_out * (G.C_in / G.groups) * K);
  auto x = randn(gen, nx), w = randn(gen, nw), bias = randn(gen, size_t(U.C_out)), dy = randn(gen, ny);
  Buf X(x, t), W(w, t), B(bias, t), DY(dy, t);
  const cudaStream_t s = nullptr;
  // forward (+ bias)
  {
    Buf Y(ny, t);
    std::vector<float> ref(ny);
    if (!c.transpose) {
      kc::conv_cudnn_forward(P, X.p, W.p, B.p, Y.p, nullptr, s);
      k::conv_f32_ref(U, x.data(), w.data(), bias.data(), ref.data());
    } else {
      kc::conv_cudnn_backward_data(P, X.p, W.p, B.p, Y.p, nullptr, s);
      k::conv_transpose_f32_ref(U, x.data(), w.data(), bias.data(), ref.data());
    }
    report(what, "fwd", rel_err(Y.get(), to_d(ref)), tol, tag);
  }
  // input gradient: dx = conv^T(dy) for the conv, conv(dy) for the transpose
  {
    Buf DX(nx, t);
    std::vector<float> ref(nx);
    if (!c.transpose) {
      kc::conv_cudnn_backward_data(P, DY.p, W.p, nullptr, DX.p, nullptr, s);
      // dx = conv_transpose of dy with the same w: the transpose's view of G is G reversed.
      k::ConvParams T = kc::conv_transpose_as_forward(U);  // C_in = C_out, in = out: the transpose view
      k::conv_transpose_f32_ref(T, dy.data(), w.data(), nullptr, ref.data());
    } else {
      kc::conv_cudnn_forward(P, DY.p, W.p, nullptr, DX.p, nullptr, s);
      k::conv_f32_ref(G, dy.data(), w.data(), nullptr, ref.data());
    }
    report(what, "bwd-data", rel_err(DX.get(), to_d(ref)), tol, tag);
  }
  // weight gradient
  {
    Buf DW(nw, t);
    std::vector<double> ref;
    if (!c.transpose) {
      kc::conv_cudnn_backward_filter(P, X.p, DY.p, DW.p, nullptr, s);
      ref = ref_wgrad(G, x, dy);
    } else {  // G's input is dY, G's output gradient is X
      kc::conv_cudnn_backward_filter(P, DY.p, X.p, DW.p, nullptr, s);
      ref = ref_wgrad(G, dy, x);
    }
    report(what, "bwd-filter", rel_err(DW.get(), ref), tol, tag);
  }
  // bias gradient
  {
    Buf DB(size_t(U.C_out), t);
    kc::conv_bias_grad_cuda(U.N, U.C_out, Lout, t, DY.p, DB.p, nullptr, s);
    report(what, "bias-grad", rel_err(DB.get(), ref_bgrad(U.N, U.C_out, Lout, dy)), tol, tag);
  }
  MAMBA_CUDA_CHECK("check case", cudaDeviceSynchronize());
}

Case make(int spatial, bool tr, int64_t N, int64_t ci, int64_t co, int64_t g, std::vector<int64_t> in, std::vector<int64_t> kk,
          int64_t s, int64_t p, int64_t d, int64_t op = 0) {
  Case c{};
  c.spatial = spatial;
  c.transpose = tr;
  c.N = N;
  c.C_in = ci;
  c.C_out = co;
  c.groups = g;
  const int off = 3 - spatial;
  for (int i = 0; i < 3; ++i) {
    const bool used = i >= off;
    c.in[i] = used ? in[size_t(i - off)] : 1;
    c.k[i] = used ? kk[size_t(i - off)] : 1;
    c.stride[i] = used ? s : 1;
    c.pad[i] = used ? p : 0;
    c.dil[i] = used ? d : 1;
    c.outpad[i] = used ? op : 0;
  }
  return c;
}

std::vector<Case> all_cases() {
  std::vector<Case> v;
  for (int sp = 1; sp <= 3; ++sp) {
    const std::vector<int64_t> in = sp == 1 ? std::vector<int64_t>{29} : sp == 2 ? std::vector<int64_t>{7, 5}
                                                                                 : std::vector<int64_t>{7, 5, 3};
    const std::vector<int64_t> k3(size_t(sp), 3);
    std::vector<int64_t> kodd = sp == 1 ? std::vector<int64_t>{2} : sp == 2 ? std::vector<int64_t>{3, 2}
                                                                            : std::vector<int64_t>{3, 2, 1};
    for (int tr = 0; tr < 2; ++tr) {
      v.push_back(make(sp, tr, 1, 3, 3, 1, in, k3, 1, 1, 1));           // batch 1, channels 3, same padding
      v.push_back(make(sp, tr, 2, 3, 33, 1, in, k3, 2, 1, 1, tr));      // stride 2 (+ output_padding 1)
      v.push_back(make(sp, tr, 2, 33, 33, 33, in, k3, 1, 2, 2));        // depthwise, dilation 2
      v.push_back(make(sp, tr, 2, 6, 4, 2, in, k3, 2, 1, 2, tr));       // groups 2, stride 2, dilation 2
      v.push_back(make(sp, tr, 3, 33, 3, 3, in, kodd, 1, 1, 1));         // uneven kernel, groups 3
      v.push_back(make(sp, tr, 1, 4, 8, 1, in, k3, 2, 1, 2, tr));       // stride 2 dilation 2 padding 1
    }
  }
  return v;
}

template <class F>
void expect_error(const char* what, const char* needle, F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    const bool ok = std::strstr(e.what(), needle) != nullptr;
    (ok ? g_pass : g_fail)++;
    std::printf("%s bad-arg    %s -> \"%s\"\n", ok ? "ok  " : "FAIL", what, e.what());
    return;
  } catch (const std::exception& e) {
    g_fail++;
    std::printf("FAIL bad-arg    %s -> wrong exception type: \"%s\"\n", what, e.what());
    return;
  }
  g_fail++;
  std::printf("FAIL bad-arg    %s -> no exception\n", what);
}

void bad_args() {
  kc::ConvCudnnParams P;
  P.spatial = 2;
  P.g.N = 1;
  P.g.C_in = 4;
  P.g.C_out = 6;
  P.g.in[1] = P.g.in[2] = 8;
  P.g.k[1] = P.g.k[2] = 3;
  P.g.out[1] = P.g.out[2] = 6;
  float* d = nullptr;
  MAMBA_CUDA_CHECK("check alloc", cudaMalloc(&d, 4096));
  auto with = [&](auto edit) {
    kc::ConvCudnnParams q = P;
    edit(q);
    return q;
  };
  expect_error("groups 4 with C_out 6", "groups", [&] {
    kc::conv_cudnn_forward(with([](auto& q) { q.g.groups = 4; }), d, d, nullptr, d, nullptr, nullptr);
  });
  expect_error("stride 0", "stride[1]", [&] {
    kc::conv_cudnn_forward(with([](auto& q) { q.g.stride[1] = 0; }), d, d, nullptr, d, nullptr, nullptr);
  });
  expect_error("wrong out", "out[2]", [&] {
    kc::conv_cudnn_backward_data(with([](auto& q) { q.g.out[2] = 5; }), d, d, nullptr, d, nullptr, nullptr);
  });
  expect_error("kernel larger than input", "in[1]", [&] {
    kc::conv_cudnn_backward_filter(with([](auto& q) { q.g.k[1] = 9; }), d, d, d, nullptr, nullptr);
  });
  expect_error("spatial 4", "spatial", [&] {
    kc::conv_cudnn_forward(with([](auto& q) { q.spatial = 4; }), d, d, nullptr, d, nullptr, nullptr);
  });
  expect_error("null x", "null", [&] { kc::conv_cudnn_forward(P, nullptr, d, nullptr, d, nullptr, nullptr); });
  expect_error("negative pad", "pad[2]", [&] {
    kc::conv_cudnn_forward(with([](auto& q) { q.g.pad[2] = -1; }), d, d, nullptr, d, nullptr, nullptr);
  });
  cudaFree(d);
}

// ---- benchmark ---------------------------------------------------------------------------
// Pseudo-random values in [-1, 1) written on the device (a hash of the index): the bench
// tensors are hundreds of MB, too slow to draw on the host.
template <class T>
__global__ void fill_kernel(T* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
    const float v = float(h >> 8) * (2.f / 16777216.f) - 1.f;
    if constexpr (sizeof(T) == 4) p[i] = v; else p[i] = T(v);
  }
}
void fill_dev(Buf& b, uint32_t seed) {
  const size_t n = b.bytes / bytes_of(b.t);
  if (b.t == kc::ConvDType::f32) fill_kernel<<<1024, 256>>>(static_cast<float*>(b.p), n, seed);
  else if (b.t == kc::ConvDType::bf16) fill_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(b.p), n, seed);
  else fill_kernel<<<1024, 256>>>(static_cast<__half*>(b.p), n, seed);
  MAMBA_CUDA_CHECK_LAUNCH("bench fill_kernel");
}
struct Flush {
  void* p = nullptr;
  size_t bytes = size_t{256} << 20;
  Flush() { MAMBA_CUDA_CHECK("bench flush alloc", cudaMalloc(&p, bytes)); }
  ~Flush() { cudaFree(p); }
  void run() { MAMBA_CUDA_CHECK("bench flush", cudaMemsetAsync(p, 1, bytes, nullptr)); }
};

template <class F>
double median_ms(F f, Flush& fl, int reps = 20) {
  cudaEvent_t a, b;
  MAMBA_CUDA_CHECK("bench event", cudaEventCreate(&a));
  MAMBA_CUDA_CHECK("bench event", cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();  // warm-up (plan, algorithm choice, module load)
  MAMBA_CUDA_CHECK("bench warm", cudaDeviceSynchronize());
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    fl.run();
    MAMBA_CUDA_CHECK("bench record", cudaEventRecord(a, nullptr));
    f();
    MAMBA_CUDA_CHECK("bench record", cudaEventRecord(b, nullptr));
    MAMBA_CUDA_CHECK("bench sync", cudaEventSynchronize(b));
    float ms = 0;
    MAMBA_CUDA_CHECK("bench elapsed", cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void bench_one(int64_t N, int64_t C, int64_t S, kc::ConvDType t, bool tf32, kc::ConvAlgoSearch search, Flush& fl) {
  kc::ConvCudnnParams P;
  P.spatial = 3;
  P.dtype = t;
  P.tf32 = tf32;
  P.search = search;
  P.g.N = N;
  P.g.C_in = P.g.C_out = C;
  for (int d = 0; d < 3; ++d) {
    P.g.in[d] = P.g.out[d] = S;
    P.g.k[d] = 3;
    P.g.pad[d] = 1;
  }
  const size_t nx = size_t(N * C * S * S * S), nw = size_t(C * C * 27);
  Buf X(nx, t), W(nw, t), DY(nx, t), B(size_t(C), t), Y(nx, t), DX(nx, t), DW(nw, t), DB(size_t(C), t);
  fill_dev(X, 1);
  fill_dev(W, 2);
  fill_dev(DY, 3);
  fill_dev(B, 4);
  const double flop = 2.0 * double(nx) * double(C) * 27.0;
  const double f = median_ms([&] { kc::conv_cudnn_forward(P, X.p, W.p, nullptr, Y.p, nullptr, nullptr); }, fl);
  const double fb = median_ms([&] { kc::conv_cudnn_forward(P, X.p, W.p, B.p, Y.p, nullptr, nullptr); }, fl);
  const double bd = median_ms([&] { kc::conv_cudnn_backward_data(P, DY.p, W.p, nullptr, DX.p, nullptr, nullptr); }, fl);
  const double bf = median_ms([&] { kc::conv_cudnn_backward_filter(P, X.p, DY.p, DW.p, nullptr, nullptr); }, fl);
  const double bb = median_ms([&] { kc::conv_bias_grad_cuda(N, C, S * S * S, t, DY.p, DB.p, nullptr, nullptr); }, fl);
  // sanity: outputs finite
  auto yv = Y.get();
  bool finite = true;
  for (size_t i = 0; i < yv.size(); i += 4099) finite = finite && std::isfinite(yv[i]);
  std::printf("bench N%lld C%lld %lld^3 k3 %s%s %-9s fwd %8.3f ms %6.1f TF/s | fwd+bias %8.3f | bwd-data %8.3f ms %6.1f TF/s"
              " | bwd-filter %8.3f ms %6.1f TF/s | bias-grad %7.3f ms%s\n",
              (long long)N, (long long)C, (long long)S, tname(t), tf32 ? "+tf32" : "",
              search == kc::ConvAlgoSearch::find ? "find" : "heuristic", f, flop / f / 1e9, fb, bd, flop / bd / 1e9,
              bf, flop / bf / 1e9, bb, finite ? "" : "  NON-FINITE OUTPUT");
  std::printf("      algos: %s\n", kc::conv_cudnn_plan_info(P).c_str());
  // bytes: the operands read once, the result written once; FLOPs on tensor cores (f32 without
  // tf32 runs on the FMA pipe).
  char shape[96];
  std::snprintf(shape, sizeof shape, "N%lld C%lld %lld^3 k3 %s", (long long)N, (long long)C, (long long)S,
                search == kc::ConvAlgoSearch::find ? "find" : "heuristic");
  const double es = t == kc::ConvDType::f32 ? 4.0 : 2.0;
  const char* unit = t != kc::ConvDType::f32 ? "tc" : tf32 ? "tf32" : "fma";
  const std::string ty = std::string(tname(t)) + (tf32 ? "+tf32" : "");
  kc::perf_record("conv3d fwd cudnn", shape, ty, 1e3 * f, es * (2.0 * nx + nw), flop, unit);
  kc::perf_record("conv3d bwd-data cudnn", shape, ty, 1e3 * bd, es * (2.0 * nx + nw), flop, unit);
  kc::perf_record("conv3d bwd-filter cudnn", shape, ty, 1e3 * bf, es * (2.0 * nx + nw), flop, unit);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bool bench = false, bench_only = false, find = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--bench")) bench = true;
    else if (!std::strcmp(argv[i], "--bench-only")) bench = bench_only = true;
    else if (!std::strcmp(argv[i], "--find")) find = true;
    else {
      std::fprintf(stderr, "usage: %s [--bench] [--bench-only] [--find]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::printf("cuDNN %s\n", kc::cudnn_version_string().c_str());
    if (!bench_only) {
      unsigned seed = 1;
      for (const Case& c : all_cases()) {
        for (int v = 0; v < 4; ++v) {
          const auto t = v == 1 ? kc::ConvDType::bf16 : v == 2 ? kc::ConvDType::f16 : kc::ConvDType::f32;
          try {
            run_case(c, t, v == 3, seed++);
          } catch (const std::exception& e) {  // one failing case must not hide the others
            g_fail++;
            std::printf("FAIL exception  %s: %s\n", describe(c, t, v == 3).c_str(), e.what());
            cudaGetLastError();
          }
        }
      }
      bad_args();
      // The bias gradient over several 16384-element chunks per row (the conv cases have short rows).
      for (auto t : {kc::ConvDType::f32, kc::ConvDType::bf16}) {
        const int64_t N = 2, C = 5, L = 40000 + 3;
        std::mt19937 gen(99);
        auto dy = randn(gen, size_t(N * C * L));
        Buf DY(dy, t), DB(size_t(C), t);
        kc::conv_bias_grad_cuda(N, C, L, t, DY.p, DB.p, nullptr, nullptr);
        report(std::string("N2 C5 L40003 ") + tname(t), "bias-grad", rel_err(DB.get(), ref_bgrad(N, C, L, dy)),
               t == kc::ConvDType::f32 ? 1e-5 : 1e-2);
      }
      auto st = kc::conv_cudnn_plan_stats();
      std::printf("plans %llu, hits %llu, misses %llu\n", (unsigned long long)st.plans, (unsigned long long)st.hits,
                  (unsigned long long)st.misses);
      std::printf("worst relative error per type / op / direction:\n");
      for (const auto& kv : g_worst) std::printf("  worst %-28s %.3e\n", kv.first.c_str(), kv.second);
      std::printf("conv-cudnn-check: %d passed, %d failed\n", g_pass, g_fail);
      std::fflush(stdout);
    }
    if (bench) {
      Flush fl;
      auto guarded = [&](int64_t C, int64_t S, kc::ConvDType t, bool tf32, kc::ConvAlgoSearch se) {
        try {
          bench_one(2, C, S, t, tf32, se, fl);
        } catch (const std::exception& e) {
          g_fail++;
          std::printf("FAIL bench exception N2 C%lld %lld^3 %s: %s\n", (long long)C, (long long)S, tname(t), e.what());
          cudaGetLastError();
        }
      };
      for (auto shape : {std::pair<int64_t, int64_t>{32, 128}, std::pair<int64_t, int64_t>{64, 64}}) {
        guarded(shape.first, shape.second, kc::ConvDType::bf16, false, kc::ConvAlgoSearch::heuristic);
        guarded(shape.first, shape.second, kc::ConvDType::f32, false, kc::ConvAlgoSearch::heuristic);
        guarded(shape.first, shape.second, kc::ConvDType::f32, true, kc::ConvAlgoSearch::heuristic);
      }
      if (find)
        for (auto shape : {std::pair<int64_t, int64_t>{32, 128}, std::pair<int64_t, int64_t>{64, 64}})
        for (auto t : {kc::ConvDType::bf16, kc::ConvDType::f32})
          guarded(shape.first, shape.second, t, false, kc::ConvAlgoSearch::find);
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    std::printf("conv-cudnn-check: %d passed, %d failed (+1 exception)\n", g_pass, g_fail);
    return 1;
  }
  return g_fail ? 1 : 0;
}
