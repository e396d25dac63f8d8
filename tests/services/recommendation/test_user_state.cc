// The serving path of Mamba4Rec: the recurrent state advanced one event at a time scores
// like a full recompute over the truncated history (the last max_seq_len events), a cold
// prefill gives the same state, top-k honours exclusions, and the user cache is bounded.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <type_traits>

#include <omp.h>

#include "mamba/recommendation/bf16_scoring.h"
#include "mamba/recommendation/serving.h"

using namespace mamba::recommendation;

namespace {

Mamba4RecConfig small_config(int64_t layers) {
  Mamba4RecConfig c;
  c.num_items = 40;
  c.d_model = 16;
  c.n_layers = layers;
  c.d_state = 8;
  c.d_conv = 4;
  c.expand = 2;
  c.dropout = 0.3;  // must be off on the serving path
  c.max_seq_len = 7;
  return c;
}

// Scores of the parallel path over the history (Scorer::score truncates to max_seq_len).
std::vector<double> recompute(const Mamba4Rec& net, const std::vector<int32_t>& h) {
  std::vector<double> out;
  net.score({&h}, out);
  return {out.begin() + 1, out.end()};
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-4 * std::max(1.0, scale)) << what << " item " << i + 1;
}

}  // namespace

TEST(UserState, IncrementalEqualsRecompute) {
  for (int64_t layers : {1, 2}) {
    const Mamba4Rec net(small_config(layers), 11 + static_cast<uint64_t>(layers));
    std::mt19937 rng(5);
    std::vector<int32_t> history;
    UserState s = make_user_state(net, history);
    std::vector<float> row;
    net.score_representation(s.net.hidden, row);
    expect_close(row, recompute(net, history), "empty history");
    // 20 events with max_seq_len 7: the window fills (steps), then slides.
    for (int t = 0; t < 20; ++t) {
      const int32_t item = 1 + static_cast<int32_t>(rng() % 40);
      history.push_back(item);
      advance_user_state(net, s, item, t);
      net.score_representation(s.net.hidden, row);
      const std::string what = std::to_string(layers) + " layers, after " + std::to_string(t + 1) + " events";
      expect_close(row, recompute(net, history), what);
      // A cold prefill over the store's history gives the same scores.
      const UserState cold = make_user_state(net, history);
      std::vector<float> cold_row;
      net.score_representation(cold.net.hidden, cold_row);
      expect_close(cold_row, recompute(net, history), what + " (cold)");
      EXPECT_EQ(s.window.size(), std::min<size_t>(history.size(), 7));
    }
  }
}

TEST(UserState, StepsMatchThePrefillState) {
  // Pure recurrence (no window slide): advance one by one from the empty state equals
  // one parallel prefill, state and all.
  const Mamba4Rec net(small_config(2), 3);
  const std::vector<int32_t> items = {3, 9, 9, 1, 40, 17};
  Mamba4RecState a = net.init_state();
  for (int32_t i : items) net.advance(a, i);
  const Mamba4RecState b = net.prefill(items);
  EXPECT_EQ(a.consumed, 6);
  EXPECT_EQ(b.consumed, 6);
  for (int64_t d = 0; d < 16; ++d)
    EXPECT_NEAR(a.hidden.data<float>()[d], b.hidden.data<float>()[d], 1e-4) << d;
  ASSERT_EQ(a.layers.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    const mamba::Tensor x = a.layers[l].ssm_state.contiguous(), y = b.layers[l].ssm_state.contiguous();
    ASSERT_EQ(x.numel(), y.numel());
    for (int64_t i = 0; i < x.numel(); ++i) ASSERT_NEAR(x.data<float>()[i], y.data<float>()[i], 1e-4) << i;
  }
  EXPECT_THROW(net.advance(a, 0), mamba::Error);
  EXPECT_THROW(net.advance(a, 41), mamba::Error);
}

