#include "mamba/recommendation/migrations.h"

#include "mamba/recommendation/store.h"

namespace mamba::recommendation {

namespace {

const char* const kV1 = R"SQL(
CREATE TABLE users (
  id           bigserial PRIMARY KEY,
  external_key text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE items (
  id           bigserial PRIMARY KEY,
  external_key text NOT NULL UNIQUE,
  attributes   jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now()
);
-- id grows in insertion order: the tie-breaker that keeps file order for equal ts.
CREATE TABLE interactions (
  id          bigserial PRIMARY KEY,
  user_id     bigint NOT NULL REFERENCES users (id),
  item_id     bigint NOT NULL REFERENCES items (id),
  ts          double precision NOT NULL,
  event_type  text NOT NULL DEFAULT 'interaction',
  weight      real NOT NULL DEFAULT 1,
  source_file text,
  source_line bigint,
  CONSTRAINT interactions_natural_key UNIQUE (user_id, item_id, ts, event_type)
);
-- The last N events of a user (and, scanned backwards, every user's events in time order).
CREATE INDEX interactions_user_recent ON interactions (user_id, ts DESC, id DESC);
CREATE INDEX interactions_item ON interactions (item_id);
)SQL";

const char* const kV2 = R"SQL(
CREATE TABLE model_runs (
  id        bigserial PRIMARY KEY,
  started   timestamptz NOT NULL DEFAULT now(),
  finished  timestamptz,
  status    text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  metrics   jsonb NOT NULL DEFAULT '{}'::jsonb,
  model_dir text
);
CREATE TABLE recommendations (
  model_run_id bigint NOT NULL REFERENCES model_runs (id) ON DELETE CASCADE,
  user_id      bigint NOT NULL REFERENCES users (id),
  rank         integer NOT NULL CHECK (rank >= 1),
  item_id      bigint NOT NULL REFERENCES items (id),
  score        real NOT NULL,
  PRIMARY KEY (model_run_id, user_id, rank)
);
)SQL";

// Item attributes (item_attributes.h): the values live in items.attributes (jsonb, one
// object per item); this table records each attribute's RecBole type. The server reads
// the attributes once per model into an in-memory index (posting lists, float arrays), so
// filters never query the table per request; the GIN index serves containment queries
// (attributes @> '{"brand": "x"}') from SQL.
const char* const kV3 = R"SQL(
CREATE TABLE item_attribute_types (
  name text PRIMARY KEY,
  type text NOT NULL CHECK (type IN ('token', 'token_seq', 'float'))
);
CREATE INDEX items_attributes ON items USING gin (attributes jsonb_path_ops);
)SQL";

// Freshness of the servers' cached user states (grpc_service.h): every statement that
// changes interactions, whoever runs it (the service's AddInteractions, `mamba-rec ingest`,
// plain SQL), notifies channel mamba_rec_interactions at commit with the users it touched:
// a JSON array of their external keys, or '*' (all users: TRUNCATE, or more keys than fit
// a notification's payload).
const char* const kV4 = R"SQL(
CREATE FUNCTION mamba_rec_notify_interactions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  payload text;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('mamba_rec_interactions', '*');
    RETURN NULL;
  ELSIF TG_OP = 'INSERT' THEN
    SELECT json_agg(DISTINCT u.external_key)::text INTO payload
      FROM changed_new c JOIN users u ON u.id = c.user_id;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT json_agg(DISTINCT u.external_key)::text INTO payload
      FROM changed_old c JOIN users u ON u.id = c.user_id;
  ELSE
    SELECT json_agg(DISTINCT u.external_key)::text INTO payload
      FROM (SELECT user_id FROM changed_old UNION SELECT user_id FROM changed_new) c JOIN users u ON u.id = c.user_id;
  END IF;
  IF payload IS NULL THEN
    RETURN NULL;  -- no rows changed
  END IF;
  IF octet_length(payload) > 7000 THEN
    payload := '*';  -- notifications carry at most 8000 bytes
  END IF;
  PERFORM pg_notify('mamba_rec_interactions', payload);
  RETURN NULL;
END
$$;
CREATE TRIGGER interactions_notify_insert AFTER INSERT ON interactions
  REFERENCING NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION mamba_rec_notify_interactions();
CREATE TRIGGER interactions_notify_update AFTER UPDATE ON interactions
  REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new FOR EACH STATEMENT
  EXECUTE FUNCTION mamba_rec_notify_interactions();
CREATE TRIGGER interactions_notify_delete AFTER DELETE ON interactions
  REFERENCING OLD TABLE AS changed_old FOR EACH STATEMENT EXECUTE FUNCTION mamba_rec_notify_interactions();
CREATE TRIGGER interactions_notify_truncate AFTER TRUNCATE ON interactions
  FOR EACH STATEMENT EXECUTE FUNCTION mamba_rec_notify_interactions();
)SQL";

const char* const kCreateLedger =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

// The highest version recorded; -1 when there is no ledger yet.
int recorded_version(pqxx::transaction_base& tx) {
  const auto r = tx.exec1("SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (!r[0].as<bool>()) return -1;
  return tx.exec1("SELECT coalesce(max(version), 0) FROM schema_migrations")[0].as<int>();
}

}  // namespace

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> all = {
      {1, "users, items, interactions", kV1},
      {2, "model_runs, recommendations", kV2},
      {3, "item attribute types", kV3},
      {4, "interaction change notifications", kV4},
  };
  return all;
}

std::vector<int> apply_migrations(pqxx::connection& conn) {
  std::vector<int> applied;
  const int newest = migrations().back().version;
  for (const auto& m : migrations()) {
    pqxx::work tx(conn);
    // Serialises concurrent callers until this transaction ends; the ledger is created
    // under the lock so two first callers cannot race on it either.
    tx.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
    tx.exec(kCreateLedger);
    const auto done = tx.exec_params("SELECT 1 FROM schema_migrations WHERE version = $1", m.version);
    const int have = tx.exec1("SELECT coalesce(max(version), 0) FROM schema_migrations")[0].as<int>();
    if (have > newest)
      throw StoreError("migrations: the database has schema version " + std::to_string(have) +
                       ", newer than this binary knows (" + std::to_string(newest) + ")");
    if (!done.empty()) {
      tx.commit();
      continue;
    }
    tx.exec(m.sql);
    tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name);
    tx.commit();
    applied.push_back(m.version);
  }
  return applied;
}

int schema_version(pqxx::connection& conn) {
  pqxx::read_transaction tx(conn);
  const int v = recorded_version(tx);
  return v < 0 ? 0 : v;
}

}  // namespace mamba::recommendation
