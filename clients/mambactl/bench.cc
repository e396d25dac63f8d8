// mambactl bench forecast | recommend: closed-loop load on ForecastingService/Forecast or
// RecommendationService/RecommendFromHistory (Recommend with --user).
//
// For each concurrency level N: N threads (streams), each doing blocking calls in a loop
// (forecast: the same request, built once from the CSV's last rows; recommend: see
// RecBenchArgs in client.h) on --channels shared channels
// (0: a channel per thread). After --warmup-s, windows of --window-s are measured; a
// request belongs to the window in which it completed. The level ends when at least
// --duration-s has been measured and the last three windows agree on throughput
// ((max - min) <= 10% of max), or after --max-windows windows (then the table says it is
// not stable). Throughput counts successful requests; latencies (steady_clock, per call)
// of the successful requests give the percentiles (nearest rank after sorting); failed
// requests are counted per status code. The threads stop when the level ends; a call in
// flight then finishes within --timeout-ms (its deadline) and is not counted.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "client.h"

namespace fc = mamba::forecasting::v1;
namespace rv = mamba::recommendation::v1;
using Clock = std::chrono::steady_clock;

namespace mambactl {

namespace {

struct Record {
  int64_t end_ns;      // completion, from the start of the level
  int64_t latency_ns;
  int code;
};

struct LevelResult {
  int concurrency = 0;
  int windows = 0;
  bool stable = false;
  double spread = 0;  // (max - min) / max of the last three windows' throughput
  double measured_s = 0;
  int64_t requests = 0, ok = 0;
  double throughput = 0;  // successful requests / s
  double p50 = NAN, p90 = NAN, p95 = NAN, p99 = NAN;
  std::map<int, int64_t> errors;
};

double percentile_ms(const std::vector<int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return NAN;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
  rank = std::clamp<size_t>(rank, 1, sorted_ns.size());
  return static_cast<double>(sorted_ns[rank - 1]) / 1e6;
}

double spread_of_last3(const std::vector<double>& tput) {
  if (tput.size() < 3) return INFINITY;
  const auto b = tput.end() - 3;
  const double hi = *std::max_element(b, tput.end()), lo = *std::min_element(b, tput.end());
  return hi > 0 ? (hi - lo) / hi : 0.0;
}

std::string errors_text(const std::map<int, int64_t>& errors) {
  if (errors.empty()) return "-";
  std::string s;
  for (const auto& [code, n] : errors) {
    if (!s.empty()) s += ' ';
    s += status_code_name(code);
    s += ':';
    s += std::to_string(n);
  }
  return s;
}

// One stream: makes one blocking call on a prepared context. What it sends and where the
// response goes (its stub, request, response) live in the closure, one per stream.
using StreamCall = std::function<grpc::Status(grpc::ClientContext&)>;
// Builds stream `index`'s call on `channel` (on the stream's own thread).
using StreamFactory = std::function<StreamCall(int index, const std::shared_ptr<grpc::Channel>& channel)>;

LevelResult run_level(Connection& conn, const StreamFactory& make_stream, const LoadArgs& a, int n) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  if (a.channels == 1) {
    channels.push_back(conn.channel());
  } else {
    const int k = a.channels == 0 ? n : std::min(a.channels, n);
    for (int i = 0; i < k; ++i) channels.push_back(conn.new_channel(i));
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok_count{0};
  std::vector<std::vector<Record>> records(static_cast<size_t>(n));
  const Clock::time_point t0 = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      StreamCall call = make_stream(i, channels[static_cast<size_t>(i) % channels.size()]);
      auto& mine = records[static_cast<size_t>(i)];
      mine.reserve(4096);
      while (!stop.load(std::memory_order_relaxed)) {
        grpc::ClientContext ctx;
        conn.prepare(ctx);
        const Clock::time_point s = Clock::now();
        const grpc::Status st = call(ctx);
        const Clock::time_point e = Clock::now();
        if (st.ok()) ok_count.fetch_add(1, std::memory_order_relaxed);
        mine.push_back({std::chrono::duration_cast<std::chrono::nanoseconds>(e - t0).count(),
                        std::chrono::duration_cast<std::chrono::nanoseconds>(e - s).count(),
                        static_cast<int>(st.error_code())});
        // A failing server answers at once: do not spin a core on it.
        if (!st.ok() && st.error_code() == grpc::StatusCode::UNAVAILABLE)
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }

  LevelResult r;
  r.concurrency = n;
  const auto window = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.window_s));
  const Clock::time_point m0 = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(a.warmup_s));
  std::this_thread::sleep_until(m0);
  int64_t last = ok_count.load();
  std::vector<double> tput;
  Clock::time_point m1 = m0;
  for (int w = 1; w <= a.max_windows; ++w) {
    m1 = m0 + w * window;
    std::this_thread::sleep_until(m1);
    const int64_t now = ok_count.load();
    tput.push_back(static_cast<double>(now - last) / a.window_s);
    last = now;
    if (!a.quiet)
      std::fprintf(stderr, "  concurrency %d window %d: %.1f req/s\n", n, w, tput.back());
    const bool long_enough = w * a.window_s >= a.duration_s - 1e-9;
    if (long_enough && spread_of_last3(tput) <= 0.10) {
      r.stable = true;
      break;
    }
  }
  stop.store(true);
  for (auto& t : threads) t.join();

  r.windows = static_cast<int>(tput.size());
  r.spread = spread_of_last3(tput);
  r.measured_s = std::chrono::duration<double>(m1 - m0).count();
  const int64_t lo = std::chrono::duration_cast<std::chrono::nanoseconds>(m0 - t0).count();
  const int64_t hi = std::chrono::duration_cast<std::chrono::nanoseconds>(m1 - t0).count();
  std::vector<int64_t> lat;
  for (const auto& mine : records)
    for (const Record& rec : mine) {
      if (rec.end_ns < lo || rec.end_ns >= hi) continue;
      ++r.requests;
      if (rec.code == 0) {
        ++r.ok;
        lat.push_back(rec.latency_ns);
      } else {
        ++r.errors[rec.code];
      }
    }
  std::sort(lat.begin(), lat.end());
  r.throughput = r.measured_s > 0 ? static_cast<double>(r.ok) / r.measured_s : 0;
  r.p50 = percentile_ms(lat, 0.50);
  r.p90 = percentile_ms(lat, 0.90);
  r.p95 = percentile_ms(lat, 0.95);
  r.p99 = percentile_ms(lat, 0.99);
  return r;
}

