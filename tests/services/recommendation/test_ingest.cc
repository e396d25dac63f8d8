// Ingestion into a real PostgreSQL: a generated RecBole file, re-ingest, a longer version
// of the file, malformed rows (reported by line; --strict writes nothing), CSV.
#include "mamba/recommendation/ingest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/store.h"
#include "pg_fixture.h"

using namespace mamba::recommendation;
using mamba::recommendation::testing::MigratedPgTest;

namespace {

struct Generated {
  std::string text;
  int64_t rows = 0, users = 0, items = 0;
};

// A RecBole file with columns in a non-default order and an extra column; `rows` events,
// every (user, item, ts) distinct; `first_row` shifts the generated rows (for appends).
Generated recbole_file(int64_t rows, int64_t first_row = 0, bool header = true) {
  std::mt19937 rng(7);
  Generated g;
  std::ostringstream os;
  if (header) os << "item_id:token\tuser_id:token\tcomment:token\ttimestamp:float\trating:float\n";
  std::set<int> users, items;
  std::set<std::tuple<int, int, int64_t>> events;
  for (int64_t r = 0; r < first_row + rows; ++r) {
    const int u = static_cast<int>(rng() % 37), rating = static_cast<int>(rng() % 5) + 1;
    int i = static_cast<int>(rng() % 101);
    while (!events.emplace(u, i, r / 3).second) i = (i + 1) % 101;  // three rows share a timestamp
    if (r < first_row) continue;
    users.insert(u);
    items.insert(i);
    os << "item" << i << "\tuser" << u << "\tc" << r << "\t" << 1000 + r / 3 << "\t" << rating << "\n";
  }
  g.text = os.str();
  g.rows = rows;
  g.users = static_cast<int64_t>(users.size());
  g.items = static_cast<int64_t>(items.size());
  return g;
}

class Ingest : public MigratedPgTest {
 protected:
  Ingest() : MigratedPgTest("ingest") {}
};

}  // namespace

TEST_F(Ingest, GeneratedRecBoleFileCountsAndReingestAddsNothing) {
  const auto g = recbole_file(5000);
  const auto path = write_file("gen.inter", g.text);
  const auto r = ingest_file(conn(), path);
  EXPECT_EQ(r.format, InterFormat::recbole);
  EXPECT_EQ(r.rows_read, 5000);
  EXPECT_EQ(r.rows_good, 5000);
  EXPECT_EQ(r.inserted, 5000);
  EXPECT_EQ(r.duplicates, 0);
  EXPECT_EQ(r.rejected, 0);
  EXPECT_EQ(r.new_users, g.users);
  EXPECT_EQ(r.new_items, g.items);
  EXPECT_TRUE(r.written);
  auto s = stats(conn());
  EXPECT_EQ(s.users, g.users);
  EXPECT_EQ(s.items, g.items);
  EXPECT_EQ(s.interactions, 5000);

  const auto again = ingest_file(conn(), path);
  EXPECT_EQ(again.rows_read, 5000);
  EXPECT_EQ(again.inserted, 0);
  EXPECT_EQ(again.duplicates, 5000);
  EXPECT_EQ(again.new_users, 0);
  EXPECT_EQ(again.new_items, 0);
  EXPECT_EQ(stats(conn()).interactions, 5000);

  // The same file with 700 more rows at its end: only those are new.
  const auto longer = write_file("gen_longer.inter", g.text + recbole_file(700, 5000, false).text);
  const auto more = ingest_file(conn(), longer);
  EXPECT_EQ(more.rows_read, 5700);
  EXPECT_EQ(more.inserted, 700);
  EXPECT_EQ(stats(conn()).interactions, 5700);

  // Rows keep their file and line.
  pqxx::read_transaction tx(conn());
  const auto row = tx.exec1("SELECT source_file, source_line FROM interactions ORDER BY id LIMIT 1");
  EXPECT_EQ(row[0].as<std::string>(), path);
  EXPECT_EQ(row[1].as<int64_t>(), 2);
}

TEST_F(Ingest, MalformedRowsAreReportedAndStrictWritesNothing) {
  const std::string text =
      "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
      "u1\ti1\t5\t100\n"
      "u1\ti2\tfive\t101\n"   // line 3: bad number
      "u2\ti1\t4\n"           // line 4: wrong column count
      "u2\t\t4\t102\n"        // line 5: missing field
      "u2\ti3\t2\t103\n"
      "u2\ti3\t2\t103\n";     // line 7: same event again (a duplicate, not a rejection)
  const auto path = write_file("bad.inter", text);

  const auto strict = ingest_file(conn(), path, {InterFormat::auto_detect, /*strict*/ true});
  EXPECT_FALSE(strict.written);
  EXPECT_EQ(strict.rejected, 3);
  EXPECT_EQ(stats(conn()).interactions, 0);
  EXPECT_EQ(stats(conn()).users, 0);
  EXPECT_EQ(stats(conn()).items, 0);
  const auto report = format_report(strict);
  EXPECT_NE(report.find("nothing written"), std::string::npos) << report;
  EXPECT_NE(report.find("line 3: bad number in column 'rating': 'five'"), std::string::npos) << report;
  EXPECT_NE(report.find("line 4: wrong column count"), std::string::npos) << report;
  EXPECT_NE(report.find("line 5: missing field 'item_id'"), std::string::npos) << report;

  const auto lax = ingest_file(conn(), path);
  EXPECT_TRUE(lax.written);
  EXPECT_EQ(lax.rows_read, 6);
  EXPECT_EQ(lax.rejected, 3);
  ASSERT_EQ(lax.rejected_rows.size(), 3u);
  EXPECT_EQ(lax.rejected_rows[0].line, 3);
  EXPECT_EQ(lax.rejected_rows[1].line, 4);
  EXPECT_EQ(lax.rejected_rows[2].line, 5);
  EXPECT_EQ(lax.inserted, 2);
  EXPECT_EQ(lax.duplicates, 1);
  const auto s = stats(conn());
  EXPECT_EQ(s.interactions, 2);
  EXPECT_EQ(s.users, 2);
  EXPECT_EQ(s.items, 2);
}

TEST_F(Ingest, CsvFile) {
  const auto path = write_file("events.csv",
                               "user_id,item_id,timestamp,rating,event_type\n"
                               "alice,book,1700000000.123456,4.25,purchase\n"
                               "alice,pen,1700000001,,click\n"
                               "bob,book,1700000002,1,\n");
  const auto r = ingest_file(conn(), path);
  EXPECT_EQ(r.format, InterFormat::csv);
  EXPECT_EQ(r.inserted, 3);
  EXPECT_EQ(r.rejected, 0);
  const auto last = last_interactions(conn(), "alice", 10);
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].item_key, "pen");
  EXPECT_EQ(last[0].event_type, "click");
  EXPECT_FLOAT_EQ(last[0].weight, 1.f);
  EXPECT_EQ(last[1].item_key, "book");
  EXPECT_EQ(last[1].ts, 1700000000.123456);  // exact: no precision lost through COPY
  EXPECT_EQ(last[1].event_type, "purchase");
  EXPECT_EQ(last[1].weight, 4.25f);
  EXPECT_EQ(last_interactions(conn(), "bob", 10).at(0).event_type, "interaction");
}

TEST_F(Ingest, BadHeaderWritesNothing) {
  const auto path = write_file("nohdr.csv", "user,item,when\n1,2,3\n");
  EXPECT_THROW(ingest_file(conn(), path), InteractionFileError);
  EXPECT_THROW(ingest_file(conn(), path + ".missing"), StoreError);
  EXPECT_EQ(stats(conn()).interactions, 0);
}
