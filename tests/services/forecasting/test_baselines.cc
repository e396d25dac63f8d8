// Baselines: the fast normal equations against the window-by-window reference, recovery of
// a known linear process, seasonal naive, save/load, and the published ETTh2 figure.
#include "mamba/forecasting/baselines.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "mamba/forecasting/series_csv.h"

namespace fs = std::filesystem;
using namespace mamba::forecasting;
using mamba::Tensor;

namespace {

Tensor random_series(int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(T * V);
  // A random walk plus noise: strongly correlated lags, like real series.
  for (int64_t j = 0; j < V; ++j) {
    float level = nd(rng);
    for (int64_t t = 0; t < T; ++t) {
      level += 0.3f * nd(rng);
      v[t * V + j] = level + 0.5f * nd(rng);
    }
  }
  return Tensor::from_vector(v, {T, V});
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto x = a.to_vector_f32(), y = b.to_vector_f32();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - y[i]));
  return m;
}

}  // namespace

TEST(LinearForecaster, FastFitMatchesReference) {
  const Tensor x = random_series(157, 3, 11);
  for (auto norm : {InstanceNorm::none, InstanceNorm::last, InstanceNorm::mean})
    for (auto [L, H] : {std::pair<int64_t, int64_t>{1, 1}, {7, 5}, {13, 1}, {5, 17}}) {
      const RowRange rows{9, 150};
      const auto fast = LinearForecaster::fit(x, rows, L, H, {norm, 1e-6});
      const auto ref = LinearForecaster::fit_ref(x, rows, L, H, {norm, 1e-6});
      // Compare the forecasts (the weights of the normalised variants have a null
      // direction that only the tiny ridge pins down).
      Tensor bx = x.slice(0, 0, 40).unsqueeze(0);
      const Tensor pf = fast.forecast(bx), pr = ref.forecast(bx);
      EXPECT_LT(max_abs_diff(pf, pr), 1e-5) << instance_norm_name(norm) << " L " << L << " H " << H;
      if (norm == InstanceNorm::none) {
        EXPECT_LT(max_abs_diff(fast.weight(), ref.weight()), 1e-5) << L << " " << H;
      }
    }
}

TEST(LinearForecaster, ForecastMatchesReferenceAndAcceptsLongerWindows) {
  const Tensor x = random_series(300, 4, 5);
  const auto m = LinearForecaster::fit(x, {0, 300}, 11, 6, {InstanceNorm::mean});
  const Tensor batch = x.slice(0, 100, 111).unsqueeze(0);
  EXPECT_LT(max_abs_diff(m.forecast(batch), m.forecast_ref(batch)), 1e-4);
  // (L, V) in, (H, V) out; a longer window uses its last seq_len rows.
  const Tensor single = m.forecast(x.slice(0, 100, 111));
  EXPECT_EQ(single.shape(), (mamba::Shape{6, 4}));
  EXPECT_LT(max_abs_diff(m.forecast(x.slice(0, 90, 111)), single), 1e-6);
  EXPECT_THROW(m.forecast(x.slice(0, 100, 110)), mamba::Error);
}

TEST(LinearForecaster, RecoversAKnownLinearProcess) {
  // AR(3): z[t] = 0.5 z[t-1] - 0.3 z[t-2] + 0.2 z[t-3] + 1 + e[t]. The best linear forecast
  // of z[t+h] from the last L values iterates the recursion with e = 0; with enough windows
  // least squares finds exactly that map.
  const double a[3] = {0.5, -0.3, 0.2}, c = 1.0;
  const int64_t T = 40000, V = 2, L = 6, H = 3;
  std::mt19937 rng(1);
  std::normal_distribution<double> nd;
  std::vector<float> v(T * V);
  for (int64_t j = 0; j < V; ++j) {
    double z1 = 0, z2 = 0, z3 = 0;
    for (int64_t t = 0; t < T + 100; ++t) {
      const double z = a[0] * z1 + a[1] * z2 + a[2] * z3 + c + nd(rng);
      z3 = z2, z2 = z1, z1 = z;
      if (t >= 100) v[(t - 100) * V + j] = float(z);
    }
  }
  const auto m = LinearForecaster::fit(Tensor::from_vector(v, {T, V}), {0, T}, L, H);
  // True map: propagate the unit vectors (and the constant) through the recursion.
  for (int64_t basis = 0; basis <= L; ++basis) {  // basis == L: the constant input
    std::vector<double> hist(L + H, 0.0);
    if (basis < L) hist[basis] = 1.0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t t = L + h;
      hist[t] = a[0] * hist[t - 1] + a[1] * hist[t - 2] + a[2] * hist[t - 3] + (basis == L ? c : 0.0);
    }
    for (int64_t h = 0; h < H; ++h) {
      const double got = basis < L ? m.weight().data<float>()[h * L + basis] : m.bias().data<float>()[h];
      // Standard errors with 80,000 windows: about 0.005 for a lag weight, 0.02 for the bias
      // (it is nearly collinear with the lags: the series mean is c / (1 - sum a) = 1.67).
      EXPECT_NEAR(got, hist[L + h], basis < L ? 0.02 : 0.06) << "h " << h << " input " << basis;
    }
  }
}

