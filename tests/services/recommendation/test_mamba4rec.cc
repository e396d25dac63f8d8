// Mamba4Rec: config JSON, gradients against finite differences, padding invariance, the
// model directory round trip, and learning a second-order sequential pattern that beats
// the popularity and first-order Markov baselines.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "mamba/io/json_config.h"
#include "mamba/recommendation/baselines.h"
#include "mamba/recommendation/fit.h"
#include "mamba/recommendation/model_dir.h"
#include "mamba/recommendation/synthetic.h"

using namespace mamba;
using namespace mamba::recommendation;

namespace {

Mamba4RecConfig tiny() {
  Mamba4RecConfig c;
  c.num_items = 6;
  c.d_model = 4;
  c.n_layers = 1;
  c.d_state = 2;
  c.d_conv = 2;
  c.expand = 1;
  c.d_ff = 6;
  c.dropout = 0;
  return c;
}

}  // namespace

TEST(Mamba4Rec, ConfigJson) {
  Mamba4RecConfig c;
  EXPECT_EQ(c.d_state, 32);
  EXPECT_EQ(c.d_conv, 4);
  EXPECT_EQ(c.expand, 2);
  EXPECT_EQ(c.max_seq_len, 50);
  c.num_items = 10;
  c.n_layers = 2;
  const Mamba4RecConfig r = Mamba4RecConfig::from_json(c.to_json());
  EXPECT_EQ(r.to_json(), c.to_json());
  EXPECT_THROW(Mamba4RecConfig::from_json({{"num_items", 0}}), Error);
  EXPECT_THROW(Mamba4RecConfig::from_json({{"num_items", 3}, {"dropout", 1.5}}), Error);
  EXPECT_THROW(Mamba4RecConfig::from_json({{"num_items", 3}, {"d_conv", 9}}), Error);
}

TEST(Mamba4Rec, GradientsMatchFiniteDifferences) {
  Mamba4Rec m(tiny(), 3);
  // Away from the initialisation's near-zero regime, so every parameter matters: the
  // embeddings (the output layer too) at unit scale, dt around 1 (A and dt then count).
  {
    train::StoredParameter* e = m.store().find("item_embedding.weight");
    float* v = e->value.data<float>();
    for (int64_t i = 0; i < e->value.numel(); ++i) v[i] *= 40.f;
    m.store().find("layers.0.mixer.dt_proj.bias")->value.fill(0.5);
    m.refresh();
  }
  std::mt19937_64 rng(0);
  const std::vector<int32_t> a = {1, 4, 2}, b = {5, 3}, c = {6};
  const PaddedBatch batch = pad_right({&a, &b, &c}, 50);
  const std::vector<int32_t> targets = {3, 6, 2};
  m.store().zero_grad();
  ag::backward(m.loss(batch, targets, false, rng));

  struct Probe {
    std::string name;
    int64_t index;
  };
  const std::vector<Probe> probes = {{"item_embedding.weight", 4 * 4 + 1},  // row 4 (input and output)
                                     {"item_embedding.weight", 2 * 4 + 3},  // row 2 (input only... and a target)
                                     {"item_embedding.weight", 6 * 4 + 0},
                                     {"emb_norm.weight", 1},
                                     {"layers.0.mixer.in_proj.weight", 5},
                                     {"layers.0.mixer.A_log", 1},
                                     {"layers.0.mixer.dt_proj.bias", 2},
                                     {"layers.0.mixer.conv1d.weight", 3},
                                     {"layers.0.mixer.out_proj.weight", 7},
                                     {"layers.0.norm1.bias", 0},
                                     {"layers.0.ffn.fc1.weight", 9},
                                     {"layers.0.ffn.fc2.bias", 2}};
  auto loss_now = [&]() {
    ag::NoGradGuard ng;
    return m.loss(batch, targets, false, rng).value().item();
  };
  for (const auto& p : probes) {
    train::StoredParameter* sp = m.store().find(p.name);
    ASSERT_NE(sp, nullptr) << p.name;
    float* v = sp->value.data<float>();
    const float orig = v[p.index];
    const double eps = 2e-3;
    v[p.index] = orig + static_cast<float>(eps);
    m.refresh();
    const double up = loss_now();
    v[p.index] = orig - static_cast<float>(eps);
    m.refresh();
    const double down = loss_now();
    v[p.index] = orig;
    m.refresh();
    const double fd = (up - down) / (2 * eps);
    const double an = sp->grad.data<float>()[p.index];
    EXPECT_NEAR(an, fd, 1e-3 + 0.03 * std::abs(fd)) << p.name << "[" << p.index << "]";
    // (A_log and dt_proj.bias barely move the loss of this tiny model: only agreement.)
    if (p.name.find("A_log") == std::string::npos && p.name.find("dt_proj") == std::string::npos)
      EXPECT_GT(std::abs(fd), 2e-4) << p.name << "[" << p.index << "]: the probe should matter";
  }
  // The padding row gets no gradient.
  const float* g0 = m.store().find("item_embedding.weight")->grad.data<float>();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(g0[i], 0.f);
}