TEST(UserState, BatchedPrefillEqualsOnePrefillPerHistory) {
  // prefill_batch over histories of mixed lengths (equal lengths share one (b, L) pass,
  // odd sizes, an empty one, a lone length) equals prefill() of each: the hidden
  // representation, every layer's conv and SSM state, and the states keep advancing alike.
  const Mamba4Rec net(small_config(2), 5);
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int32_t> item(1, 40);
  std::vector<std::vector<int32_t>> hs;
  for (size_t len : {7u, 3u, 7u, 0u, 7u, 12u, 3u, 1u, 7u, 7u}) {
    hs.emplace_back();
    for (size_t t = 0; t < len; ++t) hs.back().push_back(item(rng));
  }
  std::vector<const std::vector<int32_t>*> ptrs;
  for (const auto& h : hs) ptrs.push_back(&h);
  std::vector<Mamba4RecState> batched = net.prefill_batch(ptrs);
  ASSERT_EQ(batched.size(), hs.size());
  auto expect_close = [](const mamba::Tensor& a, const mamba::Tensor& b, const std::string& what) {
    const mamba::Tensor x = a.contiguous(), y = b.contiguous();
    ASSERT_EQ(x.shape(), y.shape()) << what;
    for (int64_t i = 0; i < x.numel(); ++i)
      ASSERT_NEAR(x.data<float>()[i], y.data<float>()[i], 1e-5 * std::max(1.f, std::fabs(y.data<float>()[i])))
          << what << " [" << i << "]";
  };
  for (size_t i = 0; i < hs.size(); ++i) {
    Mamba4RecState one = net.prefill(hs[i]);
    const std::string what = "history " + std::to_string(i) + " (length " + std::to_string(hs[i].size()) + ")";
    EXPECT_EQ(batched[i].consumed, one.consumed) << what;
    expect_close(batched[i].hidden, one.hidden, what + " hidden");
    ASSERT_EQ(batched[i].layers.size(), one.layers.size()) << what;
    for (size_t l = 0; l < one.layers.size(); ++l) {
      expect_close(batched[i].layers[l].conv_state, one.layers[l].conv_state, what + " conv_state");
      expect_close(batched[i].layers[l].ssm_state, one.layers[l].ssm_state, what + " ssm_state");
    }
    // The split-off states are independent: advancing one leaves the others untouched.
    net.advance(batched[i], 5);
    net.advance(one, 5);
    expect_close(batched[i].hidden, one.hidden, what + " after a step");
  }
  const std::vector<int32_t> bad = {1, 41};
  EXPECT_THROW(net.prefill_batch({&bad, &bad}), mamba::Error);
}

TEST(PrefillQueue, JobsQueuedWhileABatchRunsShareTheNext) {
  // A lone job runs at once on the submitting thread (a batch of one, no waiting); jobs
  // submitted while that batch runs (one worker) are queued and taken together by the
  // running thread as its next batch, split at max_batch; every job runs exactly once.
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::vector<std::vector<std::string>> batches;  // the users of each batch, in order
  std::vector<std::thread::id> runners;
  PrefillQueue q(4, 1, [&](std::vector<PrefillJob>& jobs) {
    std::unique_lock<std::mutex> lk(mu);
    batches.emplace_back();
    for (const auto& j : jobs) batches.back().push_back(j.user);
    runners.push_back(std::this_thread::get_id());
    cv.notify_all();
    cv.wait(lk, [&] { return release; });  // the first batch is held until the others queued
  });
  auto job = [](const std::string& user) {
    PrefillJob j;
    j.user = user;
    return j;
  };
  std::thread first([&] { q.submit(job("a")); });
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return batches.size() == 1; });
  }
  // Batch {a} is running: these return at once (queued for the running thread).
  for (const char* u : {"b", "c", "d", "e", "f", "g"}) q.submit(job(u));
  {
    std::lock_guard<std::mutex> lk(mu);
    EXPECT_EQ(batches.size(), 1u) << "a queued job ran on its own thread";
    release = true;
  }
  cv.notify_all();
  first.join();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0], (std::vector<std::string>{"a"}));
  EXPECT_EQ(batches[1], (std::vector<std::string>{"b", "c", "d", "e"}));  // max_batch 4
  EXPECT_EQ(batches[2], (std::vector<std::string>{"f", "g"}));
  EXPECT_EQ(runners[1], runners[0]);
  EXPECT_EQ(runners[2], runners[0]);
  // Idle again: the next job runs at once on its caller's thread.
  q.submit(job("h"));
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[3], (std::vector<std::string>{"h"}));
  EXPECT_EQ(runners[3], std::this_thread::get_id());
}

