// The recommendation service end to end: the real `mamba-rec serve` process on a loopback
// port, a Mamba4Rec model trained in the test (by `mamba-rec train --db`) on generated
// stride walks ingested into the fixture's PostgreSQL, the generated C++ client.
// Health, Recommend (k ranked items, exclude_seen, the cache), RecommendFromHistory, the
// status codes of bad requests, AddInteractions advancing the cached state (equal to a
// recompute over the new history), and a restart that answers the same.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <unordered_set>

#include "grpc/health/v1/health.grpc.pb.h"
#include "mamba/common/v1/common.pb.h"
#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/model_dir.h"
#include "mamba/recommendation/serving.h"
#include "mamba/recommendation/store.h"
#include "mamba/recommendation/synthetic.h"
#include "mamba/recommendation/v1/recommendation.grpc.pb.h"
#include "pg_fixture.h"
#include "util/server_process.h"

#ifndef MAMBA_REC_BIN
#error "MAMBA_REC_BIN must be defined"
#endif
#ifndef MAMBA_CTL_BIN
#error "MAMBA_CTL_BIN must be defined"
#endif

using namespace std::chrono_literals;
using namespace mamba::recommendation;
using namespace mamba::recommendation::testing;
namespace fs = std::filesystem;
namespace rv = mamba::recommendation::v1;
using grpc::StatusCode;
using grpc::health::v1::HealthCheckResponse;

namespace {

constexpr const char* kToken = "rec-test-token";
constexpr int kMaxSeqLen = 6;

class Server {
 public:
  static constexpr const char* kService = "mamba.recommendation.v1.RecommendationService";
  Server(const fs::path& dir, const std::string& db, const std::vector<std::string>& extra_args = {})
      : metrics_file_(dir / "metrics-port"), proc_(start(dir, db, metrics_file_, extra_args)),
        stub_(rv::RecommendationService::NewStub(proc_.channel())) {}

  int terminate_and_wait() { return proc_.terminate_and_wait(); }
  int port() const { return proc_.port(); }
  HealthCheckResponse::ServingStatus health() { return proc_.health(kService); }
  bool wait_serving() { return proc_.wait_health(kService, HealthCheckResponse::SERVING); }
  void auth(grpc::ClientContext& ctx) {
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  }
  grpc::Status recommend(const rv::RecommendRequest& req, rv::RecommendResponse* resp) {
    grpc::ClientContext ctx;
    auth(ctx);
    return stub_->Recommend(&ctx, req, resp);
  }
  grpc::Status from_history(const rv::RecommendFromHistoryRequest& req, rv::RecommendResponse* resp) {
    grpc::ClientContext ctx;
    auth(ctx);
    return stub_->RecommendFromHistory(&ctx, req, resp);
  }
  grpc::Status add(const rv::AddInteractionsRequest& req, rv::AddInteractionsResponse* resp) {
    grpc::ClientContext ctx;
    auth(ctx);
    return stub_->AddInteractions(&ctx, req, resp);
  }
  rv::RecommendationService::Stub& stub() { return *stub_; }
  // The /metrics text (through curl; "" when curl is missing).
  std::string metrics() {
    int port = 0;
    std::ifstream(metrics_file_) >> port;
    try {
      return run_command("curl -s http://127.0.0.1:" + std::to_string(port) + "/metrics");
    } catch (const std::exception&) {
      return "";
    }
  }

