// mamba-train-lm-cuda: trains a Mamba-1 MambaLM on one GPU (MambaLMTrainerCuda) on generated
// token data with structure, and reports training throughput and peak device memory.
//
//   mamba-train-lm-cuda [--layers 24 --d-model 768 --seq-len 2048 --batch 8 --steps 30
//                        --dtype bf16|f32 --vocab 50277 --seed 1 --lr 1e-3 --warmup 5
//                        --log-every 5 --profile 0 --untied]
//   mamba-train-lm-cuda --check [--dtype f32|bf16|both] [--steps 20] [--layers --d-model --seq-len --batch --vocab]
//
// Data: next = perm[current] with probability 0.85, else uniform (a fixed random permutation),
// so the loss must fall from ln(vocab) towards the noise floor. Timing: CUDA events around each
// step (forward, backward, clipping, AdamW), the median over the steps after --warmup. Memory:
// the caching allocator's peak bytes in use and reserved, and cudaMemGetInfo's used bytes.
// --check: the CPU comparison of cuda_train_check (mamba/nn/mamba_lm_train_cuda.h); exit 1 if
// a tolerance is missed (f32: rel < 1e-4 for the loss, every gradient, the step losses and the
// parameters after the AdamW steps; bf16: rel < 3e-2 for the loss and every gradient).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "mamba/kernels/cuda/perf_record.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/nn/mamba_lm_train_cuda.h"
#include "mamba/tensor/cuda.h"
#include "mamba/train/modules.h"

namespace {

struct Options {
  int64_t layers = 24, d_model = 768, seq_len = 2048, batch = 8, steps = 30, vocab = 50277, warmup = 5,
          log_every = 5, profile = 0;
  std::string dtype = "bf16";
  uint64_t seed = 1;
  double lr = 1e-3;
  bool check = false, untied = false, steps_given = false, shape_given = false;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr, "mamba-train-lm-cuda: %s\n", msg.c_str());
  std::exit(2);
}

int64_t int_arg(const std::string& name, const char* v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (!end || *end != '\0' || x < lo || x > hi)
    usage(name + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--layers") o.layers = int_arg(a, val(), 1, 4096), o.shape_given = true;
    else if (a == "--d-model") o.d_model = int_arg(a, val(), 1, 1 << 16), o.shape_given = true;
    else if (a == "--seq-len") o.seq_len = int_arg(a, val(), 1, 1 << 24), o.shape_given = true;
    else if (a == "--batch") o.batch = int_arg(a, val(), 1, 65535), o.shape_given = true;
    else if (a == "--steps") o.steps = int_arg(a, val(), 0, 1000000), o.steps_given = true;
    else if (a == "--vocab") o.vocab = int_arg(a, val(), 2, 1LL << 31), o.shape_given = true;
    else if (a == "--seed") o.seed = static_cast<uint64_t>(int_arg(a, val(), 0, 1LL << 62));
    else if (a == "--warmup") o.warmup = int_arg(a, val(), 0, 1000000);
    else if (a == "--log-every") o.log_every = int_arg(a, val(), 1, 1000000);
    else if (a == "--profile") o.profile = int_arg(a, val(), 0, 1000);
    else if (a == "--lr") {
      const char* v = val();
      char* end = nullptr;
      o.lr = std::strtod(v, &end);
      if (!end || *end != '\0' || !(o.lr >= 0) || !std::isfinite(o.lr)) usage("--lr must be a finite number >= 0");
    } else if (a == "--dtype") {
      o.dtype = val();
      if (o.dtype != "bf16" && o.dtype != "f32" && o.dtype != "both") usage("--dtype must be bf16, f32 (or both with --check)");
    } else if (a == "--check") o.check = true;
    else if (a == "--untied") o.untied = true;
    else if (a == "--help" || a == "-h") {
      std::printf("usage: mamba-train-lm-cuda [--layers N --d-model N --seq-len N --batch N --steps N --dtype bf16|f32 "
                  "--vocab N --seed N --lr X --warmup N --log-every N --profile N --untied] | --check [--dtype f32|bf16|both]\n");
      std::exit(0);
    } else usage("unknown option '" + a + "' (--help lists them)");
  }
  if (!o.check && o.dtype == "both") usage("--dtype both is for --check only");
  if (o.batch * o.seq_len > 65535LL * 256) usage("--batch * --seq-len must be <= 16776960");
  return o;
}

