// mamba-forecast-baselines: the baselines a forecaster must beat, under a standard protocol.
//
//   mamba-forecast-baselines --data ETTh2.csv --protocol ett-hour --seq-len 96 --horizon 96
//
// Reads the series, splits it, fits the z-score scaler on the training rows, fits the
// closed-form linear model with each instance normaliser and the seasonal naive forecast,
// and prints validation and test MSE/MAE (z-scored values, every stride-1 window) per
// baseline. The last line is "MSE <x> MAE <y>": the test errors of the baseline with the
// lowest validation MSE. --save-dir writes that model's preprocess.json and, for a
// linear model, model.safetensors.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "mamba/forecasting/baselines.h"
#include "mamba/forecasting/protocol.h"
#include "mamba/forecasting/series_csv.h"

using namespace mamba::forecasting;

namespace {

// One period of a day for sub-daily data (24 hourly, 96 at 15 minutes), else 7 for daily.
int64_t default_period(const MultiSeries& s, SplitProtocol protocol, int64_t seq_len) {
  int64_t period = protocol == SplitProtocol::ett_minute ? 96 : 24;
  if (protocol == SplitProtocol::ratio) {
    try {
      const TimeIndex idx = parse_time_index(s.timestamps);
      if (idx.interval_seconds < 86400 && 86400 % idx.interval_seconds == 0) period = 86400 / idx.interval_seconds;
      else if (idx.interval_seconds == 86400) period = 7;
    } catch (const mamba::Error&) {
      // timestamps not parseable: keep 24
    }
  }
  return std::min(period, seq_len);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Forecasting baselines (closed-form linear, seasonal naive) under a standard split protocol"};
  std::string data, protocol_name = "ett-hour", save_dir;
  int64_t seq_len = 96, horizon = 96, period = 0;
  double ridge = 1e-6;
  app.add_option("--data", data, "CSV file: a date column plus numeric columns")->required();
  app.add_option("--protocol", protocol_name, "ett-hour | ett-minute | ratio")
      ->check(CLI::IsMember({"ett-hour", "ett-minute", "ratio"}));
  app.add_option("--seq-len", seq_len, "look-back window")->check(CLI::PositiveNumber);
  app.add_option("--horizon", horizon, "forecast horizon")->check(CLI::PositiveNumber);
  app.add_option("--period", period, "seasonal naive period (0: one day of the sampling interval)");
  app.add_option("--ridge", ridge, "ridge lambda relative to the mean diagonal of X^T X");
  app.add_option("--save-dir", save_dir, "write preprocess.json (+ model.safetensors) of the best baseline here");
  CLI11_PARSE(app, argc, argv);

  try {
    const MultiSeries series = read_series_csv(data);
    const SplitProtocol protocol = parse_split_protocol(protocol_name);
    const Splits splits = make_splits(protocol, series.num_steps(), seq_len, horizon);
    const StandardScaler scaler = StandardScaler::fit(series.values, splits.train, series.names);
    const mamba::Tensor z = scaler.transform(series.values);
    const WindowDataset val(z, splits.val, seq_len, horizon), test(z, splits.test, seq_len, horizon);
    std::printf("data %s: %lld rows x %lld variables; protocol %s: train [%lld, %lld) val [%lld, %lld) test [%lld, %lld)\n",
                data.c_str(), static_cast<long long>(series.num_steps()), static_cast<long long>(series.num_variables()),
                protocol_name.c_str(), static_cast<long long>(splits.train.begin), static_cast<long long>(splits.train.end),
                static_cast<long long>(splits.val.begin), static_cast<long long>(splits.val.end),
                static_cast<long long>(splits.test.begin), static_cast<long long>(splits.test.end));
    std::printf("seq_len %lld horizon %lld: %lld validation windows, %lld test windows\n",
                static_cast<long long>(seq_len), static_cast<long long>(horizon), static_cast<long long>(val.size()),
                static_cast<long long>(test.size()));

    std::vector<std::unique_ptr<Forecaster>> models;
    const LinearSelection sel = fit_linear_by_validation(z, splits.train, val, ridge);
    for (const auto& m : sel.models) models.push_back(std::make_unique<LinearForecaster>(m));
    models.push_back(std::make_unique<SeasonalNaiveForecaster>(period > 0 ? period : default_period(series, protocol, seq_len),
                                                               seq_len, horizon));

    std::printf("%-22s %10s %10s %10s %10s\n", "baseline", "val MSE", "val MAE", "test MSE", "test MAE");
    size_t best = 0;
    std::vector<ForecastErrors> val_err, test_err;
    for (size_t i = 0; i < models.size(); ++i) {
      val_err.push_back(i < sel.models.size() ? sel.val_errors[i] : evaluate(*models[i], val));
      test_err.push_back(evaluate(*models[i], test));
      if (val_err[i].mse < val_err[best].mse) best = i;
      std::printf("%-22s %10.4f %10.4f %10.4f %10.4f\n", models[i]->name().c_str(), val_err[i].mse, val_err[i].mae,
                  test_err[i].mse, test_err[i].mae);
    }
    std::printf("best on validation: %s\n", models[best]->name().c_str());
    if (!save_dir.empty()) {
      std::filesystem::create_directories(save_dir);
      scaler.save((std::filesystem::path(save_dir) / "preprocess.json").string());
      if (const auto* lin = dynamic_cast<const LinearForecaster*>(models[best].get()))
        lin->save((std::filesystem::path(save_dir) / "model.safetensors").string());
    }
    std::printf("MSE %.6f MAE %.6f\n", test_err[best].mse, test_err[best].mae);
  } catch (const mamba::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
