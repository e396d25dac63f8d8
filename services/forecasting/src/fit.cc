#include "mamba/forecasting/fit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "mamba/forecasting/metrics.h"
#include "mamba/train/checkpoint.h"
#include "mamba/train/schedule.h"
#include "mamba/train/trainer.h"

namespace mamba::forecasting {

namespace {
// The window order of one epoch: a permutation drawn from (seed, epoch) alone, truncated
// to `keep` windows.
std::vector<int64_t> epoch_order(int64_t count, int64_t keep, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(keep);
  return order;
}

}  // namespace

void init_from_linear(MambaForecaster& model, const LinearForecaster& linear) {
  const ForecasterConfig& c = model.config();
  if (!c.linear_skip) fail("init_from_linear", "the model has no linear path (linear_skip is false)");
  if (linear.seq_len() != c.seq_len || linear.horizon() != c.horizon)
    fail("init_from_linear", "the linear model maps " + std::to_string(linear.seq_len()) + " -> " +
                                 std::to_string(linear.horizon()) + " steps, the model " + std::to_string(c.seq_len) +
                                 " -> " + std::to_string(c.horizon));
  if (linear.norm() != InstanceNorm::mean) fail("init_from_linear", "the linear model must use InstanceNorm::mean");
  auto& store = model.store();
  train::StoredParameter* w = store.find("linear_skip.weight");
  train::StoredParameter* bias = store.find("linear_skip.bias");
  if (!w || !bias) fail("init_from_linear", "the model has no linear_skip parameters");
  w->value.copy_from(linear.weight());
  bias->value.fill(0.0);
  for (auto& e : store.entries()) {
    auto ends = [&](const std::string& suffix) {
      return e.name.size() >= suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends("head.weight") || ends("head.bias")) e.value.fill(0.0);
  }
}

WindowSource window_source(const WindowDataset& data, const Tensor& time_features) {
  WindowSource w;
  w.count = data.size();
  const Tensor tf = time_features.defined() ? time_features.contiguous() : Tensor();
  w.gather = [&data, tf](const std::vector<int64_t>& index, Tensor& x, Tensor& y, Tensor& marks) {
    data.gather(index, x, y);
    if (!tf.defined()) {
      marks = Tensor();
      return;
    }
    const int64_t B = static_cast<int64_t>(index.size()), L = data.seq_len(), F = tf.size(1);
    marks = Tensor::empty({B, L, F});
    for (int64_t b = 0; b < B; ++b) {
      const int64_t start = data.window_start(index[b]);
      std::copy_n(tf.data<float>() + start * F, L * F, marks.data<float>() + b * L * F);
    }
  };
  return w;
}

EvalMetrics evaluate(const BatchPredictor& model, const WindowSource& windows, int64_t batch_size) {
  ErrorAccumulator acc;
  Tensor x, y, marks;
  for (int64_t start = 0; start < windows.count; start += batch_size) {
    std::vector<int64_t> idx(std::min(batch_size, windows.count - start));
    std::iota(idx.begin(), idx.end(), start);
    windows.gather(idx, x, y, marks);
    acc.add(model.predict(x, marks), y);
  }
  return {acc.mse(), acc.mae(), windows.count};
}

FitResult fit(MambaForecaster& model, const WindowSource& train, const WindowSource& val, const FitOptions& o) {
  if (o.batch_size < 1) fail("forecaster fit", "batch_size must be >= 1");
  if (o.max_epochs < 1) fail("forecaster fit", "max_epochs must be >= 1");
  if (!(o.lr > 0)) fail("forecaster fit", "lr must be > 0");
  if (o.loss != "mse" && o.loss != "mae") fail("forecaster fit", "loss '" + o.loss + "' is not mse or mae");
  if (train.count < 1) fail("forecaster fit", "no training windows (the series is shorter than seq_len + horizon)");
  if (val.count < 1) fail("forecaster fit", "no validation windows");

  const int64_t keep = o.max_train_windows > 0 ? std::min(o.max_train_windows, train.count) : train.count;
  const int64_t steps_per_epoch = (keep + o.batch_size - 1) / o.batch_size;
  const int64_t total = steps_per_epoch * o.max_epochs;

  auto& store = model.store();
  std::vector<train::Param> params = store.params();
  if (o.freeze_linear)
    std::erase_if(params, [](const train::Param& p) { return p.name.rfind("linear_skip.", 0) == 0; });
  train::AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  train::AdamW opt(params, ao);
  const train::WarmupCosine schedule{static_cast<int64_t>(o.warmup_fraction * static_cast<double>(total)), total, o.lr,
                                     o.lr / 20};

  train::TrainerOptions to;
  to.max_epochs = o.max_epochs;
  to.steps_per_epoch = steps_per_epoch;
  to.eval_every = steps_per_epoch;
  to.metric = "val_mse";
  to.metric_mode = train::MetricMode::min;
  to.early_stopping_patience = o.patience;
  to.grad_clip = o.grad_clip;
  to.checkpoint_dir = o.checkpoint_dir;
  to.checkpoint_every = o.checkpoint_dir.empty() ? 0 : steps_per_epoch;
  to.keep_last = 2;
  to.resume = o.resume;
  to.log_path = o.log_path;
  to.progress = o.quiet ? train::ProgressMode::off : train::ProgressMode::automatic;
  to.seed = o.seed;

  // Best parameters seen by this process (used when there is no checkpoint directory).
  std::vector<Tensor> best_values;
  double best_mse = std::numeric_limits<double>::infinity();
  int64_t evals = 0, best_eval = 0;

  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  Tensor x, y, marks;
  train::Trainer* trainer_ptr = nullptr;
  train::TrainerCallbacks cb;
  struct StopRequested {};
  cb.train_step = [&](int64_t step) {
    if (o.stop_after_steps > 0 && step >= o.stop_after_steps) throw StopRequested{};
    const int64_t epoch = step / steps_per_epoch, pos = step % steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(train.count, keep, o.seed, epoch);
      order_epoch = epoch;
    }
    const int64_t begin = pos * o.batch_size, end = std::min<int64_t>(keep, begin + o.batch_size);
    std::vector<int64_t> idx(order.begin() + begin, order.begin() + end);
    train.gather(idx, x, y, marks);
    ag::Var pred = model.forward(x, marks, true, trainer_ptr->rng());
    ag::Var loss = o.loss == "mse" ? ag::mse_loss(pred, y) : ag::l1_loss(pred, y);
    ag::backward(loss);
    return train::StepResult{loss.value().item(), static_cast<int64_t>(idx.size())};
  };
  cb.evaluate = [&]() {
    const EvalMetrics m = evaluate(model, val);
    ++evals;
    if (m.mse < best_mse) {
      best_mse = m.mse;
      best_eval = evals;
      best_values.clear();
      for (const auto& e : store.entries()) best_values.push_back(e.value.clone());
    }
    return train::Metrics{{"val_mse", m.mse}, {"val_mae", m.mae}};
  };
  cb.after_update = [&]() { model.refresh(); };