TEST(Mamba4Rec, RightPaddingDoesNotChangeTheRepresentation) {
  Mamba4RecConfig cfg = tiny();
  cfg.d_model = 8;
  cfg.d_state = 4;
  cfg.d_conv = 4;
  cfg.expand = 2;
  cfg.n_layers = 2;
  Mamba4Rec m(cfg, 5);
  std::mt19937_64 rng(0);
  ag::NoGradGuard ng;
  const std::vector<int32_t> s = {2, 5, 1, 3};
  const PaddedBatch tight = pad_right({&s}, 50), padded = pad_right({&s}, 50, 7);
  ASSERT_EQ(tight.ids.size(1), 4);
  ASSERT_EQ(padded.ids.size(1), 11);
  const auto r1 = m.represent(tight.ids, tight.lengths, false, rng).value().to_vector_f32();
  const auto r2 = m.represent(padded.ids, padded.lengths, false, rng).value().to_vector_f32();
  ASSERT_EQ(r1.size(), 8u);
  for (size_t i = 0; i < r1.size(); ++i) EXPECT_NEAR(r1[i], r2[i], 1e-6f) << i;
  // In a batch with a longer sequence (padded to its length) the score is the same too.
  const std::vector<int32_t> longer = {1, 2, 3, 4, 5, 6, 1, 2, 3};
  std::vector<double> alone, batched;
  m.score({&s}, alone);
  m.score({&longer, &s}, batched);
  for (int64_t i = 1; i <= cfg.num_items; ++i) EXPECT_NEAR(alone[i], batched[7 + i], 1e-5) << i;
  EXPECT_TRUE(std::isinf(alone[0]) && alone[0] < 0);  // padding never ranked
  // The whole output at the real positions is unchanged.
  const auto e1 = m.encode(tight.ids, false, rng).value().to_vector_f32();
  const auto e2 = m.encode(padded.ids, false, rng).value().to_vector_f32();
  for (size_t i = 0; i < e1.size(); ++i) EXPECT_NEAR(e1[i], e2[i], 1e-6f);
}

TEST(Mamba4Rec, ModelDirectoryRoundTrip) {
  const auto dir = std::filesystem::path(MAMBA_TEST_TMP) / ("model-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir.parent_path());
  RecModel m;
  m.net = std::make_shared<Mamba4Rec>(tiny(), 9);
  m.items = ItemVocab({"", "a", "b", "c", "d", "e", "f"});
  m.metrics = {{"test", {{"mamba4rec", {{"NDCG@10", 0.5}}}}}};
  m.save(dir.string());
  m.save(dir.string());  // over an existing directory
  for (const char* f : {"config.json", "model.safetensors", "items.json", "metrics.json"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  const nlohmann::json items = io::load_json_file((dir / "items.json").string());
  EXPECT_TRUE(items[0].is_null());
  EXPECT_EQ(items[3], "c");
  const RecModel l = RecModel::load(dir.string());
  EXPECT_EQ(l.items.keys(), m.items.keys());
  EXPECT_EQ(l.net->config().to_json(), m.net->config().to_json());
  EXPECT_EQ(l.metrics, m.metrics);
  const std::vector<int32_t> h = {3, 1, 2};
  std::vector<double> s1, s2;
  m.net->score({&h}, s1);
  l.net->score({&h}, s2);
  EXPECT_EQ(s1, s2);
  std::filesystem::remove_all(dir);
}

TEST(Mamba4Rec, LearnsASecondOrderPatternBetterThanTheBaselines) {
  // 200 users x 20 events over 100 items: each user walks a random cycle of the items
  // with a stride of 1..3 (5% noise): the last item alone leaves 3 candidates (what a
  // first-order Markov chain can know), the last two fix the next one.
  StrideWalkOptions so;
  so.users = 200;
  so.events_per_user = 20;
  so.num_items = 100;
  so.max_stride = 3;
  so.noise = 0.05;
  so.seed = 7;
  const SequenceData data = sequences_from_rows(generate_stride_walks(so));
  const LeaveOneOutSplit split = leave_one_out(data.sequences);
  ASSERT_EQ(split.test.size(), 200u);
  const PopularityScorer pop(split.train, data.items.num_items());
  const MarkovScorer markov(split.train, data.items.num_items());
  const double pop_ndcg = evaluate_ranking(pop, split.test).get("NDCG@10");
  const double markov_ndcg = evaluate_ranking(markov, split.test).get("NDCG@10");

  // Small enough for a loaded 2-core machine (a few seconds per epoch).
  Mamba4RecConfig cfg;
  cfg.num_items = data.items.num_items();
  cfg.d_model = 32;
  cfg.d_state = 16;
  cfg.max_seq_len = 6;
  cfg.dropout = 0.1;
  Mamba4Rec model(cfg, 1);
  RecFitOptions fo;
  fo.max_epochs = 4;
  fo.lr = 1e-2;
  fo.quiet = true;
  const auto t0 = std::chrono::steady_clock::now();
  const RecFitResult r = fit(model, split, fo);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const RankMetrics test = evaluate_ranking(model, split.test);
  std::printf("popularity NDCG@10 %.4f, markov %.4f, mamba4rec %.4f (%s); %lld epochs, best %lld, %.1f s\n", pop_ndcg,
              markov_ndcg, test.get("NDCG@10"), test.line(10).c_str(), static_cast<long long>(r.epochs),
              static_cast<long long>(r.best_epoch), secs);
  EXPECT_GT(test.get("NDCG@10"), markov_ndcg + 0.05);
  EXPECT_GT(test.get("NDCG@10"), pop_ndcg + 0.3);
  EXPECT_GT(r.best_val_ndcg10, 0.6);
  // The best epoch's parameters are the ones kept.
  EXPECT_DOUBLE_EQ(evaluate_ranking(model, split.valid).get("NDCG@10"), r.best_val_ndcg10);
  EXPECT_GE(r.best_epoch, 1);
  EXPECT_LE(r.best_epoch, r.epochs);
}
