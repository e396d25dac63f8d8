// mambactl: the command-line client of the Mamba Suite services.
//
//   mambactl [--addr HOST:PORT] [--token-file F | --token T] [--tls-ca F [--tls-cert F --tls-key F]]
//            [--timeout-ms MS] [--output table|csv|json] COMMAND ...
//   mambactl health [--service NAME]
//   mambactl forecast --csv FILE [--horizon 96] [--model NAME] [--version N] [--quantiles 0.1,0.9]
//   mambactl models
//   mambactl model --model NAME [--version N]
//   mambactl recommend (--user U | --history I1,I2,...) [--k 10] [--model NAME] [--version N] [--include-seen]
//   mambactl bench forecast --csv FILE [--model NAME] --concurrency 1,8,64 --duration-s 10
//   mambactl bench recommend [--user U1,U2 | --history-len 200 --history-mode fresh|repeat --items I1,...]
//            [--k 10] [--model NAME] --concurrency 1,8,32 --duration-s 10
//
// Exit codes: client.h (and --help).
#include <absl/synchronization/mutex.h>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <CLI/CLI.hpp>

#include "client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "mamba/forecasting/series_csv.h"
#include "mamba/recommendation/v1/recommendation.grpc.pb.h"

namespace fc = mamba::forecasting::v1;
using namespace mambactl;

namespace mambactl {

fc::ForecastRequest build_forecast_request(const SeriesArgs& a, std::string* time_column) {
  mamba::forecasting::MultiSeries s;
  try {
    s = mamba::forecasting::read_series_csv(a.csv);
  } catch (const std::exception& e) {
    throw LocalError(e.what());
  }
  const int64_t T = s.num_steps(), V = s.num_variables();
  const int64_t first = a.rows > 0 && a.rows < T ? T - a.rows : 0;
  fc::ForecastRequest req;
  req.mutable_model()->set_name(a.model);
  req.mutable_model()->set_version(a.version);
  req.set_horizon(a.horizon);
  for (double q : a.quantiles) req.add_quantiles(q);
  req.set_series_id(a.series_id);
  auto* series = req.mutable_series();
  for (int64_t t = first; t < T; ++t) series->add_timestamps(s.timestamps[static_cast<size_t>(t)]);
  const mamba::Tensor values = s.values.contiguous();
  const float* x = values.data<float>();
  for (int64_t v = 0; v < V; ++v) {
    auto* var = series->add_variables();
    var->set_name(s.names[static_cast<size_t>(v)]);
    var->mutable_values()->Reserve(static_cast<int>(T - first));
    for (int64_t t = first; t < T; ++t) var->add_values(x[t * V + v]);
  }
  if (time_column) *time_column = s.time_column;
  return req;
}

}  // namespace mambactl

namespace {

const char* kExitCodes = R"(Exit codes:
  0        success (health: SERVING)
  1        local error (unreadable file, bad CSV, bad option value)
  2        health answered but not SERVING
  2+N      the RPC failed with gRPC status N, printed as "error: <CODE_NAME>: <message>":
           3 CANCELLED  4 UNKNOWN  5 INVALID_ARGUMENT  6 DEADLINE_EXCEEDED  7 NOT_FOUND
           8 ALREADY_EXISTS  9 PERMISSION_DENIED  10 RESOURCE_EXHAUSTED  11 FAILED_PRECONDITION
           12 ABORTED  13 OUT_OF_RANGE  14 UNIMPLEMENTED  15 INTERNAL  16 UNAVAILABLE
           17 DATA_LOSS  18 UNAUTHENTICATED
  100+     command-line errors (CLI11)
bench forecast and bench recommend exit 0 once it has measured (errors during the run are counted in its
table); its first request failing exits 2+N like any command.)";

const char* health_status_name(int s) {
  switch (s) {
    case grpc::health::v1::HealthCheckResponse::SERVING: return "SERVING";
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING: return "NOT_SERVING";
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    default: return "UNKNOWN";
  }
}

