// Decoding, batch 1: one MambaLM::step of a 24-layer d_model 768 Mamba1 language model
// (vocab 50280 padded to 50288, tied embedding as the LM head) after a 16-token prefill,
// and one Mamba1::step of a single d_model 768 layer. Decoding a token reads every weight
// once, so each row is also given as a multiple of the time memory needs to deliver those
// bytes (memory_read_bandwidth(), the median pass of a 512 MiB sum in the same process).
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba_lm.h"

namespace mamba::bench {
namespace {

constexpr int64_t kDModel = 768, kPrefill = 16;

// The model is built once per process: filling ~135M parameters takes a second or two.
nn::MambaLM& decode_model() {
  static std::unique_ptr<nn::MambaLM> model = [] {
    nn::MambaLMConfig cfg;
    cfg.d_model = kDModel; cfg.n_layer = 24; cfg.vocab_size = 50280; cfg.pad_vocab_size_multiple = 16;
    cfg.rms_norm = true; cfg.tie_embeddings = true; cfg.layer = "Mamba1";
    cfg.ssm_cfg = {{"layer", "Mamba1"}, {"d_state", 16}, {"d_conv", 4}, {"expand", 2}};
    if (cfg.padded_vocab() != 50288) fail("bench", "padded vocab is not 50288");
    nn::MambaLM proto(cfg);
    Rng rng(71);
    for (auto& [name, t] : proto.parameters()) init_param(name, *t, rng);
    auto params = proto.parameters();
    const nn::ParamSource src = [&](const std::string& name) -> Tensor {
      for (auto& [n, t] : params)
        if (n == name) return *t;
      return Tensor();
    };
    return std::make_unique<nn::MambaLM>(nn::MambaLM::load(cfg, src));  // load refreshes A = -exp(A_log)
  }();
  return *model;
}

// Counters shared by the decode rows: step time against reading `bytes` once.
void report_decode(benchmark::State& state, double step_s, int64_t bytes) {
  const double bw = memory_read_bandwidth();
  state.SetItemsProcessed(state.iterations());  // tokens
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["weight_MB"] = static_cast<double>(bytes) * 1e-6;
  state.counters["mem_GB/s"] = bw * 1e-9;
  state.counters["read_ms"] = static_cast<double>(bytes) / bw * 1e3;
  state.counters["step/read"] = step_s / (static_cast<double>(bytes) / bw);
}

void BM_MambaLMDecodeStep(benchmark::State& state) {
  nn::MambaLM& lm = decode_model();
  const int64_t bytes = param_bytes(lm.parameters());  // mixers + norms + embedding (= LM head)
  memory_read_bandwidth();                               // measured before the timed loop
  std::vector<int64_t> prompt(kPrefill);
  for (int64_t i = 0; i < kPrefill; ++i) prompt[static_cast<size_t>(i)] = (i * 7919) % 50280;
  nn::InferenceCache cache = lm.new_cache(1);
  lm.forward(Tensor::from_vector_i64(prompt, {1, kPrefill}), &cache);
  const Tensor ids = Tensor::from_vector_i64({1234}, {1});
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Tensor logits = lm.step(ids, cache);
    benchmark::DoNotOptimize(logits.raw_data());
  }
  const double step_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(state.iterations());
  report_decode(state, step_s, bytes);
}
BENCHMARK(BM_MambaLMDecodeStep)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Mamba1Step(benchmark::State& state) {
  nn::Mamba1Config c;
  c.d_model = kDModel;  // d_state 16, d_conv 4, expand 2, dt_rank 48
  nn::Mamba1 m(c);
  init_mixer_params(m, 72);
  const int64_t bytes = param_bytes(m.parameters());
  memory_read_bandwidth();
  nn::LayerState st = m.init_state(1);
  Tensor x = Tensor::empty({1, kDModel});
  Rng rng(73);
  fill_uniform(x.data<float>(), kDModel, -1.f, 1.f, rng);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Tensor y = m.step(x, st);
    benchmark::DoNotOptimize(y.raw_data());
  }
  const double step_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(state.iterations());
  report_decode(state, step_s, bytes);
}
BENCHMARK(BM_Mamba1Step)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace mamba::bench
