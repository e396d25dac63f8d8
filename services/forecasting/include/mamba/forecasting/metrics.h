// Forecast error metrics, streamed over batches.
//
// MSE = mean((pred - target)^2) and MAE = mean(|pred - target|) over every element seen:
// all windows, steps and variables (the published forecasters' figures, on z-scored
// values). Sums are accumulated in double, so the result does not depend on how the
// windows were batched beyond the last bits.
// Errors: mamba::Error when pred and target shapes differ, or mse()/mae() before any
// element was added. Non-finite inputs propagate (a NaN forecast gives a NaN MSE).
// Thread-safety: an ErrorAccumulator is a plain value; use one per thread and merge().
#pragma once

#include <cstdint>

#include "mamba/tensor/tensor.h"

namespace mamba::forecasting {

struct ForecastErrors {
  double mse = 0, mae = 0;
  int64_t count = 0;  // elements compared
};

class ErrorAccumulator {
 public:
  // pred, target: same shape, any rank, f32 (or anything .to(f32) converts), any strides.
  void add(const Tensor& pred, const Tensor& target);
  void merge(const ErrorAccumulator& other);

  int64_t count() const { return count_; }
  double mse() const;
  double mae() const;
  ForecastErrors errors() const { return {mse(), mae(), count_}; }

 private:
  double sum_sq_ = 0, sum_abs_ = 0;
  int64_t count_ = 0;
};

// One-shot versions for a single pair of tensors.
double mse(const Tensor& pred, const Tensor& target);
double mae(const Tensor& pred, const Tensor& target);

}  // namespace mamba::forecasting
