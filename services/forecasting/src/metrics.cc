#include "mamba/forecasting/metrics.h"

#include <cmath>

namespace mamba::forecasting {

void ErrorAccumulator::add(const Tensor& pred, const Tensor& target) {
  if (!pred.defined() || !target.defined() || pred.shape() != target.shape())
    fail("ErrorAccumulator::add", "pred " + (pred.defined() ? pred.str() : std::string("undefined")) + " vs target " +
                                      (target.defined() ? target.str() : std::string("undefined")));
  const Tensor p = pred.to(DType::f32).contiguous();
  const Tensor t = target.to(DType::f32).contiguous();
  const float* a = p.data<float>();
  const float* b = t.data<float>();
  const int64_t n = p.numel();
  double sq = 0, ab = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sq += d * d;
    ab += std::fabs(d);
  }
  sum_sq_ += sq;
  sum_abs_ += ab;
  count_ += n;
}

void ErrorAccumulator::merge(const ErrorAccumulator& o) {
  sum_sq_ += o.sum_sq_;
  sum_abs_ += o.sum_abs_;
  count_ += o.count_;
}

double ErrorAccumulator::mse() const {
  if (count_ == 0) fail("ErrorAccumulator::mse", "no elements added");
  return sum_sq_ / static_cast<double>(count_);
}

double ErrorAccumulator::mae() const {
  if (count_ == 0) fail("ErrorAccumulator::mae", "no elements added");
  return sum_abs_ / static_cast<double>(count_);
}

double mse(const Tensor& pred, const Tensor& target) {
  ErrorAccumulator acc;
  acc.add(pred, target);
  return acc.mse();
}

double mae(const Tensor& pred, const Tensor& target) {
  ErrorAccumulator acc;
  acc.add(pred, target);
  return acc.mae();
}

}  // namespace mamba::forecasting
