// The RecBole sequential protocol: time order (stable for ties), leave-one-out, prefix
// samples, the ranking metrics against a plain computation, and the baselines.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "mamba/recommendation/baselines.h"
#include "mamba/recommendation/metrics.h"
#include "mamba/recommendation/protocol.h"
#include "mamba/recommendation/synthetic.h"

using namespace mamba::recommendation;

namespace {

InteractionRow row(const std::string& u, const std::string& i, double ts) {
  InteractionRow r;
  r.user_key = u;
  r.item_key = i;
  r.ts = ts;
  return r;
}

std::vector<std::string> keys(const SequenceData& d, size_t u) {
  std::vector<std::string> out;
  for (int32_t i : d.sequences[u]) out.push_back(d.items.key(i));
  return out;
}

// Scores given per case: the history's first element names the row of `rows`.
class FixedScorer final : public Scorer {
 public:
  explicit FixedScorer(std::vector<std::vector<double>> rows) : rows_(std::move(rows)) {}
  std::string name() const override { return "fixed"; }
  int64_t num_items() const override { return static_cast<int64_t>(rows_[0].size()) - 1; }
  void score(const std::vector<const std::vector<int32_t>*>& h, std::vector<double>& out) const override {
    out.clear();
    for (const auto* x : h) out.insert(out.end(), rows_[x->at(0) - 100].begin(), rows_[x->at(0) - 100].end());
  }

 private:
  std::vector<std::vector<double>> rows_;
};

}  // namespace

