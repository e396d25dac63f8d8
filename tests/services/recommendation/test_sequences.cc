// Reads for training and serving on a real PostgreSQL: read_sequences in one snapshot
// while another connection writes, ties in file order, dense ids; last_interactions;
// add_interactions (unknown items, idempotence).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/store.h"
#include "pg_fixture.h"

using namespace mamba::recommendation;
using mamba::recommendation::testing::PgTest;

namespace {

class Sequences : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    conn_ = std::make_unique<pqxx::connection>(url());
    apply_migrations(*conn_);
  }
  pqxx::connection& conn() { return *conn_; }

  void ingest(const std::string& text, const std::string& name = "mem.inter") {
    std::istringstream in(text);
    const auto r = ingest_stream(conn(), in, name);
    ASSERT_EQ(r.rejected, 0);
  }

  // The external keys of a user's sequence.
  static std::vector<std::string> keys(const SequenceSnapshot& s, const std::string& user) {
    for (size_t u = 1; u < s.user_keys.size(); ++u)
      if (s.user_keys[u] == user) {
        std::vector<std::string> out;
        for (int32_t i : s.sequences[u]) out.push_back(s.item_keys[static_cast<size_t>(i)]);
        return out;
      }
    ADD_FAILURE() << "no user " << user;
    return {};
  }

  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace

