#include "mamba/forecasting/model_dir.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <filesystem>

#include "mamba/io/atomic_file.h"
#include "mamba/io/json_config.h"
#include "mamba/io/safetensors.h"

namespace mamba::forecasting {

namespace fs = std::filesystem;

ForecastModel ForecastModel::load(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  const io::JsonConfig cfg = io::JsonConfig::load(cfg_path);
  if (cfg.get_string("format", "") != "mamba-forecast")
    fail("forecast model", "'" + cfg_path + "': field 'format' is not \"mamba-forecast\"");
  ForecastModel m;
  m.config = cfg.json();
  if (!cfg.has("model")) fail("forecast model", "'" + cfg_path + "': missing field 'model'");
  const ForecasterConfig net_cfg = ForecasterConfig::from_json(cfg.json()["model"]);
  m.protocol = cfg.get_string("protocol", "ratio");
  m.interval_seconds = cfg.get_int("interval_seconds", 0);
  if (cfg.has("variables")) m.variables = cfg.json()["variables"].get<std::vector<std::string>>();
  if (static_cast<int64_t>(m.variables.size()) != net_cfg.n_vars)
    fail("forecast model", "'" + cfg_path + "': " + std::to_string(m.variables.size()) + " variables for a model of n_vars " +
                               std::to_string(net_cfg.n_vars));
  m.scaler = StandardScaler::load(dir + "/preprocess.json");
  if (m.scaler.num_variables() != net_cfg.n_vars)
    fail("forecast model", "'" + dir + "/preprocess.json': scaler has " + std::to_string(m.scaler.num_variables()) +
                               " variables, the model " + std::to_string(net_cfg.n_vars));
  const int64_t members = cfg.get_int("members", 1);
  if (members < 1 || members > 64) fail("forecast model", "'" + cfg_path + "': field 'members' must be in 1..64");
  std::vector<std::shared_ptr<MambaForecaster>> nets;
  for (int64_t k = 0; k < members; ++k) {
    auto n = std::make_shared<MambaForecaster>(net_cfg, 0);
    n->load_weights(dir + (k == 0 ? std::string("/model.safetensors") : "/model." + std::to_string(k) + ".safetensors"));
    nets.push_back(std::move(n));
  }
  m.net = std::make_shared<MambaEnsemble>(std::move(nets));
  const std::string metrics_path = dir + "/metrics.json";
  m.metrics = fs::exists(metrics_path) ? io::load_json_file(metrics_path) : nlohmann::json::object();
  const std::string res_path = dir + "/residuals.safetensors";
  if (fs::exists(res_path)) {
    io::SafeTensorsFile f(res_path);
    if (!f.has("levels") || !f.has("quantiles")) fail("forecast model", "'" + res_path + "': needs 'levels' and 'quantiles'");
    const Tensor lv = f.tensor("levels").to(DType::f64).contiguous();
    m.residual_levels.assign(lv.data<double>(), lv.data<double>() + lv.numel());
    m.residual_quantiles = f.tensor("quantiles").to(DType::f32).contiguous().clone();
    const Shape want{lv.numel(), net_cfg.horizon, net_cfg.n_vars};
    if (m.residual_quantiles.shape() != want)
      fail("forecast model", "'" + res_path + "': quantiles " + shape_str(m.residual_quantiles.shape()) + ", expected " +
                                 shape_str(want));
    for (size_t i = 0; i < m.residual_levels.size(); ++i)
      if (!(m.residual_levels[i] > 0 && m.residual_levels[i] < 1) || (i && m.residual_levels[i] <= m.residual_levels[i - 1]))
        fail("forecast model", "'" + res_path + "': levels must increase inside (0, 1)");
  }
  return m;
}

void ForecastModel::save(const std::string& dir) const {
  io::write_directory_atomic(fs::absolute(dir).string(), [&](const std::string& staging_dir) {
    const fs::path staging(staging_dir);
    nlohmann::json c = config;
    c["format"] = "mamba-forecast";
    c["version"] = 1;
    c["model"] = net->config().to_json();
    c["members"] = static_cast<int64_t>(net->members().size());
    c["protocol"] = protocol;
    c["variables"] = variables;
    c["interval_seconds"] = interval_seconds;
    io::write_json_file_atomic((staging / "config.json").string(), c);
    for (size_t k = 0; k < net->members().size(); ++k)
      net->members()[k]->save_weights(
          (staging / (k == 0 ? std::string("model.safetensors") : "model." + std::to_string(k) + ".safetensors")).string());
    scaler.save((staging / "preprocess.json").string());
    io::write_json_file_atomic((staging / "metrics.json").string(), metrics.is_object() ? metrics : nlohmann::json::object());
    if (residual_quantiles.defined()) {
      Tensor lv = Tensor::empty({static_cast<int64_t>(residual_levels.size())}, DType::f64);
      std::copy(residual_levels.begin(), residual_levels.end(), lv.data<double>());
      io::save_safetensors((staging / "residuals.safetensors").string(), {{"levels", lv}, {"quantiles", residual_quantiles}});
    }
  });
}

Tensor ForecastModel::forecast_raw(const Tensor& window, const Tensor& marks) const {
  const bool single = window.dim() == 2;
  const Tensor x = single ? window.unsqueeze(0) : window;
  const Tensor z = scaler.transform(x.to(DType::f32).contiguous());
  const Tensor zm = marks.defined() && marks.dim() == 2 ? marks.unsqueeze(0) : marks;
  const Tensor out = scaler.inverse_transform(net->predict(z, zm));
  return single ? out.squeeze(0) : out;
}

Tensor ForecastModel::quantile_offset(double q) const {
  if (!(q > 0 && q < 1)) fail("forecast model", "quantile " + std::to_string(q) + " is outside (0, 1)");
  if (!residual_quantiles.defined() || residual_levels.empty())
    fail("forecast model", "this model has no residual quantiles (retrain it to get quantile forecasts)");
  const int64_t Q = static_cast<int64_t>(residual_levels.size());
  const int64_t H = residual_quantiles.size(1), V = residual_quantiles.size(2);
  int64_t hi = std::lower_bound(residual_levels.begin(), residual_levels.end(), q) - residual_levels.begin();
  int64_t lo = hi;
  double w = 0;
  if (hi == 0) {
    lo = 0;
  } else if (hi >= Q) {
    lo = hi = Q - 1;
  } else {
    lo = hi - 1;
    w = (q - residual_levels[lo]) / (residual_levels[hi] - residual_levels[lo]);
  }
  Tensor out = Tensor::empty({H, V});
  const float* rq = residual_quantiles.data<float>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t v = 0; v < V; ++v) {
      const double a = rq[(lo * H + h) * V + v], b = rq[(hi * H + h) * V + v];
      out.data<float>()[h * V + v] = static_cast<float>(((1 - w) * a + w * b) * scaler.std()[v]);
    }
  return out;
}

