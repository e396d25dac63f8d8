#include "mamba/recommendation/store.h"

#include <cmath>
#include <unordered_map>

#include "mamba/recommendation/migrations.h"

namespace mamba::recommendation {

namespace {

// The URL without a password ("postgresql://u:secret@h/db" -> "postgresql://u:***@h/db").
std::string redact(const std::string& url) {
  const auto scheme = url.find("://");
  const auto at = url.find('@');
  if (scheme == std::string::npos || at == std::string::npos || at < scheme) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

// Runs `query` through a server-side cursor in `tx`, calling fn(row) for every row and
// after_batch(rows so far) after every batch of `batch` rows.
template <class Fn>
void for_each_row(pqxx::transaction_base& tx, const std::string& cursor, const std::string& query, int64_t batch,
                  Fn&& fn, const std::function<void(int64_t)>& after_batch = {}) {
  tx.exec("DECLARE " + cursor + " NO SCROLL CURSOR FOR " + query);
  const std::string fetch = "FETCH FORWARD " + std::to_string(batch < 1 ? 1 : batch) + " FROM " + cursor;
  int64_t rows = 0;
  while (true) {
    const pqxx::result r = tx.exec(fetch);
    for (const auto& row : r) fn(row);
    rows += static_cast<int64_t>(r.size());
    if (after_batch && !r.empty()) after_batch(rows);
    if (static_cast<int64_t>(r.size()) < batch) break;
  }
  tx.exec("CLOSE " + cursor);
}

}  // namespace

UnknownKeyError::UnknownKeyError(std::string kind, std::string key)
    : StoreError("store: unknown " + kind + " '" + key + "'"), kind_(std::move(kind)), key_(std::move(key)) {}

pqxx::connection connect(const std::string& url) {
  try {
    return pqxx::connection(url);
  } catch (const pqxx::broken_connection& e) {
    throw StoreError("store: cannot connect to '" + redact(url) + "': " + e.what());
  }
}

StoreStats stats(pqxx::connection& conn) {
  StoreStats s;
  s.schema_version = schema_version(conn);
  if (s.schema_version < 1) return s;
  pqxx::read_transaction tx(conn);
  const auto r = tx.exec1(
      "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), (SELECT count(*) FROM interactions)");
  s.users = r[0].as<int64_t>();
  s.items = r[1].as<int64_t>();
  s.interactions = r[2].as<int64_t>();
  return s;
}

SequenceSnapshot read_sequences(pqxx::connection& conn, const SequenceOptions& opts) {
  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn);
  SequenceSnapshot snap;
  // Database id -> dense id. Items and users go through cursors too: catalogues can be big.
  std::unordered_map<int64_t, int32_t> item_dense, user_dense;
  snap.item_keys.emplace_back();
  snap.item_db_ids.push_back(0);
  for_each_row(tx, "rec_items", "SELECT id, external_key FROM items ORDER BY id", opts.batch_rows,
               [&](const pqxx::row& row) {
                 const auto id = row[0].as<int64_t>();
                 item_dense.emplace(id, static_cast<int32_t>(snap.item_keys.size()));
                 snap.item_db_ids.push_back(id);
                 snap.item_keys.push_back(row[1].as<std::string>());
               });
  snap.user_keys.emplace_back();
  snap.user_db_ids.push_back(0);
  for_each_row(tx, "rec_users", "SELECT id, external_key FROM users ORDER BY id", opts.batch_rows,
               [&](const pqxx::row& row) {
                 const auto id = row[0].as<int64_t>();
                 user_dense.emplace(id, static_cast<int32_t>(snap.user_keys.size()));
                 snap.user_db_ids.push_back(id);
                 snap.user_keys.push_back(row[1].as<std::string>());
               });
  snap.sequences.resize(snap.user_keys.size());
  snap.timestamps.resize(snap.user_keys.size());
  // Users in descending id order, each user's events oldest first: exactly a backward scan
  // of interactions_user_recent (user_id, ts DESC, id DESC), so no sort of the whole table.
  for_each_row(
      tx, "rec_events", "SELECT user_id, item_id, ts FROM interactions ORDER BY user_id DESC, ts ASC, id ASC",
      opts.batch_rows,
      [&](const pqxx::row& row) {
        const auto u = user_dense.at(row[0].as<int64_t>());
        snap.sequences[static_cast<size_t>(u)].push_back(item_dense.at(row[1].as<int64_t>()));
        snap.timestamps[static_cast<size_t>(u)].push_back(row[2].as<double>());
      },
      opts.on_batch);
  tx.commit();
  for (size_t u = 0; u < snap.sequences.size(); ++u) {
    auto& seq = snap.sequences[u];
    auto& ts = snap.timestamps[u];
    if (opts.max_length > 0 && static_cast<int64_t>(seq.size()) > opts.max_length) {
      const auto drop = static_cast<std::ptrdiff_t>(seq.size()) - static_cast<std::ptrdiff_t>(opts.max_length);
      seq.erase(seq.begin(), seq.begin() + drop);
      ts.erase(ts.begin(), ts.begin() + drop);
    }
    snap.interactions += static_cast<int64_t>(seq.size());
  }
  return snap;
}

std::vector<Interaction> last_interactions(pqxx::connection& conn, const std::string& user_key, int64_t n) {
  pqxx::read_transaction tx(conn);
  const auto user = tx.exec_params("SELECT id FROM users WHERE external_key = $1", user_key);
  if (user.empty()) throw UnknownKeyError("user", user_key);
  std::vector<Interaction> out;
  if (n <= 0) return out;
  const auto r = tx.exec_params(
      "SELECT it.external_key, e.ts, e.event_type, e.weight FROM interactions e JOIN items it ON it.id = e.item_id"
      " WHERE e.user_id = $1 ORDER BY e.ts DESC, e.id DESC LIMIT $2",
      user[0][0].as<int64_t>(), n);
  out.reserve(r.size());
  for (const auto& row : r)
    out.push_back({row[0].as<std::string>(), row[1].as<double>(), row[2].as<std::string>(), row[3].as<float>()});
  return out;
}

namespace {

// A PostgreSQL text[] literal: {"a","b"} with " and \ escaped.
std::string text_array(const std::vector<std::string>& values) {
  std::string a = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) a += ',';
    a += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') a += '\\';
      a += c;
    }
    a += '"';
  }
  return a + "}";
}

}  // namespace

