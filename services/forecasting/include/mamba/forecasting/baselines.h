// Forecasting baselines a Mamba forecaster has to beat, served through one interface.
//
// Every forecaster works on z-scored values (see protocol.h's StandardScaler) and maps a
// look-back window to the next `horizon` steps of every variable:
//   forecast(window (L, V) or (B, L, V) f32)  ->  (horizon, V) or (B, horizon, V) f32
// L may exceed seq_len(): only the last seq_len() rows are read. L < seq_len() throws.
// Thread-safety: a fitted forecaster is immutable; forecast() may run concurrently.
//
// LinearForecaster: one linear map shared by all variables (channel-independent), from
// the seq_len look-back of one variable to its next `horizon` values:
//   y[h] = sum_l W[h, l] * (x[l] - c) + b[h] + c
// where c is the instance normaliser of the window: 0 (none), its last value (last) or
// its mean (mean). It is fitted in closed form: ridge regression (lambda = ridge x the mean
// diagonal of X^T X, the bias unpenalised) over every stride-1 training window of every
// variable, normal equations built in double from lagged-product prefix sums (O(T (L+H))
// per variable instead of O(T L (L+H))) and solved by Cholesky. fit_ref builds the same
// equations window by window (the plain reference; tests compare the two).
// Note: with an unpenalised bias, `last` and `mean` fit the same family of maps (those
// that shift with a constant added to the window: rows of the effective matrix sum to 1),
// so they agree up to the ridge term; the real choice is none vs normalised.
// Inputs are not checked for NaN at forecast time (the caller validates requests).
// Saved as safetensors: "weight" (H, L) F32, "bias" (H) F32, metadata
//   {"format": "mamba-forecasting-linear", "seq_len", "horizon", "instance_norm"}.
//
// SeasonalNaiveForecaster: repeats the last `period` steps: y[h] = x[L - period + h % period]
// (period 24 for hourly data: the same hour yesterday).
//
// Errors: mamba::Error naming the function, the shapes and the limit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mamba/forecasting/metrics.h"
#include "mamba/forecasting/protocol.h"
#include "mamba/tensor/tensor.h"

namespace mamba::forecasting {

class Forecaster {
 public:
  virtual ~Forecaster() = default;
  virtual std::string name() const = 0;
  virtual int64_t seq_len() const = 0;  // look-back rows read
  virtual int64_t horizon() const = 0;  // steps produced
  virtual Tensor forecast(const Tensor& window) const = 0;
};

enum class InstanceNorm : uint8_t { none, last, mean };
const char* instance_norm_name(InstanceNorm n);             // "none" | "last" | "mean"
InstanceNorm parse_instance_norm(const std::string& name);  // throws for anything else

struct LinearFitOptions {
  InstanceNorm norm = InstanceNorm::none;
  // Relative to the mean diagonal of X^T X; >= 0. Values below 1e-10 act as 1e-10: the
  // `last` normaliser makes the last lag identically 0, so X^T X is singular without it.
  double ridge = 1e-6;
};

class LinearForecaster final : public Forecaster {
 public:
  // weight (H, L), bias (H): f32 (converted), copied.
  LinearForecaster(Tensor weight, Tensor bias, InstanceNorm norm);

  // Fits on every window lying fully inside `rows` of `series` (T, V) f32 (scaled).
  // Throws when rows hold no window of seq_len + horizon rows or values are not finite.
  static LinearForecaster fit(const Tensor& series, RowRange rows, int64_t seq_len, int64_t horizon,
                              const LinearFitOptions& options = {});
  static LinearForecaster fit_ref(const Tensor& series, RowRange rows, int64_t seq_len, int64_t horizon,
                                  const LinearFitOptions& options = {});

  std::string name() const override;  // "linear(norm=last)"
  int64_t seq_len() const override { return weight_.size(1); }
  int64_t horizon() const override { return weight_.size(0); }
  Tensor forecast(const Tensor& window) const override;
  Tensor forecast_ref(const Tensor& window) const;  // plain loops in double

  const Tensor& weight() const { return weight_; }  // (H, L) f32
  const Tensor& bias() const { return bias_; }      // (H) f32
  InstanceNorm norm() const { return norm_; }

  void save(const std::string& path) const;  // atomic
  static LinearForecaster load(const std::string& path);

 private:
  Tensor weight_, bias_;
  InstanceNorm norm_;
};

class SeasonalNaiveForecaster final : public Forecaster {
 public:
  // 1 <= period <= seq_len; horizon >= 1.
  SeasonalNaiveForecaster(int64_t period, int64_t seq_len, int64_t horizon);
  std::string name() const override;  // "seasonal-naive(24)"
  int64_t seq_len() const override { return seq_len_; }
  int64_t horizon() const override { return horizon_; }
  int64_t period() const { return period_; }
  Tensor forecast(const Tensor& window) const override;

 private:
  int64_t period_, seq_len_, horizon_;
};

// MSE/MAE of `model` over every window of `data` (batches of `batch_size` windows).
// data.seq_len() must be >= model.seq_len() and data.horizon() == model.horizon().
ForecastErrors evaluate(const Forecaster& model, const WindowDataset& data, int64_t batch_size = 512);

// Fits the linear model with each instance normaliser on `train` rows and keeps the one
// with the lowest MSE on `val`; `val_errors[i]` belongs to `candidates[i]`.
struct LinearSelection {
  std::vector<InstanceNorm> candidates;
  std::vector<ForecastErrors> val_errors;
  size_t best = 0;
  std::vector<LinearForecaster> models;  // one per candidate
  const LinearForecaster& best_model() const { return models.at(best); }
};
LinearSelection fit_linear_by_validation(const Tensor& series, RowRange train, const WindowDataset& val,
                                         double ridge = 1e-6,
                                         std::vector<InstanceNorm> candidates = {InstanceNorm::none, InstanceNorm::last,
                                                                                 InstanceNorm::mean});

}  // namespace mamba::forecasting
