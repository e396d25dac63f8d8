// mamba-forecast: train, evaluate, serve and batch-run the Mamba forecasters.
//
//   mamba-forecast train    --data FILE.csv --protocol ett-hour --seq-len 96 --horizon 96 --out MODEL_DIR
//   mamba-forecast evaluate --model MODEL_DIR --data FILE.csv --split test
//   mamba-forecast serve    --model-root ROOT --port 50051      (ROOT/<name>/<version>/ = MODEL_DIRs)
//   mamba-forecast batch    --model MODEL_DIR --in DIR|FILE.csv --out DIR
//
// `train` fits the z-score scaler on the training rows, fits the closed-form linear
// baseline, trains the Mamba forecaster from it (validation each epoch, early stopping,
// the best epoch kept), prints validation and test MSE/MAE next to the baselines and
// writes MODEL_DIR (model_dir.h). `evaluate` applies a model directory to a CSV under the
// model's protocol; its last line is "MSE <x> MAE <y>" (z-scored values, every variable,
// stride-1 windows: the published forecasters' protocol). `serve` runs the gRPC service
// (grpc_service.h). `batch` forecasts every CSV of a folder from its last seq_len rows into
// DIR/<name>.forecast.csv (written atomically; files already done are skipped, so a
// killed run resumes where it stopped), with a progress line per file.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>

#include "mamba/forecasting/baselines.h"
#include "mamba/forecasting/fit.h"
#include "mamba/forecasting/model_dir.h"
#include "mamba/forecasting/protocol.h"
#include "mamba/forecasting/series_csv.h"
#include "grpc_service.h"
#include "mamba/kernels/parallel.h"
#include "mamba/serve/options.h"

using namespace mamba::forecasting;
using mamba::Tensor;

