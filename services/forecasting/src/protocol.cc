#include "mamba/forecasting/protocol.h"

#include <cmath>
#include <cstring>

#include "mamba/io/json_config.h"
#include "civil_time.h"

namespace mamba::forecasting {
namespace {

std::string range_str(RowRange r) { return "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")"; }

void check_lengths(const char* op, int64_t seq_len, int64_t horizon) {
  if (seq_len < 1 || horizon < 1)
    fail(op, "seq_len and horizon must be >= 1, got " + std::to_string(seq_len) + " and " + std::to_string(horizon));
}

Tensor as_f32_contiguous(const Tensor& t) { return t.to(DType::f32).contiguous(); }

}  // namespace

SplitProtocol parse_split_protocol(const std::string& name) {
  if (name == "ett-hour") return SplitProtocol::ett_hour;
  if (name == "ett-minute") return SplitProtocol::ett_minute;
  if (name == "ratio") return SplitProtocol::ratio;
  fail("parse_split_protocol", "unknown protocol '" + name + "' (choices: ett-hour, ett-minute, ratio)");
}

const char* split_protocol_name(SplitProtocol p) {
  switch (p) {
    case SplitProtocol::ett_hour: return "ett-hour";
    case SplitProtocol::ett_minute: return "ett-minute";
    case SplitProtocol::ratio: return "ratio";
  }
  return "?";
}

Splits make_splits(SplitProtocol protocol, int64_t num_rows, int64_t seq_len, int64_t horizon) {
  check_lengths("make_splits", seq_len, horizon);
  Splits s;
  if (protocol == SplitProtocol::ett_hour || protocol == SplitProtocol::ett_minute) {
    const int64_t k = protocol == SplitProtocol::ett_hour ? 1 : 4;
    const int64_t train = 12 * 30 * 24 * k, val = 4 * 30 * 24 * k, test = 4 * 30 * 24 * k;
    if (num_rows < train + val + test)
      fail("make_splits", std::string(split_protocol_name(protocol)) + " needs at least " +
                              std::to_string(train + val + test) + " rows, the series has " + std::to_string(num_rows));
    if (seq_len > train)
      fail("make_splits", "seq_len " + std::to_string(seq_len) + " exceeds the training split (" + std::to_string(train) + " rows)");
    s.train = {0, train};
    s.val = {train - seq_len, train + val};
    s.test = {train + val - seq_len, train + val + test};
  } else {
    const int64_t num_train = static_cast<int64_t>(static_cast<double>(num_rows) * 0.7);
    const int64_t num_test = static_cast<int64_t>(static_cast<double>(num_rows) * 0.2);
    const int64_t num_val = num_rows - num_train - num_test;
    s.train = {0, num_train};
    s.val = {num_train - seq_len, num_train + num_val};
    s.test = {num_rows - num_test - seq_len, num_rows};
    if (s.val.begin < 0 || num_train < seq_len + horizon)
      fail("make_splits", "ratio: a series of " + std::to_string(num_rows) + " rows has " + std::to_string(num_train) +
                              " training rows, fewer than seq_len + horizon = " + std::to_string(seq_len + horizon));
  }
  for (const auto& [name, r] : {std::pair{"train", s.train}, {"val", s.val}, {"test", s.test}})
    if (r.size() < seq_len + horizon)
      fail("make_splits", std::string(name) + " split " + range_str(r) + " holds no window of seq_len + horizon = " +
                              std::to_string(seq_len + horizon) + " rows");
  return s;
}

// ---- StandardScaler ----

StandardScaler::StandardScaler(std::vector<double> mean, std::vector<double> std, std::vector<std::string> names)
    : mean_(std::move(mean)), std_(std::move(std)), names_(std::move(names)) {
  if (mean_.size() != std_.size())
    fail("StandardScaler", "mean has " + std::to_string(mean_.size()) + " entries, std " + std::to_string(std_.size()));
  if (!names_.empty() && names_.size() != mean_.size())
    fail("StandardScaler", std::to_string(names_.size()) + " names for " + std::to_string(mean_.size()) + " variables");
  for (size_t j = 0; j < std_.size(); ++j)
    if (!std::isfinite(mean_[j]) || !std::isfinite(std_[j]) || std_[j] <= 0)
      fail("StandardScaler", "variable " + std::to_string(j) + ": mean " + std::to_string(mean_[j]) + ", std " +
                                 std::to_string(std_[j]) + " (std must be finite and > 0)");
}

StandardScaler StandardScaler::fit(const Tensor& values, RowRange rows, std::vector<std::string> names) {
  if (!values.defined() || values.dim() != 2) fail("StandardScaler::fit", "values must be (T, V)");
  const int64_t T = values.size(0), V = values.size(1);
  if (rows.begin < 0 || rows.end > T || rows.size() < 1)
    fail("StandardScaler::fit", "rows " + range_str(rows) + " not a non-empty range of " + std::to_string(T) + " rows");
  const Tensor v = as_f32_contiguous(values);
  const float* p = v.data<float>();
  std::vector<double> mean(V, 0.0), sd(V, 0.0);
  const double n = static_cast<double>(rows.size());
  for (int64_t t = rows.begin; t < rows.end; ++t)
    for (int64_t j = 0; j < V; ++j) {
      const double x = p[t * V + j];
      if (!std::isfinite(x))
        fail("StandardScaler::fit", "non-finite value at row " + std::to_string(t) + ", variable " + std::to_string(j));
      mean[j] += x;
    }
  for (auto& m : mean) m /= n;
  // Two passes: the centred sum of squares is exact enough in double for any series.
  for (int64_t t = rows.begin; t < rows.end; ++t)
    for (int64_t j = 0; j < V; ++j) {
      const double d = p[t * V + j] - mean[j];
      sd[j] += d * d;
    }
  for (auto& s : sd) {
    s = std::sqrt(s / n);
    if (!(s > 0) || !std::isfinite(s)) s = 1.0;
  }
  StandardScaler sc(std::move(mean), std::move(sd), std::move(names));
  sc.fit_rows_ = rows;
  return sc;
}

Tensor StandardScaler::apply(const Tensor& values, bool inverse, const char* op) const {
  const int64_t V = num_variables();
  if (!values.defined() || values.dim() < 1 || values.size(-1) != V)
    fail(op, "values " + (values.defined() ? values.str() : std::string("undefined")) + ": last dim must be " +
                 std::to_string(V));
  const Tensor v = as_f32_contiguous(values);
  Tensor out = Tensor::empty(v.shape(), DType::f32);
  const float* p = v.data<float>();
  float* q = out.data<float>();
  const int64_t rows = V ? v.numel() / V : 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < V; ++j) {
      const double x = p[r * V + j];
      q[r * V + j] = static_cast<float>(inverse ? x * std_[j] + mean_[j] : (x - mean_[j]) / std_[j]);
    }
  return out;
}