Tensor residual_quantiles(const BatchPredictor& model, const WindowSource& windows, const std::vector<double>& levels) {
  const int64_t N = windows.count;
  if (N < 1) fail("residual_quantiles", "no windows");
  Tensor x, y, marks;
  windows.gather({0}, x, y, marks);
  const int64_t H = y.size(1), V = y.size(2);
  std::vector<float> res(static_cast<size_t>(N * H * V));  // [n][h][v]
  for (int64_t start = 0; start < N; start += 256) {
    std::vector<int64_t> idx(std::min<int64_t>(256, N - start));
    std::iota(idx.begin(), idx.end(), start);
    windows.gather(idx, x, y, marks);
    const auto p = model.predict(x, marks).to_vector_f32();
    const auto t = y.contiguous().to_vector_f32();
    for (size_t i = 0; i < p.size(); ++i) res[start * H * V + i] = t[i] - p[i];
  }
  const int64_t Q = static_cast<int64_t>(levels.size());
  Tensor out = Tensor::empty({Q, H, V});
  std::vector<float> col(static_cast<size_t>(N));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t n = 0; n < N; ++n) col[n] = res[(n * H + h) * V + v];
      std::sort(col.begin(), col.end());
      for (int64_t q = 0; q < Q; ++q) {
        const double pos = levels[q] * static_cast<double>(N - 1);
        const int64_t i = static_cast<int64_t>(std::floor(pos));
        const double f = pos - static_cast<double>(i);
        const double val = col[i] + (i + 1 < N ? f * (col[i + 1] - col[i]) : 0.0);
        out.data<float>()[(q * H + h) * V + v] = static_cast<float>(val);
      }
    }
  return out;
}

std::vector<double> default_quantile_levels() {
  std::vector<double> l;
  for (int i = 1; i <= 99; ++i) l.push_back(i / 100.0);
  return l;
}

}  // namespace mamba::forecasting
