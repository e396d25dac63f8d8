// Split borders, the train-only scaler, window gathering and timeF features.
#include "mamba/forecasting/protocol.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

namespace fs = std::filesystem;
using namespace mamba::forecasting;
using mamba::Tensor;

TEST(Protocol, EttHourBorders) {
  const Splits s = make_splits(SplitProtocol::ett_hour, 17420, 96, 96);
  EXPECT_EQ(s.train.begin, 0);
  EXPECT_EQ(s.train.end, 8640);
  EXPECT_EQ(s.val.begin, 8640 - 96);
  EXPECT_EQ(s.val.end, 11520);
  EXPECT_EQ(s.test.begin, 11520 - 96);
  EXPECT_EQ(s.test.end, 14400);
  const Splits m = make_splits(SplitProtocol::ett_minute, 69680, 336, 720);
  EXPECT_EQ(m.train.end, 34560);
  EXPECT_EQ(m.val.begin, 34560 - 336);
  EXPECT_EQ(m.val.end, 46080);
  EXPECT_EQ(m.test.begin, 46080 - 336);
  EXPECT_EQ(m.test.end, 57600);
  EXPECT_THROW(make_splits(SplitProtocol::ett_hour, 14399, 96, 96), mamba::Error);
  EXPECT_THROW(make_splits(SplitProtocol::ett_hour, 17420, 0, 96), mamba::Error);
  EXPECT_EQ(parse_split_protocol("ett-minute"), SplitProtocol::ett_minute);
  EXPECT_THROW(parse_split_protocol("ett_hour"), mamba::Error);
}

TEST(Protocol, RatioBorders) {
  // T = 1001: num_train = int(700.7) = 700, num_test = int(200.2) = 200, num_val = 101.
  const Splits s = make_splits(SplitProtocol::ratio, 1001, 24, 12);
  EXPECT_EQ(s.train.begin, 0);
  EXPECT_EQ(s.train.end, 700);
  EXPECT_EQ(s.val.begin, 700 - 24);
  EXPECT_EQ(s.val.end, 801);
  EXPECT_EQ(s.test.begin, 1001 - 200 - 24);
  EXPECT_EQ(s.test.end, 1001);
  // Like the reference: a 26,304-row series (electricity) with L = 96.
  const Splits e = make_splits(SplitProtocol::ratio, 26304, 96, 96);
  EXPECT_EQ(e.train.end, 18412);
  EXPECT_EQ(e.val.begin, 18412 - 96);
  EXPECT_EQ(e.val.end, 18412 + 2632);
  EXPECT_EQ(e.test.begin, 26304 - 5260 - 96);
  // Too short for a window of L + H in some split.
  EXPECT_THROW(make_splits(SplitProtocol::ratio, 50, 24, 24), mamba::Error);
}

TEST(StandardScaler, FitsOnTrainRowsOnly) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t T = 301, V = 5;
  std::vector<float> v(T * V);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < V; ++j) v[t * V + j] = (t < 200 ? 1.f : 100.f) * nd(rng) + float(j) * 10.f;
  for (int64_t t = 0; t < T; ++t) v[t * V + 3] = 2.5f;  // constant variable -> std 1
  const Tensor x = Tensor::from_vector(v, {T, V});
  const RowRange train{0, 200};
  const StandardScaler sc = StandardScaler::fit(x, train);
  for (int64_t j = 0; j < V; ++j) {
    double m = 0, s = 0;
    for (int64_t t = 0; t < 200; ++t) m += v[t * V + j];
    m /= 200;
    for (int64_t t = 0; t < 200; ++t) s += (v[t * V + j] - m) * (v[t * V + j] - m);
    s = std::sqrt(s / 200);  // population std
    if (j == 3) s = 1.0;
    EXPECT_NEAR(sc.mean()[j], m, 1e-9 * (1 + std::fabs(m))) << j;
    EXPECT_NEAR(sc.std()[j], s, 1e-9 * (1 + s)) << j;
  }
  const Tensor z = sc.transform(x);
  const Tensor back = sc.inverse_transform(z);
  for (int64_t i = 0; i < T * V; ++i) {
    const int64_t j = i % V;
    EXPECT_NEAR(z.data<float>()[i], (v[i] - sc.mean()[j]) / sc.std()[j], 1e-4);
    EXPECT_NEAR(back.data<float>()[i], v[i], 1e-3 * (1 + std::fabs(v[i])));
  }

  // preprocess.json round trip.
  const fs::path dir = fs::path(MAMBA_TEST_TMP) / "protocol";
  fs::create_directories(dir);
  const std::string path = (dir / "preprocess.json").string();
  StandardScaler::fit(x, train, {"a", "b", "c", "d", "e"}).save(path);
  const StandardScaler r = StandardScaler::load(path);
  EXPECT_EQ(r.mean(), sc.mean());
  EXPECT_EQ(r.std(), sc.std());
  EXPECT_EQ(r.names()[4], "e");
  EXPECT_EQ(r.fit_rows().end, 200);
  EXPECT_THROW(StandardScaler::from_json(nlohmann::json{{"type", "minmax"}}), mamba::Error);
  EXPECT_THROW(StandardScaler::from_json(nlohmann::json{{"type", "standard_scaler"}, {"mean", {1.0}}, {"std", {0.0}}}),
               mamba::Error);
  EXPECT_THROW(sc.transform(Tensor::zeros({3, 4})), mamba::Error);
}