TEST_F(Sequences, TimeOrderTiesKeepFileOrderDenseIds) {
  // u1's events at ts 5 come in the file order b, c, a; the file itself is not sorted.
  ingest(
      "user_id:token\titem_id:token\ttimestamp:float\n"
      "u1\tz\t9\n"
      "u1\tb\t5\n"
      "u2\ta\t1\n"
      "u1\tc\t5\n"
      "u1\ta\t5\n"
      "u1\ty\t2\n"
      "u2\tc\t0.5\n");
  const auto s = read_sequences(conn());
  EXPECT_EQ(s.num_users(), 2);
  EXPECT_EQ(s.num_items(), 5);
  EXPECT_EQ(s.interactions, 7);
  EXPECT_EQ(s.item_keys[0], "");
  // Dense ids follow database ids, which follow first appearance in the file.
  EXPECT_EQ(s.item_keys, (std::vector<std::string>{"", "z", "b", "a", "c", "y"}));
  EXPECT_EQ(s.user_keys, (std::vector<std::string>{"", "u1", "u2"}));
  EXPECT_TRUE(s.sequences[0].empty());
  EXPECT_EQ(keys(s, "u1"), (std::vector<std::string>{"y", "b", "c", "a", "z"}));
  EXPECT_EQ(keys(s, "u2"), (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(s.timestamps[1], (std::vector<double>{2, 5, 5, 5, 9}));

  SequenceOptions opts;
  opts.max_length = 2;
  const auto cut = read_sequences(conn(), opts);
  EXPECT_EQ(keys(cut, "u1"), (std::vector<std::string>{"a", "z"}));
  EXPECT_EQ(cut.interactions, 4);
}

TEST_F(Sequences, SnapshotIgnoresConcurrentWriters) {
  std::ostringstream file;
  file << "user_id:token\titem_id:token\ttimestamp:float\n";
  for (int r = 0; r < 250; ++r) file << "u" << r % 7 << "\ti" << r % 13 << "\t" << r << "\n";
  ingest(file.str());
  const auto before = read_sequences(conn());
  ASSERT_EQ(before.interactions, 250);

  // Another connection commits new users, items and events to existing users in the middle
  // of the read (after the first batch of 10 rows).
  auto writer = connect(url());
  int calls = 0;
  SequenceOptions opts;
  opts.batch_rows = 10;
  opts.on_batch = [&](int64_t rows) {
    if (calls++ != 0) return;
    EXPECT_EQ(rows, 10);
    add_items(writer, {"late-item"});
    add_interactions(writer, {{"u0", "late-item", 1e9}, {"late-user", "i1", 5}, {"u3", "i2", -1}});
  };
  const auto during = read_sequences(conn(), opts);
  EXPECT_EQ(calls, 25);
  EXPECT_EQ(during.item_keys, before.item_keys);
  EXPECT_EQ(during.user_keys, before.user_keys);
  EXPECT_EQ(during.sequences, before.sequences);
  EXPECT_EQ(during.interactions, 250);

  // The writes are there for the next read.
  const auto after = read_sequences(conn());
  EXPECT_EQ(after.interactions, 253);
  EXPECT_EQ(after.num_items(), before.num_items() + 1);
  EXPECT_EQ(after.num_users(), before.num_users() + 1);
  EXPECT_EQ(keys(after, "u0").back(), "late-item");
  EXPECT_EQ(keys(after, "u3").front(), "i2");
}

// u: a at 1, b and c both at 3 (c later in the file), d at 2; v: a at 10.
constexpr const char* kTiedEventsCsv =
    "user_id,item_id,timestamp\n"
    "u,a,1\n"
    "u,b,3\n"
    "u,c,3\n"
    "u,d,2\n"
    "v,a,10\n";

TEST_F(Sequences, LastInteractionsNewestFirst) {
  ingest(kTiedEventsCsv, "mem.csv");
  const auto last = last_interactions(conn(), "u", 3);
  ASSERT_EQ(last.size(), 3u);
  // ts 3 twice: c came after b in the file, so c is the newer one.
  EXPECT_EQ(last[0].item_key, "c");
  EXPECT_EQ(last[1].item_key, "b");
  EXPECT_EQ(last[2].item_key, "d");
  EXPECT_DOUBLE_EQ(last[2].ts, 2);
  EXPECT_EQ(last_interactions(conn(), "u", 100).size(), 4u);
  EXPECT_TRUE(last_interactions(conn(), "u", 0).empty());
  EXPECT_THROW(last_interactions(conn(), "nobody", 3), UnknownKeyError);
}

TEST_F(Sequences, LastInteractionsBatchEqualsOneReadPerUser) {
  // One query for several users: each entry equals last_interactions() of that user (order,
  // ties, limit, event type, weight); an unknown user is nullopt, a known user without
  // events an empty list, a repeated key answers twice, keys with quotes, a backslash, a
  // comma or braces are matched literally.
  ingest(kTiedEventsCsv, "mem.csv");
  add_interactions(conn(), {{"q\"x\\y,{z}", "b", 4, "click", 0.5f}, {"q\"x\\y,{z}", "a", 5}});
  {
    pqxx::work tx(conn());
    tx.exec("INSERT INTO users (external_key) VALUES ('idle')");
    tx.commit();
  }
  const std::vector<std::string> keys = {"u", "nobody", "v", "idle", "q\"x\\y,{z}", "u"};
  for (int64_t n : {0, 1, 3, 100}) {
    const auto batch = last_interactions_batch(conn(), keys, n);
    ASSERT_EQ(batch.size(), keys.size());
    EXPECT_FALSE(batch[1].has_value()) << "unknown user";
    ASSERT_TRUE(batch[3].has_value());
    EXPECT_TRUE(batch[3]->empty()) << "a user without events";
    for (size_t i : {0u, 2u, 4u, 5u}) {
      ASSERT_TRUE(batch[i].has_value()) << keys[i];
      const auto one = last_interactions(conn(), keys[i], n);
      ASSERT_EQ(batch[i]->size(), one.size()) << keys[i] << " n " << n;
      for (size_t j = 0; j < one.size(); ++j) {
        EXPECT_EQ((*batch[i])[j].item_key, one[j].item_key) << keys[i] << " " << j;
        EXPECT_DOUBLE_EQ((*batch[i])[j].ts, one[j].ts);
        EXPECT_EQ((*batch[i])[j].event_type, one[j].event_type);
        EXPECT_FLOAT_EQ((*batch[i])[j].weight, one[j].weight);
      }
    }
  }
  EXPECT_EQ(last_interactions_batch(conn(), keys, 3)[0]->front().item_key, "c");
  EXPECT_EQ(last_interactions_batch(conn(), keys, 3)[4]->back().event_type, "click");
  EXPECT_TRUE(last_interactions_batch(conn(), {}, 3).empty());
}

TEST_F(Sequences, AddInteractionsUnknownItemWritesNothingAndIsIdempotent) {
  add_items(conn(), {"a", "b"});
  try {
    add_interactions(conn(), {{"u", "a", 1}, {"u", "missing", 2}});
    ADD_FAILURE() << "no error";
  } catch (const UnknownKeyError& e) {
    EXPECT_EQ(e.kind(), "item");
    EXPECT_EQ(e.key(), "missing");
  }
  EXPECT_EQ(stats(conn()).interactions, 0);
  EXPECT_EQ(stats(conn()).users, 0);

  const auto r = add_interactions(conn(), {{"u", "a", 1}, {"u", "b", 1}, {"w", "a", 2, "click", 0.5f}});
  EXPECT_EQ(r.inserted, 3);
  EXPECT_EQ(r.new_users, 2);
  const auto again = add_interactions(conn(), {{"u", "a", 1}, {"u", "b", 1}});
  EXPECT_EQ(again.inserted, 0);
  EXPECT_EQ(again.duplicates, 2);
  // Same ts: the order of the call is kept.
  const auto last = last_interactions(conn(), "u", 2);
  EXPECT_EQ(last[0].item_key, "b");
  EXPECT_EQ(last[1].item_key, "a");
  EXPECT_THROW(add_interactions(conn(), {{"u", "a", std::nan("")}}), StoreError);
  EXPECT_THROW(add_interactions(conn(), {{"", "a", 1}}), StoreError);
}