namespace {

struct TrainArgs {
  std::string data, protocol = "ett-hour", out, arch = "s_mamba", log, checkpoint_dir, loss = "mae";
  int64_t seq_len = 96, horizon = 96, epochs = 10, batch = 32, d_model = 128, d_ff = 0, layers = 2, d_state = 16;
  int64_t patience = 3, max_windows = 0, ensemble = 3;
  double lr = 3e-4, dropout = 0.1, weight_decay = 0.0;
  uint64_t seed = 1;
  bool time_features = false, resume = false, quiet = false, freeze_linear = false;
};

// The columns of `series` in the order of `names`; throws naming a missing column.
Tensor select_columns(const MultiSeries& series, const std::vector<std::string>& names) {
  const int64_t T = series.num_steps(), V = static_cast<int64_t>(names.size());
  Tensor out = Tensor::empty({T, V});
  const Tensor in = series.values.contiguous();
  for (int64_t v = 0; v < V; ++v) {
    int64_t src = -1;
    for (size_t j = 0; j < series.names.size(); ++j)
      if (series.names[j] == names[v]) src = static_cast<int64_t>(j);
    if (src < 0) mamba::fail("mamba-forecast", "the data has no column '" + names[v] + "' that the model was trained on");
    for (int64_t t = 0; t < T; ++t) out.data<float>()[t * V + v] = in.data<float>()[t * series.num_variables() + src];
  }
  return out;
}

void print_errors(const char* what, const ForecastErrors& val, const ForecastErrors& test) {
  std::printf("  %-28s val MSE %.4f MAE %.4f   test MSE %.4f MAE %.4f\n", what, val.mse, val.mae, test.mse, test.mae);
}

Tensor series_time_features(const MultiSeries& s, int64_t& interval) {
  const TimeIndex idx = parse_time_index(s.timestamps);
  interval = idx.interval_seconds;
  return time_features(idx.epoch_seconds, idx.interval_seconds);
}

int run_train(const TrainArgs& a) {
  const MultiSeries series = read_series_csv(a.data);
  const SplitProtocol protocol = parse_split_protocol(a.protocol);
  const Splits splits = make_splits(protocol, series.num_steps(), a.seq_len, a.horizon);
  const StandardScaler scaler = StandardScaler::fit(series.values, splits.train, series.names);
  const Tensor z = scaler.transform(series.values);
  const WindowDataset train(z, splits.train, a.seq_len, a.horizon), val(z, splits.val, a.seq_len, a.horizon),
      test(z, splits.test, a.seq_len, a.horizon);
  std::printf("data %s: %lld rows x %lld variables; %s: %lld train / %lld val / %lld test windows\n", a.data.c_str(),
              static_cast<long long>(series.num_steps()), static_cast<long long>(series.num_variables()),
              a.protocol.c_str(), static_cast<long long>(train.size()), static_cast<long long>(val.size()),
              static_cast<long long>(test.size()));

  int64_t interval = 0;
  Tensor tf;
  try {
    tf = series_time_features(series, interval);
  } catch (const mamba::Error& e) {
    if (a.time_features) throw;
    interval = 0;  // unparseable timestamps: forecasts are not labelled
  }
  if (!a.time_features) tf = Tensor();

  // The baselines every report shows.
  std::printf("baselines:\n");
  const LinearForecaster linear = LinearForecaster::fit(z, splits.train, a.seq_len, a.horizon, {InstanceNorm::mean, 1e-6});
  const ForecastErrors lin_val = evaluate(linear, val), lin_test = evaluate(linear, test);
  print_errors(linear.name().c_str(), lin_val, lin_test);
  const int64_t period = std::min<int64_t>(a.seq_len, interval > 0 && interval < 86400 && 86400 % interval == 0 ? 86400 / interval : 24);
  const SeasonalNaiveForecaster naive(period, a.seq_len, a.horizon);
  const ForecastErrors nv_val = evaluate(naive, val), nv_test = evaluate(naive, test);
  print_errors(naive.name().c_str(), nv_val, nv_test);

  ForecasterConfig cfg;
  cfg.arch = a.arch;
  cfg.seq_len = a.seq_len;
  cfg.horizon = a.horizon;
  cfg.n_vars = series.num_variables();
  cfg.n_time_features = tf.defined() ? tf.size(1) : 0;
  cfg.d_model = a.d_model;
  cfg.d_ff = a.d_ff > 0 ? a.d_ff : a.d_model;
  cfg.n_layers = a.layers;
  cfg.d_state = a.d_state;
  cfg.dropout = a.dropout;
  FitOptions fo;
  fo.max_epochs = a.epochs;
  fo.batch_size = a.batch;
  fo.lr = a.lr;
  fo.weight_decay = a.weight_decay;
  fo.patience = a.patience;
  fo.loss = a.loss;
  fo.log_path = a.log;
  fo.quiet = a.quiet;
  fo.max_train_windows = a.max_windows;
  fo.freeze_linear = a.freeze_linear;
  fo.resume = a.resume;

  // Members of the ensemble: seeds seed, seed + 1, ...; each with its own checkpoints
  // (member-<k>/ under --checkpoint-dir) and log (<log>.member-<k> for k > 0).
  std::vector<std::shared_ptr<MambaForecaster>> members;
  nlohmann::json member_metrics = nlohmann::json::array();
  double train_seconds = 0;
  int64_t steps = 0;
  for (int64_t k = 0; k < a.ensemble; ++k) {
    auto net = std::make_shared<MambaForecaster>(cfg, a.seed + static_cast<uint64_t>(k));
    init_from_linear(*net, linear);
    FitOptions mo = fo;
    mo.seed = a.seed + static_cast<uint64_t>(k);
    if (!a.checkpoint_dir.empty()) mo.checkpoint_dir = a.checkpoint_dir + "/member-" + std::to_string(k);
    if (!a.log.empty() && k > 0) mo.log_path = a.log + ".member-" + std::to_string(k);
    std::printf("training %s member %lld/%lld: %lld parameters, up to %lld epochs of %lld windows\n", net->name().c_str(),
                static_cast<long long>(k + 1), static_cast<long long>(a.ensemble),
                static_cast<long long>(net->store().count()), static_cast<long long>(a.epochs),
                static_cast<long long>(a.max_windows > 0 ? std::min(a.max_windows, train.size()) : train.size()));
    std::fflush(stdout);
    const FitResult r = fit(*net, window_source(train, tf), window_source(val, tf), mo);
    const EvalMetrics kv = evaluate(*net, window_source(val, tf)), kt = evaluate(*net, window_source(test, tf));
    std::printf("  trained: %lld steps in %.1f s (%.0f samples/s), best epoch %lld%s\n", static_cast<long long>(r.steps),
                r.seconds, r.samples_per_s, static_cast<long long>(r.best_epoch), r.stopped_early ? " (early stop)" : "");
    print_errors(("member " + std::to_string(k + 1)).c_str(), {kv.mse, kv.mae, 0}, {kt.mse, kt.mae, 0});
    member_metrics.push_back({{"seed", mo.seed}, {"best_epoch", r.best_epoch}, {"steps", r.steps},
                              {"val", {{"mse", kv.mse}, {"mae", kv.mae}}}, {"test", {{"mse", kt.mse}, {"mae", kt.mae}}}});
    train_seconds += r.seconds;
    steps += r.steps;
    members.push_back(std::move(net));
  }
  auto net = std::make_shared<MambaEnsemble>(std::move(members));
  const EvalMetrics mv = evaluate(*net, window_source(val, tf)), mt = evaluate(*net, window_source(test, tf));
  std::printf("trained %s in %.1f s\n", net->name().c_str(), train_seconds);
  print_errors(net->name().c_str(), {mv.mse, mv.mae, 0}, {mt.mse, mt.mae, 0});

  ForecastModel m;
  m.net = net;
  m.scaler = scaler;
  m.variables = series.names;
  m.protocol = a.protocol;
  m.interval_seconds = interval;
  m.config = {{"trained_on", std::filesystem::path(a.data).filename().string()},
              {"created", static_cast<int64_t>(std::time(nullptr))}};
  auto err = [](double mse, double mae) { return nlohmann::json{{"mse", mse}, {"mae", mae}}; };
  m.metrics = {{"val", err(mv.mse, mv.mae)},
               {"test", err(mt.mse, mt.mae)},
               {"baselines",
                {{linear.name(), {{"val", err(lin_val.mse, lin_val.mae)}, {"test", err(lin_test.mse, lin_test.mae)}}},
                 {naive.name(), {{"val", err(nv_val.mse, nv_val.mae)}, {"test", err(nv_test.mse, nv_test.mae)}}}}},
               {"members", member_metrics},
               {"steps", steps},
               {"train_seconds", train_seconds}};
  m.residual_levels = default_quantile_levels();
  m.residual_quantiles = residual_quantiles(*net, window_source(val, tf), m.residual_levels);
  m.save(a.out);
  std::printf("model written to %s\n", a.out.c_str());
  std::printf("MSE %.6f MAE %.6f\n", mt.mse, mt.mae);
  return 0;
}

int run_evaluate(const std::string& model_dir, const std::string& data, const std::string& split_name,
                 std::string protocol_name) {
  const ForecastModel m = ForecastModel::load(model_dir);
  const ForecasterConfig& c = m.net_config();
  const MultiSeries series = read_series_csv(data);
  if (protocol_name.empty()) protocol_name = m.protocol;
  const Splits splits = make_splits(parse_split_protocol(protocol_name), series.num_steps(), c.seq_len, c.horizon);
  const RowRange rows = split_name == "train" ? splits.train : split_name == "val" ? splits.val : splits.test;
  const Tensor z = m.scaler.transform(select_columns(series, m.variables));
  const WindowDataset ds(z, rows, c.seq_len, c.horizon);
  Tensor tf;
  if (c.n_time_features > 0) {
    int64_t interval = 0;
    tf = series_time_features(series, interval);
  }
  const EvalMetrics e = evaluate(*m.net, window_source(ds, tf));
  std::printf("%s on %s, %s split (%s): %lld windows\n", model_dir.c_str(), data.c_str(), split_name.c_str(),
              protocol_name.c_str(), static_cast<long long>(e.windows));
  std::printf("MSE %.6f MAE %.6f\n", e.mse, e.mae);
  return 0;
}

struct BatchArgs {
  std::string model, in, out;
  int64_t horizon = 0;
  std::vector<double> quantiles;
};

// Forecasts one CSV file: the model's columns, the last seq_len rows.
MultiSeries forecast_file(const ForecastModel& m, const std::string& path, const BatchArgs& a) {
  const ForecasterConfig& c = m.net_config();
  const MultiSeries s = read_series_csv(path);
  if (s.num_steps() < c.seq_len)
    mamba::fail("mamba-forecast batch", "'" + path + "' has " + std::to_string(s.num_steps()) +
                                            " rows, the model needs at least seq_len = " + std::to_string(c.seq_len));
  const int64_t H = a.horizon > 0 ? std::min(a.horizon, c.horizon) : c.horizon;
  const Tensor cols = select_columns(s, m.variables);
  Tensor marks;
  if (c.n_time_features > 0) {
    const TimeIndex idx = parse_time_index(s.timestamps);
    marks = window_time_features(idx.epoch_seconds, idx.interval_seconds, s.num_steps() - c.seq_len, c.seq_len);
  }
  const Tensor y =
      m.forecast_raw(cols.slice(0, s.num_steps() - c.seq_len, s.num_steps()).contiguous(), marks).contiguous();
  const int64_t V = c.n_vars;
  MultiSeries out;
  out.time_column = s.time_column;
  try {
    out.timestamps = future_timestamps(parse_time_index(s.timestamps), H);
  } catch (const mamba::Error&) {
    for (int64_t h = 1; h <= H; ++h) out.timestamps.push_back("+" + std::to_string(h));
  }
  std::vector<Tensor> offsets;
  for (double q : a.quantiles) offsets.push_back(m.quantile_offset(q));
  const int64_t W = V * (1 + static_cast<int64_t>(a.quantiles.size()));
  out.values = Tensor::empty({H, W});
  for (int64_t v = 0; v < V; ++v) {
    out.names.push_back(m.variables[v]);
    for (double q : a.quantiles) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "_q%g", q);
      out.names.push_back(m.variables[v] + buf);
    }
  }
  for (int64_t h = 0; h < H; ++h)
    for (int64_t v = 0; v < V; ++v) {
      float* row = out.values.data<float>() + h * W + v * (1 + static_cast<int64_t>(a.quantiles.size()));
      row[0] = y.data<float>()[h * V + v];
      for (size_t k = 0; k < offsets.size(); ++k) row[1 + k] = row[0] + offsets[k].data<float>()[h * V + v];
    }
  return out;
}