// The model's seq_len from GetModel's config.json ("model": {"seq_len": N}); 0 if unknown.
grpc::Status model_seq_len(Connection& conn, const SeriesArgs& s, int64_t& seq_len) {
  auto stub = fc::ForecastingService::NewStub(conn.channel());
  grpc::ClientContext ctx;
  conn.prepare(ctx);
  fc::GetModelRequest req;
  req.mutable_model()->set_name(s.model);
  req.mutable_model()->set_version(s.version);
  mamba::common::v1::ModelInfo info;
  const grpc::Status st = stub->GetModel(&ctx, req, &info);
  if (!st.ok()) return st;
  seq_len = 0;
  const auto c = nlohmann::json::parse(info.config_json(), nullptr, false);
  if (c.is_object() && c.contains("model") && c["model"].is_object() && c["model"].contains("seq_len") &&
      c["model"]["seq_len"].is_number_integer())
    seq_len = c["model"]["seq_len"].get<int64_t>();
  return grpc::Status::OK;
}

// The table of the levels, then one line per level.
void print_levels(Connection& conn, const std::vector<LevelResult>& results) {
  Table t;
  t.columns = {{"concurrency"}, {"windows"}, {"stable"}, {"requests"}, {"throughput_rps", 1},
               {"p50_ms", 2},   {"p90_ms", 2},  {"p95_ms", 2},  {"p99_ms", 2},   {"errors"}};
  for (const auto& r : results)
    t.rows.push_back({r.concurrency, r.windows, r.stable ? "yes" : "no", r.requests, r.throughput, r.p50, r.p90,
                      r.p95, r.p99, errors_text(r.errors)});
  const OutputFormat format = conn.options().format();
  t.print(format);

  // One line per level: on stdout under a table, on stderr when stdout is CSV/JSON.
  std::FILE* out = format == OutputFormat::table ? stdout : stderr;
  for (const auto& r : results) {
    int64_t failed = 0;
    for (const auto& [code, count] : r.errors) failed += count;
    char stab[160];
    if (r.stable)
      std::snprintf(stab, sizeof stab, "stable after %d windows (last three within %.1f%%)", r.windows, 100 * r.spread);
    else if (r.windows < 3)
      std::snprintf(stab, sizeof stab, "NOT stable: max-windows %d reached before three windows", r.windows);
    else
      std::snprintf(stab, sizeof stab, "NOT stable: max-windows %d reached (last three differ by %.1f%%)", r.windows,
                    100 * r.spread);
    std::fprintf(out, "concurrency %d: %.1f req/s over %.1f s, p50 %.2f ms, p99 %.2f ms, %lld errors; %s\n",
                 r.concurrency, r.throughput, r.measured_s, r.p50, r.p99, static_cast<long long>(failed), stab);
  }
}

}  // namespace

