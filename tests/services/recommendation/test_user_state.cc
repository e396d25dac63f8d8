// The serving path of Mamba4Rec: the recurrent state advanced one event at a time scores
// like a full recompute over the truncated history (the last max_seq_len events), a cold
// prefill gives the same state, top-k honours exclusions, and the user cache is bounded.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

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