int run_batch(const BatchArgs& a) {
  namespace fs = std::filesystem;
  const ForecastModel m = ForecastModel::load(a.model);
  std::vector<fs::path> inputs;
  if (fs::is_directory(a.in)) {
    for (const auto& e : fs::directory_iterator(a.in))
      if (e.is_regular_file() && e.path().extension() == ".csv") inputs.push_back(e.path());
    std::sort(inputs.begin(), inputs.end());
  } else if (fs::is_regular_file(a.in)) {
    inputs.push_back(a.in);
  } else {
    mamba::fail("mamba-forecast batch", "--in '" + a.in + "' is neither a file nor a directory");
  }
  fs::create_directories(a.out);
  int64_t done = 0, skipped = 0, failed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const fs::path target = fs::path(a.out) / (inputs[i].stem().string() + ".forecast.csv");
    const char* what = "ok";
    std::string detail;
    if (fs::exists(target)) {
      ++skipped;
      what = "done before";
    } else {
      try {
        write_series_csv(target.string(), forecast_file(m, inputs[i].string(), a));
        ++done;
      } catch (const std::exception& e) {
        ++failed;
        what = "FAILED";
        detail = std::string(": ") + e.what();
      }
    }
    std::fprintf(stderr, "[%zu/%zu] %s: %s%s\n", i + 1, inputs.size(), inputs[i].filename().c_str(), what, detail.c_str());
  }
  std::printf("batch: %lld forecast, %lld already done, %lld failed (of %zu files) -> %s\n", static_cast<long long>(done),
              static_cast<long long>(skipped), static_cast<long long>(failed), inputs.size(), a.out.c_str());
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A server shares its cores between gRPC threads and OpenMP kernels: OpenMP's default
  // busy-waiting between parallel regions starves the gRPC threads (measured: p99 latency
  // 860 ms vs 49 ms at 64 streams on 2 cores). Passive waiting unless the user chose.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "serve") ::setenv("OMP_WAIT_POLICY", "passive", /*overwrite*/ 0);
  CLI::App app{"Mamba forecasters: train, evaluate, serve, batch"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "OpenMP threads (0: OMP_NUM_THREADS or all cores)");

  TrainArgs ta;
  CLI::App* train = app.add_subcommand("train", "train a forecaster on a CSV and write a model directory");
  train->add_option("--data", ta.data, "CSV: a date column plus numeric columns")->required();
  train->add_option("--protocol", ta.protocol, "ett-hour | ett-minute | ratio")
      ->check(CLI::IsMember({"ett-hour", "ett-minute", "ratio"}));
  train->add_option("--seq-len", ta.seq_len, "look-back window")->check(CLI::Range(2, 100000));
  train->add_option("--horizon", ta.horizon, "forecast horizon")->check(CLI::Range(1, 100000));
  train->add_option("--out", ta.out, "model directory to write")->required();
  train->add_option("--arch", ta.arch, "s_mamba | multiscale")->check(CLI::IsMember({"s_mamba", "multiscale"}));
  train->add_option("--epochs", ta.epochs, "maximum epochs")->check(CLI::PositiveNumber);
  train->add_option("--batch", ta.batch, "batch size")->check(CLI::PositiveNumber);
  train->add_option("--lr", ta.lr, "peak learning rate (AdamW, warm-up + cosine)");
  train->add_option("--weight-decay", ta.weight_decay, "AdamW decoupled weight decay");
  train->add_option("--dropout", ta.dropout, "dropout");
  train->add_option("--loss", ta.loss, "training loss: mae | mse")->check(CLI::IsMember({"mae", "mse"}));
  train->add_option("--d-model", ta.d_model, "token width")->check(CLI::PositiveNumber);
  train->add_option("--d-ff", ta.d_ff, "feed-forward width (0: d-model)");
  train->add_option("--layers", ta.layers, "encoder layers")->check(CLI::NonNegativeNumber);
  train->add_option("--d-state", ta.d_state, "SSM state size")->check(CLI::PositiveNumber);
  train->add_option("--ensemble", ta.ensemble, "members trained from seeds seed, seed+1, ... (forecast = their mean)")
      ->check(CLI::Range(1, 64));
  train->add_option("--patience", ta.patience, "early stopping: epochs without a better validation MSE (0: off)");
  train->add_option("--max-windows", ta.max_windows, "train on a seeded subset of windows per epoch (0: all)");
  train->add_option("--seed", ta.seed, "seed (initialisation, shuffling, dropout)");
  train->add_flag("--freeze-linear", ta.freeze_linear, "keep the closed-form linear path fixed");
  train->add_flag("--time-features", ta.time_features, "add time-of-day/week/year tokens (s_mamba)");
  train->add_option("--checkpoint-dir", ta.checkpoint_dir, "checkpoints every epoch (resumable)");
  train->add_flag("--resume", ta.resume, "continue from --checkpoint-dir's latest checkpoint");
  train->add_option("--log", ta.log, "JSON-lines training log");
  train->add_flag("--quiet", ta.quiet, "no progress lines");

  std::string model_dir, data, split = "test", protocol;
  CLI::App* eval = app.add_subcommand("evaluate", "MSE/MAE of a model directory on a CSV split");
  eval->add_option("--model", model_dir, "model directory")->required();
  eval->add_option("--data", data, "CSV with the model's columns")->required();
  eval->add_option("--split", split, "train | val | test")->check(CLI::IsMember({"train", "val", "test"}));
  eval->add_option("--protocol", protocol, "override the model's split protocol");

  mamba::serve::ServerOptions server_opts;
  ServiceLimits limits;
  CLI::App* serve = app.add_subcommand("serve", "run the gRPC forecasting service over a model repository");
  mamba::serve::add_server_flags(*serve, server_opts);
  serve->add_option("--max-series-length", limits.max_series_length, "values per variable in a request")
      ->envname("MAMBA_MAX_SERIES_LENGTH")
      ->check(CLI::PositiveNumber);
  serve->add_option("--max-stream-series", limits.max_stream_series, "series per ForecastStream call")
      ->envname("MAMBA_MAX_STREAM_SERIES")
      ->check(CLI::PositiveNumber);

  BatchArgs ba;
  CLI::App* batch = app.add_subcommand("batch", "forecast every CSV of a folder (resumable)");
  batch->add_option("--model", ba.model, "model directory")->required();
  batch->add_option("--in", ba.in, "a CSV file or a folder of them")->required();
  batch->add_option("--out", ba.out, "output folder (<name>.forecast.csv)")->required();
  batch->add_option("--horizon", ba.horizon, "steps (0: the model's horizon)")->check(CLI::NonNegativeNumber);
  batch->add_option("--quantiles", ba.quantiles, "quantile levels in (0, 1), e.g. 0.1,0.9")
      ->delimiter(',')
      ->check(CLI::Range(1e-6, 1 - 1e-6));

  CLI11_PARSE(app, argc, argv);
  if (threads > 0) mamba::kernels::set_num_threads(threads);
  try {
    if (*train) {
      if (ta.resume && ta.checkpoint_dir.empty()) throw mamba::Error("--resume needs --checkpoint-dir");
      return run_train(ta);
    }
    if (*eval) return run_evaluate(model_dir, data, split, protocol);
    if (*serve) return run_server(server_opts, limits);
    if (*batch) return run_batch(ba);
  } catch (const MissingValuesError& e) {
    std::fprintf(stderr, "mamba-forecast: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-forecast: %s\n", e.what());
    return 1;
  }
  return 0;
}
