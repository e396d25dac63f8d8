#include "mamba/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mamba/train/checkpoint.h"
#include "mamba/train/distributed.h"
#include "mamba/train/grad_utils.h"

namespace mamba::train {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

[[noreturn]] void fail_option(const std::string& field, const std::string& what) {
  throw Error("trainer: TrainerOptions." + field + ": " + what);
}

std::string num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// JSON has no NaN/Inf: write null.
json finite_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Data parallel: the values (or gradients) of every param in one flat buffer, and back.
void flatten(const std::vector<Param>& params, bool grads, std::vector<float>& flat, float scale = 1.0f) {
  size_t total = 0;
  for (const Param& p : params) total += static_cast<size_t>((grads ? p.grad : p.value)->numel());
  flat.resize(total);
  size_t o = 0;
  for (const Param& p : params) {
    const Tensor& t = *(grads ? p.grad : p.value);
    const float* d = t.data<float>();
    const auto n = static_cast<size_t>(t.numel());
    if (scale == 1.0f) std::copy(d, d + n, flat.data() + o);
    else for (size_t i = 0; i < n; ++i) flat[o + i] = d[i] * scale;
    o += n;
  }
}

void unflatten(const std::vector<Param>& params, bool grads, const std::vector<float>& flat) {
  size_t o = 0;
  for (const Param& p : params) {
    Tensor& t = *(grads ? p.grad : p.value);
    const auto n = static_cast<size_t>(t.numel());
    std::copy(flat.data() + o, flat.data() + o + n, t.data<float>());
    o += n;
  }
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  return buf;
}

}  // namespace

Trainer::Trainer(TrainerOptions options, Optimizer& optimizer, LrSchedule lr_schedule, TrainerCallbacks callbacks)
    : opt_(std::move(options)), optimizer_(optimizer), schedule_(std::move(lr_schedule)), cb_(std::move(callbacks)),
      rng_(opt_.seed) {
  if (opt_.max_steps < 0) fail_option("max_steps", "must be >= 0 (got " + std::to_string(opt_.max_steps) + ")");
  if (opt_.max_epochs < 0) fail_option("max_epochs", "must be >= 0 (got " + std::to_string(opt_.max_epochs) + ")");
  if (opt_.steps_per_epoch < 0)
    fail_option("steps_per_epoch", "must be >= 0 (got " + std::to_string(opt_.steps_per_epoch) + ")");
  total_steps_ = opt_.max_steps > 0 ? opt_.max_steps : opt_.max_epochs * opt_.steps_per_epoch;
  if (total_steps_ <= 0) fail_option("max_steps", "set max_steps > 0, or max_epochs > 0 with steps_per_epoch > 0");
  if (opt_.eval_every < 0) fail_option("eval_every", "must be >= 0 (got " + std::to_string(opt_.eval_every) + ")");
  if (opt_.checkpoint_every < 0)
    fail_option("checkpoint_every", "must be >= 0 (got " + std::to_string(opt_.checkpoint_every) + ")");
  if (opt_.keep_last < 0) fail_option("keep_last", "must be >= 0 (got " + std::to_string(opt_.keep_last) + ")");
  if (opt_.checkpoint_every > 0 && opt_.checkpoint_dir.empty())
    fail_option("checkpoint_every", "needs checkpoint_dir");
  if (opt_.resume && opt_.checkpoint_dir.empty()) fail_option("resume", "needs checkpoint_dir");
  if (opt_.early_stopping_patience < 0)
    fail_option("early_stopping_patience",
                "must be >= 0 (got " + std::to_string(opt_.early_stopping_patience) + ")");
  if (opt_.early_stopping_patience > 0 && !cb_.evaluate)
    fail_option("early_stopping_patience", "needs the evaluate callback");
  if (!(opt_.min_delta >= 0) || !std::isfinite(opt_.min_delta))
    fail_option("min_delta", "must be finite and >= 0 (got " + num(opt_.min_delta) + ")");
  if (!(opt_.grad_clip >= 0) || !std::isfinite(opt_.grad_clip))
    fail_option("grad_clip", "must be finite and >= 0 (got " + num(opt_.grad_clip) + ")");
  if (opt_.progress_every < 0)
    fail_option("progress_every", "must be >= 0 (got " + std::to_string(opt_.progress_every) + ")");
  if (opt_.metric.empty() && cb_.evaluate) fail_option("metric", "must name one of evaluate()'s metrics");
  if (!cb_.train_step) throw Error("trainer: the train_step callback is required");
  if (!schedule_) throw Error("trainer: the learning-rate schedule is required");
}

