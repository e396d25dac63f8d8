// A model-agnostic training loop driven by callbacks: gradient clipping, the optimiser
// update with a scheduled learning rate, evaluation, best-checkpoint selection, early
// stopping, atomic checkpoints with exact resume, JSON-lines logging and progress output.
//
// The caller owns the model, the data and the optimiser; the trainer owns the loop. Per
// step s (0-based: the number of updates already applied, as in schedule.h):
//   optimizer.zero_grad(); r = train_step(s)          caller writes Param::grad (may accumulate)
//   check r.loss and the global gradient norm          non-finite: throw (or skip, see below)
//   clip_grad_norm(grad_clip)                          when grad_clip > 0
//   optimizer.step(lr_schedule(s)); after_update()     after_update refreshes derived values
//   log {"step": s+1, "loss", "lr", "samples_per_s", "grad_norm"}
//   every eval_every steps: metrics = evaluate(); best? save dir/best; early-stopping count
//   every checkpoint_every steps: save_checkpoint(dir, s+1)
// After the last step (max_steps reached or early stop) the trainer evaluates once more
// unless it just did, and writes a final checkpoint unless it just did.
//
// Step numbers: callbacks receive the 0-based index s; logs, checkpoints (checkpoint-<n>),
// errors and TrainSummary count completed steps (n = s + 1), like the checkpoint layout.
//
// Checkpoint directory (when checkpoint_dir is set; see checkpoint.h for the format):
//   dir/checkpoint-<n>, dir/latest            the regular checkpoints (keep_last kept)
//   dir/best/checkpoint-<n>, dir/best/latest  the checkpoint with the best metric so far
//                                             (written at the evaluation that improved it;
//                                             load it with load_latest_checkpoint(dir + "/best"))
// TrainerState in each checkpoint: rng_state = Trainer::rng(); data_position = samples seen
// (sum of StepResult::samples); best_metric; extra = {"trainer": {best_step,
// bad_evaluations, skipped_steps, stopped_early, metric}, "user": state_extra()}.
//
// Resume (options.resume): the latest checkpoint of checkpoint_dir is loaded into the params
// and the optimiser, rng() and the best metric / patience counter are restored,
// load_extra(user extra) and after_update() are called, and the loop continues at the saved
// step. With deterministic callbacks (data drawn from rng() or from the caller's state
// restored by load_extra) the final parameters equal an uninterrupted run's bit for bit. No
// checkpoint yet: a fresh start. A run that had stopped early resumes as stopped (no steps).
// Limitation: after resuming, dir/best may still name a best checkpoint written by the
// abandoned part of the run until the resumed run improves on the restored best metric;
// TrainSummary::best_step is authoritative.
//
// JSON lines (log_path; truncated on a fresh start, appended to on resume, so steps after the
// resumed checkpoint may appear twice: readers keep the last line of each step):
//   {"step", "loss", "lr", "samples_per_s", "grad_norm"[, "epoch"]}
//   {"step", "skipped": true, "reason"}                              (skip_nonfinite only)
//   {"step", "eval": {name: value...}, "best_metric", "improved"}
//   {"step", "event": "resumed" | "early_stop" | "checkpoint" | "best_checkpoint", ...}
// Non-finite values are written as null (JSON has no NaN).
//
// Errors: mamba::Error. The constructor names the invalid TrainerOptions field; run()
// names the step for a non-finite loss or gradient ("trainer: non-finite loss nan at step
// 7 (train_step(6)); no update applied"), the metric when evaluate() does not return it,
// and passes on errors from the callbacks and from checkpoint I/O unchanged. After an error
// the parameters hold the last applied update; the latest checkpoint is unaffected.
// Thread-safety: one run() at a time; callbacks are called on run()'s thread.
//
// Data parallel (TrainerOptions::comm with world size W > 1; distributed.h): every rank
// runs the same Trainer with the same options and seed over its own shard of each global
// batch (DataLoaderOptions::world/rank, or draw the global batch from rng() — identical on
// every rank — and keep rows [rank * B, (rank + 1) * B)). Then:
//   start      rank 0's parameters are broadcast to every rank (after a resume too), so
//              the replicas start identical whatever each rank's initialisation did;
//   each step  after train_step, the gradients are combined in one flattened buffer:
//              grad = sum_r (w_r / sum w) grad_r, w_r = StepResult::loss_weight (or
//              samples when it is 0), the loss likewise, samples summed; so a loss that is
//              a mean over w_r terms per rank gives the gradient and loss of the global
//              batch (up to float summation order). Clipping, the non-finite check and the
//              update then run on identical values on every rank: the replicas stay
//              bit-identical;
//   evaluate   every rank calls evaluate(); each metric is averaged over the ranks,
//              weighted by metrics["samples"] when present (which is summed); every rank
//              must return the same metric names;
//   files      rank 0 alone writes checkpoints, the log and progress; the others read
//              the checkpoint on resume (checkpoint_dir must be shared), which must come
//              from a run of the same world size (saved as extra.trainer.world_size); a
//              rank that finds a different checkpoint than rank 0 throws;
//   end        run() returns on every rank after rank 0 has written its last checkpoint.
// TrainerState::data_position and TrainSummary count global samples.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "mamba/train/optimizer.h"