int run_bench_forecast(Connection& conn, BenchArgs a) {
  if (grpc::Status st = resolve_model_name(conn, a.series.model); !st.ok()) return report_status(st);
  if (!a.rows_given) {
    int64_t seq_len = 0;
    if (grpc::Status st = model_seq_len(conn, a.series, seq_len); !st.ok()) return report_status(st);
    a.series.rows = seq_len;  // 0: the whole CSV
  }
  const fc::ForecastRequest req = build_forecast_request(a.series);

  // One call first: the channel is connected and a request that cannot succeed stops here.
  {
    auto stub = fc::ForecastingService::NewStub(conn.channel());
    grpc::ClientContext ctx;
    conn.prepare(ctx);
    fc::ForecastResponse resp;
    const grpc::Status st = stub->Forecast(&ctx, req, &resp);
    if (!st.ok()) return report_status(st, &ctx);
    const int64_t H = resp.variables_size() ? resp.variables(0).mean_size() : 0;
    std::fprintf(stderr, "bench forecast: %s, model %s version %lld, %d rows x %d variables, horizon %lld\n",
                 conn.options().addr.c_str(), resp.model_name().c_str(), static_cast<long long>(resp.model_version()),
                 req.series().timestamps_size(), req.series().variables_size(), static_cast<long long>(H));
  }

  const StreamFactory make_stream = [&](int, const std::shared_ptr<grpc::Channel>& channel) -> StreamCall {
    auto stub = std::shared_ptr<fc::ForecastingService::Stub>(fc::ForecastingService::NewStub(channel));
    auto resp = std::make_shared<fc::ForecastResponse>();
    return [stub, resp, &req](grpc::ClientContext& ctx) { return stub->Forecast(&ctx, req, resp.get()); };
  };
  std::vector<LevelResult> results;
  for (int n : a.concurrency) results.push_back(run_level(conn, make_stream, a, n));
  print_levels(conn, results);
  return 0;
}

namespace {

// The model's whole catalogue, page by page (ListItems).
grpc::Status model_catalogue(Connection& conn, const RecBenchArgs& a, std::vector<std::string>& items) {
  auto stub = rv::RecommendationService::NewStub(conn.channel());
  items.clear();
  for (int64_t total = 1; static_cast<int64_t>(items.size()) < total;) {
    grpc::ClientContext ctx;
    conn.prepare(ctx);
    rv::ListItemsRequest req;
    req.mutable_model()->set_name(a.model);
    req.mutable_model()->set_version(a.version);
    req.set_offset(static_cast<int64_t>(items.size()));
    req.set_limit(100000);
    rv::ListItemsResponse resp;
    const grpc::Status st = stub->ListItems(&ctx, req, &resp);
    if (!st.ok()) return st;
    total = resp.total();
    if (resp.item_ids_size() == 0) break;
    for (const auto& id : resp.item_ids()) items.push_back(id);
  }
  return grpc::Status::OK;
}

// One stream of `bench recommend`: its stub, its request (rebuilt per call in fresh mode)
// and its response.
struct RecStream {
  std::unique_ptr<rv::RecommendationService::Stub> stub;
  rv::RecommendRequest by_user;
  rv::RecommendFromHistoryRequest by_history;
  rv::RecommendResponse resp;
  std::mt19937_64 rng;
  bool fresh = false;
};

void draw_history(RecStream& s, const std::vector<std::string>& items, int64_t len) {
  std::uniform_int_distribution<size_t> pick(0, items.size() - 1);
  auto* h = s.by_history.mutable_items();
  if (h->size() != len) {
    h->Clear();
    for (int64_t i = 0; i < len; ++i) h->Add();
  }
  for (auto& item : *h) item = items[pick(s.rng)];
}

}  // namespace

