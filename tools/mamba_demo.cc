// mamba-demo: loads a Mamba language model, prefills a prompt through the parallel path,
// decodes through the recurrent path, and prints the tokens and the timing.
//
//   mamba-demo MODEL [--prompt 1,2,3] [--tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//
// MODEL is a model directory (config.json + model.safetensors) or a .safetensors file with
// __metadata__.config (the golden LM files).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "mamba/kernels/parallel.h"
#include "mamba/nn/mamba_lm.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string join(const int64_t* p, int64_t n) {
  std::ostringstream o;
  for (int64_t i = 0; i < n; ++i) o << (i ? " " : "") << p[i];
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  mamba::kernels::flush_denormals();
  if (argc < 2) {
    std::fprintf(stderr, "usage: mamba-demo MODEL [--prompt 1,2,3] [--tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n");
    return 2;
  }
  std::string model = argv[1], prompt_s = "1,2,3,4,5,6,7,8";
  int64_t tokens = 16;
  mamba::nn::SamplingOptions sampled{0.8, 8, 0.95, 42};
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--prompt") prompt_s = v;
    else if (a == "--tokens") tokens = std::atoll(v.c_str());
    else if (a == "--temperature") sampled.temperature = std::atof(v.c_str());
    else if (a == "--top-k") sampled.top_k = std::atoll(v.c_str());
    else if (a == "--top-p") sampled.top_p = std::atof(v.c_str());
    else if (a == "--seed") sampled.seed = std::strtoull(v.c_str(), nullptr, 10);
    else {
      std::fprintf(stderr, "mamba-demo: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto t0 = Clock::now();
    const auto lm = mamba::nn::MambaLM::load_path(model);
    const auto& c = lm.config();
    std::printf("model      %s\n           %s, %lld layers, d_model %lld, vocab %lld; loaded in %.1f ms; %d threads\n",
                model.c_str(), c.layer.c_str(), static_cast<long long>(c.n_layer), static_cast<long long>(c.d_model),
                static_cast<long long>(c.vocab_size), ms_since(t0), mamba::kernels::num_threads());
    std::vector<int64_t> ids;
    std::stringstream ss(prompt_s);
    for (std::string tok; std::getline(ss, tok, ',');) ids.push_back(std::stoll(tok));
    const mamba::Tensor prompt = mamba::Tensor::from_vector_i64(ids, {1, static_cast<int64_t>(ids.size())});
    std::printf("prompt     %s\n", join(ids.data(), static_cast<int64_t>(ids.size())).c_str());

    // Prefill and decode timed separately, after one untimed warm-up call (thread pools
    // and BLAS buffers start on first use).
    { auto warm = lm.new_cache(1); lm.forward(prompt, &warm); }
    auto cache = lm.new_cache(1);
    t0 = Clock::now();
    mamba::Tensor logits = lm.forward(prompt, &cache);
    const double prefill_ms = ms_since(t0);
    std::mt19937_64 rng(0);
    const int64_t V = c.padded_vocab(), L = prompt.size(1);
    std::vector<int64_t> greedy;
    int64_t next = mamba::nn::sample_token(logits.data<float>() + (L - 1) * V, c.vocab_size, {0.0, 0, 1.0, 0}, rng);
    t0 = Clock::now();
    for (int64_t t = 0; t < tokens; ++t) {
      greedy.push_back(next);
      if (t + 1 == tokens) break;
      mamba::Tensor step_logits = lm.step(mamba::Tensor::from_vector_i64({next}, {1}), cache);
      next = mamba::nn::sample_token(step_logits.data<float>(), c.vocab_size, {0.0, 0, 1.0, 0}, rng);
    }
    const double decode_ms = ms_since(t0);
    std::printf("greedy     %s\n", join(greedy.data(), static_cast<int64_t>(greedy.size())).c_str());
    const mamba::Tensor s = lm.generate(prompt, tokens, sampled);
    std::printf("sampled    %s   (temperature %.2f, top-k %lld, top-p %.2f, seed %llu)\n",
                join(s.data<int64_t>(), tokens).c_str(), sampled.temperature, static_cast<long long>(sampled.top_k),
                sampled.top_p, static_cast<unsigned long long>(sampled.seed));
    std::printf("timing     prefill %lld tokens in %.3f ms; decode %lld tokens in %.3f ms (%.3f ms/token)\n",
                static_cast<long long>(L), prefill_ms, static_cast<long long>(tokens - 1), decode_ms,
                tokens > 1 ? decode_ms / static_cast<double>(tokens - 1) : 0.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-demo: %s\n", e.what());
    return 1;
  }
  return 0;
}