int run_check(const Options& o) {
  bool ok = true;
  std::vector<std::string> dts = o.dtype == "both" ? std::vector<std::string>{"f32", "bf16"} : std::vector<std::string>{o.dtype};
  for (bool tied : {true, false}) {
    for (const auto& dt : dts) {
      mamba::nn::CudaTrainCheckOptions c;
      c.compute = dt == "f32" ? mamba::DType::f32 : mamba::DType::bf16;
      c.tie_embeddings = tied;
      c.steps = dt == "f32" ? (o.steps_given ? o.steps : 20) : 0;
      c.seed = o.seed;
      if (o.shape_given) {
        // --check with a shape: that shape for the comparison (e.g. one whose sizes are
        // multiples of 16, so every GEMM runs through cuBLASLt rather than the fallback).
        const Options def;
        c.layers = o.layers != def.layers ? o.layers : 2;
        c.d_model = o.d_model != def.d_model ? o.d_model : 64;
        c.seqlen = o.seq_len != def.seq_len ? o.seq_len : 37;
        c.batch = o.batch != def.batch ? o.batch : 3;
        c.vocab = o.vocab != def.vocab ? o.vocab : 97;
      }
      const double tol = dt == "f32" ? 1e-4 : 3e-2;
      const auto r = mamba::nn::cuda_train_check(c);
      const double lrel = std::abs(r.loss_gpu - r.loss_cpu) / std::abs(r.loss_cpu);
      const bool pass = lrel < tol && r.worst_grad_rel < tol &&
                        (c.steps == 0 || (r.worst_step_loss_rel < tol && r.worst_param_rel < tol));
      ok &= pass;
      std::printf("check %s %s (%lld layers, d_model %lld, vocab %lld, len %lld, batch %lld): loss cpu %.7f gpu %.7f "
                  "rel %.2e; worst grad rel %.2e (%s); tol %.0e\n",
                  dt.c_str(), tied ? "tied" : "untied", static_cast<long long>(c.layers),
                  static_cast<long long>(c.d_model), static_cast<long long>(c.vocab), static_cast<long long>(c.seqlen),
                  static_cast<long long>(c.batch), r.loss_cpu, r.loss_gpu, lrel, r.worst_grad_rel,
                  r.worst_grad_name.c_str(), tol);
      for (const auto& [n, e] : r.grad_rel) std::printf("  grad %-40s rel %.2e%s\n", n.c_str(), e, e < tol ? "" : "  FAIL");
      if (c.steps > 0)
        std::printf("  %lld AdamW steps vs the CPU optimiser: worst step-loss rel %.2e, worst param rel %.2e (%s)\n",
                    static_cast<long long>(c.steps), r.worst_step_loss_rel, r.worst_param_rel, r.worst_param_name.c_str());
      std::printf("%s check %s %s\n", pass ? "ok" : "FAIL", dt.c_str(), tied ? "tied" : "untied");
    }
  }
  std::printf("train-check: %s\n", ok ? "all passed" : "FAILED");
  return ok ? 0 : 1;
}

