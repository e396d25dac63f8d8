#include "mamba/recommendation/fit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "mamba/train/trainer.h"

namespace mamba::recommendation {

RecFitResult fit(Mamba4Rec& model, const LeaveOneOutSplit& split, const RecFitOptions& o) {
  if (o.batch_size < 1) fail("mamba4rec fit", "batch_size must be >= 1");
  if (o.max_epochs < 1) fail("mamba4rec fit", "max_epochs must be >= 1");
  if (!(o.lr > 0)) fail("mamba4rec fit", "lr must be > 0");
  if (o.patience < 0) fail("mamba4rec fit", "patience must be >= 0");
  if (o.max_steps < 0) fail("mamba4rec fit", "max_steps must be >= 0");
  const std::vector<TrainSample> samples = training_samples(split.train);
  if (samples.empty()) fail("mamba4rec fit", "no training samples (every user needs >= 2 training events)");
  if (split.valid.empty()) fail("mamba4rec fit", "no validation users (users need >= 3 events)");

  const int64_t n = static_cast<int64_t>(samples.size());
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t max_len = model.config().max_seq_len;

  auto& store = model.store();
  std::vector<train::Param> params = store.params();
  train::AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  train::AdamW opt(params, ao);
  const double lr = o.lr;

  train::TrainerOptions to;
  to.max_epochs = o.max_epochs;
  // At most max_epochs: max_steps only shortens a run.
  if (o.max_steps > 0) to.max_steps = std::min(o.max_steps, o.max_epochs * steps_per_epoch);
  to.steps_per_epoch = steps_per_epoch;
  to.eval_every = steps_per_epoch;
  to.metric = "val_NDCG@10";
  to.metric_mode = train::MetricMode::max;
  to.early_stopping_patience = o.patience;
  to.grad_clip = o.grad_clip;
  to.log_path = o.log_path;
  to.progress = o.quiet ? train::ProgressMode::off : train::ProgressMode::automatic;
  to.seed = o.seed;

  std::vector<Tensor> best_values;
  double best = -std::numeric_limits<double>::infinity();
  int64_t evals = 0, best_eval = 0, samples_seen = 0;

  std::vector<int64_t> order(static_cast<size_t>(n));
  int64_t order_epoch = -1;
  train::Trainer* trainer_ptr = nullptr;
  train::TrainerCallbacks cb;
  cb.train_step = [&](int64_t step) {
    const int64_t epoch = step / steps_per_epoch, pos = step % steps_per_epoch;
    if (epoch != order_epoch) {
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
      std::shuffle(order.begin(), order.end(), rng);
      order_epoch = epoch;
    }
    const int64_t begin = pos * o.batch_size, end = std::min<int64_t>(n, begin + o.batch_size);
    std::vector<std::vector<int32_t>> inputs;
    std::vector<int32_t> targets;
    for (int64_t k = begin; k < end; ++k) {
      const TrainSample& s = samples[static_cast<size_t>(order[k])];
      inputs.push_back(sample_input(split.train, s, max_len));
      targets.push_back(split.train[s.user][s.end]);
    }
    std::vector<const std::vector<int32_t>*> hist;
    for (const auto& h : inputs) hist.push_back(&h);
    ag::Var loss = model.loss(pad_right(hist, max_len), targets, true, trainer_ptr->rng());
    ag::backward(loss);
    samples_seen += end - begin;
    return train::StepResult{loss.value().item(), end - begin};
  };
  cb.evaluate = [&]() {
    const RankMetrics m = evaluate_ranking(model, split.valid, o.rank);
    ++evals;
    const double v = m.get("NDCG@10");
    if (v > best) {
      best = v;
      best_eval = evals;
      best_values.clear();
      for (const auto& e : store.entries()) best_values.push_back(e.value.clone());
    }
    if (o.on_epoch) o.on_epoch(evals, m);
    train::Metrics out;
    for (const auto& [k, x] : m.values) out["val_" + k] = x;
    return out;
  };
  cb.after_update = [&]() { model.refresh(); };

  train::Trainer trainer(to, opt, [lr](int64_t) { return lr; }, cb);
  trainer_ptr = &trainer;
  const auto t0 = std::chrono::steady_clock::now();
  const train::TrainSummary s = trainer.run();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!best_values.empty()) {
    size_t i = 0;
    for (auto& e : store.entries()) e.value.copy_from(best_values[i++]);
  }
  model.refresh();

  RecFitResult r;
  r.steps = s.steps;
  r.epochs = (s.steps + steps_per_epoch - 1) / steps_per_epoch;
  r.best_epoch = best_eval;
  r.best_val_ndcg10 = best;
  r.stopped_early = s.stopped_early;
  r.seconds = secs;
  r.samples_per_s = secs > 0 ? static_cast<double>(samples_seen) / secs : 0;
  return r;
}

}  // namespace mamba::recommendation