 private:
  static mamba::testing::ServerProcess start(const fs::path& dir, const std::string& db, const fs::path& metrics_file,
                                             const std::vector<std::string>& extra_args) {
    std::ofstream(dir / "tokens") << kToken << "\n";
    fs::remove(metrics_file);
    std::vector<std::string> args = {MAMBA_REC_BIN, "serve", "--db", db, "--model-root", (dir / "models").string(),
                                     "--auth-token-file", (dir / "tokens").string(), "--poll-seconds", "0",
                                     "--drain-seconds", "0.1", "--grace-seconds", "1", "--cache-users", "8",
                                     "--metrics-port", "-1", "--metrics-port-file", metrics_file.string()};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    return mamba::testing::ServerProcess(args, dir, {{"OMP_NUM_THREADS", "1"}});
  }
  fs::path metrics_file_;
  mamba::testing::ServerProcess proc_;
  std::unique_ptr<rv::RecommendationService::Stub> stub_;
};

rv::RecommendRequest recommend_request(const std::string& user, int k, bool exclude_seen) {
  rv::RecommendRequest r;
  r.mutable_model()->set_name("rec");
  r.set_user_id(user);
  r.set_k(k);
  r.set_exclude_seen(exclude_seen);
  return r;
}

rv::RecommendFromHistoryRequest history_request(const std::vector<std::string>& items, int k, bool exclude_seen) {
  rv::RecommendFromHistoryRequest r;
  r.mutable_model()->set_name("rec");
  for (const auto& i : items) r.add_items(i);
  r.set_k(k);
  r.set_exclude_seen(exclude_seen);
  return r;
}

// Same items in the same order, scores within 1e-4 relative.
void expect_same(const rv::RecommendResponse& a, const rv::RecommendResponse& b, const std::string& what) {
  ASSERT_EQ(a.items_size(), b.items_size()) << what;
  for (int i = 0; i < a.items_size(); ++i) {
    EXPECT_EQ(a.items(i).item_id(), b.items(i).item_id()) << what << " rank " << i + 1;
    EXPECT_NEAR(a.items(i).score(), b.items(i).score(), 1e-4 * std::max(1.0, std::fabs(b.items(i).score())))
        << what << " rank " << i + 1;
  }
}

class RecServer : public PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    std::string name = "rec-server-";
    name += std::to_string(::getpid());
    dir_ = fs::path(MAMBA_TEST_TMP) / name;
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "models" / "rec");
    StrideWalkOptions o;
    o.users = 40;
    o.events_per_user = 10;
    o.num_items = 30;
    o.seed = 7;
    const fs::path inter = dir_ / "gen.inter";
    std::ofstream(inter) << to_recbole_inter(generate_stride_walks(o));
    auto conn = connect(url());
    apply_migrations(conn);
    ASSERT_EQ(ingest_file(conn, inter.string()).inserted, 400);
    const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(MAMBA_REC_BIN) + " train --db " + url() + " --out " +
                            (dir_ / "models" / "rec" / "1").string() +
                            " --d-model 16 --d-state 8 --max-seq-len " + std::to_string(kMaxSeqLen) +
                            " --epochs 2 --batch 64 --quiet 2>&1";
    run_command(cmd);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // The user's items, oldest first, from the store.
  std::vector<std::string> history(const std::string& user) {
    auto conn = connect(url());
    std::vector<std::string> h;
    const auto ev = last_interactions(conn, user, 1000);
    for (auto it = ev.rbegin(); it != ev.rend(); ++it) h.push_back(it->item_key);
    return h;
  }
  fs::path dir_;
};

}  // namespace