  train::Trainer trainer(to, opt, schedule, cb);
  trainer_ptr = &trainer;
  const auto t0 = std::chrono::steady_clock::now();
  train::TrainSummary s;
  try {
    s = trainer.run();
  } catch (const StopRequested&) {
    FitResult r;
    r.interrupted = true;
    r.steps = o.stop_after_steps;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Restore the best epoch's parameters.
  if (!o.checkpoint_dir.empty() && !s.best_checkpoint.empty()) {
    train::load_checkpoint(s.best_checkpoint, params, opt);
  } else if (!o.checkpoint_dir.empty() && train::latest_checkpoint(o.checkpoint_dir + "/best")) {
    train::load_latest_checkpoint(o.checkpoint_dir + "/best", params, opt);
  } else if (!best_values.empty()) {
    size_t i = 0;
    for (auto& e : store.entries()) e.value.copy_from(best_values[i++]);
  }
  model.refresh();

  FitResult r;
  r.steps = s.steps;
  r.stopped_early = s.stopped_early;
  r.best_val_mse = s.best_metric.value_or(best_mse);
  r.best_epoch = s.best_step > 0 ? (s.best_step + steps_per_epoch - 1) / steps_per_epoch : best_eval;
  r.seconds = secs;
  r.samples_per_s = secs > 0 ? static_cast<double>(s.steps_this_run * o.batch_size) / secs : 0;
  return r;
}

}  // namespace mamba::forecasting
