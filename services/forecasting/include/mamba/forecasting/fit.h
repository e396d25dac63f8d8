// Training and evaluation of a MambaForecaster over windows of a series, on the shared
// train::Trainer (clipping, schedule, validation each epoch, early stopping on validation
// MSE, best-checkpoint selection, atomic checkpoints with exact resume, JSONL log,
// progress line).
//
// Windows come from a WindowSource: `count` windows, and a function that gathers a batch
// of window indices into x (B, seq_len, V), y (B, horizon, V) and, when the model takes
// time features, marks (B, seq_len, F). Values are in the model's (z-scored) units.
//
// Determinism: the epoch's shuffle is drawn from (seed, epoch), dropout from the trainer's
// RNG, so a run resumed from a checkpoint repeats the uninterrupted run exactly; OpenMP
// thread counts change only rounding of the GEMMs.
// Errors: mamba::Error (bad options name the field; non-finite losses name the step).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mamba/forecasting/mamba_forecaster.h"

namespace mamba::forecasting {

struct WindowSource {
  int64_t count = 0;
  std::function<void(const std::vector<int64_t>& index, Tensor& x, Tensor& y, Tensor& marks)> gather;
};

struct FitOptions {
  int64_t max_epochs = 10;
  int64_t batch_size = 32;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double warmup_fraction = 0.05;   // of all steps, then cosine decay to lr / 20
  int64_t patience = 3;            // epochs without a better validation MSE; 0: off
  double grad_clip = 1.0;
  std::string loss = "mse";        // "mse" | "mae" | "huber" (delta 1)
  uint64_t seed = 1;
  std::string checkpoint_dir;      // empty: no checkpoints, no resume
  bool resume = false;
  std::string log_path;            // JSON lines
  bool quiet = false;              // no progress lines
  int64_t max_train_windows = 0;   // > 0: a seeded subset per epoch (for quick runs)
  bool freeze_linear = false;
  // > 0: end this run before step `stop_after_steps` as if the process were killed there
  // (no final evaluation or checkpoint; the best parameters are not restored). For
  // resume tests and time-boxed jobs.
  int64_t stop_after_steps = 0;      // keep the linear path as initialised (train the Mamba part only)
};

struct EvalMetrics {
  double mse = 0;
  double mae = 0;
  int64_t windows = 0;
};

struct FitResult {
  int64_t steps = 0;
  int64_t best_epoch = 0;
  double best_val_mse = 0;
  double seconds = 0;
  double samples_per_s = 0;
  bool stopped_early = false;
  bool interrupted = false;  // stop_after_steps ended the run
};

// Trains `model` in place; at the end the parameters are those of the best validation
// epoch (from the best checkpoint when checkpoint_dir is set, else an in-memory copy).
FitResult fit(MambaForecaster& model, const WindowSource& train, const WindowSource& val, const FitOptions& options);

// Makes the model start as `linear` (a LinearForecaster fitted with InstanceNorm::mean on
// the training rows): its weight becomes the model's linear path, the linear path's bias
// and the heads of the Mamba part become zero, so training adds only what the Mamba part
// learns on top. (The model's bias is scaled by each window's std, so only the weight
// carries over.) Requires linear_skip and matching seq_len / horizon.
void init_from_linear(MambaForecaster& model, const LinearForecaster& linear);

// Windows of a dataset; with `time_features` ((T, F), one row per series row, see
// protocol.h) the marks of each window's look-back are gathered too.
WindowSource window_source(const WindowDataset& data, const Tensor& time_features = {});

// MSE and MAE over every window, step and variable (in the model's units), in batches.
EvalMetrics evaluate(const BatchPredictor& model, const WindowSource& windows, int64_t batch_size = 256);

}  // namespace mamba::forecasting
