// The forecasting service end to end: the real `mamba-forecast serve` process on a
// loopback port, a model trained in the test on ETTh2, the generated C++ client.
// Health before and after a model exists, a forecast with quantiles and timestamps, bad
// inputs with their status codes, a hot model swap under load with no failed call, and
// SIGTERM draining (NOT_SERVING while still answering, then exit 0).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "util/server_process.h"
#include "mamba/forecasting/fit.h"
#include "mamba/forecasting/model_dir.h"
#include "mamba/forecasting/protocol.h"
#include "mamba/forecasting/series_csv.h"
#include "mamba/forecasting/v1/forecasting.grpc.pb.h"

using namespace std::chrono_literals;
using namespace mamba::forecasting;
namespace fs = std::filesystem;
namespace fc = mamba::forecasting::v1;
using grpc::StatusCode;
using grpc::health::v1::HealthCheckResponse;

namespace {

constexpr const char* kToken = "forecast-test-token";
const fs::path kDir = fs::path(MAMBA_TEST_TMP) / "forecast_server";

// Trains a small model on ETTh2 (a subset of windows, 1 epoch) and writes it as
// <root>/etth2/<version> through a staging name, the way a deployment copies one in.
void write_model(const fs::path& root, int version, uint64_t seed) {
  const MultiSeries s = read_series_csv(std::string(MAMBA_SHARED_DIR) + "/data/ETTh2.csv");
  const int64_t L = 96, H = 24;
  const Splits sp = make_splits(SplitProtocol::ett_hour, s.num_steps(), L, H);
  ForecastModel m;
  m.scaler = StandardScaler::fit(s.values, sp.train, s.names);
  const mamba::Tensor z = m.scaler.transform(s.values);
  const WindowDataset train(z, sp.train, L, H), val(z, sp.val, L, H);
  ForecasterConfig c;
  c.seq_len = L;
  c.horizon = H;
  c.n_vars = s.num_variables();
  c.d_model = 16;
  c.d_ff = 16;
  c.n_layers = 1;
  c.d_state = 4;
  auto net = std::make_shared<MambaForecaster>(c, seed);
  init_from_linear(*net, LinearForecaster::fit(z, sp.train, L, H, {InstanceNorm::mean, 1e-6}));
  m.net = std::make_shared<MambaEnsemble>(std::vector<std::shared_ptr<MambaForecaster>>{net});
  FitOptions o;
  o.max_epochs = 1;
  o.max_train_windows = 256;
  o.quiet = true;
  o.seed = seed;
  fit(*net, window_source(train), window_source(val), o);
  m.variables = s.names;
  m.protocol = "ett-hour";
  m.interval_seconds = 3600;
  m.residual_levels = default_quantile_levels();
  m.residual_quantiles = residual_quantiles(*m.net, window_source(val), m.residual_levels);
  fs::create_directories(root / "etth2");
  const fs::path staging = root / "etth2" / (".incoming-" + std::to_string(version));
  m.save(staging.string());
  fs::rename(staging, root / "etth2" / std::to_string(version));
}

class Server {
 public:
  static constexpr const char* kService = "mamba.forecasting.v1.ForecastingService";
  explicit Server(const fs::path& root)
      : proc_(start(root)), stub_(fc::ForecastingService::NewStub(proc_.channel())) {}

  int terminate_and_wait() { return proc_.terminate_and_wait(); }
  void terminate() { proc_.terminate(); }
  int wait() { return proc_.wait(); }
  bool wait_health(HealthCheckResponse::ServingStatus want) { return proc_.wait_health(kService, want); }

  grpc::Status forecast(const fc::ForecastRequest& req, fc::ForecastResponse* resp, const char* token = kToken) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    if (token) ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    return stub_->Forecast(&ctx, req, resp);
  }
  fc::ForecastingService::Stub& stub() { return *stub_; }

