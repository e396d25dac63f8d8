// A trained forecasting model as one directory — what `mamba-forecast train` writes and
// the server, `evaluate` and `batch` load as is:
//
//   config.json       {"format": "mamba-forecast", "version": 1, "model": ForecasterConfig,
//                      "protocol", "variables": [names], "interval_seconds",
//                      "timestamp_style", "trained_on", "created"}
//   model.safetensors the network's parameters (config in __metadata__ too); an ensemble of
//                     K members ("members": K in config.json) adds model.1.safetensors ...
//                     model.<K-1>.safetensors
//   preprocess.json   the z-score scaler fitted on the training rows (protocol.h)
//   metrics.json      validation/test MSE and MAE of the model and of the baselines
//   residuals.safetensors  "levels" (Q) f64 and "quantiles" (Q, H, V) f32: empirical
//                     quantiles of the validation residuals y - forecast per step and
//                     variable (z-scored units), for quantile forecasts (split conformal)
//
// Each file is written atomically (temp + rename); save() writes into a fresh staging
// directory and renames it over `dir`, so a reader never sees a half-written model.
// Thread-safety: a loaded ForecastModel is immutable; forecast() may run concurrently.
// Errors: mamba::Error naming the file and the field.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/forecasting/fit.h"
#include "mamba/forecasting/mamba_forecaster.h"
#include "mamba/forecasting/protocol.h"
#include "mamba/forecasting/series_csv.h"

namespace mamba::forecasting {

struct ForecastModel {
  std::shared_ptr<MambaEnsemble> net;  // one member unless trained with an ensemble
  StandardScaler scaler;
  std::vector<std::string> variables;  // column names, in the network's variable order
  std::string protocol;                // the split protocol it was trained under
  int64_t interval_seconds = 0;        // 0: unknown (future timestamps not labelled)
  nlohmann::json config;               // config.json as written
  nlohmann::json metrics;              // metrics.json (object; empty when absent)
  std::vector<double> residual_levels;  // increasing, in (0, 1)
  Tensor residual_quantiles;            // (Q, horizon, V) f32, z-scored units

  static constexpr int64_t kMaxVariables = 4096;

  const ForecasterConfig& net_config() const { return net->config(); }

  // Loads and validates a model directory (all files present, shapes consistent:
  // scaler and variables match n_vars). Throws mamba::Error naming the file.
  static ForecastModel load(const std::string& dir);
  // Writes the directory (see the file comment); `dir`'s parent must exist.
  void save(const std::string& dir) const;

  // window (B, seq_len, V) or (seq_len, V) in the data's own units (not scaled) ->
  // (B, horizon, V) or (horizon, V) in the same units. With time features, `marks`
  // (B, seq_len, F) is required.
  Tensor forecast_raw(const Tensor& window, const Tensor& marks = {}) const;

  // The q-quantile offset to add to a mean forecast, (horizon, V) in the data's units,
  // interpolated linearly between the stored levels (clamped at the ends). Throws
  // mamba::Error when q is outside (0, 1) or the model has no residuals.
  Tensor quantile_offset(double q) const;
};

// Empirical quantiles at `levels` of the residuals y - predict(x) over every window of
// `windows`, per step and variable -> (Q, H, V) f32.
Tensor residual_quantiles(const BatchPredictor& model, const WindowSource& windows, const std::vector<double>& levels);
// 0.01, 0.02, ..., 0.99.
std::vector<double> default_quantile_levels();

}  // namespace mamba::forecasting
