// The mamba-rec command line against a real PostgreSQL: migrate, ingest (counts, the first
// 20 rejected lines, --strict exit status), stats.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "pg_fixture.h"

#ifndef MAMBA_REC_BIN
#error "MAMBA_REC_BIN must be defined"
#endif

using mamba::recommendation::testing::PgTest;

namespace {

struct Run {
  int status = 0;
  std::string out;
};

Run mamba_rec(const std::string& args) {
  Run r;
  FILE* p = ::popen((std::string(MAMBA_REC_BIN) + " " + args + " 2>&1").c_str(), "r");
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class Cli : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    dir_ = std::filesystem::path(MAMBA_TEST_TMP) / ("cli-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string file(const std::string& name, const std::string& text) {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::filesystem::path dir_;
};

}  // namespace

TEST_F(Cli, MigrateIngestStats) {
  auto r = mamba_rec("migrate --db " + url());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("applied migration 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("applied migration 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("applied migration 4"), std::string::npos) << r.out;
  r = mamba_rec("migrate --db " + url());
  EXPECT_NE(r.out.find("schema is current (version 4)"), std::string::npos) << r.out;

  // 30 bad rows (lines 3..32) between good ones: the report lists the first 20.
  std::string text = "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\n";
  for (int k = 0; k < 30; ++k) text += "u1\ti2\tx" + std::to_string(k) + "\n";
  text += "u2\ti1\t2\n";
  const auto path = file("mixed.inter", text);

  r = mamba_rec("ingest --strict --db " + url() + " --inter " + path);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("read 32, inserted 0, duplicates skipped 0, rejected 30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing written"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 3: bad number in column 'timestamp': 'x0'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 22: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("line 23: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("... and 10 more"), std::string::npos) << r.out;

  r = mamba_rec("stats --db " + url());
  EXPECT_NE(r.out.find("interactions 0"), std::string::npos) << r.out;

  r = mamba_rec("ingest --db " + url() + " --inter " + path);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("read 32, inserted 2, duplicates skipped 0, rejected 30"), std::string::npos) << r.out;
  r = mamba_rec("ingest --db " + url() + " --format csv --inter " + file("e.txt", "user_id,item_id,timestamp\nu3,i1,3\n"));
  EXPECT_NE(r.out.find("(csv): read 1, inserted 1"), std::string::npos) << r.out;

  r = mamba_rec("stats --db " + url());
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("users 3\nitems 1\ninteractions 3"), std::string::npos) << r.out;

  r = mamba_rec("stats --db postgresql://mamba:secret@127.0.0.1:1/none");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_EQ(r.out.find("secret"), std::string::npos) << r.out;
}

TEST_F(Cli, IngestItemFile) {
  // A bad row (line 3) under --strict: exit 1, nothing written; then loaded; again: no change.
  const auto path = file("attrs.item", "item_id:token\tprice:float\tbrand:token\ni1\t1.5\tb1\ni2\tcheap\tb2\ni3\t\tb3\n");
  auto r = mamba_rec("ingest --strict --db " + url() + " --item " + path);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("line 3: bad number in column 'price': 'cheap'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing written"), std::string::npos) << r.out;
  r = mamba_rec("ingest --db " + url() + " --item " + path);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("read 3, new items 2, updated 0, unchanged 0, rejected 1"), std::string::npos) << r.out;
  r = mamba_rec("ingest --db " + url() + " --item " + path);
  EXPECT_NE(r.out.find("new items 0, updated 0, unchanged 2"), std::string::npos) << r.out;
  r = mamba_rec("ingest --db " + url());
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("one of --inter FILE or --item FILE"), std::string::npos) << r.out;
}