TEST_F(RecServer, EndToEnd) {
  rv::RecommendResponse before;  // u1's answer after the write, for the restart
  std::vector<std::string> h;
  {
    Server s(dir_, url());
    ASSERT_TRUE(s.wait_serving());

    // A known user: k ranked items, none of the last max_seq_len seen ones.
    h = history("u1");
    ASSERT_EQ(h.size(), 10u);
    const std::set<std::string> window(h.end() - kMaxSeqLen, h.end());
    rv::RecommendResponse r1;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r1).ok());
    ASSERT_EQ(r1.items_size(), 10);
    EXPECT_EQ(r1.model_name(), "rec");
    EXPECT_EQ(r1.model_version(), 1);
    EXPECT_FALSE(r1.from_cache());
    EXPECT_EQ(r1.history_length(), kMaxSeqLen);
    for (int i = 0; i < r1.items_size(); ++i) {
      EXPECT_EQ(r1.items(i).rank(), i + 1);
      if (i > 0) {
        EXPECT_GE(r1.items(i - 1).score(), r1.items(i).score());
      }
      EXPECT_FALSE(window.count(r1.items(i).item_id())) << r1.items(i).item_id() << " was seen";
    }
    // Again: from the cache, the same answer.
    rv::RecommendResponse r2;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r2).ok());
    EXPECT_TRUE(r2.from_cache());
    expect_same(r2, r1, "cached");
    // Without exclude_seen the top items may be seen ones; 30 items in all.
    rv::RecommendResponse all;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 1000, false), &all).ok());
    EXPECT_EQ(all.items_size(), 30);
    rv::RecommendResponse most;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 1000, true), &most).ok());
    EXPECT_EQ(most.items_size(), 30 - static_cast<int>(window.size()));

    // The same history sent explicitly gives the same answer.
    rv::RecommendResponse fh;
    ASSERT_TRUE(s.from_history(history_request(h, 10, true), &fh).ok());
    expect_same(fh, r1, "from history");
    EXPECT_EQ(fh.history_length(), kMaxSeqLen);
    // Again: the window's state from the history cache, the same answer.
    rv::RecommendResponse fh2;
    ASSERT_TRUE(s.from_history(history_request(h, 10, true), &fh2).ok());
    EXPECT_TRUE(fh2.from_cache());
    expect_same(fh2, r1, "from history, cached");
    // A shorter history, then one more event: the cached 3-item state advanced one step.
    const std::vector<std::string> h3(h.begin(), h.begin() + 3), h4(h.begin(), h.begin() + 4);
    rv::RecommendResponse p3, p4;
    ASSERT_TRUE(s.from_history(history_request(h3, 10, true), &p3).ok());
    ASSERT_TRUE(s.from_history(history_request(h4, 10, true), &p4).ok());
    EXPECT_FALSE(p3.from_cache());
    EXPECT_TRUE(p4.from_cache());
    EXPECT_EQ(p4.history_length(), 4);

    // ListItems: the catalogue in pages.
    {
      grpc::ClientContext ctx;
      s.auth(ctx);
      rv::ListItemsRequest lr;
      lr.set_offset(25);
      lr.set_limit(10);
      rv::ListItemsResponse li;
      ASSERT_TRUE(s.stub().ListItems(&ctx, lr, &li).ok());
      EXPECT_EQ(li.total(), 30);
      EXPECT_EQ(li.item_ids_size(), 5);
      EXPECT_EQ(li.model_name(), "rec");
      grpc::ClientContext ctx2;
      s.auth(ctx2);
      lr.set_limit(0);
      const grpc::Status bad_limit = s.stub().ListItems(&ctx2, lr, &li);
      EXPECT_EQ(bad_limit.error_code(), StatusCode::INVALID_ARGUMENT);
      EXPECT_NE(bad_limit.error_message().find("limit"), std::string::npos) << bad_limit.error_message();
    }

    // Bad requests.
    rv::RecommendResponse bad;
    grpc::Status st = s.recommend(recommend_request("nobody-42", 10, true), &bad);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
    EXPECT_NE(st.error_message().find("nobody-42"), std::string::npos) << st.error_message();
    st = s.from_history(history_request({h[0], "no-such-item"}, 10, true), &bad);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
    EXPECT_NE(st.error_message().find("no-such-item"), std::string::npos) << st.error_message();
    for (int k : {0, -1, 1001}) {
      EXPECT_EQ(s.recommend(recommend_request("u1", k, true), &bad).error_code(), StatusCode::INVALID_ARGUMENT) << k;
      EXPECT_EQ(s.from_history(history_request(h, k, true), &bad).error_code(), StatusCode::INVALID_ARGUMENT) << k;
    }
    auto other = recommend_request("u1", 5, true);
    other.mutable_model()->set_name("missing");
    EXPECT_EQ(s.recommend(other, &bad).error_code(), StatusCode::NOT_FOUND);
    {
      grpc::ClientContext ctx;  // no token
      EXPECT_EQ(s.stub().Recommend(&ctx, recommend_request("u1", 5, true), &bad).error_code(),
                StatusCode::UNAUTHENTICATED);
    }

    // AddInteractions: u1 takes its top recommendation; the cached state advances.
    const std::string took = r1.items(0).item_id();
    rv::AddInteractionsRequest add;
    auto* x = add.add_interactions();
    x->set_user_id("u1");
    x->set_item_id(took);
    x->set_timestamp(1000);
    rv::AddInteractionsResponse ar;
    ASSERT_TRUE(s.add(add, &ar).ok());
    EXPECT_EQ(ar.inserted(), 1);
    EXPECT_EQ(ar.duplicates(), 0);
    h.push_back(took);
    ASSERT_EQ(history("u1"), h);
    rv::RecommendResponse r3;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r3).ok());
    EXPECT_TRUE(r3.from_cache()) << "the write advances the cached state";
    for (const auto& it : r3.items()) EXPECT_NE(it.item_id(), took);
    rv::RecommendResponse fh3;
    ASSERT_TRUE(s.from_history(history_request(h, 10, true), &fh3).ok());
    expect_same(r3, fh3, "after the write");
    before = r3;

    // Re-adding the same event is a duplicate and changes nothing.
    ASSERT_TRUE(s.add(add, &ar).ok());
    EXPECT_EQ(ar.inserted(), 0);
    EXPECT_EQ(ar.duplicates(), 1);
    rv::RecommendResponse r4;
    ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r4).ok());
    expect_same(r4, r3, "after a duplicate");

    // A new user through AddInteractions, then recommended for.
    rv::AddInteractionsRequest nu;
    for (int t = 0; t < 3; ++t) {
      auto* y = nu.add_interactions();
      y->set_user_id("newcomer");
      y->set_item_id(h[static_cast<size_t>(t)]);
      y->set_timestamp(t + 1);
    }
    ASSERT_TRUE(s.add(nu, &ar).ok());
    EXPECT_EQ(ar.new_users(), 1);
    rv::RecommendResponse r5, fh5;
    ASSERT_TRUE(s.recommend(recommend_request("newcomer", 5, true), &r5).ok());
    ASSERT_TRUE(s.from_history(history_request({h[0], h[1], h[2]}, 5, true), &fh5).ok());
    expect_same(r5, fh5, "new user");
    EXPECT_FALSE(r5.from_cache());
    // Its state is cached with a window of 3 < max_seq_len: the next event is one
    // recurrent step on the cached state.
    rv::AddInteractionsRequest more;
    auto* w = more.add_interactions();
    w->set_user_id("newcomer");
    w->set_item_id(r5.items(0).item_id());
    w->set_timestamp(10);
    ASSERT_TRUE(s.add(more, &ar).ok());
    EXPECT_EQ(ar.inserted(), 1);
    rv::RecommendResponse r6, fh6;
    ASSERT_TRUE(s.recommend(recommend_request("newcomer", 5, true), &r6).ok());
    EXPECT_TRUE(r6.from_cache());
    EXPECT_EQ(r6.history_length(), 4);
    ASSERT_TRUE(s.from_history(history_request({h[0], h[1], h[2], r5.items(0).item_id()}, 5, true), &fh6).ok());
    expect_same(r6, fh6, "new user after a step");
    for (const auto& it : r6.items()) EXPECT_NE(it.item_id(), r5.items(0).item_id());
    // An event older than the cached state's newest drops the state; the next call
    // prefills from the store, in the store's (ts, id) order.
    w->set_item_id(h[5]);
    w->set_timestamp(0.5);
    ASSERT_TRUE(s.add(more, &ar).ok());
    rv::RecommendResponse r7, fh7;
    ASSERT_TRUE(s.recommend(recommend_request("newcomer", 5, true), &r7).ok());
    EXPECT_FALSE(r7.from_cache());
    ASSERT_TRUE(s.from_history(history_request(history("newcomer"), 5, true), &fh7).ok());
    ASSERT_EQ(history("newcomer").front(), h[5]);
    expect_same(r7, fh7, "new user after an out-of-order event");

    // An unknown item is NOT_FOUND and writes nothing.
    rv::AddInteractionsRequest bad_add;
    auto* z = bad_add.add_interactions();
    z->set_user_id("u2");
    z->set_item_id("no-such-item");
    z->set_timestamp(5000);
    st = s.add(bad_add, &ar);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
    EXPECT_NE(st.error_message().find("no-such-item"), std::string::npos) << st.error_message();

    // Models.
    grpc::ClientContext ctx;
    s.auth(ctx);
    rv::ListModelsResponse lm;
    ASSERT_TRUE(s.stub().ListModels(&ctx, rv::ListModelsRequest(), &lm).ok());
    ASSERT_EQ(lm.models_size(), 1);
    EXPECT_EQ(lm.models(0).name(), "rec");
    EXPECT_NE(lm.models(0).config_json().find("mamba4rec"), std::string::npos);
    const std::string text = s.metrics();
    if (!text.empty()) {
      EXPECT_NE(text.find("mamba_rec_state_cache_total{result=\"hit\"}"), std::string::npos) << text;
      EXPECT_NE(text.find("mamba_rec_state_updates_total{kind=\"advanced\"} 2"), std::string::npos) << text;
      EXPECT_NE(text.find("mamba_rec_state_cache_users"), std::string::npos) << text;
    }
    EXPECT_EQ(s.terminate_and_wait(), 0);
  }
  // A restart (cold cache, prefilled from the store) gives the same answers.
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  rv::RecommendResponse again;
  ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &again).ok());
  EXPECT_FALSE(again.from_cache());
  expect_same(again, before, "after a restart");
  // An empty model name picks the only loaded model.
  auto anon = recommend_request("u1", 10, true);
  anon.mutable_model()->clear_name();
  rv::RecommendResponse a2;
  ASSERT_TRUE(s.recommend(anon, &a2).ok());
  expect_same(a2, before, "empty model name");
}