TrainSummary Trainer::run() {
  const std::vector<Param>& params = optimizer_.params();
  const bool checkpoints = !opt_.checkpoint_dir.empty();
  const std::string best_dir = checkpoints ? (std::filesystem::path(opt_.checkpoint_dir) / "best").string() : "";
  // Data parallel: rank 0 ("lead") writes every file; all ranks compute.
  Communicator* comm = (opt_.comm && opt_.comm->world_size() > 1) ? opt_.comm : nullptr;
  const bool lead = !comm || comm->rank() == 0;
  const int world = comm ? comm->world_size() : 1;
  std::vector<float> flat;

  TrainSummary sum;
  int64_t step = 0;  // completed steps
  int64_t samples_seen = 0;
  int64_t bad_evaluations = 0;
  int64_t last_eval_step = -1, last_checkpoint_step = -1;

  auto better = [&](double m) {
    if (!std::isfinite(m)) return false;
    if (!sum.best_metric) return true;
    return opt_.metric_mode == MetricMode::min ? m < *sum.best_metric - opt_.min_delta
                                               : m > *sum.best_metric + opt_.min_delta;
  };

  auto trainer_state = [&]() {
    TrainerState ts;
    ts.rng_state = rng_state_string(rng_);
    ts.data_position = samples_seen;
    ts.best_metric = sum.best_metric;
    ts.extra = json::object();
    ts.extra["trainer"] = {{"best_step", sum.best_step},
                           {"bad_evaluations", bad_evaluations},
                           {"skipped_steps", sum.skipped_steps},
                           {"stopped_early", sum.stopped_early},
                           {"metric", opt_.metric},
                           {"world_size", world}};
    if (cb_.state_extra) ts.extra["user"] = cb_.state_extra();
    return ts;
  };

  // ---- resume ----
  bool resumed = false;
  if (opt_.resume) {
    if (auto info = load_latest_checkpoint(opt_.checkpoint_dir, params, optimizer_)) {
      const json& ex = info->state.extra;
      const json tr = ex.contains("trainer") ? ex["trainer"] : json::object();
      const std::string saved_metric = tr.value("metric", opt_.metric);
      if (saved_metric != opt_.metric)
        throw Error("trainer: '" + info->path + "' selected the best checkpoint by metric '" + saved_metric +
                    "', but TrainerOptions.metric is '" + opt_.metric + "'");
      const int64_t saved_world = tr.value("world_size", int64_t{1});
      if (saved_world != world)
        throw Error("trainer: '" + info->path + "' was written by a run of " + std::to_string(saved_world) +
                    " process(es) but this run has " + std::to_string(world) +
                    " (the global batch would change): resume with the same world size");
      if (!info->state.rng_state.empty()) restore_rng(info->state.rng_state, rng_);
      step = info->step;
      samples_seen = info->state.data_position;
      sum.best_metric = info->state.best_metric;
      sum.best_step = tr.value("best_step", int64_t{-1});
      bad_evaluations = tr.value("bad_evaluations", int64_t{0});
      sum.skipped_steps = tr.value("skipped_steps", int64_t{0});
      sum.stopped_early = tr.value("stopped_early", false);
      if (cb_.load_extra) cb_.load_extra(ex.contains("user") ? ex["user"] : json(nullptr));
      if (cb_.after_update) cb_.after_update();
      sum.resumed_from = step;
      last_checkpoint_step = step;
      resumed = true;
      if (sum.best_step >= 0 && std::filesystem::exists(best_dir))
        sum.best_checkpoint = (std::filesystem::path(best_dir) / ("checkpoint-" + std::to_string(sum.best_step))).string();
    }
  }

  // ---- data parallel: every rank resumed from the same step, and starts from rank 0's params ----
  if (comm) {
    const int64_t mine = resumed ? step : -1;
    int64_t rank0 = mine;
    comm->broadcast(&rank0, sizeof rank0, 0);
    if (rank0 != mine) {
      auto what = [](int64_t s) { return s < 0 ? std::string("a fresh start") : "checkpoint-" + std::to_string(s); };
      throw Error("trainer: rank " + std::to_string(comm->rank()) + " found " + what(mine) + " in '" +
                  opt_.checkpoint_dir + "' but rank 0 found " + what(rank0) +
                  " (TrainerOptions.checkpoint_dir must be one directory every rank reads)");
    }
    flatten(params, /*grads=*/false, flat);
    comm->broadcast(flat.data(), flat.size() * sizeof(float), 0);
    unflatten(params, false, flat);
    if (cb_.after_update) cb_.after_update();
  }

  // Data parallel: the rank-weighted mean of the gradients and loss; samples summed.
  auto reduce_step = [&](StepResult r) {
    const double w = r.loss_weight > 0 ? r.loss_weight : static_cast<double>(r.samples);
    double sc[4] = {w, w > 0 ? w * r.loss : 0.0, static_cast<double>(r.samples), r.loss};
    comm->all_reduce_sum(sc, 4);
    const bool weighted = sc[0] > 0;
    const double factor = weighted ? w / sc[0] : 1.0 / world;
    flatten(params, /*grads=*/true, flat, static_cast<float>(factor));
    comm->all_reduce_sum(flat.data(), flat.size());
    unflatten(params, true, flat);
    r.loss = weighted ? sc[1] / sc[0] : sc[3] / world;
    r.samples = static_cast<int64_t>(std::llround(sc[2]));
    return r;
  };
  // Data parallel: each metric averaged over the ranks (weighted by "samples", summed).
  auto reduce_metrics = [&](Metrics m) {
    std::string names;
    for (const auto& [k, v] : m) names += k + "\n";
    const uint64_t mine = fnv1a(names);
    uint64_t rank0 = mine;
    comm->broadcast(&rank0, sizeof rank0, 0);
    if (rank0 != mine) {
      std::replace(names.begin(), names.end(), '\n', ' ');
      throw Error("trainer: evaluate() on rank " + std::to_string(comm->rank()) + " returned metrics { " + names +
                  "} with other names than rank 0's (every rank must return the same metrics)");
    }
    const auto it = m.find("samples");
    const double w = it != m.end() ? it->second : 1.0;
    std::vector<double> buf{w};
    for (const auto& [k, v] : m) buf.push_back(k == "samples" ? v : (w == 0 ? 0.0 : w * v));
    comm->all_reduce_sum(buf.data(), buf.size());
    if (!(buf[0] > 0)) throw Error("trainer: evaluate() returned metric 'samples' 0 on every rank");
    size_t i = 1;
    for (auto& [k, v] : m) {
      v = k == "samples" ? buf[i] : buf[i] / buf[0];
      ++i;
    }
    return m;
  };

  // ---- log and progress ----
  std::ofstream log;
  if (!opt_.log_path.empty() && lead) {
    const auto parent = std::filesystem::path(opt_.log_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    log.open(opt_.log_path, resumed ? std::ios::app : std::ios::trunc);
    if (!log) throw Error("trainer: cannot open log_path '" + opt_.log_path + "'");
  }
  auto write_log = [&](const json& j) {
    if (log.is_open()) log << j.dump() << '\n' << std::flush;
  };
  if (resumed) write_log({{"step", step}, {"event", "resumed"}, {"checkpoint", opt_.checkpoint_dir}});

  ProgressMode progress = lead ? opt_.progress : ProgressMode::off;
  if (progress == ProgressMode::automatic)
    progress = (isatty(STDERR_FILENO) && std::getenv("CI") == nullptr) ? ProgressMode::live : ProgressMode::lines;
  const int64_t progress_every = opt_.progress_every > 0 ? opt_.progress_every : std::max<int64_t>(1, total_steps_ / 20);
  const auto t_start = Clock::now();
  auto t_last_live = t_start - std::chrono::seconds(1);
  double interval_loss = 0;
  int64_t interval_steps = 0, run_samples = 0;
  bool live_line_open = false;

  auto report_progress = [&](double lr, bool force) {
    if (progress == ProgressMode::off || interval_steps == 0) return;
    const auto now = Clock::now();
    const bool due = progress == ProgressMode::live
                         ? (force || now - t_last_live >= std::chrono::milliseconds(100))
                         : (force || step % progress_every == 0);
    if (!due) return;
    const double elapsed = std::chrono::duration<double>(now - t_start).count();
    const int64_t done = step - sum.resumed_from;
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_steps_ - step) : NAN;
    const double sps = elapsed > 0 ? static_cast<double>(run_samples) / elapsed : 0.0;
    char buf[256];
    std::snprintf(buf, sizeof buf, "step %lld/%lld (%3.0f%%)  loss %.4g  lr %.3g  %.0f samples/s  ETA %s",
                  static_cast<long long>(step), static_cast<long long>(total_steps_),
                  100.0 * static_cast<double>(step) / static_cast<double>(total_steps_),
                  interval_loss / static_cast<double>(interval_steps), lr, sps, format_duration(eta).c_str());
    if (progress == ProgressMode::live) {
      std::fprintf(stderr, "\r%s\033[K", buf);
      live_line_open = true;
      t_last_live = now;
    } else {
      std::fprintf(stderr, "%s\n", buf);
    }
    std::fflush(stderr);
    interval_loss = 0;
    interval_steps = 0;
  };
  auto end_live_line = [&]() {
    if (live_line_open) std::fprintf(stderr, "\n"), std::fflush(stderr);
    live_line_open = false;
  };

  // ---- evaluation and checkpoints ----
  auto evaluate = [&]() {
    Metrics m = cb_.evaluate();
    if (comm) m = reduce_metrics(std::move(m));
    last_eval_step = step;
    sum.final_metrics = m;
    const auto it = m.find(opt_.metric);
    if (it == m.end()) {
      std::string names;
      for (const auto& [k, v] : m) names += (names.empty() ? "" : ", ") + k;
      throw Error("trainer: evaluate() at step " + std::to_string(step) + " returned no metric '" + opt_.metric +
                  "' (TrainerOptions.metric); it returned: " + (names.empty() ? "none" : names));
    }
    const bool improved = better(it->second);
    if (improved) {
      sum.best_metric = it->second;
      sum.best_step = step;
      bad_evaluations = 0;
    } else {
      ++bad_evaluations;
    }
    json jm = json::object();
    for (const auto& [k, v] : m) jm[k] = finite_or_null(v);
    write_log({{"step", step},
               {"eval", jm},
               {"best_metric", sum.best_metric ? json(*sum.best_metric) : json(nullptr)},
               {"improved", improved}});
    if (improved && checkpoints) {
      sum.best_checkpoint =
          lead ? save_checkpoint(best_dir, step, params, optimizer_, trainer_state(), 1)
               : (std::filesystem::path(best_dir) / ("checkpoint-" + std::to_string(step))).string();
      write_log({{"step", step}, {"event", "best_checkpoint"}, {"path", sum.best_checkpoint}});
    }
    if (opt_.early_stopping_patience > 0 && bad_evaluations >= opt_.early_stopping_patience && step < total_steps_) {
      sum.stopped_early = true;
      write_log({{"step", step}, {"event", "early_stop"}, {"bad_evaluations", bad_evaluations}});
    }
  };
  auto checkpoint = [&]() {
    const std::string path =
        lead ? save_checkpoint(opt_.checkpoint_dir, step, params, optimizer_, trainer_state(), opt_.keep_last)
             : (std::filesystem::path(opt_.checkpoint_dir) / ("checkpoint-" + std::to_string(step))).string();
    last_checkpoint_step = step;
    write_log({{"step", step}, {"event", "checkpoint"}, {"path", path}});
  };

  // ---- the loop ----
  double lr = 0.0;
  while (step < total_steps_ && !sum.stopped_early) {
    const int64_t s = step;  // 0-based index of this update
    const auto t0 = Clock::now();
    optimizer_.zero_grad();
    StepResult r = cb_.train_step(s);
    if (comm) r = reduce_step(r);
    lr = schedule_(s);
    const double norm = opt_.grad_clip > 0 ? clip_grad_norm(params, opt_.grad_clip) : grad_global_norm(params);
    const bool finite = std::isfinite(r.loss) && std::isfinite(norm);
    if (!finite) {
      std::string what = !std::isfinite(r.loss) ? "loss " + num(r.loss) : "gradient norm " + num(norm);
      if (std::isfinite(r.loss))
        if (auto name = find_nonfinite_grad(params)) what += " (first in '" + *name + "')";
      const std::string where = " at step " + std::to_string(s + 1) + " (train_step(" + std::to_string(s) + "))";
      if (!opt_.skip_nonfinite) {
        end_live_line();
        throw Error("trainer: non-finite " + what + where + "; no update applied");
      }
      optimizer_.zero_grad();
      ++sum.skipped_steps;
      step = s + 1;
      samples_seen += r.samples;
      write_log({{"step", step}, {"skipped", true}, {"reason", "non-finite " + what}});
    } else {
      optimizer_.step(lr);
      if (cb_.after_update) cb_.after_update();
      step = s + 1;
      samples_seen += r.samples;
      run_samples += r.samples;
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      json line = {{"step", step},
                   {"loss", r.loss},
                   {"lr", lr},
                   {"samples_per_s", dt > 0 ? static_cast<double>(r.samples) / dt : 0.0},
                   {"grad_norm", norm}};
      if (opt_.steps_per_epoch > 0) line["epoch"] = s / opt_.steps_per_epoch + 1;
      write_log(line);
      interval_loss += r.loss;
      ++interval_steps;
    }
    ++sum.steps_this_run;
    report_progress(lr, step == total_steps_);

    if (cb_.evaluate && opt_.eval_every > 0 && step % opt_.eval_every == 0) evaluate();
    if (checkpoints && opt_.checkpoint_every > 0 && step % opt_.checkpoint_every == 0) checkpoint();
  }
  end_live_line();

  // ---- the end ----
  if (cb_.evaluate && opt_.eval_at_end && last_eval_step != step && sum.steps_this_run > 0) evaluate();
  if (checkpoints && last_checkpoint_step != step) checkpoint();
  if (comm) comm->barrier();  // rank 0's files are complete when run() returns on any rank
  sum.steps = step;
  if (progress != ProgressMode::off) {
    std::fprintf(stderr, "trained %lld steps%s", static_cast<long long>(step), sum.stopped_early ? " (stopped early)" : "");
    if (sum.best_metric)
      std::fprintf(stderr, "; best %s %.6g at step %lld", opt_.metric.c_str(), *sum.best_metric,
                   static_cast<long long>(sum.best_step));
    std::fprintf(stderr, "\n");
  }
  return sum;
}

}  // namespace mamba::train
