// Training Mamba4Rec under the sequential protocol on the shared train::Trainer: AdamW at a
// constant learning rate, mini-batches of training samples (every prefix, protocol.h)
// shuffled per epoch from (seed, epoch), validation NDCG@10 after every epoch, early stopping
// after `patience` epochs without improvement, and the best epoch's parameters restored.
// Errors: mamba::Error naming the option.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mamba/recommendation/mamba4rec.h"

namespace mamba::recommendation {

struct RecFitOptions {
  int64_t max_epochs = 50;
  int64_t max_steps = 0;      // > 0: stop after this many updates (then validate once)
  int64_t batch_size = 256;
  double lr = 1e-3;
  double weight_decay = 0.0;
  int64_t patience = 10;      // epochs without a better validation NDCG@10 (RecBole's stopping_step); 0: off
  double grad_clip = 5.0;
  uint64_t seed = 1;
  std::string log_path;       // JSON lines (trainer.h)
  bool quiet = false;
  RankOptions rank;           // for the validation metric
  // Called after each validation with (epoch, metrics): progress lines.
  std::function<void(int64_t, const RankMetrics&)> on_epoch;
};

struct RecFitResult {
  int64_t steps = 0;
  int64_t epochs = 0;
  int64_t best_epoch = 0;
  double best_val_ndcg10 = 0;
  bool stopped_early = false;
  double seconds = 0;
  double samples_per_s = 0;
};

// Trains in place; at the end the parameters are the best validation epoch's.
RecFitResult fit(Mamba4Rec& model, const LeaveOneOutSplit& split, const RecFitOptions& options);

}  // namespace mamba::recommendation