 private:
  static mamba::testing::ServerProcess start(const fs::path& root) {
    fs::create_directories(kDir);
    std::ofstream(kDir / "tokens") << kToken << "\n";
    return mamba::testing::ServerProcess(
        {MAMBA_FORECAST_BIN, "--threads", "1", "serve", "--model-root", root.string(), "--auth-token-file",
         (kDir / "tokens").string(), "--poll-seconds", "0.2", "--drain-seconds", "1.5", "--max-series-length", "5000"},
        kDir);
  }
  mamba::testing::ServerProcess proc_;
  std::unique_ptr<fc::ForecastingService::Stub> stub_;
};

// The last `n` rows of ETTh2 as a request.
fc::ForecastRequest etth2_request(int64_t n, int horizon) {
  static const MultiSeries s = read_series_csv(std::string(MAMBA_SHARED_DIR) + "/data/ETTh2.csv");
  fc::ForecastRequest req;
  req.mutable_model()->set_name("etth2");
  req.set_horizon(horizon);
  req.set_series_id("etth2-tail");
  const int64_t T = s.num_steps(), V = s.num_variables();
  for (int64_t t = T - n; t < T; ++t) req.mutable_series()->add_timestamps(s.timestamps[t]);
  for (int64_t v = 0; v < V; ++v) {
    auto* var = req.mutable_series()->add_variables();
    var->set_name(s.names[v]);
    for (int64_t t = T - n; t < T; ++t) var->add_values(s.values.data<float>()[t * V + v]);
  }
  return req;
}

}  // namespace