TEST(UserState, TopKExcludes) {
  const Mamba4Rec net(small_config(1), 4);
  const UserState s = make_user_state(net, {1, 2, 3});
  std::vector<float> row;
  net.score_representation(s.net.hidden, row);
  const auto all = top_k_items(net, s.net.hidden, 40, {});
  ASSERT_EQ(all.size(), 40u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GE(all[i - 1].score, all[i].score);
  EXPECT_FLOAT_EQ(all[0].score, *std::max_element(row.begin(), row.end()));
  const std::unordered_set<int32_t> ex = {all[0].id, all[2].id};
  const auto top = top_k_items(net, s.net.hidden, 5, ex);
  ASSERT_EQ(top.size(), 5u);
  EXPECT_EQ(top[0].id, all[1].id);
  EXPECT_EQ(top[1].id, all[3].id);
  for (const auto& x : top) EXPECT_FALSE(ex.count(x.id));
  EXPECT_EQ(top_k_items(net, s.net.hidden, 1000, ex).size(), 38u);
}

TEST(UserStateCache, LruBound) {
  UserStateCache c(3);
  auto entry = [] { return std::make_shared<CachedUser>(); };
  for (const char* u : {"a", "b", "c"}) EXPECT_TRUE(c.insert(u, entry(), c.token()));
  EXPECT_EQ(c.size(), 3u);
  ASSERT_NE(c.find("a"), nullptr);  // a is now the most recent; b the least
  EXPECT_TRUE(c.insert("d", entry(), c.token()));
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.find("b"), nullptr);
  EXPECT_NE(c.find("a"), nullptr);
  EXPECT_NE(c.find("c"), nullptr);
  EXPECT_NE(c.find("d"), nullptr);
  EXPECT_EQ(c.evictions(), 1u);
  // A prefill that raced a write is not cached.
  const uint64_t t = c.token();
  c.note_write();
  EXPECT_FALSE(c.insert("e", entry(), t));
  EXPECT_EQ(c.find("e"), nullptr);
  c.erase("a");
  EXPECT_EQ(c.find("a"), nullptr);
  EXPECT_EQ(c.size(), 2u);
  // Concurrent use stays within the bound.
  std::vector<std::thread> ts;
  for (int k = 0; k < 4; ++k)
    ts.emplace_back([&, k] {
      for (int i = 0; i < 500; ++i) {
        std::string u = "u";
        u += std::to_string((i * 7 + k) % 50);
        if (!c.find(u)) c.insert(u, entry(), c.token());
      }
    });
  for (auto& t2 : ts) t2.join();
  EXPECT_LE(c.size(), 3u);
}

namespace {

// The plain reference: every score, sorted (score descending, then id), exclusions removed.
std::vector<ScoredId> reference_top_k(const Mamba4Rec& net, const mamba::Tensor& hidden, int64_t k,
                                      const std::unordered_set<int32_t>& exclude) {
  std::vector<float> row;
  net.score_representation(hidden, row);
  std::vector<ScoredId> all;
  for (size_t j = 0; j < row.size(); ++j)
    if (!exclude.count(static_cast<int32_t>(j + 1))) all.push_back({static_cast<int32_t>(j + 1), row[j]});
  std::sort(all.begin(), all.end(),
            [](const ScoredId& a, const ScoredId& b) { return a.score > b.score || (a.score == b.score && a.id < b.id); });
  all.resize(std::min<size_t>(all.size(), static_cast<size_t>(k)));
  return all;
}

}  // namespace