std::vector<std::optional<std::vector<Interaction>>> last_interactions_batch(pqxx::connection& conn,
                                                                             const std::vector<std::string>& user_keys,
                                                                             int64_t n) {
  std::vector<std::optional<std::vector<Interaction>>> out(user_keys.size());
  if (user_keys.empty()) return out;
  pqxx::read_transaction tx(conn);
  // Per requested key (its position q.ord): the user's id (NULL: unknown) and its newest n
  // events through the (user_id, ts, id) index (LATERAL ... LIMIT n); no row of events for
  // a known user without events (e.item NULL).
  const auto r = tx.exec_params(
      "SELECT q.ord, u.id, e.item, e.ts, e.event_type, e.weight"
      " FROM unnest($1::text[]) WITH ORDINALITY AS q(key, ord)"
      " LEFT JOIN users u ON u.external_key = q.key"
      " LEFT JOIN LATERAL (SELECT it.external_key AS item, x.ts, x.event_type, x.weight, x.id"
      "   FROM interactions x JOIN items it ON it.id = x.item_id"
      "   WHERE x.user_id = u.id ORDER BY x.ts DESC, x.id DESC LIMIT $2) e ON true"
      " ORDER BY q.ord, e.ts DESC, e.id DESC",
      text_array(user_keys), std::max<int64_t>(0, n));
  for (const auto& row : r) {
    const auto i = static_cast<size_t>(row[0].as<int64_t>() - 1);
    if (row[1].is_null()) continue;  // unknown user: stays nullopt
    auto& events = out[i];
    if (!events) events.emplace();
    if (row[2].is_null()) continue;  // no events
    events->push_back({row[2].as<std::string>(), row[3].as<double>(), row[4].as<std::string>(), row[5].as<float>()});
  }
  return out;
}

AddResult add_interactions(pqxx::connection& conn, const std::vector<NewInteraction>& events) {
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    const std::string where = "store: add_interactions: event " + std::to_string(i) + ": ";
    if (e.user_key.empty()) throw StoreError(where + "empty user key");
    if (e.item_key.empty()) throw StoreError(where + "empty item key");
    if (!std::isfinite(e.ts)) throw StoreError(where + "timestamp is not a finite number");
    if (e.event_type.empty()) throw StoreError(where + "empty event type");
  }
  AddResult res;
  pqxx::work tx(conn);
  std::unordered_map<std::string, int64_t> items, users;
  for (const auto& e : events) {
    if (items.count(e.item_key)) continue;
    const auto r = tx.exec_params("SELECT id FROM items WHERE external_key = $1", e.item_key);
    if (r.empty()) throw UnknownKeyError("item", e.item_key);  // tx aborts: nothing written
    items.emplace(e.item_key, r[0][0].as<int64_t>());
  }
  for (const auto& e : events) {
    if (!users.count(e.user_key)) {
      const auto ins = tx.exec_params(
          "INSERT INTO users (external_key) VALUES ($1) ON CONFLICT (external_key) DO NOTHING RETURNING id", e.user_key);
      if (!ins.empty()) {
        ++res.new_users;
        users.emplace(e.user_key, ins[0][0].as<int64_t>());
      } else {
        users.emplace(e.user_key,
                      tx.exec_params1("SELECT id FROM users WHERE external_key = $1", e.user_key)[0].as<int64_t>());
      }
    }
    const auto r = tx.exec_params(
        "INSERT INTO interactions (user_id, item_id, ts, event_type, weight) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT ON CONSTRAINT interactions_natural_key DO NOTHING",
        users.at(e.user_key), items.at(e.item_key), e.ts, e.event_type, e.weight);
    if (r.affected_rows() == 1)
      ++res.inserted;
    else
      ++res.duplicates;
  }
  tx.commit();
  return res;
}

int64_t add_items(pqxx::connection& conn, const std::vector<std::string>& item_keys) {
  pqxx::work tx(conn);
  int64_t added = 0;
  for (const auto& k : item_keys) {
    if (k.empty()) throw StoreError("store: add_items: empty item key");
    added += tx.exec_params("INSERT INTO items (external_key) VALUES ($1) ON CONFLICT (external_key) DO NOTHING", k)
                 .affected_rows();
  }
  tx.commit();
  return added;
}

}  // namespace mamba::recommendation