int run_health(Connection& conn, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) return report_status(st, &ctx);
  const bool serving = resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  if (conn.options().format() == OutputFormat::json)
    std::printf("%s\n", nlohmann::ordered_json{{"service", service}, {"status", health_status_name(resp.status())}}.dump().c_str());
  else
    std::printf("%s\n", health_status_name(resp.status()));
  return serving ? 0 : kExitNotServing;
}

int run_forecast(Connection& conn, SeriesArgs a) {
  if (grpc::Status st = resolve_model_name(conn, a.model); !st.ok()) return report_status(st);
  std::string time_column;
  const fc::ForecastRequest req = build_forecast_request(a, &time_column);
  auto stub = fc::ForecastingService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  fc::ForecastResponse resp;
  const grpc::Status st = stub->Forecast(&ctx, req, &resp);
  if (!st.ok()) return report_status(st, &ctx);

  Table t;
  t.columns.push_back({time_column.empty() ? "timestamp" : time_column});
  int64_t H = 0;
  for (const auto& v : resp.variables()) {
    H = std::max<int64_t>(H, v.mean_size());
    t.columns.push_back({v.name()});
    for (const auto& q : v.quantiles()) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "_q%g", q.q());
      t.columns.push_back({v.name() + buf});
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    std::vector<nlohmann::json> row;
    row.emplace_back(h < resp.timestamps_size() ? resp.timestamps(static_cast<int>(h)) : "+" + std::to_string(h + 1));
    auto at = [h](const auto& values) {
      return h < values.size() ? nlohmann::json(values.Get(static_cast<int>(h))) : nlohmann::json(nullptr);
    };
    for (const auto& v : resp.variables()) {
      row.push_back(at(v.mean()));
      for (const auto& q : v.quantiles()) row.push_back(at(q.values()));
    }
    t.rows.push_back(std::move(row));
  }
  switch (conn.options().format()) {
    case OutputFormat::json:
      std::printf("%s\n", nlohmann::ordered_json{{"model", resp.model_name()},
                                         {"version", resp.model_version()},
                                         {"series_id", resp.series_id()},
                                         {"horizon", H},
                                         {"forecast", t.to_json()}}
                              .dump(2)
                              .c_str());
      break;
    case OutputFormat::csv: t.print(OutputFormat::csv); break;
    case OutputFormat::table:
      std::printf("model %s version %lld%s%s, %lld steps\n", resp.model_name().c_str(),
                  static_cast<long long>(resp.model_version()), resp.series_id().empty() ? "" : ", series ",
                  resp.series_id().c_str(), static_cast<long long>(H));
      t.print(OutputFormat::table);
      break;
  }
  return 0;
}

nlohmann::json parse_or_string(const std::string& text) {
  if (text.empty()) return nullptr;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? nlohmann::json(text) : j;
}

// A short description of a model from its config.json: "s_mamba seq_len 96 horizon 96, 7 variables".
std::string model_summary(const std::string& config_json) {
  const auto c = parse_or_string(config_json);
  if (!c.is_object()) return "";
  std::string s;
  if (c.contains("model") && c["model"].is_object()) {
    const auto& m = c["model"];
    if (m.contains("arch") && m["arch"].is_string()) s += m["arch"].get<std::string>();
    for (const char* k : {"seq_len", "horizon", "d_model", "n_layers"})
      if (m.contains(k) && m[k].is_number_integer()) s += std::string(s.empty() ? "" : " ") + k + " " + std::to_string(m[k].get<int64_t>());
  }
  if (c.contains("variables") && c["variables"].is_array())
    s += (s.empty() ? "" : ", ") + std::to_string(c["variables"].size()) + " variables";
  return s;
}

int run_models(Connection& conn) {
  auto stub = fc::ForecastingService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  fc::ListModelsResponse resp;
  const grpc::Status st = stub->ListModels(&ctx, fc::ListModelsRequest{}, &resp);
  if (!st.ok()) return report_status(st, &ctx);
  Table t;
  t.columns = {{"name"}, {"version"}, {"loaded_at"}, {"summary"}};
  for (const auto& m : resp.models())
    t.rows.push_back({m.name(), m.version(), m.loaded_at(), model_summary(m.config_json())});
  t.print(conn.options().format());
  return 0;
}