TEST(WindowDataset, GathersWindowsAtAnAwkwardSize) {
  const int64_t T = 53, V = 3, L = 7, H = 5;
  std::vector<float> v(T * V);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < V; ++j) v[t * V + j] = float(t * 10 + j);
  const Tensor x = Tensor::from_vector(v, {T, V});
  const WindowDataset ds(x, {11, 50}, L, H);
  ASSERT_EQ(ds.size(), 39 - L - H + 1);  // 28
  Tensor bx, by;
  const std::vector<int64_t> idx = {0, 27, 13};
  ds.gather(idx, bx, by);
  ASSERT_EQ(bx.shape(), (mamba::Shape{3, L, V}));
  ASSERT_EQ(by.shape(), (mamba::Shape{3, H, V}));
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t s = 11 + idx[b];
    for (int64_t l = 0; l < L; ++l)
      for (int64_t j = 0; j < V; ++j) EXPECT_EQ(bx.data<float>()[(b * L + l) * V + j], float((s + l) * 10 + j));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < V; ++j) EXPECT_EQ(by.data<float>()[(b * H + h) * V + j], float((s + L + h) * 10 + j));
  }
  // The last window's target ends exactly at the split's end.
  EXPECT_EQ(by.data<float>()[(1 * H + H - 1) * V], float(49 * 10));
  ds.gather_range(25, 100, bx, by);  // clamped to 3 windows
  EXPECT_EQ(bx.size(0), 3);
  EXPECT_THROW(ds.gather({28}, bx, by), mamba::Error);
  EXPECT_THROW(ds.gather({}, bx, by), mamba::Error);
  EXPECT_EQ(WindowDataset(x, {0, 11}, L, H).size(), 0);
  EXPECT_THROW(WindowDataset(x, {0, 54}, L, H), mamba::Error);
}

TEST(TimeFeatures, MatchTimeF) {
  // 2016-07-01 (a Friday) 00:00 and 2018-12-31 (a Monday) 23:45.
  const std::vector<int64_t> t = {1467331200, 1546299900};
  const Tensor f = time_features(t, 3600);
  ASSERT_EQ(f.shape(), (mamba::Shape{2, 4}));
  const float* p = f.data<float>();
  EXPECT_FLOAT_EQ(p[0], -0.5f);                               // hour 0
  EXPECT_FLOAT_EQ(p[1], float(4.0 / 6 - 0.5));                // Friday
  EXPECT_FLOAT_EQ(p[2], -0.5f);                               // day 1
  EXPECT_FLOAT_EQ(p[3], float(182.0 / 365 - 0.5));            // July 1st of a leap year: day 183
  EXPECT_FLOAT_EQ(p[4], 0.5f);                                // hour 23
  EXPECT_FLOAT_EQ(p[5], -0.5f);                               // Monday
  EXPECT_FLOAT_EQ(p[6], 0.5f);                                // day 31
  EXPECT_FLOAT_EQ(p[7], float(364.0 / 365 - 0.5));            // Dec 31 of a common year: day 365
  const Tensor g = time_features(t, 900);
  ASSERT_EQ(g.size(1), 5);
  EXPECT_FLOAT_EQ(g.data<float>()[5], float(45.0 / 59 - 0.5));  // minute 45
  // Rows past the end are extrapolated.
  const Tensor w = window_time_features(t, 3600, 1, 3);  // 23:45 Dec 31, then 00:45, 01:45 Jan 1
  ASSERT_EQ(w.shape(), (mamba::Shape{3, 4}));
  EXPECT_FLOAT_EQ(w.data<float>()[4], -0.5f);
  EXPECT_FLOAT_EQ(w.data<float>()[7], -0.5f);  // day of year 1
  EXPECT_FLOAT_EQ(w.data<float>()[8], float(1.0 / 23 - 0.5));
}