int run_train(const Options& o) {
  using mamba::Tensor;
  nlohmann::json cfg = {{"d_model", o.d_model},
                        {"n_layer", o.layers},
                        {"vocab_size", o.vocab},
                        {"pad_vocab_size_multiple", 8},
                        {"tie_embeddings", !o.untied},
                        {"ssm_cfg", {{"layer", "Mamba1"}}}};
  mamba::nn::MambaLM lm(mamba::nn::MambaLMConfig::from_json(cfg));
  std::mt19937_64 rng(o.seed);
  for (auto& [name, t] : lm.parameters()) mamba::train::reference_init(name, *t, rng);
  lm.refresh_derived();
  std::vector<int64_t> perm(static_cast<size_t>(o.vocab));
  for (int64_t i = 0; i < o.vocab; ++i) perm[static_cast<size_t>(i)] = i;
  std::shuffle(perm.begin(), perm.end(), rng);

  mamba::nn::CudaTrainOptions topt;
  topt.compute = o.dtype == "f32" ? mamba::DType::f32 : mamba::DType::bf16;
  mamba::nn::MambaLMTrainerCuda tr(lm, topt);
  const mamba::Device dev = mamba::Device::cuda(0);
  std::printf("model: %lld layers, d_model %lld, vocab %lld (%s head), %lld parameters; batch %lld x length %lld, %s, "
              "device %s\n",
              static_cast<long long>(o.layers), static_cast<long long>(o.d_model), static_cast<long long>(o.vocab),
              o.untied ? "untied" : "tied", static_cast<long long>(tr.parameter_count()),
              static_cast<long long>(o.batch), static_cast<long long>(o.seq_len), o.dtype.c_str(),
              mamba::cuda::device_name(dev).c_str());

  const int64_t b = o.batch, l = o.seq_len, n = b * l;
  std::uniform_int_distribution<int64_t> tok(0, o.vocab - 1);
  std::uniform_real_distribution<double> u(0, 1);
  auto make_batch = [&]() {
    Tensor ids = Tensor::empty({b, l}, mamba::DType::i64), tg = Tensor::empty({b, l}, mamba::DType::i64);
    for (int64_t i = 0; i < b; ++i) {
      int64_t cur = tok(rng);
      for (int64_t t = 0; t < l; ++t) {
        ids.data<int64_t>()[i * l + t] = cur;
        const int64_t next = u(rng) < 0.85 ? perm[static_cast<size_t>(cur)] : tok(rng);
        tg.data<int64_t>()[i * l + t] = next;
        cur = next;
      }
    }
    return std::make_pair(ids, tg);
  };
  // Batches made beforehand so the host's generation is not in the timed loop.
  std::vector<std::pair<Tensor, Tensor>> data;
  const int64_t distinct = std::min<int64_t>(o.steps, 64);
  for (int64_t s = 0; s < distinct; ++s) data.push_back(make_batch());

  const cudaStream_t stream = static_cast<cudaStream_t>(mamba::cuda::current_stream(dev).native());
  std::vector<cudaEvent_t> ev(static_cast<size_t>(2 * o.steps)), mid(static_cast<size_t>(o.steps));
  for (auto& e : mid) cudaEventCreate(&e);
  for (auto& e : ev) cudaEventCreate(&e);
  double loss_first = NAN, loss_last = NAN;
  uint64_t mallocs_after_warmup = 0;
  for (int64_t s = 0; s < o.steps; ++s) {
    const auto& [ids, tg] = data[static_cast<size_t>(s % distinct)];
    cudaEventRecord(ev[static_cast<size_t>(2 * s)], stream);
    tr.forward_backward(ids, tg);
    cudaEventRecord(mid[static_cast<size_t>(s)], stream);
    tr.optimizer_step(o.lr);
    cudaEventRecord(ev[static_cast<size_t>(2 * s + 1)], stream);
    if (s == 0) loss_first = tr.last_loss();
    if (s + 1 == std::min(o.warmup, o.steps)) {
      mamba::cuda::synchronize(dev);
      mallocs_after_warmup = mamba::cuda::allocator_stats(0).cuda_malloc_calls;
    }
    if ((s + 1) % o.log_every == 0 || s + 1 == o.steps) {
      loss_last = tr.last_loss();
      float ms = 0;
      cudaEventElapsedTime(&ms, ev[static_cast<size_t>(2 * s)], ev[static_cast<size_t>(2 * s + 1)]);
      std::printf("step %5lld  loss %.4f  grad-norm %.3f  step %.1f ms  %.0f tokens/s\n", static_cast<long long>(s + 1),
                  loss_last, tr.last_grad_norm(), ms, n / (ms * 1e-3));
      std::fflush(stdout);
    }
  }
  mamba::cuda::synchronize(dev);
  std::vector<double> times, fb_times, opt_times;
  for (int64_t s = o.warmup; s < o.steps; ++s) {
    float ms = 0, fb = 0, op = 0;
    cudaEventElapsedTime(&ms, ev[static_cast<size_t>(2 * s)], ev[static_cast<size_t>(2 * s + 1)]);
    cudaEventElapsedTime(&fb, ev[static_cast<size_t>(2 * s)], mid[static_cast<size_t>(s)]);
    cudaEventElapsedTime(&op, mid[static_cast<size_t>(s)], ev[static_cast<size_t>(2 * s + 1)]);
    times.push_back(ms);
    fb_times.push_back(fb);
    opt_times.push_back(op);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  for (auto& e : mid) cudaEventDestroy(e);
  std::sort(fb_times.begin(), fb_times.end());
  std::sort(opt_times.begin(), opt_times.end());
  if (!fb_times.empty())
    std::printf("median forward+backward %.2f ms, clipping + AdamW %.2f ms\n", fb_times[fb_times.size() / 2],
                opt_times[opt_times.size() / 2]);
  std::sort(times.begin(), times.end());
  const double med = times.empty() ? NAN : times[times.size() / 2];
  const auto st = mamba::cuda::allocator_stats(0);
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::printf("\n| layers | d_model | vocab | batch | length | dtype | steps timed | median step ms | tokens/s | "
              "peak in use GiB | reserved GiB | device used GiB | loss first | loss last |\n");
  std::printf("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %lld | %lld | %lld | %lld | %lld | %s | %zu | %.2f | %.0f | %.2f | %.2f | %.2f | %.4f | %.4f |\n",
              static_cast<long long>(o.layers), static_cast<long long>(o.d_model), static_cast<long long>(o.vocab),
              static_cast<long long>(b), static_cast<long long>(l), o.dtype.c_str(), times.size(), med,
              n / (med * 1e-3), st.peak_bytes_in_use / gib, st.bytes_reserved / gib, (total_b - free_b) / gib,
              loss_first, loss_last);
  // The device round's summary row: the GEMM FLOPs of one step, 6 x parameters x tokens
  // (forward 2, backward 4 per multiply-add of every weight matrix; the tied head's GEMM is the
  // embedding's); the GEMMs run on the tensor cores in bf16, on the FMA pipe in f32 (no TF32).
  if (!times.empty())
    mamba::kernels::cuda::perf_record(
        "mamba_lm train step (fwd+bwd+AdamW)",
        std::to_string(o.layers) + "x" + std::to_string(o.d_model) + " V" + std::to_string(o.vocab) + " b" +
            std::to_string(b) + " l" + std::to_string(l),
        o.dtype, med * 1e3, 0, 6.0 * static_cast<double>(tr.parameter_count()) * static_cast<double>(n),
        o.dtype == "f32" ? "fma" : "tc");
  std::printf("scan checkpoints kept from the forward to the backward: %.2f GiB%s\n",
              static_cast<double>(tr.scan_checkpoint_bytes()) / gib,
              tr.scan_checkpoint_bytes() ? "" : " (the scan backward computes them: MAMBA_GT_FWD_CKPT=0 or d_state > 16)");
  std::printf("cudaMalloc calls: %llu after warm-up, %llu at the end (steady state allocates nothing new when equal)\n",
              static_cast<unsigned long long>(mallocs_after_warmup),
              static_cast<unsigned long long>(st.cuda_malloc_calls));
  if (o.profile > 0) {
    // Phase table: CUDA events at every phase end (summed over the layers), averaged over
    // --profile extra steps after the timed ones.
    tr.set_profile(true);
    std::vector<std::pair<std::string, double>> acc;
    for (int64_t s = 0; s < o.profile; ++s) {
      const auto& [ids, tg] = data[static_cast<size_t>(s % distinct)];
      tr.step(ids, tg, o.lr);
      for (const auto& [name, ms] : tr.profile_ms()) {
        auto it = std::find_if(acc.begin(), acc.end(), [&](const auto& x) { return x.first == name; });
        if (it == acc.end()) acc.emplace_back(name, ms);
        else it->second += ms;
      }
    }
    tr.set_profile(false);
    double total = 0;
    for (const auto& x : acc) total += x.second;
    total /= static_cast<double>(o.profile);
    std::printf("\nphases (CUDA events, mean of %lld steps; profiled step %.2f ms vs median %.2f ms unprofiled)\n",
                static_cast<long long>(o.profile), total, med);
    std::printf("| phase | ms / step | %% of step |\n|---|---:|---:|\n");
    for (const auto& [name, ms] : acc)
      std::printf("| %s | %.3f | %.1f |\n", name.c_str(), ms / static_cast<double>(o.profile),
                  100.0 * ms / static_cast<double>(o.profile) / total);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    return o.check ? run_check(o) : run_train(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-train-lm-cuda: %s\n", e.what());
    return 1;
  }
}