TEST(Baselines, EvaluateDoesNotDependOnTheBatchSize) {
  const Tensor x = random_series(250, 3, 21);
  const auto m = LinearForecaster::fit(x, {0, 150}, 12, 5);
  const WindowDataset test(x, {140, 250}, 12, 5);
  ErrorAccumulator plain;  // one window at a time, through the reference forecast
  for (int64_t i = 0; i < test.size(); ++i) {
    Tensor bx, by;
    test.gather({i}, bx, by);
    plain.add(m.forecast_ref(bx), by);
  }
  for (int64_t bs : {1, 7, 64, 1000}) {
    const ForecastErrors e = evaluate(m, test, bs);
    EXPECT_EQ(e.count, test.size() * 5 * 3);
    EXPECT_NEAR(e.mse, plain.mse(), 1e-6 * plain.mse()) << bs;
    EXPECT_NEAR(e.mae, plain.mae(), 1e-6 * plain.mae()) << bs;
  }
  EXPECT_THROW(evaluate(m, WindowDataset(x, {0, 250}, 12, 6)), mamba::Error);
}

TEST(SeasonalNaive, RepeatsTheLastPeriod) {
  const int64_t L = 10, V = 2, H = 7, P = 4;
  std::vector<float> v(L * V);
  for (int64_t i = 0; i < L * V; ++i) v[i] = float(i);
  const SeasonalNaiveForecaster m(P, L, H);
  const Tensor y = m.forecast(Tensor::from_vector(v, {L, V}));
  ASSERT_EQ(y.shape(), (mamba::Shape{H, V}));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < V; ++j) EXPECT_EQ(y.data<float>()[h * V + j], v[(L - P + h % P) * V + j]);
  EXPECT_THROW(SeasonalNaiveForecaster(11, 10, 5), mamba::Error);
}

TEST(LinearForecaster, SaveLoadRoundTrip) {
  const fs::path dir = fs::path(MAMBA_TEST_TMP) / "baselines";
  fs::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  const auto m = LinearForecaster::fit(random_series(200, 2, 9), {0, 200}, 9, 4, {InstanceNorm::last});
  m.save(path);
  const auto r = LinearForecaster::load(path);
  EXPECT_EQ(r.norm(), InstanceNorm::last);
  EXPECT_EQ(max_abs_diff(r.weight(), m.weight()), 0.0);
  EXPECT_EQ(max_abs_diff(r.bias(), m.bias()), 0.0);
}

TEST(Baselines, Etth2LinearMatchesThePublishedFigure) {
  const MultiSeries s = read_series_csv(std::string(MAMBA_SHARED_DIR) + "/data/ETTh2.csv");
  const int64_t L = 96, H = 96;
  const Splits sp = make_splits(SplitProtocol::ett_hour, s.num_steps(), L, H);
  const Tensor z = StandardScaler::fit(s.values, sp.train).transform(s.values);
  const WindowDataset val(z, sp.val, L, H), test(z, sp.test, L, H);
  EXPECT_EQ(test.size(), 2880 + 96 - 96 - 96 + 1);
  const LinearSelection sel = fit_linear_by_validation(z, sp.train, val);
  const ForecastErrors e = evaluate(sel.best_model(), test);
  EXPECT_GE(e.mse, 0.28);
  EXPECT_LE(e.mse, 0.30);
  EXPECT_NEAR(e.mae, 0.338, 0.01);
  const ForecastErrors naive = evaluate(SeasonalNaiveForecaster(24, L, H), test);
  EXPECT_NEAR(naive.mse, 0.391, 0.01);
  std::printf("ETTh2 96->96: %s test MSE %.4f MAE %.4f; seasonal naive MSE %.4f MAE %.4f\n",
              sel.best_model().name().c_str(), e.mse, e.mae, naive.mse, naive.mae);
}
