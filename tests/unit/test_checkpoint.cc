// Training checkpoints: round trip (params, optimiser state, RNG), validation errors that
// name the file, retention, and `latest` never naming a partial checkpoint.
#include "mamba/train/checkpoint.h"

#include "mamba/io/safetensors.h"
#include "mamba/train/optimizer.h"
#include "mamba/train/schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using mamba::Tensor;
using namespace mamba::train;

namespace {

std::string fresh_dir(const std::string& name) {
  const fs::path d = fs::path(MAMBA_TEST_TMP) / "checkpoint" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// A small model whose gradients come from an RNG, so the RNG state matters for resuming.
struct TrainRun {
  Tensor w = Tensor::full({3, 4}, 0.5);
  Tensor a_log = Tensor::full({4, 2}, -0.25);
  Tensor bias = Tensor::full({3}, 0.0);
  std::vector<Tensor> grads;
  std::vector<Param> params;
  std::mt19937_64 rng{1234};
  explicit TrainRun(bool with_a_log = true) {
    std::vector<std::pair<std::string, Tensor*>> v{{"backbone.layers.0.mixer.in_proj.weight", &w}};
    if (with_a_log) v.emplace_back("backbone.layers.0.mixer.A_log", &a_log);
    v.emplace_back("backbone.layers.0.mixer.conv1d.bias", &bias);
    params = make_params(v, grads);
  }
  // One training step: random gradients from the RNG (raw draws, no distribution cache).
  void train_step(Optimizer& opt, double lr) {
    for (Tensor& g : grads) {
      float* x = g.data<float>();
      for (int64_t i = 0; i < g.numel(); ++i) x[i] = static_cast<float>(static_cast<double>(rng() >> 11) * 0x1p-53 - 0.5);
    }
    opt.step(lr);
  }
  std::vector<std::vector<float>> values() const {
    std::vector<std::vector<float>> out;
    for (const Param& p : params) out.push_back(p.value->to_vector_f32());
    return out;
  }
};

void expect_error_mentions(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected mamba::Error mentioning " << parts.front();
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// An optimiser whose state cannot be produced: a save interrupted half-way.
class BrokenOptimizer final : public Optimizer {
 public:
  explicit BrokenOptimizer(std::vector<Param> p) : Optimizer(std::move(p), "adamw") {}
  void step(double) override {}
  const char* kind() const override { return "adamw"; }
  NamedTensors state_tensors() const override { throw mamba::Error("simulated failure while writing state"); }
  void load_state_tensors(const NamedTensors&, const std::string&) override {}
};

}  // namespace

TEST(Checkpoint, RoundTripResumesExactlyLikeAnUninterruptedRun) {
  const std::string dir = fresh_dir("roundtrip");
  const WarmupCosine schedule{2, 10, 1e-2, 1e-4};
  ReduceOnPlateau plateau(1.0, {});
  plateau.step(3.0);
  plateau.step(3.5);

  TrainRun a;
  AdamW opt_a(a.params, {0.9, 0.99, 1e-8, 0.1});
  for (int64_t s = 0; s < 4; ++s) a.train_step(opt_a, schedule(s));
  TrainerState st;
  st.rng_state = rng_state_string(a.rng);
  st.data_position = 4 * 32;
  st.best_metric = 0.75;
  st.extra = {{"plateau", plateau.state()}, {"note", "hello"}};
  const std::string path = save_checkpoint(dir, 4, a.params, opt_a, st);
  EXPECT_EQ(path, (fs::path(dir) / "checkpoint-4").string());
  EXPECT_EQ(read_text(dir + "/latest"), "checkpoint-4\n");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(path + "/" + f)) << f;
  // The model file holds the parameters by their names.
  EXPECT_EQ(mamba::io::SafeTensorsFile(path + "/model.safetensors").names().front(),
            "backbone.layers.0.mixer.in_proj.weight");

  // The uninterrupted run continues.
  for (int64_t s = 4; s < 7; ++s) a.train_step(opt_a, schedule(s));
  const uint64_t next_a = a.rng();

  // A new process: different initial values, fresh optimiser and RNG, then resume.
  TrainRun b;
  b.w.fill(9.0);
  AdamW opt_b(b.params, {0.9, 0.99, 1e-8, 0.1});
  const auto info = load_latest_checkpoint(dir, b.params, opt_b);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->step, 4);
  EXPECT_EQ(info->path, path);
  EXPECT_EQ(info->state.data_position, 128);
  EXPECT_EQ(info->state.best_metric, 0.75);
  EXPECT_EQ(info->state.extra.at("note"), "hello");
  EXPECT_EQ(opt_b.steps_taken(), 4);
  restore_rng(info->state.rng_state, b.rng);
  ReduceOnPlateau plateau_b(1.0, {});
  plateau_b.load_state(info->state.extra.at("plateau"));
  EXPECT_EQ(plateau_b.best(), 3.0);
  EXPECT_EQ(plateau_b.num_bad_evaluations(), 1);

