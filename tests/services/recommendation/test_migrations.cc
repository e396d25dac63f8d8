// Schema migrations on a real PostgreSQL: from an empty database, re-applying is a no-op,
// concurrent callers apply each version once, a newer database is refused.
#include "mamba/recommendation/migrations.h"

#include <gtest/gtest.h>

#include <thread>

#include "mamba/recommendation/store.h"
#include "pg_fixture.h"

using namespace mamba::recommendation;
using mamba::recommendation::testing::PgTest;
using Migrations = PgTest;

namespace {

std::vector<std::string> tables(pqxx::connection& conn) {
  pqxx::read_transaction tx(conn);
  std::vector<std::string> out;
  for (const auto& row : tx.exec("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
    out.push_back(row[0].as<std::string>());
  return out;
}

}  // namespace

TEST_F(Migrations, MigrationsFromEmptyThenNoOp) {
  auto conn = connect(url());
  EXPECT_EQ(schema_version(conn), 0);
  EXPECT_EQ(stats(conn).schema_version, 0);
  EXPECT_EQ(apply_migrations(conn), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(schema_version(conn), 4);
  EXPECT_EQ(tables(conn), (std::vector<std::string>{"interactions", "item_attribute_types", "items", "model_runs",
                                                     "recommendations", "schema_migrations", "users"}));
  EXPECT_TRUE(apply_migrations(conn).empty());
  pqxx::read_transaction tx(conn);
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM schema_migrations")[0].as<int>(), 4);
  // The index behind last_interactions.
  EXPECT_EQ(tx.exec1("SELECT indexdef FROM pg_indexes WHERE indexname = 'interactions_user_recent'")[0]
                .as<std::string>()
                .find("(user_id, ts DESC, id DESC)") != std::string::npos,
            true);
}

TEST_F(Migrations, ConcurrentCallersApplyEachVersionOnce) {
  constexpr int kCallers = 4;
  std::vector<std::vector<int>> applied(kCallers);
  std::vector<std::string> errors(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i)
    threads.emplace_back([&, i] {
      try {
        auto c = connect(url());
        applied[i] = apply_migrations(c);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  std::vector<int> all;
  for (int i = 0; i < kCallers; ++i) {
    EXPECT_EQ(errors[i], "");
    all.insert(all.end(), applied[i].begin(), applied[i].end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int>{1, 2, 3, 4}));
  auto conn = connect(url());
  EXPECT_EQ(schema_version(conn), 4);
}

TEST_F(Migrations, FailedMigrationLeavesNoTraceAndNewerSchemaIsRefused) {
  auto conn = connect(url());
  {
    // A table in the way of version 1: its migration fails and records nothing.
    pqxx::work tx(conn);
    tx.exec("CREATE TABLE users (x int)");
    tx.commit();
  }
  EXPECT_THROW(apply_migrations(conn), pqxx::sql_error);
  EXPECT_EQ(schema_version(conn), 0);
  {
    pqxx::work tx(conn);
    tx.exec("DROP TABLE users");
    tx.commit();
  }
  apply_migrations(conn);
  {
    pqxx::work tx(conn);
    tx.exec("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')");
    tx.commit();
  }
  EXPECT_THROW(apply_migrations(conn), StoreError);
}
