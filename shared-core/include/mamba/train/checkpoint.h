// Training checkpoints: parameters, optimiser state and trainer state, written so that a
// crash at any moment leaves a resumable directory.
//
// Layout of a checkpoint directory `dir`:
//   dir/checkpoint-<step>/model.safetensors      parameters by name (f32)
//   dir/checkpoint-<step>/optimizer.safetensors  Optimizer::state_tensors(); metadata
//                                                {"optimizer": kind()}
//   dir/checkpoint-<step>/trainer_state.json     {"format", "version", "step", "optimizer",
//                                                 "rng_state", "data_position",
//                                                 "best_metric" (null when none), "extra"}
//   dir/latest                                   "checkpoint-<step>\n"
//
// Crash safety: a checkpoint is assembled in a staging directory
// "dir/.checkpoint-<step>.partial" (each file written atomically: temp + fsync + rename),
// then the staging directory is renamed to checkpoint-<step> (atomically exchanged with an
// existing one of the same step), and only then is `latest` replaced atomically. So
// `latest` only ever names a complete checkpoint; a crash leaves at worst a stale staging
// directory (removed by the next save) or a complete but unreferenced checkpoint-<step>.
// Older checkpoints are deleted only after `latest` names the new one.
//
// Loading reads `latest`, validates everything before changing anything (every parameter
// present with its shape, no unexpected tensors, optimiser kind and state, trainer state
// fields), then restores. Errors are mamba::Error naming the file and the field or tensor:
//   "checkpoint: 'runs/a/checkpoint-200/model.safetensors': missing tensor 'backbone.norm_f.weight'"
// A failed load leaves the parameters and the optimiser unchanged.
//
// Thread-safety / processes: one writer per `dir` at a time. Readers may load while a
// writer saves; they see the previous or the new checkpoint, whole.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/train/optimizer.h"

namespace mamba::train {

// Everything about a run besides parameters and optimiser state.
struct TrainerState {
  std::string rng_state;              // from rng_state_string(); empty: none recorded
  int64_t data_position = 0;          // where the data loader resumes (samples, batches: caller's unit)
  std::optional<double> best_metric;  // finite when set
  nlohmann::json extra = nlohmann::json::object();  // anything else (e.g. ReduceOnPlateau::state())
};

// The generator's full state (std::mt19937_64's operator<<) and its inverse. restore_rng
// throws mamba::Error when `state` does not parse. Only the engine is saved: distributions
// such as std::normal_distribution cache values of their own, so create them afresh
// after a restore (and at the same points in an uninterrupted run) to repeat a run exactly.
std::string rng_state_string(const std::mt19937_64& rng);
void restore_rng(const std::string& state, std::mt19937_64& rng);

struct CheckpointInfo {
  std::string path;  // dir/checkpoint-<step>
  int64_t step = 0;
  TrainerState state;
};

// Writes checkpoint-<step> as described above, points `latest` at it, then deletes all
// but the `keep_last` newest checkpoints with a step <= `step` (0: keep all; checkpoints
// with a larger step, left by an abandoned run, are kept until a save of that step
// replaces them). Creates `dir` if needed. Returns the checkpoint's path.
// Throws mamba::Error (naming the path) when a write fails; `latest` is then unchanged.
// Failures while deleting old checkpoints are ignored (the new one is already complete).
std::string save_checkpoint(const std::string& dir, int64_t step, const std::vector<Param>& params,
                            const Optimizer& optimizer, const TrainerState& state = {}, int64_t keep_last = 3);

// The checkpoint `dir/latest` names ("dir/checkpoint-<step>"), or nullopt when there is
// no `latest` file. Throws when `latest` is malformed or names a missing directory.
std::optional<std::string> latest_checkpoint(const std::string& dir);

// Validates and restores one checkpoint directory into `params` (values copied in place)
// and `optimizer`. See the error note above.
CheckpointInfo load_checkpoint(const std::string& checkpoint_path, const std::vector<Param>& params,
                               Optimizer& optimizer);

// load_checkpoint(latest_checkpoint(dir)), or nullopt when `dir` has no checkpoint yet
// (a fresh start). Corrupt or mismatched checkpoints throw; they are never skipped.
std::optional<CheckpointInfo> load_latest_checkpoint(const std::string& dir, const std::vector<Param>& params,
                                                     Optimizer& optimizer);

}  // namespace mamba::train
