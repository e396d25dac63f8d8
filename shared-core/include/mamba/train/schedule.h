// Learning-rate schedules.
//
// `step` is the number of optimizer updates already taken, i.e. the 0-based index of the
// update about to use the returned rate (Optimizer::steps_taken() before step()). The
// step-based schedules are pure functions of the step, so resuming from a checkpoint
// needs nothing but the step. ReduceOnPlateau depends on the metrics seen and keeps state,
// which a checkpoint must save (state() / load_state()).
// Errors: invalid settings or a negative step throw mamba::Error naming the field.
// Thread-safety: the functions are pure; a ReduceOnPlateau is not thread-safe.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

namespace mamba::train {

// Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then cosine decay from
// `peak_lr` to `min_lr` at `total_steps`, then `min_lr`:
//   step < warmup:  peak_lr * step / warmup        (0 at step 0, the Hugging Face convention)
//   otherwise:      min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2,
//                   p = min(1, (step - warmup) / (total - warmup))
struct WarmupCosine {
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // >= warmup_steps
  double peak_lr = 0.0;
  double min_lr = 0.0;      // the floor; 0 <= min_lr <= peak_lr
  double operator()(int64_t step) const;
};

// Polynomial decay (nnU-Net's PolyLRScheduler):
//   initial_lr * (1 - min(step, max_steps) / max_steps)^exponent      (0 from max_steps on)
struct PolyDecay {
  double initial_lr = 0.0;
  int64_t max_steps = 0;   // > 0
  double exponent = 0.9;
  double operator()(int64_t step) const;
};

// Lowers the learning rate when a metric stops improving (PyTorch's ReduceLROnPlateau).
// After each evaluation call step(metric):
//   improved = metric better than best by more than threshold (relative: best * (1 -+ t),
//              absolute: best -+ t); a NaN metric never improves
//   improved ? (best = metric, bad = 0) : ++bad
//   in cooldown ? (--cooldown_left, bad = 0)
//   bad > patience ? (lr = max(lr * factor, min_lr) if that changes lr by more than eps;
//                     cooldown_left = cooldown; bad = 0)
class ReduceOnPlateau {
 public:
  enum class Mode { min, max };           // min: lower is better (a loss); max: higher (a Dice)
  enum class ThresholdMode { rel, abs };
  struct Options {
    Mode mode = Mode::min;
    double factor = 0.1;                  // in (0, 1)
    int64_t patience = 10;                // >= 0 evaluations without improvement tolerated
    double threshold = 1e-4;              // >= 0
    ThresholdMode threshold_mode = ThresholdMode::rel;
    int64_t cooldown = 0;                 // >= 0 evaluations ignored after a reduction
    double min_lr = 0.0;                  // >= 0
    double eps = 1e-8;                    // smaller reductions are skipped
  };

  // Throws mamba::Error naming the invalid option.
  ReduceOnPlateau(double initial_lr, const Options& options);

  // Records one evaluation; returns the learning rate to use from now on.
  double step(double metric);
  double lr() const { return lr_; }
  double best() const { return best_; }            // +-inf before the first improvement
  int64_t num_bad_evaluations() const { return num_bad_; }
  int64_t cooldown_left() const { return cooldown_left_; }
  int64_t num_reductions() const { return num_reductions_; }
  const Options& options() const { return opt_; }

  // Dynamic state as JSON ({"lr", "best" (null while infinite), "num_bad",
  // "cooldown_left", "num_reductions"}); options are not included: they come from the
  // constructor. load_state throws mamba::Error naming the missing or mistyped field and
  // leaves the state unchanged.
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  bool is_better(double metric) const;

  Options opt_;
  double lr_;
  double best_;
  int64_t num_bad_ = 0;
  int64_t cooldown_left_ = 0;
  int64_t num_reductions_ = 0;
};

}  // namespace mamba::train
