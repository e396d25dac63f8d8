#include "mamba/forecasting/baselines.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "mamba/io/safetensors.h"
#include "mamba/ops/matmul.h"

namespace mamba::forecasting {
namespace {

constexpr const char* kLinearFormat = "mamba-forecasting-linear";

// Normal equations of the ridge problem, accumulated over variables.
// Features: L lags then the bias column (index L); targets: H steps.
struct NormalEquations {
  int64_t L = 0, H = 0;
  std::vector<double> xtx;  // (L+1) x (L+1), row-major
  std::vector<double> xty;  // (L+1) x H
  int64_t windows = 0;
  NormalEquations(int64_t l, int64_t h) : L(l), H(h), xtx((l + 1) * (l + 1), 0.0), xty((l + 1) * h, 0.0) {}
};

struct FitInput {
  Tensor values;  // (T, V) f32 contiguous
  int64_t T = 0, V = 0, n = 0, N = 0;
};

FitInput check_fit_input(const char* op, const Tensor& series, RowRange rows, int64_t L, int64_t H) {
  if (L < 1 || H < 1) fail(op, "seq_len and horizon must be >= 1");
  if (!series.defined() || series.dim() != 2) fail(op, "series must be (T, V)");
  FitInput in;
  in.values = series.to(DType::f32).contiguous();
  in.T = series.size(0);
  in.V = series.size(1);
  if (rows.begin < 0 || rows.end > in.T || rows.begin > rows.end)
    fail(op, "rows [" + std::to_string(rows.begin) + ", " + std::to_string(rows.end) + ") outside " + std::to_string(in.T) + " rows");
  in.n = rows.size();
  in.N = in.n - L - H + 1;
  if (in.N < 1 || in.V < 1)
    fail(op, std::to_string(in.n) + " rows hold no window of seq_len + horizon = " + std::to_string(L + H));
  const float* p = in.values.data<float>();
  for (int64_t t = rows.begin; t < rows.end; ++t)
    for (int64_t v = 0; v < in.V; ++v)
      if (!std::isfinite(p[t * in.V + v]))
        fail(op, "non-finite value at row " + std::to_string(t) + ", variable " + std::to_string(v));
  return in;
}

// Adds the ridge term, solves (X^T X + lambda D) beta = X^T Y by Cholesky, and returns the model.
LinearForecaster solve(NormalEquations& ne, InstanceNorm norm, double ridge, const char* op) {
  if (!(ridge >= 0)) fail(op, "ridge must be >= 0");
  const int64_t P = ne.L + 1, L = ne.L, H = ne.H;
  std::vector<double>& A = ne.xtx;
  double trace = 0;
  for (int64_t i = 0; i < L; ++i) trace += A[i * P + i];
  constexpr double kMinRidge = 1e-10;
  double lambda = std::max(ridge, kMinRidge) * trace / static_cast<double>(L);
  if (!(lambda > 0)) lambda = kMinRidge * static_cast<double>(ne.windows);  // all-zero lags
  for (int64_t i = 0; i < L; ++i) A[i * P + i] += lambda;
  // In-place Cholesky: A = R R^T, lower triangle.
  for (int64_t j = 0; j < P; ++j) {
    double d = A[j * P + j];
    for (int64_t k = 0; k < j; ++k) d -= A[j * P + k] * A[j * P + k];
    if (!(d > 0)) fail(op, "normal equations not positive definite at column " + std::to_string(j) + " (constant series?)");
    const double r = std::sqrt(d);
    A[j * P + j] = r;
    for (int64_t i = j + 1; i < P; ++i) {
      double s = A[i * P + j];
      for (int64_t k = 0; k < j; ++k) s -= A[i * P + k] * A[j * P + k];
      A[i * P + j] = s / r;
    }
  }
  std::vector<double> col(P);
  Tensor weight = Tensor::empty({H, L}, DType::f32), bias = Tensor::empty({H}, DType::f32);
  float* w = weight.data<float>();
  float* b = bias.data<float>();
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < P; ++i) col[i] = ne.xty[i * H + h];
    for (int64_t i = 0; i < P; ++i) {  // forward: R z = rhs
      double s = col[i];
      for (int64_t k = 0; k < i; ++k) s -= A[i * P + k] * col[k];
      col[i] = s / A[i * P + i];
    }
    for (int64_t i = P - 1; i >= 0; --i) {  // backward: R^T beta = z
      double s = col[i];
      for (int64_t k = i + 1; k < P; ++k) s -= A[k * P + i] * col[k];
      col[i] = s / A[i * P + i];
    }
    for (int64_t l = 0; l < L; ++l) w[h * L + l] = static_cast<float>(col[l]);
    b[h] = static_cast<float>(col[L]);
  }
  return LinearForecaster(weight, bias, norm);
}

