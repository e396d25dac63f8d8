// mamba-rec train / evaluate end to end: from a real PostgreSQL (data ingested in the test)
// and from a file, the model directory, the baselines and the last line's format.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "mamba/io/json_config.h"
#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/protocol.h"
#include "mamba/recommendation/synthetic.h"
#include "pg_fixture.h"

#ifndef MAMBA_REC_BIN
#error "MAMBA_REC_BIN must be defined"
#endif

using namespace mamba::recommendation;
using mamba::recommendation::testing::PgTest;

namespace {

struct CliRun {
  int status = 0;
  std::string out;
  std::string last_line() const {
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s.substr(s.rfind('\n') + 1);
  }
};

CliRun mamba_rec(const std::string& args) {
  CliRun r;
  FILE* p = ::popen(("OMP_NUM_THREADS=2 " + std::string(MAMBA_REC_BIN) + " " + args + " 2>&1").c_str(), "r");
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::regex kLastLine(R"(^HR@10 [01]\.\d{4} NDCG@10 [01]\.\d{4} MRR@10 [01]\.\d{4}$)");

class TrainCli : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    dir_ = std::filesystem::path(MAMBA_TEST_TMP) / ("train-cli-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string write_generated() {
    StrideWalkOptions o;
    o.users = 60;
    o.events_per_user = 10;
    o.num_items = 30;
    o.seed = 3;
    auto rows = generate_stride_walks(o);
    // Ties in time: two events of u1 share a timestamp; file order must decide.
    for (auto& r : rows)
      if (r.user_key == "u1" && r.ts == 5) r.ts = 4;
    const auto path = (dir_ / "gen.inter").string();
    std::ofstream(path) << to_recbole_inter(rows);
    return path;
  }
  std::filesystem::path dir_;
  const std::string small_ = " --d-model 16 --d-state 8 --max-seq-len 6 --epochs 2 --batch 64 --quiet";
};

}  // namespace

TEST_F(TrainCli, TrainFromTheDatabaseAndEvaluate) {
  const std::string inter = write_generated();
  {
    auto conn = connect(url());
    apply_migrations(conn);
    const IngestReport rep = ingest_file(conn, inter);
    ASSERT_EQ(rep.inserted, 600);
    // The store's sequences are the file's, in the same (stable) order.
    const SequenceData db = sequences_from_snapshot(read_sequences(conn));
    const SequenceData file = read_interaction_file(inter);
    ASSERT_EQ(db.sequences.size(), file.sequences.size());
    std::map<std::string, std::vector<std::string>> a, b;
    for (size_t u = 0; u < db.sequences.size(); ++u)
      for (int32_t i : db.sequences[u]) a[db.user_keys[u]].push_back(db.items.key(i));
    for (size_t u = 0; u < file.sequences.size(); ++u)
      for (int32_t i : file.sequences[u]) b[file.user_keys[u]].push_back(file.items.key(i));
    EXPECT_EQ(a, b);
  }
  const std::string model = (dir_ / "model").string();
  CliRun r = mamba_rec("train --db " + url() + " --out " + model + small_);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(std::regex_match(r.last_line(), kLastLine)) << r.out;
  EXPECT_NE(r.out.find("test  popularity HR@10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test  markov     HR@10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test  mamba4rec  HR@10"), std::string::npos) << r.out;
  for (const char* f : {"config.json", "model.safetensors", "items.json", "metrics.json"})
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(model) / f)) << f;
  const auto metrics = mamba::io::load_json_file(model + "/metrics.json");
  EXPECT_TRUE(metrics["test"].contains("markov"));
  EXPECT_TRUE(metrics["test"]["mamba4rec"].contains("NDCG@20"));
  EXPECT_EQ(metrics["test"]["mamba4rec"]["cases"], 60);
  // The default trains the three weight-decay candidates; the saved model is the one with the
  // best validation NDCG@10 (the first on ties), and its validation line is that figure.
  const auto& sel = metrics["selection"];
  ASSERT_EQ(sel.size(), 3u) << metrics.dump();
  size_t best = 0;
  for (size_t i = 0; i < sel.size(); ++i) {
    EXPECT_EQ(sel[i]["dropout"], 0.2);
    EXPECT_EQ(sel[i]["weight_decay"], std::vector<double>({0.0, 0.1, 0.5})[i]);
    if (sel[i]["valid_ndcg10"].get<double>() > sel[best]["valid_ndcg10"].get<double>()) best = i;
  }
  const auto config = mamba::io::load_json_file(model + "/config.json");
  EXPECT_EQ(config["training"]["weight_decay"], sel[best]["weight_decay"]) << config.dump();
  EXPECT_NEAR(metrics["valid"]["mamba4rec"]["NDCG@10"].get<double>(), sel[best]["valid_ndcg10"].get<double>(), 1e-9);
  EXPECT_NE(r.out.find("chose dropout"), std::string::npos) << r.out;

  // Evaluating the saved model on the same data repeats the training run's test line,
  // from the database and from the file alike.
  CliRun e = mamba_rec("evaluate --model " + model + " --db " + url() + " --split test");
  ASSERT_EQ(e.status, 0) << e.out;
  EXPECT_EQ(e.last_line(), r.last_line()) << e.out;
  CliRun f = mamba_rec("evaluate --model " + model + " --inter " + inter + " --split test");
  ASSERT_EQ(f.status, 0) << f.out;
  EXPECT_EQ(f.last_line(), r.last_line()) << f.out;
  CliRun v = mamba_rec("evaluate --model " + model + " --inter " + inter + " --split valid");
  EXPECT_NE(v.out.find("valid mamba4rec"), std::string::npos) << v.out;

  // Baselines alone, by the same code: the lines match the training run's.
  CliRun b = mamba_rec("evaluate --baseline markov --inter " + inter);
  ASSERT_EQ(b.status, 0) << b.out;
  EXPECT_TRUE(std::regex_match(b.last_line(), kLastLine)) << b.out;
  const std::string markov_line = b.out.substr(b.out.find("test  markov"), b.out.find('\n', b.out.find("test  markov")) - b.out.find("test  markov"));
  EXPECT_NE(r.out.find(markov_line), std::string::npos) << markov_line << "\n" << r.out;
  CliRun p = mamba_rec("evaluate --baseline popularity --db " + url());
  ASSERT_EQ(p.status, 0) << p.out;
  EXPECT_EQ(p.last_line().substr(0, 6), "HR@10 ");
}

TEST_F(TrainCli, BadArguments) {
  const std::string inter = write_generated();
  EXPECT_NE(mamba_rec("train --out " + (dir_ / "m").string()).status, 0);
  EXPECT_NE(mamba_rec("evaluate --inter " + inter).status, 0);
  EXPECT_NE(mamba_rec("evaluate --model " + (dir_ / "missing").string() + " --inter " + inter).status, 0);
  EXPECT_NE(mamba_rec("evaluate --baseline nope --inter " + inter).status, 0);
  const CliRun d = mamba_rec("train --inter " + inter + " --out " + (dir_ / "m").string() + " --dropout 0.2,1.5");
  EXPECT_NE(d.status, 0);
  EXPECT_NE(d.out.find("--dropout: 1.5"), std::string::npos) << d.out;
  const CliRun w = mamba_rec("train --inter " + inter + " --out " + (dir_ / "m").string() + " --weight-decay=-1");
  EXPECT_NE(w.status, 0);
  EXPECT_NE(w.out.find("--weight-decay"), std::string::npos) << w.out;
}