namespace mamba::train {

class Communicator;  // distributed.h

enum class MetricMode { min, max };  // min: lower is better (a loss); max: higher (an accuracy)

enum class ProgressMode {
  automatic,  // live when stderr is a terminal and $CI is unset, otherwise lines
  live,       // one line on stderr rewritten in place (\r), at most 10 times a second
  lines,      // a plain line on stderr every progress_every steps
  off,
};

struct TrainerOptions {
  // Length: max_steps updates; when 0, max_epochs * steps_per_epoch. steps_per_epoch > 0
  // also adds "epoch" (1-based) to the log lines.
  int64_t max_steps = 0;
  int64_t max_epochs = 0;
  int64_t steps_per_epoch = 0;

  int64_t eval_every = 0;        // steps between evaluations; 0: only at the end
  bool eval_at_end = true;       // evaluate after the last step (when evaluate is set)

  std::string checkpoint_dir;    // empty: no checkpoints (then resume must be false)
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only at the end
  int64_t keep_last = 3;         // regular checkpoints kept (0: all); best/ keeps one
  bool resume = false;           // continue from checkpoint_dir's latest checkpoint if any

  // Best-checkpoint selection and early stopping use metrics[metric] from evaluate().
  std::string metric = "loss";
  MetricMode metric_mode = MetricMode::min;
  double min_delta = 0.0;                // improvement must exceed this (absolute, >= 0)
  int64_t early_stopping_patience = 0;   // stop after this many evaluations without improvement; 0: off

  double grad_clip = 0.0;        // max global gradient norm; 0: no clipping
  bool skip_nonfinite = false;   // non-finite loss/grad norm: skip the update (logged) instead of throwing

  std::string log_path;          // JSON lines; empty: none
  ProgressMode progress = ProgressMode::automatic;
  int64_t progress_every = 0;    // for ProgressMode::lines; 0: max(1, total steps / 20)

  uint64_t seed = 0;             // seeds rng() (restored on resume)

  // Data parallel: the ranks' communicator (see the file comment); nullptr or world size 1:
  // a single process. Not owned; must outlive run().
  Communicator* comm = nullptr;
};

// What one train_step reports. `loss` is the mean loss of the step's batch; `samples` the
// number of samples it used (for samples/s and TrainerState::data_position).
struct StepResult {
  double loss = 0.0;
  int64_t samples = 0;
  // Data parallel only: the weight of this rank's loss and gradients in the global mean,
  // e.g. the number of loss terms (tokens) when the loss is a mean over tokens; 0 means
  // `samples`. Ignored in a single process.
  double loss_weight = 0.0;
};

using Metrics = std::map<std::string, double>;

struct TrainerCallbacks {
  // Required. Computes the gradients of step `step` (0-based) into the params' grad
  // tensors, which the trainer zeroed just before (so a callback may accumulate
  // micro-batches into them, or assign whole tensors to the slots Param::grad points at).
  std::function<StepResult(int64_t step)> train_step;
  // Optional (required when early_stopping_patience > 0): metrics on held-out data. Must
  // not change the params; should not draw from rng() if runs are to be repeatable.
  std::function<Metrics()> evaluate;
  // Optional: called after every optimiser update and after a checkpoint is loaded.
  std::function<void()> after_update;
  // Optional: the caller's own state (data position, its RNG...), saved in every checkpoint
  // and handed back to load_extra on resume.
  std::function<nlohmann::json()> state_extra;
  std::function<void(const nlohmann::json&)> load_extra;
};

// The learning rate for 0-based step s (WarmupCosine, PolyDecay, a lambda...).
using LrSchedule = std::function<double(int64_t step)>;

struct TrainSummary {
  int64_t steps = 0;               // completed steps in total (resumed ones included)
  int64_t steps_this_run = 0;      // steps run by this call to run()
  int64_t resumed_from = 0;        // the step resumed from (0: fresh start)
  int64_t skipped_steps = 0;       // non-finite steps skipped (skip_nonfinite), in total
  std::optional<double> best_metric;
  int64_t best_step = -1;          // the step of the best evaluation; -1 when none
  bool stopped_early = false;
  Metrics final_metrics;           // the last evaluation's metrics (empty without evaluate)
  std::string best_checkpoint;     // dir/best/checkpoint-<n>; empty when none written
};

class Trainer {
 public:
  // `optimizer` (and the params it refers to) must outlive the Trainer; the trainer does
  // not own it. Throws mamba::Error naming the invalid option or missing callback.
  Trainer(TrainerOptions options, Optimizer& optimizer, LrSchedule lr_schedule, TrainerCallbacks callbacks);

  // Runs (or resumes) training to the end; see the file comment. Call once per Trainer.
  TrainSummary run();

  // Seeded with options.seed, saved in checkpoints and restored on resume: draw data from
  // it in train_step to make resumed runs repeat uninterrupted ones.
  std::mt19937_64& rng() { return rng_; }
  const TrainerOptions& options() const { return opt_; }
  // Total steps the run aims for (max_steps or max_epochs * steps_per_epoch).
  int64_t total_steps() const { return total_steps_; }

 private:
  TrainerOptions opt_;
  Optimizer& optimizer_;
  LrSchedule schedule_;
  TrainerCallbacks cb_;
  std::mt19937_64 rng_;
  int64_t total_steps_ = 0;
};

}  // namespace mamba::train