double window_offset(const double* x, int64_t L, InstanceNorm norm) {
  switch (norm) {
    case InstanceNorm::none: return 0.0;
    case InstanceNorm::last: return x[L - 1];
    case InstanceNorm::mean: {
      double s = 0;
      for (int64_t l = 0; l < L; ++l) s += x[l];
      return s / static_cast<double>(L);
    }
  }
  return 0.0;
}

// A window (B, L', V) with L' >= L: checks and returns it as f32 contiguous plus B.
Tensor check_window(const char* op, const Tensor& window, int64_t seq_len, int64_t& B, bool& batched) {
  if (!window.defined() || (window.dim() != 2 && window.dim() != 3))
    fail(op, "window must be (L, V) or (B, L, V), got " + (window.defined() ? window.str() : std::string("undefined")));
  batched = window.dim() == 3;
  Tensor w = batched ? window : window.unsqueeze(0);
  B = w.size(0);
  if (w.size(1) < seq_len)
    fail(op, "window has " + std::to_string(w.size(1)) + " steps, the model needs " + std::to_string(seq_len));
  if (B < 1 || w.size(2) < 1) fail(op, "empty window " + w.str());
  return w.slice(1, w.size(1) - seq_len, w.size(1)).to(DType::f32).contiguous();
}

}  // namespace

const char* instance_norm_name(InstanceNorm n) {
  switch (n) {
    case InstanceNorm::none: return "none";
    case InstanceNorm::last: return "last";
    case InstanceNorm::mean: return "mean";
  }
  return "?";
}

InstanceNorm parse_instance_norm(const std::string& name) {
  if (name == "none") return InstanceNorm::none;
  if (name == "last") return InstanceNorm::last;
  if (name == "mean") return InstanceNorm::mean;
  fail("parse_instance_norm", "unknown instance norm '" + name + "' (choices: none, last, mean)");
}

// ---- LinearForecaster ----

LinearForecaster::LinearForecaster(Tensor weight, Tensor bias, InstanceNorm norm) : norm_(norm) {
  if (!weight.defined() || weight.dim() != 2 || weight.size(0) < 1 || weight.size(1) < 1)
    fail("LinearForecaster", "weight must be (H, L), got " + (weight.defined() ? weight.str() : std::string("undefined")));
  if (!bias.defined() || bias.dim() != 1 || bias.size(0) != weight.size(0))
    fail("LinearForecaster", "bias must be (" + std::to_string(weight.size(0)) + "), got " +
                                 (bias.defined() ? bias.str() : std::string("undefined")));
  weight_ = weight.to(DType::f32).contiguous().clone();
  bias_ = bias.to(DType::f32).contiguous().clone();
}

LinearForecaster LinearForecaster::fit(const Tensor& series, RowRange rows, int64_t L, int64_t H,
                                       const LinearFitOptions& opt) {
  const FitInput in = check_fit_input("LinearForecaster::fit", series, rows, L, H);
  const int64_t W = L + H, N = in.N, n = in.n, P = L + 1;
  NormalEquations ne(L, H);
  const float* p = in.values.data<float>();
  std::vector<double> z(n), prefix(n + 1), S(W);
  std::vector<double> G(W * W);  // Gram of the full windows u_s = z[s .. s + W)
  for (int64_t v = 0; v < in.V; ++v) {
    for (int64_t t = 0; t < n; ++t) z[t] = p[(rows.begin + t) * in.V + v];
    // G[i][i + d] = sum_{s < N} z[s + i] z[s + i + d] = Pd[i + N] - Pd[i], Pd the prefix sum of
    // the lag-d products z[t] z[t + d].
    for (int64_t d = 0; d < W; ++d) {
      prefix[0] = 0;
      const int64_t m = W - d - 1 + N;  // prefix entries needed: up to index (W - d - 1) + N
      for (int64_t t = 0; t < m; ++t) prefix[t + 1] = prefix[t] + z[t] * z[t + d];
      for (int64_t i = 0; i + d < W; ++i) G[i * W + i + d] = G[(i + d) * W + i] = prefix[i + N] - prefix[i];
    }
    prefix[0] = 0;
    for (int64_t t = 0; t < n; ++t) prefix[t + 1] = prefix[t] + z[t];
    for (int64_t i = 0; i < W; ++i) S[i] = prefix[i + N] - prefix[i];
    // Offsets c_s of the instance normaliser: A[i] = sum_s c_s z[s + i], C = sum_s c_s^2, Sc = sum_s c_s.
    std::vector<double> A(W, 0.0);
    double C = 0, Sc = 0;
    if (opt.norm == InstanceNorm::last) {
      for (int64_t i = 0; i < W; ++i) A[i] = G[i * W + L - 1];
      C = G[(L - 1) * W + L - 1];
      Sc = S[L - 1];
    } else if (opt.norm == InstanceNorm::mean) {
      for (int64_t i = 0; i < W; ++i) {
        double s = 0;
        for (int64_t k = 0; k < L; ++k) s += G[i * W + k];
        A[i] = s / static_cast<double>(L);
      }
      for (int64_t k = 0; k < L; ++k) {
        C += A[k];
        Sc += S[k];
      }
      C /= static_cast<double>(L);
      Sc /= static_cast<double>(L);
    }
    auto M = [&](int64_t i, int64_t j) { return G[i * W + j] - A[i] - A[j] + C; };
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < L; ++j) ne.xtx[i * P + j] += M(i, j);
      ne.xtx[i * P + L] += S[i] - Sc;
      ne.xtx[L * P + i] += S[i] - Sc;
      for (int64_t h = 0; h < H; ++h) ne.xty[i * H + h] += M(i, L + h);
    }
    ne.xtx[L * P + L] += static_cast<double>(N);
    for (int64_t h = 0; h < H; ++h) ne.xty[L * H + h] += S[L + h] - Sc;
    ne.windows += N;
  }
  return solve(ne, opt.norm, opt.ridge, "LinearForecaster::fit");
}