TEST(Protocol, StableSortKeepsInputOrderOfTies) {
  const std::vector<InteractionRow> rows = {row("u1", "c", 5), row("u2", "a", 1), row("u1", "a", 5), row("u1", "b", 1),
                                            row("u1", "d", 5), row("u2", "b", 1), row("u1", "e", 2)};
  const SequenceData d = sequences_from_rows(rows);
  ASSERT_EQ(d.user_keys, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(keys(d, 0), (std::vector<std::string>{"b", "e", "c", "a", "d"}));
  EXPECT_EQ(keys(d, 1), (std::vector<std::string>{"a", "b"}));
  // Ids in order of first appearance, 0 = padding.
  EXPECT_EQ(d.items.keys(), (std::vector<std::string>{"", "c", "a", "b", "d", "e"}));
  EXPECT_EQ(d.interactions, 7);
}

TEST(Protocol, LeaveOneOutAndPrefixSamples) {
  const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3, 4, 5}, {6, 7}, {8, 9, 10}};
  const LeaveOneOutSplit s = leave_one_out(seqs);
  EXPECT_EQ(s.train[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(s.train[1], (std::vector<int32_t>{6, 7}));  // < 3 events: all training, not evaluated
  EXPECT_EQ(s.train[2], (std::vector<int32_t>{8}));
  ASSERT_EQ(s.valid.size(), 2u);
  ASSERT_EQ(s.test.size(), 2u);
  EXPECT_EQ(s.valid[0].user, 0);
  EXPECT_EQ(s.valid[0].history, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(s.valid[0].target, 4);
  EXPECT_EQ(s.test[0].history, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(s.test[0].target, 5);
  EXPECT_EQ(s.valid[1].user, 2);
  EXPECT_EQ(s.valid[1].history, (std::vector<int32_t>{8}));
  EXPECT_EQ(s.valid[1].target, 9);
  EXPECT_EQ(s.test[1].history, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(s.test[1].target, 10);

  const auto samples = training_samples(s.train);
  // user 0: [1]->2, [1,2]->3; user 1: [6]->7; user 2: none.
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(sample_input(s.train, samples[0], 50), (std::vector<int32_t>{1}));
  EXPECT_EQ(s.train[samples[0].user][samples[0].end], 2);
  EXPECT_EQ(sample_input(s.train, samples[1], 50), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(s.train[samples[1].user][samples[1].end], 3);
  EXPECT_EQ(sample_input(s.train, samples[2], 50), (std::vector<int32_t>{6}));
  EXPECT_EQ(s.train[samples[2].user][samples[2].end], 7);
  // Truncation to the last max_len items.
  EXPECT_EQ(sample_input(s.train, samples[1], 1), (std::vector<int32_t>{2}));

  // 60 training items: 59 samples, the longest input truncated to the last 50.
  std::vector<int32_t> long_seq(62);
  for (int i = 0; i < 62; ++i) long_seq[i] = i + 1;
  const LeaveOneOutSplit l = leave_one_out({long_seq});
  const auto ls = training_samples(l.train);
  ASSERT_EQ(ls.size(), 59u);
  const auto in = sample_input(l.train, ls.back(), 50);
  ASSERT_EQ(in.size(), 50u);
  EXPECT_EQ(in.front(), 10);
  EXPECT_EQ(in.back(), 59);
  EXPECT_EQ(l.train[0][ls.back().end], 60);
}

TEST(Metrics, RankWithTies) {
  const std::vector<double> s = {0, 0.1, 0.5, 0.3, 0.9, 0.3};
  EXPECT_EQ(target_rank(s.data(), 5, 4, TiePolicy::pessimistic), 1);
  EXPECT_EQ(target_rank(s.data(), 5, 2, TiePolicy::pessimistic), 2);
  EXPECT_EQ(target_rank(s.data(), 5, 3, TiePolicy::pessimistic), 4);  // the tie with item 5 counts against
  EXPECT_EQ(target_rank(s.data(), 5, 3, TiePolicy::optimistic), 3);
  EXPECT_EQ(target_rank(s.data(), 5, 1, TiePolicy::pessimistic), 5);
  const std::vector<double> flat(6, 1.0);
  EXPECT_EQ(target_rank(flat.data(), 5, 2, TiePolicy::pessimistic), 5);
  EXPECT_EQ(target_rank(flat.data(), 5, 2, TiePolicy::optimistic), 1);
  const std::vector<int32_t> hist = {4, 2, 3};  // the target itself is never excluded
  EXPECT_EQ(target_rank(s.data(), 5, 3, TiePolicy::pessimistic, &hist), 2);
}

TEST(Metrics, ExactValuesOnAHandMadeCase) {
  // Three users over 12 items; the targets rank 3, 1 and 12 (outside both cut-offs).
  std::vector<double> a(13), b(13), c(13);
  for (int i = 1; i <= 12; ++i) {
    a[i] = i;          // target 10: items 11, 12 above -> rank 3
    b[i] = -i;         // target 1: rank 1
    c[i] = 100 - i;    // target 12: rank 12
  }
  FixedScorer sc({a, b, c});
  const std::vector<EvalCase> cases = {{0, {100}, 10}, {1, {101}, 1}, {2, {102}, 12}};
  RankOptions o;
  o.batch_size = 2;  // crosses a batch boundary
  const RankMetrics m = evaluate_ranking(sc, cases, o);
  EXPECT_EQ(m.cases, 3);
  EXPECT_DOUBLE_EQ(m.get("HR@10"), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.get("NDCG@10"), (1.0 / std::log2(4.0) + 1.0) / 3.0);
  EXPECT_DOUBLE_EQ(m.get("MRR@10"), (1.0 / 3.0 + 1.0) / 3.0);
  EXPECT_DOUBLE_EQ(m.get("HR@20"), 1.0);
  EXPECT_DOUBLE_EQ(m.get("NDCG@20"), (0.5 + 1.0 + 1.0 / std::log2(13.0)) / 3.0);
  EXPECT_DOUBLE_EQ(m.get("MRR@20"), (1.0 / 3.0 + 1.0 + 1.0 / 12.0) / 3.0);
  EXPECT_EQ(m.line(10), "HR@10 0.6667 NDCG@10 0.5000 MRR@10 0.4444");

  // Excluding history: the first user's history {11} leaves only item 12 above.
  const std::vector<EvalCase> ex = {{0, {100, 11}, 10}};
  RankOptions eo;
  eo.exclude_history = true;
  // FixedScorer looks at history[0] only; item 100 is outside 1..12 and ignored.
  EXPECT_DOUBLE_EQ(evaluate_ranking(sc, ex, eo).get("MRR@10"), 0.5);
  EXPECT_DOUBLE_EQ(evaluate_ranking(sc, ex, {}).get("MRR@10"), 1.0 / 3.0);
}

TEST(Baselines, PopularityAndMarkov) {
  const std::vector<std::vector<int32_t>> train = {{1, 2, 3}, {1, 2, 4}, {3, 4}, {4, 4}};
  PopularityScorer pop(train, 5);
  EXPECT_EQ(pop.counts(), (std::vector<double>{0, 2, 2, 2, 4, 0}));
  MarkovScorer mk(train, 5);
  const std::vector<int32_t> h2 = {9, 2}, h5 = {5}, none;
  std::vector<double> out;
  mk.score({&h2, &h5, &none}, out);
  ASSERT_EQ(out.size(), 18u);
  // After 2: 2->3 once, 2->4 once; 4 more popular breaks the tie.
  EXPECT_EQ(target_rank(out.data(), 5, 4, TiePolicy::pessimistic), 1);
  EXPECT_EQ(target_rank(out.data(), 5, 3, TiePolicy::pessimistic), 2);
  // After 5 (never a source) and for an empty history: popularity.
  EXPECT_EQ(target_rank(out.data() + 6, 5, 4, TiePolicy::pessimistic), 1);
  EXPECT_EQ(target_rank(out.data() + 12, 5, 5, TiePolicy::pessimistic), 5);
}

// The open-addressing key index: ids in order of first appearance across several table growths,
// every key found again (also after rebuilding from the key list), unknown and empty keys 0,
// keys that differ in one character or only in length kept apart, bad key lists refused.
TEST(Protocol, ItemVocabIndexesManyKeys) {
  ItemVocab v;
  std::vector<std::string> keys{""};
  for (int i = 0; i < 5000; ++i) {
    std::string k = "item" + std::to_string(i * 7919 % 10007);
    if (i % 3 == 0) k += std::string(static_cast<size_t>(i % 40), 'x');  // long keys (no small-string storage)
    keys.push_back(k);
    EXPECT_EQ(v.add(k), i + 1) << k;
    EXPECT_EQ(v.add(k), i + 1) << "a second add returns the same id";
  }
  EXPECT_EQ(v.num_items(), 5000);
  const ItemVocab rebuilt(v.keys());
  for (int i = 1; i <= 5000; ++i) {
    EXPECT_EQ(v.find(keys[static_cast<size_t>(i)]), i);
    EXPECT_EQ(rebuilt.find(keys[static_cast<size_t>(i)]), i);
    EXPECT_EQ(v.key(i), keys[static_cast<size_t>(i)]);
  }
  EXPECT_EQ(v.find("item"), 0);
  EXPECT_EQ(v.find("item10007"), 0);
  EXPECT_EQ(v.find(""), 0);
  EXPECT_EQ(ItemVocab().find("a"), 0);
  EXPECT_THROW(v.add(""), std::exception);
  EXPECT_THROW(ItemVocab({"", "a", "b", "a"}), std::exception);
  EXPECT_THROW(ItemVocab({"", "a", ""}), std::exception);
  EXPECT_THROW(ItemVocab({"a"}), std::exception);
}

TEST(Protocol, RemapToAModelVocabulary) {
  const SequenceData d = sequences_from_rows({row("u1", "x", 1), row("u1", "y", 2), row("u2", "z", 1), row("u1", "z", 3)});
  const ItemVocab vocab({"", "z", "x"});
  const SequenceData r = remap(d, vocab);
  EXPECT_EQ(r.dropped_unknown, 1);
  ASSERT_EQ(r.sequences.size(), 2u);
  EXPECT_EQ(r.sequences[0], (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(r.sequences[1], (std::vector<int32_t>{1}));
  EXPECT_THROW(ItemVocab({"a"}), mamba::Error);
  EXPECT_THROW(ItemVocab({"", "a", "a"}), mamba::Error);
}

TEST(Synthetic, StrideWalksAreSecondOrder) {
  StrideWalkOptions o;
  o.noise = 0;
  o.users = 50;
  const SequenceData d = sequences_from_rows(generate_stride_walks(o));
  ASSERT_EQ(d.sequences.size(), 50u);
  // Without noise the last two items determine the next: the same pair is always followed
  // by the same item, while one item alone has several successors.
  std::map<std::pair<int32_t, int32_t>, int32_t> next2;
  std::map<int32_t, std::set<int32_t>> next1;
  for (const auto& s : d.sequences) {
    ASSERT_EQ(s.size(), 20u);
    for (size_t t = 2; t < s.size(); ++t) {
      auto [it, added] = next2.emplace(std::make_pair(s[t - 2], s[t - 1]), s[t]);
      EXPECT_EQ(it->second, s[t]);
      next1[s[t - 1]].insert(s[t]);
    }
  }
  size_t ambiguous = 0;
  for (const auto& [k, v] : next1) ambiguous += v.size() > 1;
  EXPECT_GT(ambiguous, next1.size() / 2);
}

TEST(Synthetic, CoverAllGivesEveryItem) {
  StrideWalkOptions o;
  o.users = 20;
  o.events_per_user = 15;
  o.num_items = 500;  // 300 walk events cannot reach all 500 items
  o.seed = 3;
  const SequenceData plain = sequences_from_rows(generate_stride_walks(o));
  EXPECT_LT(plain.items.num_items(), 500);
  o.cover_all = true;
  const auto rows = generate_stride_walks(o);
  const SequenceData d = sequences_from_rows(rows);
  EXPECT_EQ(d.items.num_items(), 500);
  // The first 20 users are the plain walks, unchanged; the extra users hold only items
  // the walks did not reach, each at most events_per_user long.
  ASSERT_GT(d.sequences.size(), 20u);
  for (size_t u = 0; u < 20; ++u) EXPECT_EQ(d.sequences[u].size(), 15u);
  std::set<std::string> walked;
  for (const auto& r : rows)
    if (std::stoi(r.user_key.substr(1)) <= 20) walked.insert(r.item_key);
  // The extra users hold the items the walks did not reach (one more event at most: a
  // one-event walk is padded by its successor).
  size_t extra_events = 0, extra_new = 0;
  for (const auto& r : rows)
    if (std::stoi(r.user_key.substr(1)) > 20) {
      ++extra_events;
      extra_new += !walked.count(r.item_key);
    }
  EXPECT_GE(extra_new, 500 - walked.size());
  EXPECT_LE(extra_events, 500 - walked.size() + 1);
  for (size_t u = 20; u < d.sequences.size(); ++u) EXPECT_LE(d.sequences[u].size(), 15u);
}