int run_model(Connection& conn, std::string name, int64_t version) {
  if (grpc::Status st = resolve_model_name(conn, name); !st.ok()) return report_status(st);
  auto stub = fc::ForecastingService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  fc::GetModelRequest req;
  req.mutable_model()->set_name(name);
  req.mutable_model()->set_version(version);
  mamba::common::v1::ModelInfo m;
  const grpc::Status st = stub->GetModel(&ctx, req, &m);
  if (!st.ok()) return report_status(st, &ctx);
  const auto config = parse_or_string(m.config_json()), metrics = parse_or_string(m.metrics_json());
  switch (conn.options().format()) {
    case OutputFormat::json:
      std::printf("%s\n", nlohmann::ordered_json{{"name", m.name()},
                                         {"version", m.version()},
                                         {"loaded_at", m.loaded_at()},
                                         {"config", config},
                                         {"metrics", metrics}}
                              .dump(2)
                              .c_str());
      break;
    case OutputFormat::csv:
    case OutputFormat::table: {
      Table t;
      t.columns = {{"field"}, {"value"}};
      t.rows = {{"name", m.name()},
                {"version", std::to_string(m.version())},
                {"loaded_at", m.loaded_at()},
                {"summary", model_summary(m.config_json())},
                {"config", config.is_null() ? "" : config.dump()},
                {"metrics", metrics.is_null() ? "" : metrics.dump()}};
      t.print(conn.options().format());
      break;
    }
  }
  return 0;
}

struct RecommendArgs {
  std::string user, model;
  std::vector<std::string> history;
  int64_t version = 0;
  int32_t k = 10;
  bool include_seen = false;
  std::vector<std::string> filters;
};