LinearForecaster LinearForecaster::fit_ref(const Tensor& series, RowRange rows, int64_t L, int64_t H,
                                           const LinearFitOptions& opt) {
  const FitInput in = check_fit_input("LinearForecaster::fit_ref", series, rows, L, H);
  const int64_t P = L + 1;
  NormalEquations ne(L, H);
  const float* p = in.values.data<float>();
  std::vector<double> u(L + H), x(P), y(H);
  for (int64_t v = 0; v < in.V; ++v)
    for (int64_t s = 0; s < in.N; ++s) {
      for (int64_t k = 0; k < L + H; ++k) u[k] = p[(rows.begin + s + k) * in.V + v];
      const double c = window_offset(u.data(), L, opt.norm);
      for (int64_t k = 0; k < L; ++k) x[k] = u[k] - c;
      x[L] = 1.0;
      for (int64_t h = 0; h < H; ++h) y[h] = u[L + h] - c;
      for (int64_t i = 0; i < P; ++i) {
        for (int64_t j = 0; j < P; ++j) ne.xtx[i * P + j] += x[i] * x[j];
        for (int64_t h = 0; h < H; ++h) ne.xty[i * H + h] += x[i] * y[h];
      }
      ++ne.windows;
    }
  return solve(ne, opt.norm, opt.ridge, "LinearForecaster::fit_ref");
}

std::string LinearForecaster::name() const { return std::string("linear(norm=") + instance_norm_name(norm_) + ")"; }

Tensor LinearForecaster::forecast(const Tensor& window) const {
  int64_t B = 0;
  bool batched = false;
  const int64_t L = seq_len(), H = horizon();
  const Tensor x = check_window("LinearForecaster::forecast", window, L, B, batched);
  const int64_t V = x.size(2);
  // Rows of X are (b, v) pairs: X[(b, v), l] = x[b, l, v] - c[b, v].
  Tensor X = Tensor::empty({B * V, L}, DType::f32);
  std::vector<float> c(B * V);
  const float* px = x.data<float>();
  float* pX = X.data<float>();
  std::vector<double> col(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t l = 0; l < L; ++l) col[l] = px[(b * L + l) * V + v];
      const double off = window_offset(col.data(), L, norm_);
      c[b * V + v] = static_cast<float>(off);
      for (int64_t l = 0; l < L; ++l) pX[(b * V + v) * L + l] = static_cast<float>(col[l] - off);
    }
  const Tensor Y = ops::linear(X, weight_, bias_).contiguous();  // (B*V, H)
  const float* pY = Y.data<float>();
  Tensor out = Tensor::empty({B, H, V}, DType::f32);
  float* po = out.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t v = 0; v < V; ++v) po[(b * H + h) * V + v] = pY[(b * V + v) * H + h] + c[b * V + v];
  return batched ? out : out.squeeze(0);
}

Tensor LinearForecaster::forecast_ref(const Tensor& window) const {
  int64_t B = 0;
  bool batched = false;
  const int64_t L = seq_len(), H = horizon();
  const Tensor x = check_window("LinearForecaster::forecast_ref", window, L, B, batched);
  const int64_t V = x.size(2);
  const float* px = x.data<float>();
  const float* w = weight_.data<float>();
  const float* bb = bias_.data<float>();
  Tensor out = Tensor::empty({B, H, V}, DType::f32);
  float* po = out.data<float>();
  std::vector<double> col(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t l = 0; l < L; ++l) col[l] = px[(b * L + l) * V + v];
      const double off = window_offset(col.data(), L, norm_);
      for (int64_t h = 0; h < H; ++h) {
        double s = bb[h];
        for (int64_t l = 0; l < L; ++l) s += static_cast<double>(w[h * L + l]) * (col[l] - off);
        po[(b * H + h) * V + v] = static_cast<float>(s + off);
      }
    }
  return batched ? out : out.squeeze(0);
}

