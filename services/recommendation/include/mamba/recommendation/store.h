// The recommendation service's event store on PostgreSQL: users, items, interactions,
// model runs and precomputed recommendations (schema: migrations.h).
//
// Every function takes a pqxx::connection the caller owns and opens its own transaction on
// it; a connection is used by one thread at a time (libpqxx's rule), distinct connections
// may be used concurrently. Errors: StoreError (and its subclasses) for what the caller got
// wrong, pqxx exceptions (pqxx::sql_error, pqxx::broken_connection) for the database's
// own failures; the gRPC edge maps UnknownKeyError to NOT_FOUND.
//
// Ordering: the events of a user are ordered by (ts, id). `id` grows in insertion order and
// ingestion inserts a file's rows in file order, so events with the same timestamp keep the
// order of the file (or of the add_interactions call) they came from.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "mamba/tensor/tensor.h"

namespace mamba::recommendation {

class StoreError : public Error {
 public:
  using Error::Error;
};

// A user or item external key that the store does not know (NOT_FOUND at the gRPC edge).
class UnknownKeyError : public StoreError {
 public:
  UnknownKeyError(std::string kind, std::string key);
  const std::string& kind() const { return kind_; }  // "user" or "item"
  const std::string& key() const { return key_; }

 private:
  std::string kind_, key_;
};

// Opens a connection to a libpq URL or "key=value" string; throws StoreError naming the
// URL (its password, if any, is not printed).
pqxx::connection connect(const std::string& url);

struct StoreStats {
  int64_t users = 0, items = 0, interactions = 0;
  int schema_version = 0;
};
StoreStats stats(pqxx::connection& conn);

// ---- snapshot read for training ------------------------------------------------------

struct SequenceOptions {
  int64_t batch_rows = 10000;  // rows per FETCH of the server-side cursor
  int64_t max_length = 0;      // keep the newest max_length events of each user; 0 = all
  // Called after each fetched batch with the number of rows read so far (progress; the
  // tests use it to write from another connection in the middle of a read).
  std::function<void(int64_t rows_so_far)> on_batch;
};

// What training sees: dense ids, 0 reserved for padding in both spaces.
struct SequenceSnapshot {
  std::vector<std::string> item_keys;   // dense item id -> external key; [0] = "" (padding)
  std::vector<int64_t> item_db_ids;     // dense item id -> items.id; [0] = 0
  std::vector<std::string> user_keys;   // dense user id -> external key; [0] = ""
  std::vector<int64_t> user_db_ids;     // dense user id -> users.id; [0] = 0
  // sequences[u]: the dense item ids of user u's events, oldest first, ties in source
  // order; sequences[0] is empty, as is the sequence of a user without events.
  std::vector<std::vector<int32_t>> sequences;
  std::vector<std::vector<double>> timestamps;  // same shape as sequences
  int64_t interactions = 0;                     // rows read (after max_length: kept ones)
  int64_t num_items() const { return static_cast<int64_t>(item_keys.size()) - 1; }
  int64_t num_users() const { return static_cast<int64_t>(user_keys.size()) - 1; }
};

// One REPEATABLE READ, READ ONLY transaction: every item and user (dense ids in order of
// the database ids, so they are stable as long as nothing is deleted) and every
// interaction, read through a server-side cursor in batches of opts.batch_rows, so the
// table is never one result in memory. Writers committing meanwhile are not seen.
SequenceSnapshot read_sequences(pqxx::connection& conn, const SequenceOptions& opts = {});

// ---- live reads and writes -----------------------------------------------------------

struct Interaction {
  std::string item_key;
  double ts = 0;
  std::string event_type;
  float weight = 1.f;
};

// The newest n events of a user, newest first (ties: the later-inserted first). Throws
// UnknownKeyError for an unknown user; n <= 0 gives an empty list.
std::vector<Interaction> last_interactions(pqxx::connection& conn, const std::string& user_key, int64_t n);
// last_interactions() of several users in ONE query (one read-only transaction, one round
// trip): out[i] for user_keys[i] (repeated keys answer alike); nullopt for a user the store
// does not know (no exception: the others still get their events).
std::vector<std::optional<std::vector<Interaction>>> last_interactions_batch(pqxx::connection& conn,
                                                                             const std::vector<std::string>& user_keys,
                                                                             int64_t n);

struct NewInteraction {
  std::string user_key;
  std::string item_key;
  double ts = 0;                          // finite
  std::string event_type = "interaction";
  float weight = 1.f;
};

struct AddResult {
  int64_t inserted = 0;
  int64_t duplicates = 0;  // events already stored (same user, item, ts, event_type)
  int64_t new_users = 0;
};

// Adds events in one transaction, in the order given. Unknown users are created; an
// unknown item key throws UnknownKeyError and writes nothing; a non-finite timestamp or an
// empty key throws StoreError and writes nothing. Idempotent: re-adding stored events
// adds nothing.
AddResult add_interactions(pqxx::connection& conn, const std::vector<NewInteraction>& events);

// Adds items (no attributes) that are not there yet; returns how many were new. For the
// service's item catalogue and the tests.
int64_t add_items(pqxx::connection& conn, const std::vector<std::string>& item_keys);

}  // namespace mamba::recommendation