TEST(UserState, BlockedTopKBatchMatchesTheReference) {
  // 5003 items: more than two scoring blocks, the last one partial.
  Mamba4RecConfig c = small_config(1);
  c.num_items = 5003;
  const Mamba4Rec net(c, 9);
  std::mt19937 rng(3);
  std::vector<mamba::Tensor> hidden;
  std::vector<std::unordered_set<int32_t>> ex;
  std::vector<int64_t> ks;
  for (int b = 0; b < 7; ++b) {
    std::vector<int32_t> h;
    for (int t = 0; t <= b; ++t) h.push_back(1 + static_cast<int32_t>(rng() % 5003));
    hidden.push_back(make_user_state(net, h).net.hidden);
    ex.emplace_back(h.begin(), h.end());
    ks.push_back(std::vector<int64_t>{1, 10, 37, 5003, 6000, 2, 100}[static_cast<size_t>(b)]);
  }
  // Exclude the unrestricted best item of request 0, so an exclusion is really exercised.
  ex[0].insert(reference_top_k(net, hidden[0], 1, {})[0].id);
  std::vector<const std::unordered_set<int32_t>*> exp;
  for (const auto& e : ex) exp.push_back(&e);
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (size_t B : {size_t{1}, size_t{2}, size_t{7}}) {
      const std::vector<mamba::Tensor> hb(hidden.begin(), hidden.begin() + static_cast<std::ptrdiff_t>(B));
      const std::vector<int64_t> kb(ks.begin(), ks.begin() + static_cast<std::ptrdiff_t>(B));
      const std::vector<const std::unordered_set<int32_t>*> eb(exp.begin(), exp.begin() + static_cast<std::ptrdiff_t>(B));
      const auto got = top_k_items_batch(net, hb, kb, eb);
      ASSERT_EQ(got.size(), B);
      for (size_t b = 0; b < B; ++b) {
        const auto want = reference_top_k(net, hidden[b], ks[b], ex[b]);
        ASSERT_EQ(got[b].size(), want.size()) << "threads " << threads << " B " << B << " request " << b;
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[b][i].id, want[i].id) << "threads " << threads << " B " << B << " request " << b << " rank " << i;
          // GEMM and GEMV sum in different orders: equal up to rounding.
          ASSERT_NEAR(got[b][i].score, want[i].score, 1e-5 * std::max(1.f, std::fabs(want[i].score)));
        }
      }
    }
  }
  omp_set_num_threads(1);
}