Tensor StandardScaler::transform(const Tensor& values) const { return apply(values, false, "StandardScaler::transform"); }

Tensor StandardScaler::inverse_transform(const Tensor& values) const {
  return apply(values, true, "StandardScaler::inverse_transform");
}

nlohmann::json StandardScaler::to_json() const {
  nlohmann::json j;
  j["type"] = "standard_scaler";
  j["names"] = names_;
  j["mean"] = mean_;
  j["std"] = std_;
  j["fit_rows"] = {fit_rows_.begin, fit_rows_.end};
  return j;
}

StandardScaler StandardScaler::from_json(const nlohmann::json& j, const std::string& source) {
  const io::JsonConfig cfg(j, source);
  const std::string type = cfg.get_string("type");
  if (type != "standard_scaler")
    fail("StandardScaler::from_json", "'" + source + "': field 'type': expected \"standard_scaler\", got \"" + type + "\"");
  auto numbers = [&](const char* field) {
    const auto& a = j.at(field);
    if (!a.is_array()) fail("StandardScaler::from_json", "'" + source + "': field '" + field + "': expected an array");
    std::vector<double> v;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_number())
        fail("StandardScaler::from_json", "'" + source + "': field '" + field + "'[" + std::to_string(i) + "]: expected a number");
      v.push_back(a[i].get<double>());
    }
    return v;
  };
  if (!j.contains("mean") || !j.contains("std"))
    fail("StandardScaler::from_json", "'" + source + "': fields 'mean' and 'std' are required");
  std::vector<std::string> names;
  if (j.contains("names") && !j["names"].is_null()) {
    if (!j["names"].is_array()) fail("StandardScaler::from_json", "'" + source + "': field 'names': expected an array");
    for (const auto& n : j["names"]) {
      if (!n.is_string()) fail("StandardScaler::from_json", "'" + source + "': field 'names': expected strings");
      names.push_back(n.get<std::string>());
    }
  }
  StandardScaler sc(numbers("mean"), numbers("std"), std::move(names));
  if (j.contains("fit_rows") && j["fit_rows"].is_array() && j["fit_rows"].size() == 2 && j["fit_rows"][0].is_number_integer() &&
      j["fit_rows"][1].is_number_integer())
    sc.fit_rows_ = {j["fit_rows"][0].get<int64_t>(), j["fit_rows"][1].get<int64_t>()};
  return sc;
}