void LinearForecaster::save(const std::string& path) const {
  io::save_safetensors(path, {{"weight", weight_}, {"bias", bias_}},
                       {{"format", kLinearFormat},
                        {"seq_len", std::to_string(seq_len())},
                        {"horizon", std::to_string(horizon())},
                        {"instance_norm", instance_norm_name(norm_)}});
}

LinearForecaster LinearForecaster::load(const std::string& path) {
  const io::SafeTensorsFile f(path);
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) {
    auto it = meta.find(key);
    if (it == meta.end()) fail("LinearForecaster::load", "'" + path + "': metadata '" + key + "' missing");
    return it->second;
  };
  if (get("format") != kLinearFormat)
    fail("LinearForecaster::load", "'" + path + "': metadata 'format' is '" + get("format") + "', expected '" + kLinearFormat + "'");
  for (const char* name : {"weight", "bias"})
    if (!f.has(name)) fail("LinearForecaster::load", "'" + path + "': tensor '" + std::string(name) + "' missing");
  LinearForecaster m(f.tensor("weight"), f.tensor("bias"), parse_instance_norm(get("instance_norm")));
  if (std::to_string(m.seq_len()) != get("seq_len") || std::to_string(m.horizon()) != get("horizon"))
    fail("LinearForecaster::load", "'" + path + "': weight " + m.weight().str() + " does not match metadata seq_len " +
                                       get("seq_len") + ", horizon " + get("horizon"));
  return m;
}

// ---- SeasonalNaiveForecaster ----

SeasonalNaiveForecaster::SeasonalNaiveForecaster(int64_t period, int64_t seq_len, int64_t horizon)
    : period_(period), seq_len_(seq_len), horizon_(horizon) {
  if (period < 1 || period > seq_len || horizon < 1)
    fail("SeasonalNaiveForecaster", "need 1 <= period <= seq_len and horizon >= 1, got period " + std::to_string(period) +
                                        ", seq_len " + std::to_string(seq_len) + ", horizon " + std::to_string(horizon));
}

std::string SeasonalNaiveForecaster::name() const { return "seasonal-naive(" + std::to_string(period_) + ")"; }

Tensor SeasonalNaiveForecaster::forecast(const Tensor& window) const {
  int64_t B = 0;
  bool batched = false;
  const Tensor x = check_window("SeasonalNaiveForecaster::forecast", window, seq_len_, B, batched);
  const int64_t L = seq_len_, V = x.size(2), H = horizon_;
  Tensor out = Tensor::empty({B, H, V}, DType::f32);
  const float* px = x.data<float>();
  float* po = out.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t src = L - period_ + h % period_;
      for (int64_t v = 0; v < V; ++v) po[(b * H + h) * V + v] = px[(b * L + src) * V + v];
    }
  return batched ? out : out.squeeze(0);
}

// ---- evaluation ----

ForecastErrors evaluate(const Forecaster& model, const WindowDataset& data, int64_t batch_size) {
  if (data.seq_len() < model.seq_len() || data.horizon() != model.horizon())
    fail("evaluate", model.name() + " (seq_len " + std::to_string(model.seq_len()) + ", horizon " +
                         std::to_string(model.horizon()) + ") on windows of seq_len " + std::to_string(data.seq_len()) +
                         ", horizon " + std::to_string(data.horizon()));
  if (data.size() < 1) fail("evaluate", "no windows");
  if (batch_size < 1) fail("evaluate", "batch_size must be >= 1");
  ErrorAccumulator acc;
  Tensor x, y;
  for (int64_t first = 0; first < data.size(); first += batch_size) {
    data.gather_range(first, batch_size, x, y);
    acc.add(model.forecast(x), y);
  }
  return acc.errors();
}

LinearSelection fit_linear_by_validation(const Tensor& series, RowRange train, const WindowDataset& val, double ridge,
                                         std::vector<InstanceNorm> candidates) {
  if (candidates.empty()) fail("fit_linear_by_validation", "no candidates");
  LinearSelection sel;
  sel.candidates = std::move(candidates);
  for (size_t i = 0; i < sel.candidates.size(); ++i) {
    sel.models.push_back(LinearForecaster::fit(series, train, val.seq_len(), val.horizon(), {sel.candidates[i], ridge}));
    sel.val_errors.push_back(evaluate(sel.models.back(), val));
    if (sel.val_errors[i].mse < sel.val_errors[sel.best].mse) sel.best = i;
  }
  return sel;
}

}  // namespace mamba::forecasting
