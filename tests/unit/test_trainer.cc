// The training loop on a tiny linear regression (y = 2 x0 - 3 x1 + 0.5, MSE, AdamW):
// convergence, evaluation/checkpoint cadence, early stopping, exact resume after a kill,
// best-checkpoint selection, non-finite loss handling and the JSON-lines log.
#include "mamba/train/trainer.h"

#include "mamba/train/checkpoint.h"
#include "mamba/train/optimizer.h"
#include "mamba/train/schedule.h"

#include <array>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using mamba::Tensor;
using namespace mamba::train;

namespace {

std::string fresh_dir(const std::string& name) {
  const fs::path d = fs::path(MAMBA_TEST_TMP) / "trainer" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d.string();
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));  // throws if malformed
  return lines;
}

double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1p-53 * 2.0 - 1.0; }

// w = [w0, w1, b]; data drawn from the trainer's RNG so a resumed run repeats exactly.
struct Regression {
  Tensor w = Tensor::zeros({3});
  std::vector<Tensor> grads;
  std::vector<Param> params;
  std::vector<std::array<double, 3>> val;  // x0, x1, y
  int64_t batch = 16;
  int after_update_calls = 0;

  Regression() {
    params = make_params({{"linear.weight", &w}}, grads);
    std::mt19937_64 r(99);
    for (int i = 0; i < 64; ++i) {
      const double x0 = uniform(r), x1 = uniform(r);
      val.push_back({x0, x1, 2 * x0 - 3 * x1 + 0.5});
    }
  }
  double predict(double x0, double x1) const {
    const float* p = w.data<float>();
    return p[0] * x0 + p[1] * x1 + p[2];
  }
  StepResult step(std::mt19937_64& rng) {
    float* g = grads[0].data<float>();
    double loss = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const double x0 = uniform(rng), x1 = uniform(rng), y = 2 * x0 - 3 * x1 + 0.5;
      const double e = predict(x0, x1) - y;
      loss += e * e / static_cast<double>(batch);
      const double d = 2 * e / static_cast<double>(batch);
      g[0] += static_cast<float>(d * x0);
      g[1] += static_cast<float>(d * x1);
      g[2] += static_cast<float>(d);
    }
    return {loss, batch};
  }
  Metrics evaluate() const {
    double loss = 0;
    for (const auto& v : val) loss += std::pow(predict(v[0], v[1]) - v[2], 2) / static_cast<double>(val.size());
    return {{"loss", loss}, {"neg_loss", -loss}};
  }
  std::vector<float> values() const { return {w.data<float>(), w.data<float>() + 3}; }
};

AdamWOptions adamw_options() {
  AdamWOptions o;
  o.weight_decay = 0.0;
  return o;
}

TrainerCallbacks callbacks_for(Regression& m, Trainer*& trainer) {
  TrainerCallbacks cb;
  cb.train_step = [&m, &trainer](int64_t) { return m.step(trainer->rng()); };
  cb.evaluate = [&m] { return m.evaluate(); };
  cb.after_update = [&m] { ++m.after_update_calls; };
  return cb;
}

TrainerOptions quiet(int64_t steps) {
  TrainerOptions o;
  o.max_steps = steps;
  o.progress = ProgressMode::off;
  o.seed = 7;
  return o;
}

const WarmupCosine kSchedule{5, 60, 0.05, 0.005};
const WarmupCosine kFast{5, 60, 0.3, 0.01};

}  // namespace