int run_bench_recommend(Connection& conn, RecBenchArgs a) {
  const bool by_user = !a.users.empty();
  if (a.history_mode != "fresh" && a.history_mode != "repeat")
    throw LocalError("--history-mode: '" + a.history_mode + "' is neither fresh nor repeat");
  if (!by_user && a.history_len < 1) throw LocalError("--history-len: must be at least 1");
  std::vector<std::string> items = a.items;
  if (!by_user && items.empty()) {
    if (grpc::Status st = model_catalogue(conn, a, items); !st.ok()) return report_status(st);
    if (items.empty()) throw LocalError("the model's catalogue is empty: pass --items");
  }
  auto make = [&](int index, const std::shared_ptr<grpc::Channel>& channel) {
    auto s = std::make_shared<RecStream>();
    s->stub = rv::RecommendationService::NewStub(channel);
    s->rng.seed(a.seed * 1000003ull + static_cast<uint64_t>(index));
    s->fresh = a.history_mode == "fresh";
    if (by_user) {
      s->by_user.mutable_model()->set_name(a.model);
      s->by_user.mutable_model()->set_version(a.version);
      s->by_user.set_user_id(a.users[static_cast<size_t>(index) % a.users.size()]);
      s->by_user.set_k(a.k);
      s->by_user.set_exclude_seen(!a.include_seen);
      for (const auto& f : a.filters) parse_rec_filter(f, s->by_user.add_filters());
    } else {
      s->by_history.mutable_model()->set_name(a.model);
      s->by_history.mutable_model()->set_version(a.version);
      s->by_history.set_k(a.k);
      s->by_history.set_exclude_seen(!a.include_seen);
      draw_history(*s, items, a.history_len);
    }
    return s;
  };

  // One call first: the channel is connected and a request that cannot succeed stops here.
  {
    auto s = make(0, conn.channel());
    grpc::ClientContext ctx;
    conn.prepare(ctx);
    const grpc::Status st = by_user ? s->stub->Recommend(&ctx, s->by_user, &s->resp)
                                    : s->stub->RecommendFromHistory(&ctx, s->by_history, &s->resp);
    if (!st.ok()) return report_status(st, &ctx);
    if (by_user)
      std::fprintf(stderr, "bench recommend: %s, model %s version %lld, Recommend for %zu user(s) (history of %lld events), k %d\n",
                   conn.options().addr.c_str(), s->resp.model_name().c_str(),
                   static_cast<long long>(s->resp.model_version()), a.users.size(),
                   static_cast<long long>(s->resp.history_length()), a.k);
    else
      std::fprintf(stderr,
                   "bench recommend: %s, model %s version %lld, RecommendFromHistory, %lld-item histories (%s) from %zu "
                   "items (the model sees %lld), k %d\n",
                   conn.options().addr.c_str(), s->resp.model_name().c_str(),
                   static_cast<long long>(s->resp.model_version()), static_cast<long long>(a.history_len),
                   a.history_mode.c_str(), items.size(), static_cast<long long>(s->resp.history_length()), a.k);
  }

  const StreamFactory make_stream = [&](int index, const std::shared_ptr<grpc::Channel>& channel) -> StreamCall {
    std::shared_ptr<RecStream> s = make(index, channel);
    if (by_user)
      return [s](grpc::ClientContext& ctx) { return s->stub->Recommend(&ctx, s->by_user, &s->resp); };
    return [s, &items, len = a.history_len](grpc::ClientContext& ctx) {
      if (s->fresh) draw_history(*s, items, len);
      return s->stub->RecommendFromHistory(&ctx, s->by_history, &s->resp);
    };
  };
  std::vector<LevelResult> results;
  for (int n : a.concurrency) results.push_back(run_level(conn, make_stream, a, n));
  print_levels(conn, results);
  return 0;
}

}  // namespace mambactl