TEST_F(RecServer, CacheBoundAndManyUsers) {
  // More users than --cache-users 8: answers stay those of a recompute.
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  for (int round = 0; round < 2; ++round)
    for (int u = 1; u <= 20; ++u) {
      std::string user = "u";
      user += std::to_string(u);
      rv::RecommendResponse r, f;
      ASSERT_TRUE(s.recommend(recommend_request(user, 5, false), &r).ok()) << user;
      ASSERT_TRUE(s.from_history(history_request(history(user), 5, false), &f).ok()) << user;
      expect_same(r, f, user);
    }
}

TEST_F(RecServer, MambactlBenchRecommend) {
  // mambactl bench recommend end to end (not timed: it runs, every call succeeds and the
  // table is printed).
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  const std::string ctl = std::string(MAMBA_CTL_BIN) + " --addr 127.0.0.1:" + std::to_string(s.port()) +
                          " --token-file " + (dir_ / "tokens").string() + " --timeout-ms 20000 bench recommend" +
                          " --concurrency 1,3 --duration-s 0.3 --window-s 0.1 --max-windows 5 --warmup-s 0 -q";
  for (const std::string& mode : {std::string(" --history-len 20 --k 5"),  // fresh histories from ListItems
                                  std::string(" --history-len 8 --history-mode repeat"),
                                  std::string(" --items i1,i2,i3 --history-len 4"), std::string(" --user u1,u2,u3")}) {
    const std::string out = run_command(ctl + mode + " 2>&1");
    for (const char* col : {"concurrency", "throughput_rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "errors"})
      EXPECT_NE(out.find(col), std::string::npos) << mode << ": " << col << "\n" << out;
    for (const char* level : {"concurrency 1: ", "concurrency 3: "}) {
      const size_t at = out.find(level);
      ASSERT_NE(at, std::string::npos) << mode << "\n" << out;
      const std::string line = out.substr(at, out.find('\n', at) - at);
      EXPECT_NE(line.find(", 0 errors;"), std::string::npos) << mode << ": " << line;
    }
    EXPECT_NE(out.find(mode.find("--user") != std::string::npos ? "Recommend for 3 user(s)" : "RecommendFromHistory"),
              std::string::npos)
        << out;
  }
  // An item the model does not know: the first call fails, exit 2 + NOT_FOUND (5 + 2).
  const int rc = std::system((ctl + " --items i1,no-such-item --history-len 50 > /dev/null 2>&1").c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2 + static_cast<int>(StatusCode::NOT_FOUND));
  EXPECT_EQ(s.terminate_and_wait(), 0);
}

TEST_F(RecServer, RecommendFilters) {
  // Attributes for every item of the store (ingested before the server starts; the index
  // is read on the first filtered call): brand b0..b2 by position, price = position.
  std::vector<std::string> keys;
  {
    auto conn = connect(url());
    pqxx::read_transaction tx(conn);
    for (const auto& row : tx.exec("SELECT external_key FROM items ORDER BY id")) keys.push_back(row[0].as<std::string>());
  }
  ASSERT_EQ(keys.size(), 30u);
  std::map<std::string, std::pair<std::string, double>> attrs;
  {
    std::ofstream f(dir_ / "gen.item");
    f << "item_id:token\tbrand:token\tprice:float\n";
    for (size_t i = 0; i < keys.size(); ++i) {
      attrs[keys[i]] = {"b" + std::to_string(i % 3), static_cast<double>(i)};
      f << keys[i] << "\tb" << i % 3 << "\t" << i << "\n";
    }
  }
  const std::string out = run_command(std::string(MAMBA_REC_BIN) + " ingest --db " + url() + " --item " +
                                      (dir_ / "gen.item").string() + " 2>&1");
  EXPECT_NE(out.find("new items 0, updated 30"), std::string::npos) << out;
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  rv::RecommendResponse all;
  ASSERT_TRUE(s.recommend(recommend_request("u3", 1000, false), &all).ok());
  ASSERT_EQ(all.items_size(), 30);
  auto check = [&](rv::RecommendRequest req, const std::function<bool(const std::string&)>& pass, const std::string& what) {
    rv::RecommendResponse r;
    ASSERT_TRUE(s.recommend(req, &r).ok()) << what;
    std::vector<std::string> want;
    for (const auto& it : all.items())
      if (pass(it.item_id()) && static_cast<int>(want.size()) < req.k()) want.push_back(it.item_id());
    ASSERT_EQ(r.items_size(), static_cast<int>(want.size())) << what;
    EXPECT_GT(want.size(), 0u) << what;
    for (int i = 0; i < r.items_size(); ++i) {
      EXPECT_EQ(r.items(i).item_id(), want[static_cast<size_t>(i)]) << what << " rank " << i + 1;
      EXPECT_EQ(r.items(i).rank(), i + 1);
    }
  };
  rv::RecommendRequest brand = recommend_request("u3", 5, false);
  auto* f = brand.add_filters();
  f->set_attribute("brand");
  f->add_any_of("b1");
  check(brand, [&](const std::string& k) { return attrs[k].first == "b1"; }, "brand b1");
  rv::RecommendRequest both = recommend_request("u3", 4, false);
  f = both.add_filters();
  f->set_attribute("brand");
  f->add_any_of("b0");
  f->add_any_of("b2");
  f = both.add_filters();
  f->set_attribute("price");
  f->set_min(5);
  f->set_max(20.5);
  check(both, [&](const std::string& k) { return attrs[k].first != "b1" && attrs[k].second >= 5 && attrs[k].second <= 20.5; },
        "brand b0|b2, price 5..20.5");
  // Again: the cached allow set answers the same.
  check(both, [&](const std::string& k) { return attrs[k].first != "b1" && attrs[k].second >= 5 && attrs[k].second <= 20.5; },
        "again");
  // An unknown attribute: INVALID_ARGUMENT naming it.
  rv::RecommendRequest bad = recommend_request("u3", 5, false);
  f = bad.add_filters();
  f->set_attribute("colour");
  f->add_any_of("red");
  rv::RecommendResponse r;
  const auto st = s.recommend(bad, &r);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("filters[0].attribute"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("'colour'"), std::string::npos) << st.error_message();
  // A range on a token attribute.
  rv::RecommendRequest range = recommend_request("u3", 5, false);
  f = range.add_filters();
  f->set_attribute("brand");
  f->set_min(1);
  EXPECT_EQ(s.recommend(range, &r).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(RecServer, WritesByOtherProcessesReachTheCache) {
  // The freshness rule (grpc_service.h, WriteListener): the service's own AddInteractions
  // advances the cached state (no re-read); a write another process commits — `mamba-rec
  // ingest`, or plain SQL from this test process — drops the cached states of its users
  // once its notification arrives, and the next Recommend equals a recompute over the store.
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  auto cached = [&](const std::string& user) {
    rv::RecommendResponse a, b;
    EXPECT_TRUE(s.recommend(recommend_request(user, 10, true), &a).ok());
    EXPECT_TRUE(s.recommend(recommend_request(user, 10, true), &b).ok());
    EXPECT_TRUE(b.from_cache()) << user;
    return b;
  };
  auto recompute = [&](const std::string& user) {
    rv::RecommendResponse f;
    EXPECT_TRUE(s.from_history(history_request(history(user), 10, true), &f).ok());
    return f;
  };
  // Polls Recommend until it re-reads the store (from_cache false); returns that answer
  // and prints how long the notification took.
  auto after_external_write = [&](const std::string& user, const std::string& what) {
    const auto t0 = std::chrono::steady_clock::now();
    rv::RecommendResponse r;
    for (;;) {
      EXPECT_TRUE(s.recommend(recommend_request(user, 10, true), &r).ok());
      if (!r.from_cache()) break;
      if (std::chrono::steady_clock::now() - t0 > 10s) {
        ADD_FAILURE() << what << ": the cached state of " << user << " was not dropped within 10 s";
        break;
      }
      std::this_thread::sleep_for(1ms);
    }
    std::printf("%s: the cached state of %s was dropped %.2f ms after the write returned\n", what.c_str(),
                user.c_str(), std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return r;
  };

  // 1. The service's own write: applied to the cache, not dropped by its own notification.
  const rv::RecommendResponse before1 = cached("u1");
  rv::AddInteractionsRequest add;
  auto* x = add.add_interactions();
  x->set_user_id("u1");
  x->set_item_id(before1.items(0).item_id());
  x->set_timestamp(2000);
  rv::AddInteractionsResponse ar;
  ASSERT_TRUE(s.add(add, &ar).ok());
  ASSERT_EQ(ar.inserted(), 1);
  std::this_thread::sleep_for(300ms);  // the notification has arrived by now (and is the service's own)
  rv::RecommendResponse r1;
  ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r1).ok());
  EXPECT_TRUE(r1.from_cache()) << "the service's own write must not drop the state it advanced";
  expect_same(r1, recompute("u1"), "after AddInteractions");

  // 2. `mamba-rec ingest` (another process) adds an event for u2.
  const rv::RecommendResponse before2 = cached("u2");
  const fs::path extra = dir_ / "extra.inter";
  std::ofstream(extra) << "user_id:token\titem_id:token\ttimestamp:float\n"
                       << "u2\t" << before2.items(0).item_id() << "\t3000\n";
  const std::string out =
      run_command(std::string(MAMBA_REC_BIN) + " ingest --db " + url() + " --inter " + extra.string() + " 2>&1");
  const rv::RecommendResponse r2 = after_external_write("u2", "mamba-rec ingest");
  EXPECT_EQ(history("u2").back(), before2.items(0).item_id()) << out;
  expect_same(r2, recompute("u2"), "after mamba-rec ingest");
  for (const auto& it : r2.items()) EXPECT_NE(it.item_id(), before2.items(0).item_id()) << "now seen";

  // 3. Plain SQL from this process: an insert through the store library, then a delete.
  const rv::RecommendResponse before3 = cached("u3");
  {
    auto conn = connect(url());
    NewInteraction n;
    n.user_key = "u3";
    n.item_key = before3.items(0).item_id();
    n.ts = 4000;
    ASSERT_EQ(add_interactions(conn, {n}).inserted, 1);
  }
  const rv::RecommendResponse r3 = after_external_write("u3", "an insert by another process");
  expect_same(r3, recompute("u3"), "after an insert by another process");
  cached("u3");
  {
    auto conn = connect(url());
    pqxx::work tx(conn);
    tx.exec("DELETE FROM interactions WHERE ts = 4000 AND user_id = (SELECT id FROM users WHERE external_key = 'u3')");
    tx.commit();
  }
  const rv::RecommendResponse r4 = after_external_write("u3", "a delete by another process");
  expect_same(r4, recompute("u3"), "after a delete by another process");
  expect_same(r4, before3, "the delete undid the insert");

  // Users nobody wrote for stay cached.
  rv::RecommendResponse r5;
  ASSERT_TRUE(s.recommend(recommend_request("u1", 10, true), &r5).ok());
  EXPECT_TRUE(r5.from_cache());
  const std::string text = s.metrics();
  if (!text.empty()) EXPECT_NE(text.find("mamba_rec_state_invalidations_total 3"), std::string::npos) << text;
  EXPECT_EQ(s.terminate_and_wait(), 0);
}

// The value of an unlabelled counter in a /metrics text (-1 when absent).
double metric_value(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

TEST_F(RecServer, ConcurrentColdUsersArePrefilledTogether) {
  // Cold Recommend calls for users of different history lengths (1..8 events: windows
  // of 1..5 items and full windows of 6) and RecommendFromHistory calls with new windows
  // of 1..12 items, all at once against one prefill worker (--prefill-workers 1): the
  // calls that queue while a prefill runs are read from the store in one query and
  // prefilled by one batched forward. Every answer equals an in-process recompute (the
  // model loaded here, Mamba4Rec::prefill of the window, top_k_items), cold and then
  // cached; each cold call is prefilled exactly once.
  const RecModel model = RecModel::load((dir_ / "models" / "rec" / "1").string());
  const int32_t N = static_cast<int32_t>(model.items.num_items());
  ASSERT_GE(N, 13);
  constexpr int kUsers = 8, kWindows = 12;  // kUsers <= the server's --cache-users 8
  {
    auto conn = connect(url());
    std::vector<NewInteraction> events;
    for (int u = 1; u <= kUsers; ++u)
      for (int t = 0; t < u; ++t)
        events.push_back({"cold" + std::to_string(u), model.items.key(1 + (u * 7 + t * 3) % N), 100.0 + t});
    add_interactions(conn, events);
  }
  // Window w (w + 1 items) starts, after the server's truncation to its last kMaxSeqLen
  // items, with item w + 1: none is a prefix of another, so each is a prefill.
  std::vector<std::vector<std::string>> windows(kWindows);
  for (int w = 0; w < kWindows; ++w) {
    const int start = std::max(0, w + 1 - kMaxSeqLen);
    for (int t = 0; t <= w; ++t)
      windows[static_cast<size_t>(w)].push_back(model.items.key(t == start ? 1 + w : 1 + (w * 5 + t) % N));
  }
  // The recompute: the newest kMaxSeqLen known items, one prefill, the f32 top-k.
  auto recompute = [&](const std::vector<std::string>& keys, int k, bool exclude_seen) {
    std::vector<int32_t> ids;
    for (const auto& key : keys) ids.push_back(model.items.find(key));
    if (ids.size() > static_cast<size_t>(kMaxSeqLen)) ids.erase(ids.begin(), ids.end() - kMaxSeqLen);
    const Mamba4RecState st = model.net->prefill(ids);
    std::unordered_set<int32_t> ex;
    if (exclude_seen) ex.insert(ids.begin(), ids.end());
    rv::RecommendResponse r;
    int rank = 0;
    for (const ScoredId& x : top_k_items(*model.net, st.hidden, k, ex)) {
      auto* it = r.add_items();
      it->set_item_id(model.items.key(x.id));
      it->set_score(x.score);
      it->set_rank(++rank);
    }
    return r;
  };
  Server s(dir_, url(), {"--prefill-batch", "16", "--prefill-workers", "1"});
  ASSERT_TRUE(s.wait_serving());
  std::vector<rv::RecommendResponse> users(kUsers), hist(kWindows);
  std::vector<grpc::Status> user_st(kUsers), hist_st(kWindows);
  std::atomic<int> ready{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kUsers + kWindows; ++i)
    ts.emplace_back([&, i] {
      ++ready;
      while (ready.load() < kUsers + kWindows) std::this_thread::yield();  // all at once
      if (i < kUsers)
        user_st[static_cast<size_t>(i)] =
            s.recommend(recommend_request("cold" + std::to_string(i + 1), 5, true), &users[static_cast<size_t>(i)]);
      else
        hist_st[static_cast<size_t>(i - kUsers)] = s.from_history(
            history_request(windows[static_cast<size_t>(i - kUsers)], 5, false), &hist[static_cast<size_t>(i - kUsers)]);
    });
  for (auto& t : ts) t.join();
  for (int u = 0; u < kUsers; ++u) {
    const std::string user = "cold" + std::to_string(u + 1);
    ASSERT_TRUE(user_st[static_cast<size_t>(u)].ok()) << user << ": " << user_st[static_cast<size_t>(u)].error_message();
    EXPECT_FALSE(users[static_cast<size_t>(u)].from_cache()) << user;
    EXPECT_EQ(users[static_cast<size_t>(u)].history_length(), std::min(u + 1, kMaxSeqLen)) << user;
    const auto ref = recompute(history(user), 5, true);
    expect_same(users[static_cast<size_t>(u)], ref, user + " cold");
    rv::RecommendResponse again;
    ASSERT_TRUE(s.recommend(recommend_request(user, 5, true), &again).ok());
    EXPECT_TRUE(again.from_cache()) << user;
    expect_same(again, ref, user + " cached");
  }
  for (int w = 0; w < kWindows; ++w) {
    const std::string what = "window of " + std::to_string(w + 1);
    ASSERT_TRUE(hist_st[static_cast<size_t>(w)].ok()) << what << ": " << hist_st[static_cast<size_t>(w)].error_message();
    EXPECT_FALSE(hist[static_cast<size_t>(w)].from_cache()) << what;
    expect_same(hist[static_cast<size_t>(w)], recompute(windows[static_cast<size_t>(w)], 5, false), what);
  }
  // An unknown user in a batch is NOT_FOUND by name; the others of its batch still answer.
  {
    std::vector<grpc::Status> st(4);
    std::vector<rv::RecommendResponse> r(4);
    std::vector<std::thread> t2;
    for (int i = 0; i < 4; ++i)
      t2.emplace_back([&, i] {
        st[static_cast<size_t>(i)] =
            s.recommend(recommend_request(i == 2 ? "nobody-9" : "u" + std::to_string(30 + i), 5, false), &r[static_cast<size_t>(i)]);
      });
    for (auto& t : t2) t.join();
    for (int i = 0; i < 4; ++i) {
      if (i == 2) {
        EXPECT_EQ(st[2].error_code(), StatusCode::NOT_FOUND);
        EXPECT_NE(st[2].error_message().find("nobody-9"), std::string::npos) << st[2].error_message();
      } else {
        ASSERT_TRUE(st[static_cast<size_t>(i)].ok()) << st[static_cast<size_t>(i)].error_message();
        const std::string user = "u" + std::to_string(30 + i);
        expect_same(r[static_cast<size_t>(i)], recompute(history(user), 5, false), user);
      }
    }
  }
  const std::string text = s.metrics();
  if (!text.empty()) {
    const double prefills = metric_value(text, "mamba_rec_prefills_total");
    const double batches = metric_value(text, "mamba_rec_prefill_batches_total");
    EXPECT_EQ(prefills, kUsers + kWindows + 3) << text;  // + the three known users of the last round
    EXPECT_GE(batches, 1);
    EXPECT_LE(batches, kUsers + kWindows + 4);
    std::printf("cold calls %d + 4, prefilled %.0f in %.0f batches\n", kUsers + kWindows, prefills, batches);
  }
  EXPECT_EQ(s.terminate_and_wait(), 0);
}

TEST_F(RecServer, CallbackMethodsReportTheFieldOfABadRequest) {
  // Recommend and RecommendFromHistory run on gRPC's callback API: bad input is still
  // INVALID_ARGUMENT / NOT_FOUND naming the field (message and ErrorDetail trailer), a
  // cache miss (prefilled on the work pool) and a hit answer alike, and a call with a
  // deadline already too short for a batch is DEADLINE_EXCEEDED, not a hang.
  Server s(dir_, url());
  ASSERT_TRUE(s.wait_serving());
  auto field_of = [](grpc::ClientContext& ctx) {
    const auto& trailers = ctx.GetServerTrailingMetadata();
    auto it = trailers.find("mamba-error-detail-bin");
    if (it == trailers.end()) return std::string("(no ErrorDetail)");
    mamba::common::v1::ErrorDetail detail;
    if (!detail.ParseFromArray(it->second.data(), static_cast<int>(it->second.size()))) return std::string("(bad)");
    return detail.field();
  };
  rv::RecommendResponse r;
  {
    grpc::ClientContext ctx;
    s.auth(ctx);
    const auto st = s.stub().Recommend(&ctx, recommend_request("u1", 0, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("k"), std::string::npos) << st.error_message();
    EXPECT_EQ(field_of(ctx), "k");
  }
  {
    grpc::ClientContext ctx;
    s.auth(ctx);
    const auto st = s.stub().Recommend(&ctx, recommend_request("", 5, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(field_of(ctx), "user_id");
  }
  {
    grpc::ClientContext ctx;  // unknown user: found out on the pool (a store read)
    s.auth(ctx);
    const auto st = s.stub().Recommend(&ctx, recommend_request("nobody-7", 5, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
    EXPECT_NE(st.error_message().find("nobody-7"), std::string::npos) << st.error_message();
    EXPECT_EQ(field_of(ctx), "user_id");
  }
  {
    grpc::ClientContext ctx;
    s.auth(ctx);
    const auto st = s.stub().RecommendFromHistory(&ctx, history_request({"i1", "no-such-item"}, 5, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
    EXPECT_EQ(field_of(ctx), "items[1]");
  }
  {
    grpc::ClientContext ctx;
    s.auth(ctx);
    const auto st = s.stub().RecommendFromHistory(&ctx, history_request({"i1"}, 1001, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(field_of(ctx), "k");
  }
  {
    grpc::ClientContext ctx;  // a deadline that has passed on arrival
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    ctx.set_deadline(std::chrono::system_clock::now() + 1us);
    const auto st = s.stub().Recommend(&ctx, recommend_request("u1", 5, true), &r);
    EXPECT_EQ(st.error_code(), StatusCode::DEADLINE_EXCEEDED);
  }
  // Many concurrent calls, misses and hits mixed: each answer equals the recompute.
  std::vector<std::thread> ts;
  std::atomic<int> bad{0};
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string user = "u" + std::to_string(1 + (t * 10 + i) % 12);
        rv::RecommendResponse a, f;
        if (!s.recommend(recommend_request(user, 5, false), &a).ok()) ++bad;
        if (!s.from_history(history_request(history(user), 5, false), &f).ok()) ++bad;
        if (a.items_size() != f.items_size()) ++bad;
        for (int j = 0; j < std::min(a.items_size(), f.items_size()); ++j)
          if (a.items(j).item_id() != f.items(j).item_id()) ++bad;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(s.terminate_and_wait(), 0);
}
