// The event store's schema, as numbered migrations the service applies itself.
//
// Version 1: users, items, interactions (and the index behind last_interactions);
// version 2: model_runs and recommendations. The SQL is in src/migrations.cc, one string
// per version; a released migration is never edited, a change is a new version.
//
// apply_migrations runs each missing migration in its own transaction, which takes the
// transaction-scoped advisory lock kMigrationLockKey first and records the version in
// schema_migrations(version, name, applied_at) before committing. So a failed migration
// leaves no trace, re-applying is a no-op, and concurrent callers (several replicas
// starting at once) wait for each other and each version is applied once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace mamba::recommendation {

struct Migration {
  int version;
  std::string name;
  std::string sql;
};

// pg_advisory_xact_lock key of the migrations ("mambarec" in ASCII).
inline constexpr int64_t kMigrationLockKey = 0x6d616d6261726563;

// Every migration, in version order.
const std::vector<Migration>& migrations();

// Applies the missing migrations; returns the versions applied by this call (empty when
// the schema was current). Throws StoreError when the database holds a version newer than
// this binary knows.
std::vector<int> apply_migrations(pqxx::connection& conn);

// The highest applied version; 0 for an empty database.
int schema_version(pqxx::connection& conn);

}  // namespace mamba::recommendation