TEST(ForecastServer, EndToEnd) {
  const fs::path root = kDir / "root";
  fs::remove_all(root);
  fs::create_directories(root);
  Server server(root);

  // No model yet: NOT_SERVING, and a call is FAILED_PRECONDITION.
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::NOT_SERVING));
  fc::ForecastResponse resp;
  EXPECT_EQ(server.forecast(etth2_request(96, 24), &resp).error_code(), StatusCode::FAILED_PRECONDITION);

  write_model(root, 1, 1);
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::SERVING));

  // A forecast: 7 variables, 24 steps, hourly timestamps after the last input row,
  // quantiles ordered around the mean.
  fc::ForecastRequest req = etth2_request(200, 24);
  req.add_quantiles(0.1);
  req.add_quantiles(0.9);
  grpc::Status st = server.forecast(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.series_id(), "etth2-tail");
  EXPECT_EQ(resp.model_name(), "etth2");
  EXPECT_EQ(resp.model_version(), 1);
  ASSERT_EQ(resp.variables_size(), 7);
  ASSERT_EQ(resp.timestamps_size(), 24);
  EXPECT_EQ(resp.timestamps(0), "2018-06-26 20:00:00");
  for (const auto& v : resp.variables()) {
    ASSERT_EQ(v.mean_size(), 24);
    ASSERT_EQ(v.quantiles_size(), 2);
    for (int h = 0; h < 24; ++h) {
      EXPECT_TRUE(std::isfinite(v.mean(h)));
      EXPECT_LT(v.quantiles(0).values(h), v.quantiles(1).values(h));
    }
  }
  // Unnamed variables in the model's order give the same answer.
  fc::ForecastRequest unnamed = etth2_request(200, 24);
  for (auto& v : *unnamed.mutable_series()->mutable_variables()) v.clear_name();
  fc::ForecastResponse r2;
  ASSERT_TRUE(server.forecast(unnamed, &r2).ok());
  EXPECT_EQ(r2.variables(3).mean(5), resp.variables(3).mean(5));

  // Bad inputs and their codes; messages name the field.
  auto code_and_message = [&](const fc::ForecastRequest& r, const char* token = kToken) {
    fc::ForecastResponse out;
    grpc::Status s = server.forecast(r, &out, token);
    return std::make_pair(s.error_code(), s.error_message());
  };
  {
    fc::ForecastRequest empty;
    empty.mutable_model()->set_name("etth2");
    auto [c, m] = code_and_message(empty);
    EXPECT_EQ(c, StatusCode::INVALID_ARGUMENT) << m;
    EXPECT_NE(m.find("series.variables"), std::string::npos) << m;
  }
  {
    fc::ForecastRequest nan = etth2_request(96, 24);
    nan.mutable_series()->mutable_variables(2)->set_values(90, std::nan(""));
    auto [c, m] = code_and_message(nan);
    EXPECT_EQ(c, StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(m.find("series.variables[2].values[90]"), std::string::npos) << m;
  }
  {
    auto [c, m] = code_and_message(etth2_request(96, 500));
    EXPECT_EQ(c, StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(m.find("horizon"), std::string::npos) << m;
  }
  {
    auto [c, m] = code_and_message(etth2_request(50, 24));
    EXPECT_EQ(c, StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(m.find("seq_len"), std::string::npos) << m;
  }
  {
    auto [c, m] = code_and_message(etth2_request(6000, 24));  // over --max-series-length 5000
    EXPECT_EQ(c, StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(m.find("5000"), std::string::npos) << m;
  }
  {
    fc::ForecastRequest unknown = etth2_request(96, 24);
    unknown.mutable_model()->set_name("nosuch");
    EXPECT_EQ(code_and_message(unknown).first, StatusCode::NOT_FOUND);
    unknown.mutable_model()->set_name("../etc/passwd");
    EXPECT_EQ(code_and_message(unknown).first, StatusCode::INVALID_ARGUMENT);
    unknown.mutable_model()->set_name("etth2");
    unknown.mutable_model()->set_version(7);
    EXPECT_EQ(code_and_message(unknown).first, StatusCode::NOT_FOUND);
  }
  {
    fc::ForecastRequest q = etth2_request(96, 24);
    q.add_quantiles(1.5);
    EXPECT_EQ(code_and_message(q).first, StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(code_and_message(etth2_request(96, 24), nullptr).first, StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(code_and_message(etth2_request(96, 24), "wrong-token").first, StatusCode::UNAUTHENTICATED);

  // ListModels / GetModel report the version and its metrics.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    fc::ListModelsResponse lm;
    ASSERT_TRUE(server.stub().ListModels(&ctx, fc::ListModelsRequest(), &lm).ok());
    ASSERT_EQ(lm.models_size(), 1);
    EXPECT_EQ(lm.models(0).name(), "etth2");
    EXPECT_NE(lm.models(0).config_json().find("mamba-forecast"), std::string::npos);
  }
  // ForecastStream: one response per series.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    fc::ForecastStreamRequest sr;
    for (int i = 0; i < 5; ++i) {
      *sr.add_requests() = etth2_request(96 + i, 12);
      sr.mutable_requests(i)->set_series_id("s" + std::to_string(i));
    }
    auto reader = server.stub().ForecastStream(&ctx, sr);
    fc::ForecastResponse one;
    int n = 0;
    while (reader->Read(&one)) {
      EXPECT_EQ(one.series_id(), "s" + std::to_string(n));
      EXPECT_EQ(one.variables(0).mean_size(), 12);
      ++n;
    }
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(n, 5);
  }

  // Hot swap under load: clients keep calling while version 2 arrives; none fails and
  // answers move to version 2.
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, calls{0}, v2{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&] {
      const fc::ForecastRequest r = etth2_request(96, 24);
      while (!stop) {
        fc::ForecastResponse out;
        grpc::Status s = server.forecast(r, &out);
        ++calls;
        if (!s.ok()) ++failures;
        else if (out.model_version() == 2) ++v2;
      }
    });
  write_model(root, 2, 2);
  for (int i = 0; i < 400 && v2.load() < 20; ++i) std::this_thread::sleep_for(50ms);
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failures.load(), 0) << "of " << calls.load() << " calls";
  EXPECT_GE(v2.load(), 20) << "version 2 never served";

  // A broken version 3 is refused; version 2 keeps serving.
  fs::create_directories(root / "etth2" / "3");
  std::ofstream(root / "etth2" / "3" / "config.json") << "{not json";
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(server.forecast(etth2_request(96, 24), &resp).ok());
  EXPECT_EQ(resp.model_version(), 2);

  // SIGTERM: NOT_SERVING at once, calls still answered during the drain, then exit 0.
  server.terminate();
  ASSERT_TRUE(server.wait_health(HealthCheckResponse::NOT_SERVING));
  EXPECT_TRUE(server.forecast(etth2_request(96, 24), &resp).ok());
  EXPECT_EQ(server.wait(), 0);
}
