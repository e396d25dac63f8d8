// MambaLM: the reference `MambaLMHeadModel` (embedding, pre-norm residual blocks,
// final norm, LM head tied to the embedding unless `lm_head.weight` is present).
//
//   residual = hidden (+ residual);  hidden = mixer(norm(residual))   for each layer
//   residual = hidden + residual;    hidden = norm_f(residual);  logits = hidden @ E^T
//
// Checkpoint names: backbone.embedding.weight, backbone.layers.<i>.norm.weight (and .bias
// for LayerNorm), backbone.layers.<i>.mixer.<...>, backbone.norm_f.weight, lm_head.weight.
// The embedding has `padded_vocab()` rows (vocab_size rounded up to
// pad_vocab_size_multiple); logits cover all padded rows, sampling only real tokens.
// Thread-safety: forward/step are const; each caller owns its InferenceCache.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "mamba/nn/mixer.h"

namespace mamba::nn {

class CudaDecodeGraph;

struct MambaLMConfig {
  int64_t d_model = 0;
  int64_t n_layer = 0;
  int64_t vocab_size = 0;
  int64_t pad_vocab_size_multiple = 8;
  bool rms_norm = true;
  bool tie_embeddings = true;
  double norm_eps = 1e-5;
  std::string layer = "Mamba1";  // ssm_cfg.layer: Mamba1 or Mamba2
  nlohmann::json ssm_cfg = nlohmann::json::object();
  int64_t padded_vocab() const;
  // Reads the reference's config.json shape; throws mamba::Error naming the bad field.
  static MambaLMConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
};

// Recurrent state of every layer, for `batch` sequences that advance together.
struct InferenceCache {
  std::vector<LayerState> layers;
  int64_t batch = 0;
  int64_t seqlen_offset = 0;  // tokens consumed so far
};

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: all
  double top_p = 1.0;        // nucleus; 1: all
  uint64_t seed = 0;
};

class MambaLM {
 public:
  explicit MambaLM(const MambaLMConfig& cfg);
  // Builds the model from a config and a source of tensors (e.g. a safetensors file),
  // checking every tensor's presence and shape.
  static MambaLM load(const MambaLMConfig& cfg, const ParamSource& src);
  // From a model directory (config.json + model.safetensors, the reference layout) or from
  // one .safetensors file whose __metadata__.config holds the config JSON.
  static MambaLM load_path(const std::string& path);

  const MambaLMConfig& config() const { return cfg_; }
  // Moves every parameter to `device` once (see Mixer::to: linear weights, embedding and
  // head as `compute`, norms and SSM parameters f32). forward/step then run on the GPU:
  // input_ids may be on the CPU or the device, logits come back on the device in f32, and
  // new_cache allocates the states there. Mamba-2 models throw (no SSD kernel yet).
  void to(Device device, DType compute = DType::f32);
  Device device() const { return device_; }
  DType compute_dtype() const { return compute_; }
  std::vector<std::pair<std::string, Tensor*>> parameters();
  // After changing parameters in place: recompute what the layers derive from them.
  void refresh_derived();

  InferenceCache new_cache(int64_t batch) const;
  // input_ids: (batch, seqlen) i64 or i32 -> logits (batch, seqlen, padded_vocab) f32.
  // With a cache, continues from its state and advances it (prefill).
  Tensor forward(const Tensor& input_ids, InferenceCache* cache = nullptr) const;
  // One token per sequence: ids (batch) -> logits (batch, padded_vocab); advances the cache.
  Tensor step(const Tensor& ids, InferenceCache& cache) const;

  // Training: next-token cross-entropy of forward(input_ids) against `targets` (batch,
  // seqlen) i64, where -1 marks positions that do not count. Fills `grads` with the
  // gradient of the MEAN loss over counted positions, one per parameter in the order of
  // parameters(). RMSNorm models only.
  struct LossStats {
    double loss = 0;      // mean over counted positions
    int64_t counted = 0;  // positions with a target
    int64_t correct = 0;  // counted positions whose argmax is the target
  };
  LossStats forward_backward(const Tensor& input_ids, const Tensor& targets, std::vector<Tensor>& grads) const;
  // The same loss without gradients (evaluation).
  LossStats evaluate(const Tensor& input_ids, const Tensor& targets) const;

  // Prefill `prompt` (batch, seqlen), then decode `max_new_tokens` through the recurrent
  // path. Returns (batch, max_new_tokens) i64.
  Tensor generate(const Tensor& prompt, int64_t max_new_tokens, const SamplingOptions& opt) const;

 private:
  Tensor embed(const Tensor& ids) const;  // (..., d_model)
  void add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w, const Tensor& b, Tensor& out) const;
  Tensor head(const Tensor& hidden) const;  // (rows, d_model) -> (rows, padded_vocab)
  Tensor forward_cuda(const Tensor& input_ids, InferenceCache* cache) const;
  Tensor step_cuda(const Tensor& ids, InferenceCache& cache) const;
  friend class CudaDecodeGraph;  // mamba/nn/cuda_decode_graph.h

  Device device_ = Device::cpu();
  DType compute_ = DType::f32;

  MambaLMConfig cfg_;
  Tensor embedding_;
  std::vector<std::unique_ptr<Mixer>> mixers_;
  std::vector<Tensor> norm_w_, norm_b_;
  Tensor norm_f_w_, norm_f_b_;
  Tensor lm_head_;  // defined only when untied
};

// Picks one token id in [0, vocab) from a row of logits.
int64_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& opt, std::mt19937_64& rng);

}  // namespace mamba::nn
