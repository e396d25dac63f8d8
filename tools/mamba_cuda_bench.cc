// mamba-cuda-bench: checks and times the CUDA tensor backend on a GPU machine.
//
//   mamba-cuda-bench [--check-only] [--decode-only] [--layers 24] [--d-model 768] [--vocab 50280] [--reps 50]
//
// 1. device, measured copy bandwidth; 2. the caching allocator (a loop of allocations must
// issue no cudaMalloc after the first pass); 3. copies host <-> device <-> device round trips;
// 4. GEMM (cuBLASLt, the m <= 8 kernel, the fallback) against the CPU sgemm at awkward sizes,
// by ||y - ref|| / ||ref|| (f32 < 1e-5, TF32 < 1e-3, bf16 / f16 < 1e-2); 5. a MambaLM step on
// the GPU (eager and CUDA graph) against the CPU step on the same random weights; 6. the
// decode table: a d_model 768, 24-layer MambaLM (random weights) decoding one token at batch
// 1, 16, 256, eager and graph, against the floor (weights read once + states read and
// written) / copy bandwidth. CUDA events, median of --reps runs after warm-up.
// Exit status: 0 when every check passed, 1 otherwise, 2 on a usage or device error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdarg>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mamba/kernels/cuda/gemm_cuda.h"
#include "mamba/kernels/cuda/perf_record.h"
#include "mamba/kernels/gemm.h"
#include "mamba/kernels/half.h"
#include "mamba/nn/cuda_decode_graph.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/ops/linear_cuda.h"
#include "mamba/tensor/cuda.h"
#include "mamba/train/modules.h"

using mamba::Device;
using mamba::DType;
using mamba::Tensor;