// Recommend (a user of the event store) or RecommendFromHistory (--history); an empty
// model name lets the server pick its only model.
int run_recommend(Connection& conn, const RecommendArgs& a) {
  namespace rv = mamba::recommendation::v1;
  if (a.user.empty() == a.history.empty()) throw LocalError("recommend: give exactly one of --user or --history");
  if (!a.filters.empty() && a.user.empty()) throw LocalError("recommend: --filter needs --user (Recommend)");
  auto stub = rv::RecommendationService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  rv::RecommendResponse resp;
  grpc::Status st;
  if (!a.user.empty()) {
    rv::RecommendRequest req;
    req.mutable_model()->set_name(a.model);
    req.mutable_model()->set_version(a.version);
    req.set_user_id(a.user);
    req.set_k(a.k);
    req.set_exclude_seen(!a.include_seen);
    for (const auto& f : a.filters) parse_rec_filter(f, req.add_filters());
    st = stub->Recommend(&ctx, req, &resp);
  } else {
    rv::RecommendFromHistoryRequest req;
    req.mutable_model()->set_name(a.model);
    req.mutable_model()->set_version(a.version);
    for (const auto& i : a.history) req.add_items(i);
    req.set_k(a.k);
    req.set_exclude_seen(!a.include_seen);
    st = stub->RecommendFromHistory(&ctx, req, &resp);
  }
  if (!st.ok()) return report_status(st, &ctx);
  Table t;
  t.columns = {{"rank"}, {"item_id"}, {"score", 6}};
  for (const auto& it : resp.items()) t.rows.push_back({it.rank(), it.item_id(), it.score()});
  t.print(conn.options().format());
  std::fflush(stdout);
  if (conn.options().format() == OutputFormat::table)
    std::fprintf(stderr, "model %s/%lld, history of %lld events%s\n", resp.model_name().c_str(),
                 static_cast<long long>(resp.model_version()), static_cast<long long>(resp.history_length()),
                 resp.from_cache() ? " (cached state)" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil has absl::Mutex deadlock detection on (a lock graph updated on every
  // lock of gRPC's mutexes): a debugging aid, off, so `bench` measures less of itself.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{"mambactl: the command-line client of the Mamba Suite services"};
  app.footer(kExitCodes);
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command

  GlobalOptions g;
  if (const char* env = std::getenv("MAMBA_ADDR"); env && *env) g.addr = env;
  app.add_option("--addr", g.addr, "server address host:port (env MAMBA_ADDR)")->capture_default_str();
  auto* tok = app.add_option("--token", g.token, "bearer token sent as 'authorization: Bearer <token>'");
  app.add_option("--token-file", g.token_file, "file whose first non-comment line is the token")->excludes(tok);
  app.add_option("--tls-ca", g.tls_ca, "PEM CA bundle: connect with TLS");
  app.add_option("--tls-cert", g.tls_cert, "PEM client certificate (mutual TLS, with --tls-key)");
  app.add_option("--tls-key", g.tls_key, "PEM client private key (mutual TLS)");
  app.add_option("--tls-server-name", g.tls_server_name, "expected server name in its certificate (default: the host)");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline of each call in ms (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--output,-o", g.output, "table | csv | json")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "csv", "json"}));

  std::string health_service;
  auto* health = app.add_subcommand("health", "grpc.health.v1 Check: prints SERVING / NOT_SERVING; exit 0 only when SERVING");
  health->add_option("--service", health_service, "service name ('' = the whole server), e.g. mamba.forecasting.v1.ForecastingService");

  auto add_series_options = [](CLI::App* cmd, SeriesArgs& s) {
    cmd->add_option("--csv", s.csv, "series CSV: a date column (or the first) + numeric columns")->required()->check(CLI::ExistingFile);
    cmd->add_option("--model", s.model, "model name in the server's repository (default: its only model)");
    cmd->add_option("--version", s.version, "model version (0: the newest)")->check(CLI::NonNegativeNumber);
    cmd->add_option("--horizon", s.horizon, "steps to forecast (0: the model's horizon)")->check(CLI::NonNegativeNumber);
    cmd->add_option("--quantiles", s.quantiles, "quantile levels in (0, 1), e.g. 0.1,0.9")
        ->delimiter(',')
        ->check(CLI::Range(1e-9, 1 - 1e-9));
    cmd->add_option("--series-id", s.series_id, "series id, echoed back");
  };

  SeriesArgs fa;
  fa.horizon = 96;
  auto* forecast = app.add_subcommand("forecast", "Forecast one series from a CSV");
  add_series_options(forecast, fa);
  forecast->add_option("--rows", fa.rows, "send only the last N rows (0: all)")->check(CLI::NonNegativeNumber);
  forecast->get_option("--horizon")->capture_default_str();

  auto* models = app.add_subcommand("models", "ListModels: the loaded models");
  std::string model_name;
  int64_t model_version = 0;
  auto* model = app.add_subcommand("model", "GetModel: one model's config and metrics");
  model->add_option("--model", model_name, "model name (default: the server's only model)");
  model->add_option("--version", model_version, "version (0: the newest)")->check(CLI::NonNegativeNumber);

  RecommendArgs ra;
  auto* recommend = app.add_subcommand("recommend", "Recommend: top-k items for a user (or an explicit history)");
  recommend->add_option("--user", ra.user, "user id in the event store");
  recommend->add_option("--history", ra.history, "item ids, oldest first (RecommendFromHistory)")->delimiter(',');
  recommend->add_option("--k", ra.k, "items to return (1..1000)")->capture_default_str();
  recommend->add_option("--model", ra.model, "model name (default: the server's only model)");
  recommend->add_option("--version", ra.version, "version (0: the newest)")->check(CLI::NonNegativeNumber);
  recommend->add_flag("--include-seen", ra.include_seen, "also return items of the history");
  recommend->add_option("--filter", ra.filters,
                        "item attribute filter, repeatable (all must hold): NAME=V1|V2 (one of) or NAME=LO..HI (float range)");

  BenchArgs ba;
  auto* bench = app.add_subcommand("bench", "load tests");
  bench->require_subcommand(1);
  bench->fallthrough();
  auto* bench_fc = bench->add_subcommand(
      "forecast",
      "drive Forecast with N concurrent streams per level; windows of --window-s until three in a row agree on "
      "throughput within 10% (at least --duration-s, at most --max-windows)");
  bench_fc->fallthrough();
  add_series_options(bench_fc, ba.series);
  bench_fc->add_option("--rows", ba.series.rows, "send the CSV's last N rows (default: the model's seq_len)")
      ->check(CLI::PositiveNumber);
  auto add_load_options = [](CLI::App* cmd, LoadArgs& l) {
    cmd->add_option("--concurrency", l.concurrency, "concurrent streams per level, e.g. 1,8,64")
        ->delimiter(',')
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--duration-s", l.duration_s, "measure each level at least this long")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 3600.0));
    cmd->add_option("--window-s", l.window_s, "measurement window")->capture_default_str()->check(CLI::Range(0.05, 600.0));
    cmd->add_option("--max-windows", l.max_windows, "at most this many windows per level")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    cmd->add_option("--warmup-s", l.warmup_s, "unmeasured warm-up per level")->capture_default_str()->check(CLI::Range(0.0, 600.0));
    cmd->add_option("--channels", l.channels, "gRPC channels (TCP connections) shared by the streams; 0: one per stream")
        ->capture_default_str()
        ->check(CLI::Range(0, 4096));
    cmd->add_flag("--quiet,-q", l.quiet, "no per-window progress on stderr");
  };
  add_load_options(bench_fc, ba);

  RecBenchArgs rb;
  rb.concurrency = {1, 8, 32};
  auto* bench_rec = bench->add_subcommand(
      "recommend",
      "drive RecommendFromHistory (or Recommend with --user) with N concurrent streams per level; the same windows "
      "and percentiles as bench forecast");
  bench_rec->fallthrough();
  bench_rec->add_option("--user", rb.users, "Recommend for these users of the event store (stream i: user i mod n)")
      ->delimiter(',');
  bench_rec->add_option("--items", rb.items, "draw histories from these item ids (default: the model's catalogue, ListItems)")
      ->delimiter(',');
  bench_rec->add_option("--history-len", rb.history_len, "items per history (RecommendFromHistory)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  bench_rec->add_option("--history-mode", rb.history_mode,
                        "fresh: a new random history per call; repeat: one history per stream, sent on every call")
      ->capture_default_str()
      ->check(CLI::IsMember({"fresh", "repeat"}));
  bench_rec->add_option("--k", rb.k, "items per answer (1..1000)")->capture_default_str();
  bench_rec->add_option("--model", rb.model, "model name (default: the server's only model)");
  bench_rec->add_option("--version", rb.version, "version (0: the newest)")->check(CLI::NonNegativeNumber);
  bench_rec->add_flag("--include-seen", rb.include_seen, "also return items of the history");
  bench_rec->add_option("--filter", rb.filters, "Recommend filters (with --user), as in recommend --filter");
  bench_rec->add_option("--seed", rb.seed, "seed of the drawn histories")->capture_default_str();
  add_load_options(bench_rec, rb);
  bench_rec->get_option("--concurrency")->capture_default_str();

  // A later global option wins over an earlier one (scripts append to a base command).
  for (const char* name : {"--addr", "--token", "--token-file", "--tls-ca", "--tls-cert", "--tls-key",
                           "--tls-server-name", "--timeout-ms", "--output"})
    app.get_option(name)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  CLI11_PARSE(app, argc, argv);
  try {
    Connection conn(g);
    if (*health) return run_health(conn, health_service);
    if (*forecast) return run_forecast(conn, fa);
    if (*models) return run_models(conn);
    if (*model) return run_model(conn, model_name, model_version);
    if (*recommend) return run_recommend(conn, ra);
    if (*bench_fc) {
      ba.rows_given = bench_fc->count("--rows") > 0;
      return run_bench_forecast(conn, ba);
    }
    if (*bench_rec) return run_bench_recommend(conn, rb);
  } catch (const LocalError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitLocalError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return kExitLocalError;
  }
  return 0;
}