TEST(Trainer, LossDecreasesAndLogParses) {
  const std::string dir = fresh_dir("converge");
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(60);
  o.eval_every = 20;
  o.log_path = dir + "/log.jsonl";
  o.grad_clip = 10.0;
  Trainer* tp = nullptr;
  Trainer t(o, opt, kFast, callbacks_for(m, tp));
  tp = &t;
  const double initial = m.evaluate()["loss"];
  const TrainSummary s = t.run();
  EXPECT_EQ(s.steps, 60);
  EXPECT_EQ(s.steps_this_run, 60);
  EXPECT_EQ(m.after_update_calls, 60);
  EXPECT_LT(s.final_metrics.at("loss"), 0.05 * initial);
  ASSERT_TRUE(s.best_metric.has_value());
  EXPECT_EQ(s.best_step, 60);

  const auto lines = read_jsonl(o.log_path);
  int train_lines = 0;
  std::vector<int64_t> eval_steps;
  double first_loss = -1, last_loss = -1;
  for (const auto& j : lines) {
    if (j.contains("loss")) {
      ++train_lines;
      EXPECT_EQ(j["step"].get<int64_t>(), train_lines);
      for (const char* k : {"lr", "samples_per_s", "grad_norm"}) EXPECT_TRUE(j[k].is_number()) << k;
      if (first_loss < 0) first_loss = j["loss"];
      last_loss = j["loss"];
    }
    if (j.contains("eval")) {
      eval_steps.push_back(j["step"]);
      EXPECT_TRUE(j["eval"]["loss"].is_number());
    }
  }
  EXPECT_EQ(train_lines, 60);
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{20, 40, 60}));
  EXPECT_LT(last_loss, 0.1 * first_loss);
  EXPECT_EQ(lines[4]["lr"].get<double>(), kFast(4));
}

TEST(Trainer, EvalAndCheckpointCadenceWithEpochs) {
  const std::string dir = fresh_dir("cadence");
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(0);
  o.max_epochs = 3;
  o.steps_per_epoch = 20;  // 60 steps
  o.eval_every = 10;
  o.checkpoint_every = 25;
  o.checkpoint_dir = dir;
  o.keep_last = 0;
  o.log_path = dir + "/log.jsonl";
  int evals = 0;
  Trainer* tp = nullptr;
  TrainerCallbacks cb = callbacks_for(m, tp);
  cb.evaluate = [&] { ++evals; return m.evaluate(); };
  Trainer t(o, opt, kSchedule, cb);
  tp = &t;
  EXPECT_EQ(t.total_steps(), 60);
  const TrainSummary s = t.run();
  EXPECT_EQ(s.steps, 60);
  EXPECT_EQ(evals, 6);  // 10..60; no extra evaluation at the end
  for (int step : {25, 50, 60}) EXPECT_TRUE(fs::exists(dir + "/checkpoint-" + std::to_string(step))) << step;
  EXPECT_FALSE(fs::exists(dir + "/checkpoint-30"));
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/checkpoint-60");
  const auto lines = read_jsonl(o.log_path);
  int64_t last_epoch = 0;
  for (const auto& j : lines)
    if (j.contains("epoch")) last_epoch = j["epoch"];
  EXPECT_EQ(last_epoch, 3);
}

TEST(Trainer, EarlyStoppingAtTheRightEvaluation) {
  const std::string dir = fresh_dir("early");
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(1000);
  o.eval_every = 5;
  o.early_stopping_patience = 3;
  o.checkpoint_dir = dir;
  // Improves at evaluations 1..3, then 3 evaluations without improvement -> stop at the 6th.
  const std::vector<double> script = {5, 4, 3, 3.5, 3.0, 3.2, 1, 1, 1};
  size_t calls = 0;
  Trainer* tp = nullptr;
  TrainerCallbacks cb = callbacks_for(m, tp);
  cb.evaluate = [&] { return Metrics{{"loss", script.at(calls++)}}; };
  Trainer t(o, opt, kSchedule, cb);
  tp = &t;
  const TrainSummary s = t.run();
  EXPECT_TRUE(s.stopped_early);
  EXPECT_EQ(calls, 6u);
  EXPECT_EQ(s.steps, 30);
  EXPECT_EQ(s.best_step, 15);
  EXPECT_EQ(*s.best_metric, 3.0);
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/checkpoint-30");

  // Resuming a run that stopped early stays stopped.
  Regression m2;
  AdamW opt2(m2.params, adamw_options());
  o.resume = true;
  Trainer* tp2 = nullptr;
  TrainerCallbacks cb2 = callbacks_for(m2, tp2);
  cb2.evaluate = [&] { return Metrics{{"loss", 0.0}}; };
  Trainer t2(o, opt2, kSchedule, cb2);
  tp2 = &t2;
  const TrainSummary s2 = t2.run();
  EXPECT_TRUE(s2.stopped_early);
  EXPECT_EQ(s2.steps_this_run, 0);
  EXPECT_EQ(s2.best_step, 15);
  EXPECT_EQ(m2.values(), m.values());
}