  for (int64_t s = info->step; s < 7; ++s) b.train_step(opt_b, schedule(s));
  EXPECT_EQ(b.values(), a.values());  // bitwise
  EXPECT_EQ(b.rng(), next_a);         // the next random number too
}

TEST(Checkpoint, NoCheckpointYetIsAFreshStart) {
  const std::string dir = fresh_dir("fresh");
  TrainRun r;
  AdamW opt(r.params);
  EXPECT_FALSE(load_latest_checkpoint(dir, r.params, opt).has_value());
  fs::create_directories(dir);
  EXPECT_FALSE(latest_checkpoint(dir).has_value());
}

TEST(Checkpoint, MismatchesNameTheFileAndTheTensor) {
  const std::string dir = fresh_dir("mismatch");
  TrainRun small(/*with_a_log=*/false);
  AdamW opt_small(small.params);
  small.train_step(opt_small, 1e-3);
  const std::string path = save_checkpoint(dir, 1, small.params, opt_small);

  // Missing parameter tensor.
  TrainRun full;
  AdamW opt_full(full.params);
  expect_error_mentions([&] { load_latest_checkpoint(dir, full.params, opt_full); },
                        {"checkpoint-1/model.safetensors", "missing tensor 'backbone.layers.0.mixer.A_log'"});

  // Shape mismatch.
  Tensor w = Tensor::zeros({4, 3}), bias = Tensor::zeros({3});
  std::vector<Tensor> grads;
  auto other = make_params({{"backbone.layers.0.mixer.in_proj.weight", &w}, {"backbone.layers.0.mixer.conv1d.bias", &bias}}, grads);
  AdamW opt_other(other);
  expect_error_mentions([&] { load_checkpoint(path, other, opt_other); },
                        {"model.safetensors", "in_proj.weight", "[3, 4]"});
  for (float x : w.to_vector_f32()) EXPECT_EQ(x, 0.f);  // untouched

  // Unexpected tensor (a model with fewer parameters).
  std::vector<Tensor> grads1;
  Tensor w1 = Tensor::zeros({3, 4});
  auto fewer = make_params({{"backbone.layers.0.mixer.in_proj.weight", &w1}}, grads1);
  AdamW opt_fewer(fewer);
  expect_error_mentions([&] { load_checkpoint(path, fewer, opt_fewer); }, {"model.safetensors", "unexpected tensor"});

  // Wrong optimiser kind.
  TrainRun again(false);
  SGD sgd(again.params, {0.9});
  expect_error_mentions([&] { load_checkpoint(path, again.params, sgd); }, {"trainer_state.json", "optimizer"});
}

TEST(Checkpoint, CorruptOrMissingFilesNameTheFile) {
  const std::string dir = fresh_dir("corrupt");
  TrainRun r;
  AdamW opt(r.params);
  r.train_step(opt, 1e-3);
  const std::string path = save_checkpoint(dir, 7, r.params, opt);
  const auto before = r.values();

  auto fresh_load = [&] {
    TrainRun x;
    AdamW o(x.params);
    load_latest_checkpoint(dir, x.params, o);
  };
  auto backup = [&](const std::string& f) { fs::copy_file(path + "/" + f, path + "/" + f + ".bak", fs::copy_options::overwrite_existing); };
  auto restore = [&](const std::string& f) { fs::rename(path + "/" + f + ".bak", path + "/" + f); };

  // Truncated model file.
  backup("model.safetensors");
  fs::resize_file(path + "/model.safetensors", 20);
  expect_error_mentions(fresh_load, {"checkpoint-7/model.safetensors"});
  restore("model.safetensors");

  // Missing optimiser file.
  backup("optimizer.safetensors");
  fs::remove(path + "/optimizer.safetensors");
  expect_error_mentions(fresh_load, {"checkpoint-7/optimizer.safetensors"});
  restore("optimizer.safetensors");

  // Optimiser state missing a tensor: rewrite the file without one.
  backup("optimizer.safetensors");
  {
    auto tensors = mamba::io::load_safetensors(path + "/optimizer.safetensors");
    NamedTensors kept;
    for (auto& [n, t] : tensors)
      if (n != "adamw.exp_avg_sq.backbone.layers.0.mixer.A_log") kept.emplace_back(n, t.clone());
    mamba::io::save_safetensors(path + "/optimizer.safetensors", kept, {{"optimizer", "adamw"}});
  }
  expect_error_mentions(fresh_load, {"optimizer.safetensors", "adamw.exp_avg_sq.backbone.layers.0.mixer.A_log"});
  restore("optimizer.safetensors");

  // Trainer state: not JSON, then a bad field.
  backup("trainer_state.json");
  write_text(path + "/trainer_state.json", "{ not json");
  expect_error_mentions(fresh_load, {"checkpoint-7/trainer_state.json"});
  auto js = nlohmann::json::parse(read_text(path + "/trainer_state.json.bak"));
  js["step"] = 8;
  write_text(path + "/trainer_state.json", js.dump());
  expect_error_mentions(fresh_load, {"trainer_state.json", "'step'"});
  js["step"] = 7;
  js["rng_state"] = "12 nonsense";
  write_text(path + "/trainer_state.json", js.dump());
  expect_error_mentions(fresh_load, {"trainer_state.json", "'rng_state'"});
  js.erase("rng_state");
  js["data_position"] = "x";
  write_text(path + "/trainer_state.json", js.dump());
  expect_error_mentions(fresh_load, {"trainer_state.json", "data_position"});
  restore("trainer_state.json");

  // A malformed pointer and a pointer to a missing directory.
  write_text(dir + "/latest", "../../etc\n");
  expect_error_mentions(fresh_load, {"latest"});
  write_text(dir + "/latest", "checkpoint-99\n");
  expect_error_mentions(fresh_load, {"latest", "checkpoint-99"});
  write_text(dir + "/latest", "checkpoint-7\n");

  // With everything restored the checkpoint loads again.
  TrainRun x;
  AdamW o(x.params);
  ASSERT_TRUE(load_latest_checkpoint(dir, x.params, o).has_value());
  EXPECT_EQ(x.values(), before);
}

