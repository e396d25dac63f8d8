#include "mamba/recommendation/batch_job.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/protocol.h"
#include "mamba/recommendation/store.h"

namespace mamba::recommendation {

int64_t shard_of(const std::string& user_key, int64_t num_shards) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : user_key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h % static_cast<uint64_t>(num_shards));
}

void parse_shard(const std::string& text, int64_t& shard, int64_t& num_shards) {
  const auto slash = text.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    shard = std::stoll(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("shard");
    const std::string n = text.substr(slash + 1);
    num_shards = std::stoll(n, &used);
    if (used != n.size()) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    fail("--shard", "'" + text + "' is not i/N");
  }
  if (num_shards < 1 || shard < 0 || shard >= num_shards) fail("--shard", "'" + text + "' needs 0 <= i < N");
}

BatchJobReport run_batch_job(pqxx::connection& conn, const RecModel& model, const std::string& model_dir,
                             const BatchJobOptions& o) {
  if (o.k < 1 || o.k > 1000) fail("batch job", "k must be in 1..1000");
  if (o.num_shards < 1 || o.shard < 0 || o.shard >= o.num_shards) fail("batch job", "bad shard");
  apply_migrations(conn);
  const std::string dir = std::filesystem::absolute(model_dir).string();
  const std::string shard_text = std::to_string(o.shard) + "/" + std::to_string(o.num_shards);
  BatchJobReport rep;

  // The run: an unfinished one of this model, shard and k, or a new one.
  {
    pqxx::work tx(conn);
    const pqxx::result r = tx.exec_params(
        "SELECT id FROM model_runs WHERE model_dir = $1 AND status = 'running' AND metrics->>'shard' = $2"
        " AND (metrics->>'k')::int = $3 ORDER BY id DESC LIMIT 1",
        dir, shard_text, o.k);
    if (!r.empty()) {
      rep.run_id = r[0][0].as<int64_t>();
      rep.resumed = true;
    } else {
      const nlohmann::json m = {{"shard", shard_text}, {"k", o.k}, {"exclude_seen", o.exclude_seen}};
      rep.run_id = tx.exec_params1("INSERT INTO model_runs (model_dir, metrics) VALUES ($1, $2::jsonb) RETURNING id", dir,
                                   m.dump())[0]
                       .as<int64_t>();
    }
    tx.commit();
  }
  std::unordered_set<int64_t> done;
  {
    pqxx::work tx(conn);
    for (const auto& row : tx.exec_params("SELECT DISTINCT user_id FROM recommendations WHERE model_run_id = $1", rep.run_id))
      done.insert(row[0].as<int64_t>());
  }

  // One snapshot of every user's history, mapped into the model's item vocabulary.
  const SequenceSnapshot snap = read_sequences(conn);
  const SequenceData data = remap(sequences_from_snapshot(snap), model.items);
  // Database ids of the users and of the model's items (by external key).
  std::unordered_map<std::string, int64_t> user_db, item_db;
  for (int64_t u = 1; u <= snap.num_users(); ++u) user_db[snap.user_keys[u]] = snap.user_db_ids[u];
  for (int64_t i = 1; i <= snap.num_items(); ++i) item_db[snap.item_keys[i]] = snap.item_db_ids[i];

  std::vector<int64_t> todo;  // indices into data.sequences
  for (size_t u = 0; u < data.user_keys.size(); ++u) {
    if (shard_of(data.user_keys[u], o.num_shards) != o.shard) continue;
    ++rep.users_in_shard;
    if (done.count(user_db.at(data.user_keys[u]))) {
      ++rep.users_done_before;
      continue;
    }
    if (data.sequences[u].empty()) {
      ++rep.users_skipped;
      continue;
    }
    todo.push_back(static_cast<int64_t>(u));
  }
  // Users of the shard that have no event in the snapshot's users list (none: every user
  // with events is in data) need nothing.

  const int64_t N = model.net->config().num_items;
  std::vector<double> scores;
  std::vector<int32_t> order;
  for (size_t start = 0; start < todo.size(); start += static_cast<size_t>(o.users_per_batch)) {
    if (o.stop_after_users > 0 && rep.users_written >= o.stop_after_users) return rep;
    const size_t end = std::min(todo.size(), start + static_cast<size_t>(o.users_per_batch));
    std::vector<const std::vector<int32_t>*> hist;
    for (size_t j = start; j < end; ++j) hist.push_back(&data.sequences[todo[j]]);
    model.net->score(hist, scores);
    pqxx::work tx(conn);
    {
      pqxx::stream_to copy(tx, "recommendations", std::vector<std::string>{"model_run_id", "user_id", "rank", "item_id", "score"});
      for (size_t j = 0; j < hist.size(); ++j) {
        const double* row = scores.data() + j * static_cast<size_t>(N + 1);
        std::unordered_set<int32_t> seen;
        if (o.exclude_seen) seen.insert(hist[j]->begin(), hist[j]->end());
        order.clear();
        for (int32_t i = 1; i <= N; ++i)
          if (!seen.count(i)) order.push_back(i);
        const size_t k = std::min<size_t>(static_cast<size_t>(o.k), order.size());
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                          [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        const int64_t uid = user_db.at(data.user_keys[todo[start + j]]);
        for (size_t r = 0; r < k; ++r) {
          const auto it = item_db.find(model.items.key(order[r]));
          if (it == item_db.end()) continue;  // an item of the model unknown to this store
          copy << std::make_tuple(rep.run_id, uid, static_cast<int32_t>(r + 1), it->second, static_cast<float>(row[order[r]]));
          ++rep.rows_written;
        }
      }
      copy.complete();
    }
    tx.commit();
    rep.users_written += static_cast<int64_t>(hist.size());
    if (o.progress) o.progress(rep.users_done_before + rep.users_written, rep.users_in_shard - rep.users_skipped);
  }
  {
    pqxx::work tx(conn);
    const int64_t total_users =
        tx.exec_params1("SELECT count(DISTINCT user_id) FROM recommendations WHERE model_run_id = $1", rep.run_id)[0]
            .as<int64_t>();
    const nlohmann::json m = {{"shard", shard_text},          {"k", o.k},
                              {"exclude_seen", o.exclude_seen}, {"users", total_users},
                              {"users_skipped", rep.users_skipped}};
    tx.exec_params("UPDATE model_runs SET status = 'succeeded', finished = now(), metrics = $2::jsonb WHERE id = $1",
                   rep.run_id, m.dump());
    tx.commit();
  }
  rep.complete = true;
  return rep;
}

}  // namespace mamba::recommendation