namespace {

struct RunResult {
  std::vector<float> w;
  TrainSummary summary;
};

// Runs to `steps`; when kill_at >= 0, train_step throws at that 0-based step (a crash).
RunResult run_regression(const std::string& dir, int64_t steps, bool resume, int64_t kill_at = -1) {
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(steps);
  o.eval_every = 4;
  o.checkpoint_every = 5;
  o.checkpoint_dir = dir;
  o.resume = resume;
  o.grad_clip = 1.0;
  o.log_path = dir + "/log.jsonl";
  Trainer* tp = nullptr;
  TrainerCallbacks cb = callbacks_for(m, tp);
  int64_t extra_counter = 0;  // caller-owned state travelling through state_extra/load_extra
  cb.train_step = [&](int64_t s) {
    if (s == kill_at) throw std::runtime_error("killed");
    ++extra_counter;
    return m.step(tp->rng());
  };
  cb.state_extra = [&] { return nlohmann::json{{"counter", extra_counter}}; };
  cb.load_extra = [&](const nlohmann::json& j) { extra_counter = j.at("counter"); };
  Trainer t(o, opt, kSchedule, cb);
  tp = &t;
  RunResult r;
  r.summary = t.run();
  EXPECT_EQ(extra_counter, r.summary.steps);
  r.w = m.values();
  return r;
}

}  // namespace

TEST(Trainer, ResumeAfterKillMatchesUninterruptedRun) {
  const RunResult full = run_regression(fresh_dir("resume_full"), 40, false);

  // A crash at step 23: the latest checkpoint is 20; resuming continues from there.
  const std::string dir = fresh_dir("resume_killed");
  EXPECT_THROW(run_regression(dir, 40, false, 23), std::runtime_error);
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/checkpoint-20");
  const RunResult resumed = run_regression(dir, 40, true);
  EXPECT_EQ(resumed.summary.resumed_from, 20);
  EXPECT_EQ(resumed.summary.steps_this_run, 20);
  EXPECT_EQ(resumed.w, full.w);  // bitwise
  EXPECT_EQ(resumed.summary.best_step, full.summary.best_step);
  EXPECT_EQ(resumed.summary.best_metric, full.summary.best_metric);
  EXPECT_EQ(resumed.summary.final_metrics, full.summary.final_metrics);

  // Stopping at N/2 with a fresh Trainer, then resuming to N.
  const std::string dir2 = fresh_dir("resume_half");
  const RunResult half = run_regression(dir2, 20, false);
  EXPECT_EQ(half.summary.steps, 20);
  const RunResult rest = run_regression(dir2, 40, true);
  EXPECT_EQ(rest.summary.resumed_from, 20);
  EXPECT_EQ(rest.w, full.w);
  EXPECT_EQ(rest.summary.best_step, full.summary.best_step);

  // The log of the resumed run still parses and ends at step 40.
  const auto lines = read_jsonl(dir + "/log.jsonl");
  EXPECT_EQ(lines.back()["step"].get<int64_t>(), 40);
}