TEST(Checkpoint, LatestNeverNamesAPartialCheckpoint) {
  const std::string dir = fresh_dir("partial");
  TrainRun r;
  AdamW opt(r.params);
  r.train_step(opt, 1e-3);
  save_checkpoint(dir, 100, r.params, opt);
  const auto at_100 = r.values();

  // A crash after writing part of checkpoint-200 (no pointer update), and a crash
  // mid-staging of 300: `latest` still names 100, which loads.
  fs::create_directories(dir + "/checkpoint-200");
  fs::copy_file(dir + "/checkpoint-100/model.safetensors", dir + "/checkpoint-200/model.safetensors");
  fs::create_directories(dir + "/.checkpoint-300.partial");
  write_text(dir + "/.checkpoint-300.partial/model.safetensors", "trunc");
  EXPECT_EQ(read_text(dir + "/latest"), "checkpoint-100\n");
  {
    TrainRun x;
    AdamW o(x.params);
    const auto info = load_latest_checkpoint(dir, x.params, o);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->step, 100);
    EXPECT_EQ(x.values(), at_100);
  }

  // A save that fails half-way (the optimiser state cannot be produced) leaves `latest`
  // and the directory as they were, without a checkpoint-150 and without staging debris.
  BrokenOptimizer broken(r.params);
  EXPECT_THROW(save_checkpoint(dir, 150, r.params, broken), mamba::Error);
  EXPECT_EQ(read_text(dir + "/latest"), "checkpoint-100\n");
  EXPECT_FALSE(fs::exists(dir + "/checkpoint-150"));
  EXPECT_FALSE(fs::exists(dir + "/.checkpoint-150.partial"));

  // The next save of the abandoned step replaces the partial directory whole, and
  // removes the stale staging directory.
  r.train_step(opt, 1e-3);
  save_checkpoint(dir, 200, r.params, opt, {}, /*keep_last=*/0);
  EXPECT_EQ(read_text(dir + "/latest"), "checkpoint-200\n");
  EXPECT_FALSE(fs::exists(dir + "/.checkpoint-300.partial"));
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(dir + "/checkpoint-200/" + f)) << f;
  TrainRun x;
  AdamW o(x.params);
  EXPECT_EQ(load_latest_checkpoint(dir, x.params, o)->step, 200);
  EXPECT_EQ(x.values(), r.values());
}

TEST(Checkpoint, KeepsOnlyTheLastK) {
  const std::string dir = fresh_dir("retention");
  TrainRun r;
  SGD opt(r.params, {0.9, 0.0, true, 1e-4});
  for (int64_t s = 1; s <= 5; ++s) {
    r.train_step(opt, 0.1);
    save_checkpoint(dir, s * 10, r.params, opt, {}, /*keep_last=*/2);
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint-40", "checkpoint-50", "latest"}));

  // Saving the same step again replaces that checkpoint whole.
  r.train_step(opt, 0.1);
  save_checkpoint(dir, 50, r.params, opt, {}, 2);
  TrainRun x;
  SGD o(x.params, {0.9, 0.0, true, 1e-4});
  EXPECT_EQ(load_latest_checkpoint(dir, x.params, o)->step, 50);
  EXPECT_EQ(x.values(), r.values());
  EXPECT_EQ(o.steps_taken(), 6);
}

TEST(Checkpoint, RngStateHelpers) {
  std::mt19937_64 a(42);
  a.discard(1000);
  std::mt19937_64 b;
  restore_rng(rng_state_string(a), b);
  EXPECT_EQ(a(), b());
  EXPECT_THROW(restore_rng("1 2 3", b), mamba::Error);
  EXPECT_THROW(restore_rng(rng_state_string(a) + " junk", b), mamba::Error);
}

TEST(Checkpoint, RejectsNonFiniteBestMetric) {
  const std::string dir = fresh_dir("nonfinite");
  TrainRun r;
  AdamW opt(r.params);
  TrainerState st;
  st.best_metric = std::nan("");
  EXPECT_THROW(save_checkpoint(dir, 1, r.params, opt, st), mamba::Error);
  EXPECT_FALSE(latest_checkpoint(dir).has_value());
}
