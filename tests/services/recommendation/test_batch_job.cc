// The batch precomputation job against a real PostgreSQL: every user of a shard gets
// exactly k ranked rows, a job killed part-way resumes without duplicate or missing rows,
// shards partition the users, and the rows equal the model's own top-k.
#include <gtest/gtest.h>

#include <sstream>

#include "mamba/recommendation/batch_job.h"
#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/synthetic.h"
#include "pg_fixture.h"

using namespace mamba::recommendation;
using mamba::recommendation::testing::PgTest;

namespace {

RecModel small_model(const ItemVocab& vocab) {
  Mamba4RecConfig c;
  c.num_items = vocab.num_items();
  c.d_model = 8;
  c.n_layers = 1;
  c.d_state = 4;
  c.d_conv = 2;
  c.expand = 1;
  c.dropout = 0;
  c.max_seq_len = 8;
  RecModel m;
  m.net = std::make_shared<Mamba4Rec>(c, 3);  // untrained weights are fine: the job's plumbing is tested
  m.items = vocab;
  return m;
}

int64_t count(pqxx::connection& conn, const std::string& sql) {
  pqxx::work tx(conn);
  return tx.exec1(sql)[0].as<int64_t>();
}

}  // namespace

class BatchJob : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    conn_ = std::make_unique<pqxx::connection>(url());
    apply_migrations(*conn_);
    StrideWalkOptions so;
    so.users = 60;
    so.events_per_user = 6;
    so.num_items = 30;
    std::istringstream in(to_recbole_inter(generate_stride_walks(so)));
    ingest_stream(*conn_, in, "walks.inter");
    const SequenceData data = sequences_from_snapshot(read_sequences(*conn_));
    model_ = small_model(data.items);
    dir_ = std::string(MAMBA_TEST_TMP) + "/batch-model-" + std::to_string(::getpid());
  }
  std::unique_ptr<pqxx::connection> conn_;
  RecModel model_;
  std::string dir_;
};

TEST_F(BatchJob, KilledJobResumesWithoutDuplicateOrMissingRows) {
  BatchJobOptions o;
  o.k = 5;
  o.users_per_batch = 7;
  o.stop_after_users = 20;  // "killed" after three batches
  const BatchJobReport a = run_batch_job(*conn_, model_, dir_, o);
  EXPECT_FALSE(a.complete);
  EXPECT_EQ(a.users_written, 21);
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM model_runs WHERE status = 'running'"), 1);

  o.stop_after_users = 0;
  const BatchJobReport b = run_batch_job(*conn_, model_, dir_, o);
  EXPECT_TRUE(b.complete);
  EXPECT_TRUE(b.resumed);
  EXPECT_EQ(b.run_id, a.run_id);
  EXPECT_EQ(b.users_done_before, 21);
  EXPECT_EQ(b.users_written, 60 - 21);
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM recommendations"), 60 * 5);
  EXPECT_EQ(count(*conn_, "SELECT count(DISTINCT user_id) FROM recommendations"), 60);
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM (SELECT user_id FROM recommendations GROUP BY user_id"
                          " HAVING count(*) <> 5 OR min(rank) <> 1 OR max(rank) <> 5) x"),
            0);
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM model_runs WHERE status = 'succeeded'"), 1);
  // Seen items are excluded.
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM recommendations r JOIN interactions i"
                          " ON i.user_id = r.user_id AND i.item_id = r.item_id"),
            0);
  // A finished run is not resumed: a new job starts a new run.
  const BatchJobReport c = run_batch_job(*conn_, model_, dir_, o);
  EXPECT_NE(c.run_id, a.run_id);
  EXPECT_FALSE(c.resumed);
}

TEST_F(BatchJob, ShardsPartitionTheUsersAndRowsAreTheModelsTopK) {
  BatchJobOptions o;
  o.k = 3;
  o.num_shards = 3;
  int64_t total = 0;
  for (int64_t s = 0; s < 3; ++s) {
    o.shard = s;
    total += run_batch_job(*conn_, model_, dir_, o).users_written;
  }
  EXPECT_EQ(total, 60);
  EXPECT_EQ(count(*conn_, "SELECT count(DISTINCT user_id) FROM recommendations"), 60);
  EXPECT_EQ(count(*conn_, "SELECT count(*) FROM model_runs"), 3);

  // One user's rows equal the model's ranking of its history, seen items left out.
  const SequenceData data = remap(sequences_from_snapshot(read_sequences(*conn_)), model_.items);
  const std::vector<int32_t>& h = data.sequences[0];
  std::vector<double> scores;
  model_.net->score({&h}, scores);
  std::vector<int32_t> order;
  for (int32_t i = 1; i <= model_.items.num_items(); ++i)
    if (std::find(h.begin(), h.end(), i) == h.end()) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  pqxx::work tx(*conn_);
  const pqxx::result r = tx.exec_params(
      "SELECT it.external_key FROM recommendations rc JOIN users u ON u.id = rc.user_id"
      " JOIN items it ON it.id = rc.item_id WHERE u.external_key = $1 ORDER BY rc.rank",
      data.user_keys[0]);
  ASSERT_EQ(r.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r[i][0].as<std::string>(), model_.items.key(order[i])) << i;
}

TEST(BatchJobShards, StableHashAndParsing) {
  EXPECT_EQ(shard_of("user-42", 7), shard_of("user-42", 7));
  int64_t s = 0, n = 0;
  parse_shard("2/5", s, n);
  EXPECT_EQ(s, 2);
  EXPECT_EQ(n, 5);
  EXPECT_THROW(parse_shard("5/5", s, n), mamba::Error);
  EXPECT_THROW(parse_shard("x", s, n), mamba::Error);
  EXPECT_THROW(parse_shard("1/2/3", s, n), mamba::Error);
}
