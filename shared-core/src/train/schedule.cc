#include "mamba/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include "mamba/io/json_config.h"
#include "mamba/tensor/tensor.h"

namespace mamba::train {
namespace {

void check_step(int64_t step, const char* op) {
  if (step < 0) fail(op, "step must be >= 0, got " + std::to_string(step));
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) fail(op, what);
}

}  // namespace

double WarmupCosine::operator()(int64_t step) const {
  constexpr const char* kOp = "WarmupCosine";
  check_step(step, kOp);
  require(warmup_steps >= 0, kOp, "warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
  require(total_steps >= warmup_steps, kOp,
          "total_steps (" + std::to_string(total_steps) + ") must be >= warmup_steps (" + std::to_string(warmup_steps) + ")");
  require(std::isfinite(peak_lr) && peak_lr >= 0.0, kOp, "peak_lr must be finite and >= 0");
  require(min_lr >= 0.0 && min_lr <= peak_lr, kOp, "min_lr must be in [0, peak_lr]");
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (step >= total_steps) return total_steps == warmup_steps ? peak_lr : min_lr;
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

double PolyDecay::operator()(int64_t step) const {
  constexpr const char* kOp = "PolyDecay";
  check_step(step, kOp);
  require(max_steps > 0, kOp, "max_steps must be > 0, got " + std::to_string(max_steps));
  require(std::isfinite(initial_lr) && initial_lr >= 0.0, kOp, "initial_lr must be finite and >= 0");
  require(exponent > 0.0, kOp, "exponent must be > 0");
  if (step >= max_steps) return 0.0;
  return initial_lr * std::pow(1.0 - static_cast<double>(step) / static_cast<double>(max_steps), exponent);
}

ReduceOnPlateau::ReduceOnPlateau(double initial_lr, const Options& options) : opt_(options), lr_(initial_lr) {
  constexpr const char* kOp = "ReduceOnPlateau";
  require(std::isfinite(initial_lr) && initial_lr >= 0.0, kOp, "initial_lr must be finite and >= 0");
  require(opt_.factor > 0.0 && opt_.factor < 1.0, kOp, "factor must be in (0, 1), got " + std::to_string(opt_.factor));
  require(opt_.patience >= 0, kOp, "patience must be >= 0");
  require(opt_.threshold >= 0.0, kOp, "threshold must be >= 0");
  require(opt_.cooldown >= 0, kOp, "cooldown must be >= 0");
  require(opt_.min_lr >= 0.0, kOp, "min_lr must be >= 0");
  require(opt_.eps >= 0.0, kOp, "eps must be >= 0");
  best_ = opt_.mode == Mode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

bool ReduceOnPlateau::is_better(double a) const {
  if (std::isnan(a)) return false;
  const double t = opt_.threshold;
  if (opt_.mode == Mode::min)
    return opt_.threshold_mode == ThresholdMode::rel ? a < best_ * (1.0 - t) : a < best_ - t;
  return opt_.threshold_mode == ThresholdMode::rel ? a > best_ * (1.0 + t) : a > best_ + t;
}

double ReduceOnPlateau::step(double metric) {
  if (is_better(metric)) {
    best_ = metric;
    num_bad_ = 0;
  } else {
    ++num_bad_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    num_bad_ = 0;
  }
  if (num_bad_ > opt_.patience) {
    const double reduced = std::max(lr_ * opt_.factor, opt_.min_lr);
    if (lr_ - reduced > opt_.eps) {
      lr_ = reduced;
      ++num_reductions_;
    }
    cooldown_left_ = opt_.cooldown;
    num_bad_ = 0;
  }
  return lr_;
}

nlohmann::json ReduceOnPlateau::state() const {
  nlohmann::json j;
  j["lr"] = lr_;
  j["best"] = std::isfinite(best_) ? nlohmann::json(best_) : nlohmann::json(nullptr);
  j["num_bad"] = num_bad_;
  j["cooldown_left"] = cooldown_left_;
  j["num_reductions"] = num_reductions_;
  return j;
}

void ReduceOnPlateau::load_state(const nlohmann::json& state) {
  const io::JsonConfig c(state, "ReduceOnPlateau state");
  const double lr = c.get_double("lr");
  const double best = c.has("best") ? c.get_double("best")
                      : opt_.mode == Mode::min ? std::numeric_limits<double>::infinity()
                                               : -std::numeric_limits<double>::infinity();
  const int64_t num_bad = c.get_int("num_bad");
  const int64_t cooldown_left = c.get_int("cooldown_left");
  const int64_t num_reductions = c.get_int("num_reductions", 0);
  require(lr >= 0.0 && std::isfinite(lr), "ReduceOnPlateau state", "field 'lr': must be finite and >= 0");
  require(num_bad >= 0 && cooldown_left >= 0, "ReduceOnPlateau state", "fields 'num_bad', 'cooldown_left': must be >= 0");
  lr_ = lr;
  best_ = best;
  num_bad_ = num_bad;
  cooldown_left_ = cooldown_left;
  num_reductions_ = num_reductions;
}

}  // namespace mamba::train