void StandardScaler::save(const std::string& path) const { io::write_json_file_atomic(path, to_json()); }

StandardScaler StandardScaler::load(const std::string& path) { return from_json(io::load_json_file(path), path); }

// ---- WindowDataset ----

WindowDataset::WindowDataset(Tensor series, RowRange rows, int64_t seq_len, int64_t horizon)
    : rows_(rows), seq_len_(seq_len), horizon_(horizon) {
  check_lengths("WindowDataset", seq_len, horizon);
  if (!series.defined() || series.dim() != 2) fail("WindowDataset", "series must be (T, V)");
  if (rows.begin < 0 || rows.end > series.size(0) || rows.begin > rows.end)
    fail("WindowDataset", "rows " + range_str(rows) + " outside a series of " + std::to_string(series.size(0)) + " rows");
  series_ = as_f32_contiguous(series);
  num_windows_ = std::max<int64_t>(0, rows.size() - seq_len - horizon + 1);
}

int64_t WindowDataset::window_start(int64_t i) const {
  if (i < 0 || i >= num_windows_)
    fail("WindowDataset::window_start", "window " + std::to_string(i) + " not in [0, " + std::to_string(num_windows_) + ")");
  return rows_.begin + i;
}

void WindowDataset::gather(const std::vector<int64_t>& indices, Tensor& x, Tensor& y) const {
  if (indices.empty()) fail("WindowDataset::gather", "no windows requested");
  const int64_t B = static_cast<int64_t>(indices.size()), V = num_variables();
  x = Tensor::empty({B, seq_len_, V}, DType::f32);
  y = Tensor::empty({B, horizon_, V}, DType::f32);
  const float* p = series_.data<float>();
  float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s = window_start(indices[b]);
    std::memcpy(px + b * seq_len_ * V, p + s * V, sizeof(float) * seq_len_ * V);
    std::memcpy(py + b * horizon_ * V, p + (s + seq_len_) * V, sizeof(float) * horizon_ * V);
  }
}

void WindowDataset::gather_range(int64_t first, int64_t count, Tensor& x, Tensor& y) const {
  if (first < 0 || first >= num_windows_ || count < 1)
    fail("WindowDataset::gather_range", "first " + std::to_string(first) + ", count " + std::to_string(count) +
                                            " with " + std::to_string(num_windows_) + " windows");
  const int64_t n = std::min(count, num_windows_ - first);
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = first + i;
  gather(idx, x, y);
}

// ---- time features ----

int64_t num_time_features(int64_t interval_seconds) { return interval_seconds > 0 && interval_seconds < 3600 ? 5 : 4; }

Tensor time_features(const std::vector<int64_t>& epoch_seconds, int64_t interval_seconds) {
  const int64_t N = static_cast<int64_t>(epoch_seconds.size());
  const int64_t F = num_time_features(interval_seconds);
  Tensor out = Tensor::empty({N, F}, DType::f32);
  float* q = out.data<float>();
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = epoch_seconds[i];
    const int64_t days = detail::floor_div(t, 86400);
    const int64_t sec = t - days * 86400;
    int64_t y, m, d;
    detail::civil_from_days(days, y, m, d);
    const int64_t doy = detail::day_of_year(y, m, d);         // 1..366
    const int64_t weekday = ((days % 7) + 7 + 3) % 7;          // 1970-01-01 was a Thursday; Monday = 0
    float* r = q + i * F;
    int64_t k = 0;
    if (F == 5) r[k++] = static_cast<float>(static_cast<double>(sec / 60 % 60) / 59.0 - 0.5);
    r[k++] = static_cast<float>(static_cast<double>(sec / 3600) / 23.0 - 0.5);
    r[k++] = static_cast<float>(static_cast<double>(weekday) / 6.0 - 0.5);
    r[k++] = static_cast<float>(static_cast<double>(d - 1) / 30.0 - 0.5);
    r[k++] = static_cast<float>(static_cast<double>(doy - 1) / 365.0 - 0.5);
  }
  return out;
}

Tensor window_time_features(const std::vector<int64_t>& epoch_seconds, int64_t interval_seconds, int64_t start,
                            int64_t count) {
  if (start < 0 || count < 1)
    fail("window_time_features", "start " + std::to_string(start) + ", count " + std::to_string(count));
  if (epoch_seconds.empty()) fail("window_time_features", "no timestamps");
  const int64_t N = static_cast<int64_t>(epoch_seconds.size());
  std::vector<int64_t> t(count);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t r = start + i;
    t[i] = r < N ? epoch_seconds[r] : epoch_seconds.back() + (r - N + 1) * interval_seconds;
  }
  return time_features(t, interval_seconds);
}

}  // namespace mamba::forecasting