TEST(HistoryStateCache, LongestPrefixAndBound) {
  const Mamba4Rec net(small_config(2), 21);
  HistoryStateCache cache(3);
  const std::vector<int32_t> w = {5, 6, 7, 8, 9};
  bool hit = true;
  auto s0 = history_state(net, "rec/1", w, &cache, 16, &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(cache.size(), 1u);
  // The same window: the cached state itself.
  auto s1 = history_state(net, "rec/1", w, &cache, 16, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(s1.get(), s0.get());
  // Another model's key never hits.
  history_state(net, "rec/2", w, &cache, 16, &hit);
  EXPECT_FALSE(hit);
  // Two more events: the cached 5-item prefix advanced by two steps equals a prefill.
  const std::vector<int32_t> w2 = {5, 6, 7, 8, 9, 1, 40};
  auto s2 = history_state(net, "rec/1", w2, &cache, 16, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(s2->consumed, 7);
  const Mamba4RecState full = net.prefill(w2);
  for (int64_t d = 0; d < 16; ++d) EXPECT_NEAR(s2->hidden.data<float>()[d], full.hidden.data<float>()[d], 1e-4) << d;
  EXPECT_EQ(cache.longest_prefix("rec/1", w2).length, 7u);
  EXPECT_EQ(cache.longest_prefix("rec/1", {5, 6, 7, 8, 9, 2}).length, 5u);
  EXPECT_EQ(cache.longest_prefix("rec/1", {6, 7}).length, 0u);
  // max_steps 1: a prefix two events short is not used (a prefill instead).
  history_state(net, "rec/1", {5, 6, 7, 8, 9, 3, 4}, &cache, 1, &hit);
  EXPECT_FALSE(hit);
  // Capacity 3: the least recently used (rec/2's window) is gone.
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.longest_prefix("rec/2", w).length, 0u);
  // Capacity 0 caches nothing; a null cache prefills.
  HistoryStateCache none(0);
  history_state(net, "rec/1", w, &none, 16, &hit);
  history_state(net, "rec/1", w, &none, 16, &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(none.size(), 0u);
  auto s3 = history_state(net, "rec/1", w, nullptr, 16, &hit);
  EXPECT_FALSE(hit);
  for (int64_t d = 0; d < 16; ++d) EXPECT_NEAR(s3->hidden.data<float>()[d], s0->hidden.data<float>()[d], 1e-6);
  // The empty window is the empty history's state.
  EXPECT_EQ(history_state(net, "rec/1", {}, &cache, 16, &hit)->consumed, 0);
}

namespace {

// top_k_items_batch_bf16 against the f32 path of top_k_items_batch (B >= 2: the blocked
// f32 pass, the same arithmetic as the rescoring, so the same bits; B = 1: sgemv, a
// different summation order, so the same items and scores up to rounding).
template <class Table>
void expect_bf16_matches_f32(const Mamba4Rec& net, const Table& table, const std::vector<mamba::Tensor>& hidden,
                             const std::vector<int64_t>& ks, const std::vector<const std::unordered_set<int32_t>*>& ex,
                             const std::vector<const AllowSet*>& allow, const std::string& what) {
  int64_t rescored = -1;
  std::vector<std::vector<ScoredId>> got;
  if constexpr (std::is_same_v<Table, Int8ItemTable>)
    got = top_k_items_batch_int8(net, table, hidden, ks, ex, allow, &rescored);
  else
    got = top_k_items_batch_bf16(net, table, hidden, ks, ex, allow, &rescored);
  const auto want = top_k_items_batch(net, hidden, ks, ex, allow);
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_GE(rescored, 0) << what;
  for (size_t b = 0; b < want.size(); ++b) {
    ASSERT_EQ(got[b].size(), want[b].size()) << what << " request " << b;
    for (size_t i = 0; i < want[b].size(); ++i) {
      ASSERT_EQ(got[b][i].id, want[b][i].id) << what << " request " << b << " rank " << i;
      if (hidden.size() > 1)
        ASSERT_EQ(got[b][i].score, want[b][i].score) << what << " request " << b << " rank " << i;
      else
        ASSERT_NEAR(got[b][i].score, want[b][i].score, 1e-5 * std::max(1.f, std::fabs(want[b][i].score)));
    }
  }
}

}  // namespace

namespace {

// The bf16 and int8 AMX passes are checked by the same two bodies, over these traits.
struct Bf16Pass {
  using Table = Bf16ItemTable;
  static std::shared_ptr<const Table> make(const Mamba4Rec& net) { return make_bf16_item_table(net); }
  static void expect_padding(const Table& t) { EXPECT_EQ(t.dp % 32, 0); }
  static std::vector<std::vector<ScoredId>> top_k(const Mamba4Rec& net, const Table& t,
                                                  const std::vector<mamba::Tensor>& hidden,
                                                  const std::vector<int64_t>& ks,
                                                  const std::vector<const std::unordered_set<int32_t>*>& ex,
                                                  int64_t* rescored) {
    return top_k_items_batch_bf16(net, t, hidden, ks, ex, {}, rescored);
  }
};
// kLanesMax: the table's item_lanes_max_batch (-1: as made; 0: request lanes only; 64:
// VNNI batches always with the items in the lanes).
template <Int8Kernel kKernel, int64_t kLanesMax = -1>
struct Int8Pass {
  using Table = Int8ItemTable;
  static std::shared_ptr<const Table> make(const Mamba4Rec& net) {
    return make_int8_item_table(net, kKernel, kLanesMax < 0 ? kItemLanesMaxBatch : kLanesMax);
  }
  static void expect_padding(const Table& t) { EXPECT_EQ(t.dp, 64); }
  static std::vector<std::vector<ScoredId>> top_k(const Mamba4Rec& net, const Table& t,
                                                  const std::vector<mamba::Tensor>& hidden,
                                                  const std::vector<int64_t>& ks,
                                                  const std::vector<const std::unordered_set<int32_t>*>& ex,
                                                  int64_t* rescored) {
    return top_k_items_batch_int8(net, t, hidden, ks, ex, {}, rescored);
  }
};

// The AMX pass of `Pass` returns the f32 path's top k (d_model 16/40/64, 5,003 items, 37
// requests, k 1..6000, exclusions, a dense filter, 1-3 threads, B 1/2/16/37).
template <class Pass>
void expect_exact_top_k_equals_the_f32_path() {
  for (int64_t d_model : {16, 64, 40}) {  // 16 and 40: zero-padded to 32 and 64 dimensions
    Mamba4RecConfig c = small_config(1);
    c.num_items = 5003;  // blocks of 2048, the last partial; not a multiple of 16
    c.d_model = d_model;
    const Mamba4Rec net(c, 11);
    const auto table = Pass::make(net);
    ASSERT_TRUE(table);
    Pass::expect_padding(*table);
    std::mt19937 rng(5);
    std::vector<mamba::Tensor> hidden;
    std::vector<std::unordered_set<int32_t>> ex;
    std::vector<int64_t> ks;
    for (int b = 0; b < 37; ++b) {  // 37 requests: three groups of 16, the last partial
      std::vector<int32_t> h;
      for (int t = 0; t <= b % 9; ++t) h.push_back(1 + static_cast<int32_t>(rng() % 5003));
      hidden.push_back(make_user_state(net, h).net.hidden);
      ex.emplace_back(h.begin(), h.end());
      ks.push_back(std::vector<int64_t>{10, 1, 37, 5003, 6000, 2, 100}[static_cast<size_t>(b) % 7]);
    }
    ex[0].insert(top_k_items(net, hidden[0], 1, {})[0].id);
    std::vector<const std::unordered_set<int32_t>*> exp;
    for (const auto& e : ex) exp.push_back(&e);
    // A dense filter (every third item) on some requests.
    AllowSet third;
    third.bits.assign(static_cast<size_t>((c.num_items + 64) / 64), 0);
    for (int32_t id = 3; id <= c.num_items; id += 3) {
      third.bits[static_cast<size_t>(id) / 64] |= uint64_t{1} << (id % 64);
      ++third.count;
    }
    std::vector<const AllowSet*> allow(hidden.size(), nullptr);
    for (size_t b = 0; b < allow.size(); b += 4) allow[b] = &third;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (size_t B : {size_t{1}, size_t{2}, size_t{16}, size_t{37}}) {
        const std::vector<mamba::Tensor> hb(hidden.begin(), hidden.begin() + static_cast<std::ptrdiff_t>(B));
        const std::vector<int64_t> kb(ks.begin(), ks.begin() + static_cast<std::ptrdiff_t>(B));
        const std::vector<const std::unordered_set<int32_t>*> eb(exp.begin(), exp.begin() + static_cast<std::ptrdiff_t>(B));
        const std::vector<const AllowSet*> ab(allow.begin(), allow.begin() + static_cast<std::ptrdiff_t>(B));
        const std::string what = "d " + std::to_string(d_model) + " threads " + std::to_string(threads) + " B " +
                                 std::to_string(B);
        expect_bf16_matches_f32(net, *table, hb, kb, eb, {}, what);
        expect_bf16_matches_f32(net, *table, hb, kb, eb, ab, what + " filtered");
      }
    }
  }
  omp_set_num_threads(1);
}

// Near ties the quantised pass cannot separate are ranked exactly by the f32 rescoring.
template <class Pass>
void expect_near_ties_ranked_exactly() {
  // 3000 items that are one vector plus perturbations far below bf16's resolution (2^-8):
  // the bf16 pass scores them (nearly) alike, and only the f32 rescoring orders them.
  Mamba4RecConfig c = small_config(1);
  c.num_items = 3000;
  c.d_model = 64;
  const Mamba4Rec net(c, 3);
  // Test-only: overwrite the item table in place (the model reads it through item_table()).
  auto* t = const_cast<float*>(net.item_table().data<float>());
  std::mt19937 rng(17);
  std::normal_distribution<float> n01(0.f, 1.f);
  std::vector<float> base(64);
  for (auto& x : base) x = n01(rng);
  for (int64_t j = 1; j <= c.num_items; ++j)
    for (int64_t d = 0; d < 64; ++d) t[j * 64 + d] = base[static_cast<size_t>(d)] * (1.f + 1e-5f * n01(rng));
  const auto table = Pass::make(net);
  ASSERT_TRUE(table);
  std::vector<mamba::Tensor> hidden;
  for (int b = 0; b < 3; ++b) {
    std::vector<float> q(64);
    for (int64_t d = 0; d < 64; ++d) q[static_cast<size_t>(d)] = base[static_cast<size_t>(d)] + 0.1f * n01(rng);
    hidden.push_back(mamba::Tensor::from_vector(q, {64}));
  }
  const std::unordered_set<int32_t> none;
  const std::vector<const std::unordered_set<int32_t>*> ex(3, &none);
  omp_set_num_threads(2);
  int64_t rescored = 0;
  Pass::top_k(net, *table, hidden, {10, 10, 10}, ex, &rescored);
  EXPECT_GT(rescored, 300) << "near ties must be rescored";
  expect_bf16_matches_f32(net, *table, hidden, {10, 1, 50}, ex, {}, "near ties");
  omp_set_num_threads(1);
}

}  // namespace

TEST(Bf16Scoring, ExactTopKEqualsTheF32Path) {
  if (!amx_bf16_available()) GTEST_SKIP() << "no AMX bf16 on this machine (the f32 path serves)";
  expect_exact_top_k_equals_the_f32_path<Bf16Pass>();
}

TEST(Bf16Scoring, NearTiesBf16CannotSeparateAreRankedExactly) {
  if (!amx_bf16_available()) GTEST_SKIP() << "no AMX bf16 on this machine (the f32 path serves)";
  expect_near_ties_ranked_exactly<Bf16Pass>();
}

TEST(Int8Scoring, ExactTopKEqualsTheF32Path) {
  if (!amx_int8_available()) GTEST_SKIP() << "no AMX int8 on this machine (the f32 path serves)";
  expect_exact_top_k_equals_the_f32_path<Int8Pass<Int8Kernel::amx>>();
}

TEST(Int8Scoring, NearTiesInt8CannotSeparateAreRankedExactly) {
  if (!amx_int8_available()) GTEST_SKIP() << "no AMX int8 on this machine (the f32 path serves)";
  expect_near_ties_ranked_exactly<Int8Pass<Int8Kernel::amx>>();
}

TEST(Int8Scoring, VnniExactTopKEqualsTheF32Path) {
  if (!vnni_int8_available()) GTEST_SKIP() << "no AVX-512 VNNI on this machine (the f32 path serves)";
  expect_exact_top_k_equals_the_f32_path<Int8Pass<Int8Kernel::vnni>>();
}

TEST(Int8Scoring, VnniNearTiesAreRankedExactly) {
  if (!vnni_int8_available()) GTEST_SKIP() << "no AVX-512 VNNI on this machine (the f32 path serves)";
  expect_near_ties_ranked_exactly<Int8Pass<Int8Kernel::vnni>>();
}

// Both VNNI layouts (16 requests or 16 items in the lanes), each forced for every batch size.
TEST(Int8Scoring, VnniItemLanesExactTopKEqualsTheF32Path) {
  if (!vnni_int8_available()) GTEST_SKIP() << "no AVX-512 VNNI on this machine (the f32 path serves)";
  expect_exact_top_k_equals_the_f32_path<Int8Pass<Int8Kernel::vnni, 64>>();
  expect_near_ties_ranked_exactly<Int8Pass<Int8Kernel::vnni, 64>>();
}
TEST(Int8Scoring, VnniRequestLanesExactTopKEqualsTheF32Path) {
  if (!vnni_int8_available()) GTEST_SKIP() << "no AVX-512 VNNI on this machine (the f32 path serves)";
  expect_exact_top_k_equals_the_f32_path<Int8Pass<Int8Kernel::vnni, 0>>();
}

// On one thread the two VNNI layouts offer every request the same items in the same order:
// the same candidates are rescored and the same ids come back, at batch sizes around the
// automatic switch, with exclusions and a filter.
TEST(Int8Scoring, VnniItemAndRequestLanesRescoreTheSameCandidates) {
  if (!vnni_int8_available()) GTEST_SKIP() << "no AVX-512 VNNI on this machine (the f32 path serves)";
  Mamba4RecConfig c = small_config(1);
  c.num_items = 4099;  // the last block of 16 holds 3 items
  c.d_model = 64;
  const Mamba4Rec net(c, 23);
  const auto made = make_int8_item_table(net, Int8Kernel::vnni);
  ASSERT_TRUE(made);
  ASSERT_EQ(made->cols.size(), static_cast<size_t>(made->np * 64));
  auto items = std::make_shared<Int8ItemTable>(*made), requests = std::make_shared<Int8ItemTable>(*made);
  items->item_lanes_max_batch = 64;
  requests->item_lanes_max_batch = 0;
  AllowSet odd;
  odd.bits.assign(static_cast<size_t>((c.num_items + 64) / 64), 0);
  for (int32_t id = 1; id <= c.num_items; id += 2) {
    odd.bits[static_cast<size_t>(id) / 64] |= uint64_t{1} << (id % 64);
    ++odd.count;
  }
  omp_set_num_threads(1);
  for (size_t B : {size_t{1}, size_t{5}, size_t{11}, size_t{12}, size_t{17}, size_t{27}, size_t{28}}) {
    std::vector<mamba::Tensor> hidden;
    std::vector<std::unordered_set<int32_t>> seen;
    for (size_t b = 0; b < B; ++b) {
      const std::vector<int32_t> h{static_cast<int32_t>(1 + 7 * b), static_cast<int32_t>(4099 - 13 * b)};
      hidden.push_back(make_user_state(net, h).net.hidden);
      seen.emplace_back(h.begin(), h.end());
    }
    std::vector<const std::unordered_set<int32_t>*> ex;
    for (const auto& e : seen) ex.push_back(&e);
    std::vector<int64_t> ks;
    for (size_t b = 0; b < B; ++b) ks.push_back(std::vector<int64_t>{10, 1, 4099, 3}[b % 4]);
    std::vector<const AllowSet*> allow(B, nullptr);
    allow[B - 1] = &odd;
    int64_t ri = 0, rr = 0;
    const auto a = top_k_items_batch_int8(net, *items, hidden, ks, ex, allow, &ri);
    const auto r = top_k_items_batch_int8(net, *requests, hidden, ks, ex, allow, &rr);
    EXPECT_EQ(ri, rr) << "B " << B;
    EXPECT_GT(ri, 0);
    int64_t rm = 0;  // the automatic choice (B 17: 16 in the request lanes, 1 in the item lanes)
    const auto m = top_k_items_batch_int8(net, *made, hidden, ks, ex, allow, &rm);
    EXPECT_EQ(rm, rr) << "B " << B;
    ASSERT_EQ(m.size(), r.size());
    for (size_t b = 0; b < m.size(); ++b) {
      ASSERT_EQ(m[b].size(), r[b].size());
      for (size_t i = 0; i < m[b].size(); ++i) EXPECT_EQ(m[b][i].id, r[b][i].id) << "automatic, B " << B;
    }
    ASSERT_EQ(a.size(), r.size());
    for (size_t b = 0; b < a.size(); ++b) {
      ASSERT_EQ(a[b].size(), r[b].size()) << "B " << B << " request " << b;
      for (size_t i = 0; i < a[b].size(); ++i) {
        EXPECT_EQ(a[b][i].id, r[b][i].id) << "B " << B << " request " << b << " rank " << i;
        EXPECT_EQ(a[b][i].score, r[b][i].score);
      }
    }
  }
}

// The two int8 kernels give the same int32 dot products, hence the same candidates.
TEST(Int8Scoring, VnniAndAmxRescoreTheSameCandidates) {
  if (!vnni_int8_available() || !amx_int8_available()) GTEST_SKIP() << "needs both AMX and AVX-512 VNNI";
  Mamba4RecConfig c = small_config(1);
  c.num_items = 3001;
  c.d_model = 40;
  const Mamba4Rec net(c, 7);
  const auto amx = make_int8_item_table(net, Int8Kernel::amx), vnni = make_int8_item_table(net, Int8Kernel::vnni);
  ASSERT_TRUE(amx && vnni);
  std::vector<mamba::Tensor> hidden;
  for (int b = 0; b < 19; ++b) hidden.push_back(make_user_state(net, {1 + b, 2 + 3 * b}).net.hidden);
  const std::unordered_set<int32_t> none;
  const std::vector<const std::unordered_set<int32_t>*> ex(hidden.size(), &none);
  const std::vector<int64_t> ks(hidden.size(), 10);
  int64_t ra = 0, rv = 0;
  const auto a = top_k_items_batch_int8(net, *amx, hidden, ks, ex, {}, &ra);
  const auto v = top_k_items_batch_int8(net, *vnni, hidden, ks, ex, {}, &rv);
  EXPECT_EQ(ra, rv);
  for (size_t b = 0; b < a.size(); ++b)
    for (size_t i = 0; i < a[b].size(); ++i) EXPECT_EQ(a[b][i].id, v[b][i].id);
}