namespace {

int g_pass = 0, g_fail = 0;

void verdict(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void verdict(bool ok, const char* fmt, ...) {
  std::printf("  %s ", ok ? "ok  " : "FAIL");
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::printf("\n");
  ++(ok ? g_pass : g_fail);
}

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

Tensor randn(const mamba::Shape& s, std::mt19937_64& rng, float scale = 1.f) {
  Tensor t = Tensor::empty(s);
  std::normal_distribution<float> nd(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

// ---- GEMM ------------------------------------------------------------------------------

struct GemmCase {
  int64_t m, n, k;
  bool bias, w_kn, pad;  // pad: x rows with a stride > k
};

void check_gemm(Device dev, std::mt19937_64& rng) {
  std::printf("== GEMM y = x W^T + b vs CPU sgemm (relative Frobenius error)\n");
  const GemmCase cases[] = {{1, 1, 1, false, false, false},    {3, 17, 5, true, false, false},
                            {17, 3, 1000, false, false, false}, {1, 3072, 768, false, false, false},
                            {3, 1000, 17, true, false, true},   {8, 1536, 1536, false, false, false},
                            {9, 1001, 1003, true, false, false}, {1000, 1001, 17, false, false, false},
                            {1024, 1536, 768, false, false, false}, {17, 1003, 999, false, true, false},
                            {1000, 3, 1000, true, true, true},  {2048, 3072, 768, false, false, false}};
  struct Mode {
    DType dt;
    bool tf32;
    const char* name;
    double tol;
  };
  const Mode modes[] = {{DType::f32, false, "f32", 1e-5},
                        {DType::f32, true, "tf32", 1e-3},
                        {DType::bf16, false, "bf16", 1e-2},
                        {DType::f16, false, "f16", 1e-2}};
  for (const auto& c : cases) {
    const int64_t kx = c.pad ? c.k + 3 : c.k;
    const Tensor xf = randn({c.m, kx}, rng), wf = c.w_kn ? randn({c.k, c.n}, rng) : randn({c.n, c.k}, rng);
    const Tensor bf = randn({c.n}, rng);
    for (const auto& md : modes) {
      // The reference on the inputs as the GPU sees them (rounded to bf16 / f16).
      const Tensor xr = xf.to(md.dt).to(DType::f32), wr = wf.to(md.dt).to(DType::f32), br = bf.to(md.dt).to(DType::f32);
      Tensor ref = Tensor::empty({c.m, c.n});
      mamba::kernels::sgemm(false, !c.w_kn, c.m, c.n, c.k, 1.f, xr.data<float>(), kx, wr.data<float>(),
                            c.w_kn ? c.n : c.k, 0.f, ref.data<float>(), c.n);
      if (c.bias)
        for (int64_t i = 0; i < c.m; ++i)
          for (int64_t j = 0; j < c.n; ++j) ref.data<float>()[i * c.n + j] += br.data<float>()[j];
      const Tensor xd = xf.to(md.dt).to(dev).slice(1, 0, c.k), wd = wf.to(md.dt).to(dev);
      const Tensor bd = c.bias ? bf.to(md.dt).to(dev) : Tensor();
      for (int path : {0, 3}) {
        if (path == 3 && c.m * c.n * c.k > (int64_t{1} << 31)) continue;  // the fallback is slow
        mamba::ops::LinearCudaOptions o;
        o.tf32 = md.tf32;
        o.w_kn = c.w_kn;
        o.force_path = path;
        const char* taken = "?";
        o.path_taken = &taken;
        const Tensor y = mamba::ops::linear_cuda(xd, wd, bd, o);
        const double e = rel_err(y.to_vector_f32(), ref.to_vector_f32());
        verdict(e < md.tol, "gemm %-4s m %5lld n %5lld k %5lld%s%s%s  %-8s rel %.2e (tol %.0e)", md.name,
                static_cast<long long>(c.m), static_cast<long long>(c.n), static_cast<long long>(c.k),
                c.bias ? " +bias" : "", c.w_kn ? " W(k,n)" : "", c.pad ? " ldx>k" : "", taken, e, md.tol);
      }
    }
  }
}

// ---- allocator and copies ----------------------------------------------------------------

void check_allocator_and_copies(Device dev, std::mt19937_64& rng) {
  std::printf("== caching allocator\n");
  const auto s0 = mamba::cuda::allocator_stats(dev.index);
  auto pass = [&] {
    std::vector<Tensor> live;
    for (int64_t sz : {1, 100, 513, 4096, 1 << 20, 3 << 20, 17 << 20, 1000})
      live.push_back(Tensor::empty({sz}, DType::f32, dev));
  };
  pass();
  const auto s1 = mamba::cuda::allocator_stats(dev.index);
  for (int i = 0; i < 100; ++i) pass();
  const auto s2 = mamba::cuda::allocator_stats(dev.index);
  verdict(s2.cuda_malloc_calls == s1.cuda_malloc_calls && s2.cache_hits >= s1.cache_hits + 800,
          "100 passes of 8 allocations: cudaMalloc calls %llu -> %llu -> %llu, hits %llu -> %llu, in use %llu",
          (unsigned long long)s0.cuda_malloc_calls, (unsigned long long)s1.cuda_malloc_calls,
          (unsigned long long)s2.cuda_malloc_calls, (unsigned long long)s1.cache_hits,
          (unsigned long long)s2.cache_hits, (unsigned long long)s2.bytes_in_use);
  mamba::cuda::release_cache(dev.index);
  const auto s3 = mamba::cuda::allocator_stats(dev.index);
  verdict(s3.bytes_cached < s2.bytes_cached || s2.bytes_cached == 0,
          "release_cache: cached %llu -> %llu bytes, reserved %llu -> %llu", (unsigned long long)s2.bytes_cached,
          (unsigned long long)s3.bytes_cached, (unsigned long long)s2.bytes_reserved,
          (unsigned long long)s3.bytes_reserved);

  std::printf("== copies\n");
  const Tensor h = randn({37, 129}, rng);
  const Tensor d = h.to(dev);
  verdict(d.to(Device::cpu()).to_vector_f32() == h.to_vector_f32(), "host -> device -> host round trip, bit-exact");
  const Tensor dt = d.transpose(0, 1).contiguous();
  verdict(dt.to(Device::cpu()).to_vector_f32() == h.transpose(0, 1).contiguous().to_vector_f32(),
          "device transpose (strided copy kernel) matches the CPU");
  const Tensor db = d.to(DType::bf16).to(DType::f32);
  verdict(db.to(Device::cpu()).to_vector_f32() == h.to(DType::bf16).to(DType::f32).to_vector_f32(),
          "f32 -> bf16 -> f32 on the device matches the CPU rounding");
  mamba::cuda::Stream st = mamba::cuda::Stream::create(dev);
  Tensor pin = mamba::cuda::pinned_empty({37, 129});
  Tensor d2 = Tensor::empty({37, 129}, DType::f32, dev);
  Tensor back = Tensor::empty({37, 129});
  mamba::cuda::copy_async(d2, h, st);     // pageable -> device (staged)
  mamba::cuda::copy_async(pin, d2, st);   // device -> pinned
  mamba::cuda::copy_async(back, d2, st);  // device -> pageable (staged, filled by a host callback)
  st.synchronize();
  verdict(pin.to_vector_f32() == h.to_vector_f32() && back.to_vector_f32() == h.to_vector_f32(),
          "asynchronous copies on a stream (pageable staged, pinned direct), bit-exact");
  if (mamba::cuda::device_count() > 1) {
    const Tensor other = d.to(Device::cuda(1));
    verdict(other.to(Device::cpu()).to_vector_f32() == h.to_vector_f32(), "device -> device (cuda:0 -> cuda:1)");
  }
}

// ---- MambaLM -------------------------------------------------------------------------------

mamba::nn::MambaLM random_lm(int64_t d_model, int64_t layers, int64_t vocab, uint64_t seed) {
  mamba::nn::MambaLMConfig cfg;
  cfg.d_model = d_model;
  cfg.n_layer = layers;
  cfg.vocab_size = vocab;
  cfg.ssm_cfg = {{"d_state", 16}, {"d_conv", 4}, {"expand", 2}};
  mamba::nn::MambaLM lm(cfg);
  std::mt19937_64 rng(seed);
  for (auto& [name, t] : lm.parameters()) mamba::train::reference_init(name, *t, rng);
  lm.refresh_derived();
  return lm;
}

void check_lm(Device dev) {
  std::printf("== MambaLM on the GPU vs the CPU (random weights, d_model 96, 3 layers, vocab 301)\n");
  for (DType dt : {DType::f32, DType::bf16}) {
    mamba::nn::MambaLM cpu = random_lm(96, 3, 301, 7), gpu = random_lm(96, 3, 301, 7);
    gpu.to(dev, dt);
    const double tol = dt == DType::f32 ? 1e-4 : 3e-2;
    std::vector<int64_t> idv;
    for (int i = 0; i < 2 * 37; ++i) idv.push_back((i * 37 + 11) % 301);
    const Tensor ids = Tensor::from_vector_i64(idv, {2, 37});
    auto cc = cpu.new_cache(2);
    auto gc = gpu.new_cache(2);
    const Tensor lc = cpu.forward(ids, &cc), lg = gpu.forward(ids, &gc);
    verdict(rel_err(lg.to_vector_f32(), lc.to_vector_f32()) < tol, "%s prefill logits (2 x 37) rel %.2e",
            mamba::dtype_name(dt), rel_err(lg.to_vector_f32(), lc.to_vector_f32()));
    verdict(rel_err(gc.layers[2].ssm_state.to_vector_f32(), cc.layers[2].ssm_state.to_vector_f32()) < tol,
            "%s ssm_state after prefill rel %.2e", mamba::dtype_name(dt),
            rel_err(gc.layers[2].ssm_state.to_vector_f32(), cc.layers[2].ssm_state.to_vector_f32()));
    mamba::nn::CudaDecodeGraph dec(gpu, 2), dec_u(gpu, 2, false), dec_f(gpu, 2, true, false);
    dec.prefill(ids);
    dec_u.prefill(ids);
    dec_f.prefill(ids);
    double worst_eager = 0, worst_graph = 0, worst_unfused = 0, worst_fused4 = 0, worst_eager_p = 0;
    for (int t = 0; t < 5; ++t) {
      const Tensor next = Tensor::from_vector_i64({(t * 13 + 5) % 301, (t * 7 + 2) % 301}, {2});
      const Tensor sc = cpu.step(next, cc);
      const Tensor sg = gpu.step(next, gc);
      const Tensor& sd = dec.step(next);
      worst_eager = std::max(worst_eager, rel_err(sg.to_vector_f32(), sc.to_vector_f32()));
      worst_graph = std::max(worst_graph, rel_err(sd.to_vector_f32(), sc.to_vector_f32()));
      worst_unfused = std::max(worst_unfused, rel_err(dec_u.step(next).to_vector_f32(), sc.to_vector_f32()));
      worst_fused4 = std::max(worst_fused4, rel_err(dec_f.step(next).to_vector_f32(), sc.to_vector_f32()));
    }
    verdict(worst_fused4 < tol && dec_f.fused() && !dec_f.persistent(),
            "%s 5 decode steps (CUDA graph, fused 4 kernels per layer) worst rel %.2e", mamba::dtype_name(dt), worst_fused4);
    // The persistent kernel launched eagerly (no graph), on odd batches (1, 3, 5) and a prompt of 1.
    for (int64_t B : {1, 3, 5}) {
      // d_model 128: dt_rank 8, so the vector phase 3 (MAMBA_DECODE_P3SMEM=1) applies too.
      mamba::nn::MambaLM cpu2 = random_lm(128, 3, 301, 11), gpu2 = random_lm(128, 3, 301, 11);
      gpu2.to(dev, dt);
      std::vector<int64_t> pv;
      for (int64_t i = 0; i < B; ++i) pv.push_back((i * 53 + 3) % 301);
      const Tensor prompt = Tensor::from_vector_i64(pv, {B, 1});
      auto c2 = cpu2.new_cache(B);
      cpu2.forward(prompt, &c2);
      mamba::nn::CudaDecodeGraph dp(gpu2, B);
      dp.prefill(prompt);
      double w = 0;
      for (int t = 0; t < 4; ++t) {
        std::vector<int64_t> nv;
        for (int64_t i = 0; i < B; ++i) nv.push_back((t * 17 + i * 29 + 1) % 301);
        const Tensor next = Tensor::from_vector_i64(nv, {B});
        const Tensor sc = cpu2.step(next, c2);
        const Tensor& sd = (t % 2 == 0) ? dp.step_eager(next) : dp.step(next);
        w = std::max(w, rel_err(sd.to_vector_f32(), sc.to_vector_f32()));
      }
      w = std::max(w, rel_err(dp.cache().layers[2].ssm_state.to_vector_f32(), c2.layers[2].ssm_state.to_vector_f32()));
      w = std::max(w, rel_err(dp.cache().layers[1].conv_state.to_vector_f32(), c2.layers[1].conv_state.to_vector_f32()));
      worst_eager_p = std::max(worst_eager_p, w);
      verdict(w < tol && dp.persistent(), "%s batch %lld: 4 persistent decode steps + states vs CPU worst rel %.2e (persistent %s)",
              mamba::dtype_name(dt), static_cast<long long>(B), w, dp.persistent() ? "yes" : "no");
    }
    verdict(worst_unfused < tol && dec.fused() && !dec_u.fused(), "%s 5 decode steps (CUDA graph, unfused kernels) worst rel %.2e",
            mamba::dtype_name(dt), worst_unfused);
    verdict(worst_eager < tol, "%s 5 decode steps (MambaLM::step on cuda) worst rel %.2e", mamba::dtype_name(dt),
            worst_eager);
    verdict(worst_graph < tol && dec.captured() && dec.persistent(),
            "%s 5 decode steps (CUDA graph of the persistent kernel, captured %s) worst rel %.2e",
            mamba::dtype_name(dt), dec.captured() ? "yes" : "no", worst_graph);
  }
}

// ---- GEMV timing (the m <= 8 kernel on the decode shapes) -------------------------------------

// Each shape: y (m, n) = x (m, k) W^T, bf16 in and out (the LM head: f32 out). 24 launches on
// rotating copies of W (>= 128 MB in all, so W comes from HBM, not L2) captured in one graph;
// time per GEMV = graph time / 24; GB/s = bytes of W (+ x, y) / time.
void time_gemv(Device dev, double copy_gbs) {
  namespace kc = mamba::kernels::cuda;
  struct Shape { const char* name; int64_t n, k; bool f32_out; };
  const Shape shapes[] = {{"in_proj 768->3072", 3072, 768, false}, {"x_proj 1536->80", 80, 1536, false},
                          {"dt_proj 48->1536", 1536, 48, false}, {"out_proj 1536->768", 768, 1536, false},
                          {"lm_head 768->50280", 50280, 768, true}};
  std::printf("== GEMV (m <= 8 kernel, bf16 W, graph of 24 launches on rotating W copies), copy %.0f GB/s\n", copy_gbs);
  std::printf("  %-20s %3s %6s %10s %10s %8s\n", "shape", "m", "split", "us/gemv", "GB/s", "% copy");
  std::mt19937_64 rng(5);
  for (const auto& sh : shapes) {
    const uint64_t wbytes = static_cast<uint64_t>(sh.n * sh.k) * 2;
    const int copies = static_cast<int>(std::min<uint64_t>(64, std::max<uint64_t>(2, (128ull << 20) / wbytes + 1)));
    std::vector<Tensor> ws;
    for (int c = 0; c < copies; ++c) ws.push_back(randn({sh.n, sh.k}, rng).to(DType::bf16).to(dev));
    for (int64_t m : {1, 8}) {
      const Tensor x = randn({m, sh.k}, rng).to(DType::bf16).to(dev);
      Tensor y = Tensor::empty({m, sh.n}, sh.f32_out ? DType::f32 : DType::bf16, dev);
      mamba::cuda::Stream st = mamba::cuda::Stream::create(dev, true);
      cudaStream_t s = static_cast<cudaStream_t>(st.native());
      auto launch = [&](int c) {
        kc::GemmCudaParams p;
        p.m = m; p.n = sh.n; p.k = sh.k;
        p.x = x.raw_data(); p.ldx = sh.k;
        p.w = ws[c % copies].raw_data(); p.ldw = sh.k;
        p.y = y.raw_data(); p.ldy = sh.n;
        p.in_type = kc::GemmType::bf16;
        p.out_type = sh.f32_out ? kc::GemmType::f32 : kc::GemmType::bf16;
        p.force = kc::GemmPath::small_m;
        kc::gemm_cuda(p, nullptr, 0, s);
      };
      constexpr int kLaunches = 24;
      cudaGraph_t g = nullptr;
      cudaGraphExec_t ge = nullptr;
      cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
      for (int c = 0; c < kLaunches; ++c) launch(c);
      cudaStreamEndCapture(s, &g);
      cudaGraphInstantiate(&ge, g, 0);
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      std::vector<float> t;
      for (int r = -3; r < 20; ++r) {
        cudaEventRecord(e0, s);
        cudaGraphLaunch(ge, s);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r >= 0) t.push_back(ms * 1000.f / kLaunches);
      }
      const cudaError_t err = cudaGetLastError();
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaGraphExecDestroy(ge);
      cudaGraphDestroy(g);
      std::sort(t.begin(), t.end());
      const double us = t[t.size() / 2];
      const double bytes = static_cast<double>(wbytes) + m * sh.k * 2.0 + m * sh.n * (sh.f32_out ? 4.0 : 2.0);
      const char* split_env = std::getenv("MAMBA_GEMV_SPLIT");
      std::printf("  %-20s %3lld %6s %10.2f %10.0f %8.0f%s\n", sh.name, static_cast<long long>(m),
                  split_env ? split_env : "auto", us, bytes / (us * 1e-6) / 1e9, 100.0 * bytes / (us * 1e-6) / 1e9 / copy_gbs,
                  err == cudaSuccess ? "" : cudaGetErrorString(err));
    }
  }
}

// ---- decode timing ---------------------------------------------------------------------------

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void time_decode(Device dev, int64_t d_model, int64_t layers, int64_t vocab, int reps, double copy_gbs) {
  for (DType dt : {DType::bf16, DType::f32}) {
    mamba::nn::MambaLM lm = random_lm(d_model, layers, vocab, 1);
    uint64_t weight_bytes = 0;
    double matrix_weights = 0;  // one multiply-add per token each
    for (auto& [name, t] : lm.parameters()) {
      const bool matrix = name.find("proj.weight") != std::string::npos || name.find("embedding") != std::string::npos ||
                          name.find("lm_head") != std::string::npos;
      weight_bytes += static_cast<uint64_t>(t->numel()) * (matrix ? mamba::dtype_size(dt) : 4);
      if (matrix) matrix_weights += static_cast<double>(t->numel());
    }
    lm.to(dev, dt);
    std::printf("== decode one token: MambaLM d_model %lld, %lld layers, vocab %lld, %s weights/activations "
                "(weights %.1f MB), copy %.0f GB/s\n",
                static_cast<long long>(d_model), static_cast<long long>(layers), static_cast<long long>(vocab),
                mamba::dtype_name(dt), weight_bytes / 1e6, copy_gbs);
    std::printf("  %6s %8s %8s %12s %12s %12s %11s %12s %10s\n", "batch", "kernels", "variant", "eager us", "graph us",
                "floor us", "graph/floor", "tokens/s", "GB/s");
    for (int64_t B : {1, 4, 16, 256}) {
     std::vector<float> first_logits;  // the persistent step's first logits, checked against the fused path
     for (int variant : {0, 1, 2}) {  // 0 persistent, 1 fused (4 kernels / layer), 2 unfused
      const bool fused = variant < 2;
      if (variant == 2 && B > 8) continue;  // batch > 8: the fused request is the unfused path
      if (variant == 0 && B > 16) continue;  // the persistent step: batch <= 16 (version 3)
      mamba::nn::CudaDecodeGraph dec(lm, B, fused, variant == 0);
      uint64_t state_bytes = 0;
      for (auto& l : dec.cache().layers) state_bytes += l.conv_state.nbytes() + l.ssm_state.nbytes();
      std::vector<int64_t> idv(B);
      for (int64_t i = 0; i < B; ++i) idv[i] = (i * 31 + 7) % vocab;
      const Tensor ids = Tensor::from_vector_i64(idv, {B});
      {
        const std::vector<float> l0 = dec.step(ids).to_vector_f32();
        if (dec.persistent()) first_logits = l0;
        if (variant == 1 && !first_logits.empty()) {
          const double r = rel_err(first_logits, l0);
          verdict(r < (dt == DType::f32 ? 1e-4 : 2e-2), "%s batch %lld d_model %lld x %lld layers: persistent vs fused-4 first-step logits rel %.2e",
                  mamba::dtype_name(dt), static_cast<long long>(B), static_cast<long long>(d_model),
                  static_cast<long long>(layers), r);
        }
      }
      dec.step(ids);  // captures
      cudaStream_t s = static_cast<cudaStream_t>(dec.stream());
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      std::vector<float> tg, te;
      for (int i = -5; i < reps; ++i) {
        cudaEventRecord(e0, s);
        dec.replay();
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) tg.push_back(ms * 1000.f);
      }
      for (int i = -3; i < std::max(reps / 2, 10); ++i) {
        cudaEventRecord(e0, s);
        dec.step_eager(ids);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) te.push_back(ms * 1000.f);
      }
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      const double g = median(tg), e = median(te);
      const double moved = static_cast<double>(weight_bytes) + 2.0 * static_cast<double>(state_bytes);
      const double floor_us = moved / (copy_gbs * 1e9) * 1e6;
      std::printf("  %6lld %8lld %8s %12.1f %12.1f %12.1f %11.2f %12.0f %10.0f\n", static_cast<long long>(B),
                  static_cast<long long>(dec.kernels_per_step()),
                  dec.persistent() ? "persist" : dec.fused() ? "fused" : "unfused", e, g, floor_us,
                  g / floor_us, B / (g * 1e-6), moved / (g * 1e-6) / 1e9);
      char shape[96];
      std::snprintf(shape, sizeof shape, "%lldx%lld V%lld batch %lld (graph)", static_cast<long long>(layers),
                    static_cast<long long>(d_model), static_cast<long long>(vocab), static_cast<long long>(B));
      mamba::kernels::cuda::perf_record(
          std::string("mamba_lm decode step ") + (dec.persistent() ? "persistent" : dec.fused() ? "fused" : "unfused"), shape,
          mamba::dtype_name(dt), g, moved, 2.0 * matrix_weights * static_cast<double>(B), dt == DType::f32 ? "fma" : "tc");
     }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool check_only = false, decode_only = false;
  int64_t layers = 24, d_model = 768, vocab = 50280;
  int reps = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> long long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mamba-cuda-bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--check-only") check_only = true;
    else if (a == "--decode-only") decode_only = true;
    else if (a == "--layers") layers = next();
    else if (a == "--d-model") d_model = next();
    else if (a == "--vocab") vocab = next();
    else if (a == "--reps") reps = static_cast<int>(next());
    else {
      std::fprintf(stderr, "usage: mamba-cuda-bench [--check-only] [--decode-only] [--layers N] [--d-model D] [--vocab V] [--reps R]\n");
      return 2;
    }
  }
  const Device dev = Device::cuda(0);
  try {
    mamba::cuda::require_device(dev, "mamba-cuda-bench");
    std::printf("device %s: %s\n", dev.str().c_str(), mamba::cuda::device_name(dev).c_str());
    const double bw = mamba::cuda::measure_copy_bandwidth_gbs(dev);
    std::printf("copy bandwidth (device to device, 1 GiB, read + write): %.0f GB/s\n", bw);
    std::mt19937_64 rng(42);
    if (!decode_only) {
      check_allocator_and_copies(dev, rng);
      check_gemm(dev, rng);
    }
    check_lm(dev);
    if (!check_only && !decode_only) time_gemv(dev, bw);
    if (!check_only) time_decode(dev, d_model, layers, vocab, reps, bw);
    const auto s = mamba::cuda::allocator_stats(dev.index);
    std::printf("allocator: in use %.1f MB, reserved %.1f MB, peak %.1f MB, hits %llu, misses %llu, cudaMalloc %llu\n",
                s.bytes_in_use / 1e6, s.bytes_reserved / 1e6, s.peak_bytes_in_use / 1e6,
                (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses,
                (unsigned long long)s.cuda_malloc_calls);
  } catch (const std::exception& e) {
    std::printf("ERROR %s\n", e.what());
    ++g_fail;
  }
  std::printf("cuda-bench: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