TEST(Trainer, BestCheckpointHoldsTheBestParameters) {
  const std::string dir = fresh_dir("best");
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(30);
  o.eval_every = 5;
  o.checkpoint_every = 10;
  o.checkpoint_dir = dir;
  o.metric = "acc";
  o.metric_mode = MetricMode::max;
  // Scripted metric (higher is better): the best is the 3rd evaluation, step 15.
  const std::vector<double> script = {0.1, 0.5, 0.9, 0.7, 0.8, 0.85};
  size_t calls = 0;
  std::map<int64_t, std::vector<float>> snapshots;
  Trainer* tp = nullptr;
  TrainerCallbacks cb = callbacks_for(m, tp);
  cb.evaluate = [&] {
    snapshots[static_cast<int64_t>(calls + 1) * 5] = m.values();
    return Metrics{{"acc", script.at(calls++)}};
  };
  Trainer t(o, opt, kSchedule, cb);
  tp = &t;
  const TrainSummary s = t.run();
  EXPECT_FALSE(s.stopped_early);
  EXPECT_EQ(s.best_step, 15);
  EXPECT_EQ(*s.best_metric, 0.9);
  EXPECT_EQ(s.best_checkpoint, dir + "/best/checkpoint-15");
  EXPECT_EQ(*latest_checkpoint(dir + "/best"), dir + "/best/checkpoint-15");
  EXPECT_FALSE(fs::exists(dir + "/best/checkpoint-10"));  // one best kept

  Regression fresh;
  AdamW fresh_opt(fresh.params, adamw_options());
  const auto info = load_latest_checkpoint(dir + "/best", fresh.params, fresh_opt);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->step, 15);
  EXPECT_EQ(*info->state.best_metric, 0.9);
  EXPECT_EQ(fresh.values(), snapshots.at(15));
  EXPECT_NE(fresh.values(), m.values());
}

TEST(Trainer, NonFiniteLossNamesTheStepOrIsSkipped) {
  Regression m;
  AdamW opt(m.params, adamw_options());
  TrainerOptions o = quiet(20);
  Trainer* tp = nullptr;
  TrainerCallbacks cb = callbacks_for(m, tp);
  cb.train_step = [&](int64_t s) {
    StepResult r = m.step(tp->rng());
    if (s == 7) r.loss = std::numeric_limits<double>::quiet_NaN();
    return r;
  };
  {
    Trainer t(o, opt, kSchedule, cb);
    tp = &t;
    try {
      t.run();
      FAIL() << "expected mamba::Error";
    } catch (const mamba::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("non-finite loss nan"), std::string::npos) << msg;
      EXPECT_NE(msg.find("step 8 (train_step(7))"), std::string::npos) << msg;
    }
    EXPECT_EQ(opt.steps_taken(), 7);  // no update applied for the bad step
  }
  {
    Regression m2;
    AdamW opt2(m2.params, adamw_options());
    o.skip_nonfinite = true;
    TrainerCallbacks cb2 = callbacks_for(m2, tp);
    cb2.train_step = [&](int64_t s) {
      StepResult r = m2.step(tp->rng());
      if (s == 3) m2.grads[0].data<float>()[1] = std::numeric_limits<float>::infinity();
      return r;
    };
    Trainer t(o, opt2, kSchedule, cb2);
    tp = &t;
    const TrainSummary s = t.run();
    EXPECT_EQ(s.steps, 20);
    EXPECT_EQ(s.skipped_steps, 1);
    EXPECT_EQ(opt2.steps_taken(), 19);
    for (float v : m2.values()) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(Trainer, InvalidOptionsNameTheField) {
  Regression m;
  AdamW opt(m.params, adamw_options());
  Trainer* tp = nullptr;
  auto message = [&](TrainerOptions o) {
    try {
      Trainer t(o, opt, kSchedule, callbacks_for(m, tp));
    } catch (const mamba::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(quiet(0)).find("max_steps"), std::string::npos);
  TrainerOptions o = quiet(10);
  o.checkpoint_every = 5;
  EXPECT_NE(message(o).find("checkpoint_every: needs checkpoint_dir"), std::string::npos);
  o = quiet(10);
  o.grad_clip = -1;
  EXPECT_NE(message(o).find("grad_clip"), std::string::npos);
  o = quiet(10);
  o.eval_every = 5;
  o.metric = "acc";
  Trainer t(o, opt, kSchedule, callbacks_for(m, tp));
  tp = &t;
  try {
    t.run();
    FAIL() << "expected mamba::Error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no metric 'acc'"), std::string::npos) << e.what();
  }
}
