// Batch precomputation of top-K recommendations for every user (or one shard of them) into
// the store's recommendations table — the nightly job, also as a Kubernetes Indexed Job
// (`--shard i/N`, shard of a user = FNV-1a 64 of its external key mod N).
//
// One model run per (model directory, shard, k): a row of model_runs with status
// 'running' and metrics {"shard": "i/N", "k": k, ...}. Users are scored in batches from
// one snapshot of the interactions (store.h: read_sequences); each batch's rows (k per
// user) are written in one transaction, so a killed job leaves only whole users behind.
// Running the same job again resumes the unfinished run: users that already have rows are
// skipped, so nothing is written twice or left out (the primary key (run, user, rank) would
// refuse duplicates anyway). At the end the run is marked 'succeeded' with its counts.
// Users without any event the model knows get no rows (counted in users_skipped).
// Thread-safety: one job per connection. Errors: pqxx / mamba::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <pqxx/pqxx>

#include "mamba/recommendation/model_dir.h"

namespace mamba::recommendation {

struct BatchJobOptions {
  int64_t k = 10;
  int64_t shard = 0, num_shards = 1;  // this job handles users with shard_of(key) == shard
  int64_t users_per_batch = 256;
  bool exclude_seen = true;           // leave out items already in the user's history
  int64_t stop_after_users = 0;       // > 0: stop (as if killed) after this many users written
  std::function<void(int64_t done, int64_t total)> progress;  // after each batch
};

struct BatchJobReport {
  int64_t run_id = 0;
  bool resumed = false;        // an unfinished run was continued
  int64_t users_in_shard = 0;  // users of the snapshot in this shard
  int64_t users_done_before = 0;
  int64_t users_written = 0;   // by this call
  int64_t users_skipped = 0;   // no known event
  int64_t rows_written = 0;
  bool complete = false;       // the run is marked succeeded
};

// Stable across processes and machines (FNV-1a 64 of the bytes).
int64_t shard_of(const std::string& user_key, int64_t num_shards);

// Parses "i/N" (0 <= i < N); throws mamba::Error naming the text.
void parse_shard(const std::string& text, int64_t& shard, int64_t& num_shards);

BatchJobReport run_batch_job(pqxx::connection& conn, const RecModel& model, const std::string& model_dir,
                             const BatchJobOptions& options);

}  // namespace mamba::recommendation
