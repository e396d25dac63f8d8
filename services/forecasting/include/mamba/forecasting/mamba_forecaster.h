// The Mamba forecasters of the forecasting service, on the autograd tape (train/modules.h).
//
// Input x (B, L, V): L = seq_len look-back steps of V variables, already z-scored with the
// training scaler; output (B, H, V) for H = horizon steps, in the same scale.
// Both architectures normalise each window per variable first (instance normalisation:
// subtract the window's mean, divide by its std + 1e-5) and undo it on the output, so
// level shifts between training and test periods do not reach the network.
//
// arch "s_mamba" (S-Mamba, Wang et al. 2024): each variable is one token, embedded from its
// whole normalised look-back window by Linear(L -> d_model) (with time features, each
// feature's window is one extra token through the same embedding); n_layers encoder
// layers, each a bidirectional Mamba over the variable tokens (one Mamba-1 per direction,
// outputs added) + residual + LayerNorm, then a feed-forward block (d_ff, GELU) + residual
// + LayerNorm; Linear(d_model -> H) per variable token.
//
// arch "multiscale" (TimeMachine style, Ahamed & Cheng 2024): channel-independent. Each
// variable's window is cut into patches at two scales (patch lengths `patch_len` and
// 2 * patch_len, stride half the length), each scale's patch sequence is embedded and run
// through its own stack of bidirectional Mamba layers; the flattened representations of
// both scales are each mapped to the horizon and added.
//
// Both add a linear path: Linear(L -> H) shared by all variables on the normalised window
// (RLinear). The Mamba part learns what the linear map cannot; with `linear_skip` false
// the output is the Mamba part alone. Training starts from the closed-form linear
// forecaster (fit.h: init_from_linear), the Mamba heads at zero.
//
// Thread-safety: predict() may run concurrently (grad mode is per thread); training is
// single-threaded. Errors: mamba::Error naming the field or the shape.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/forecasting/baselines.h"
#include "mamba/train/modules.h"

namespace mamba::forecasting {

struct ForecasterConfig {
  std::string arch = "s_mamba";  // "s_mamba" | "multiscale"
  int64_t seq_len = 96;
  int64_t horizon = 96;
  int64_t n_vars = 0;
  int64_t n_time_features = 0;  // s_mamba only: extra tokens from time features
  int64_t d_model = 128;
  int64_t d_ff = 128;
  int64_t n_layers = 2;
  int64_t d_state = 16;
  int64_t d_conv = 2;
  int64_t expand = 1;
  int64_t patch_len = 16;  // multiscale only
  double dropout = 0.1;
  bool linear_skip = true;
  bool instance_norm = true;

  nlohmann::json to_json() const;
  // Reads the fields above (absent ones keep their defaults); throws mamba::Error naming
  // a bad field (e.g. "forecaster config: seq_len must be >= 2").
  static ForecasterConfig from_json(const nlohmann::json& j);
  void validate() const;
};

// Anything that maps a batch of scaled windows x (B, seq_len, V) (+ time features marks,
// or undefined) to forecasts (B, horizon, V): one network or an ensemble of them.
class BatchPredictor {
 public:
  virtual ~BatchPredictor() = default;
  virtual Tensor predict(const Tensor& x, const Tensor& marks = {}) const = 0;
};

class MambaForecaster final : public Forecaster, public BatchPredictor {
 public:
  // Parameters initialised the reference way (train::reference_init) from `seed`.
  MambaForecaster(const ForecasterConfig& cfg, uint64_t seed);
  ~MambaForecaster() override;
  MambaForecaster(const MambaForecaster&) = delete;
  MambaForecaster& operator=(const MambaForecaster&) = delete;

  const ForecasterConfig& config() const { return cfg_; }
  // Forecaster: window (L, V) or (B, L, V) -> (H, V) or (B, H, V); models without time
  // features only (otherwise use predict).
  std::string name() const override;  // "mamba-s_mamba" | "mamba-multiscale"
  int64_t seq_len() const override { return cfg_.seq_len; }
  int64_t horizon() const override { return cfg_.horizon; }
  Tensor forecast(const Tensor& window) const override;
  train::ParameterStore& store() { return store_; }
  const train::ParameterStore& store() const { return store_; }

  // x (B, seq_len, n_vars); marks (B, seq_len, n_time_features) or undefined when the
  // model has none. Training mode applies dropout (drawn from rng). -> (B, horizon, n_vars).
  ag::Var forward(const Tensor& x, const Tensor& marks, bool training, std::mt19937_64& rng) const;
  // Inference (no graph, no dropout).
  Tensor predict(const Tensor& x, const Tensor& marks = {}) const override;

  // After an optimiser step or a load: recompute derived values of the Mamba layers.
  void refresh();
  // model.safetensors (parameters, config in __metadata__) into an existing directory.
  void save_weights(const std::string& path) const;
  void load_weights(const std::string& path);

 private:
  struct Encoder;  // one stack of bidirectional Mamba + FFN layers
  ag::Var encode(const Encoder& enc, ag::Var h, bool training, std::mt19937_64& rng) const;
  ag::Var forward_s_mamba(const ag::Var& xn, const Tensor& marks, bool training, std::mt19937_64& rng) const;
  ag::Var forward_multiscale(const ag::Var& xn, bool training, std::mt19937_64& rng) const;

  ForecasterConfig cfg_;
  train::ParameterStore store_;
  std::vector<std::unique_ptr<Encoder>> encoders_;  // s_mamba: 1; multiscale: 2 (one per scale)
  std::vector<train::Linear> embed_;                 // per encoder
  std::vector<train::Linear> head_;                  // per encoder
  train::Linear skip_;
};

// A deep ensemble: members of one configuration trained from different seeds; the
// forecast is the mean of theirs (lower variance than any one member).
class MambaEnsemble final : public Forecaster, public BatchPredictor {
 public:
  // At least one member; all of the same seq_len, horizon, n_vars and time features.
  explicit MambaEnsemble(std::vector<std::shared_ptr<MambaForecaster>> members);
  const std::vector<std::shared_ptr<MambaForecaster>>& members() const { return members_; }
  const ForecasterConfig& config() const { return members_.front()->config(); }
  int64_t parameter_count() const;

  std::string name() const override;  // "mamba-s_mamba" or "mamba-s_mamba x3"
  int64_t seq_len() const override { return config().seq_len; }
  int64_t horizon() const override { return config().horizon; }
  Tensor forecast(const Tensor& window) const override;
  Tensor predict(const Tensor& x, const Tensor& marks = {}) const override;

 private:
  std::vector<std::shared_ptr<MambaForecaster>> members_;
};

}  // namespace mamba::forecasting
