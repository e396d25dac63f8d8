// The Mamba forecasters: gradients against finite differences, learning a cross-variable
// pattern the channel-independent linear model cannot, the model directory round trip,
// quantile offsets, and exact resume of training.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "mamba/forecasting/baselines.h"
#include "mamba/forecasting/fit.h"
#include "mamba/forecasting/model_dir.h"
#include "mamba/forecasting/protocol.h"

using namespace mamba::forecasting;
using mamba::Tensor;
namespace fs = std::filesystem;

namespace {

ForecasterConfig small_config(const std::string& arch, int64_t L, int64_t H, int64_t V) {
  ForecasterConfig c;
  c.arch = arch;
  c.seq_len = L;
  c.horizon = H;
  c.n_vars = V;
  c.d_model = 16;
  c.d_ff = 16;
  c.n_layers = 1;
  c.d_state = 4;
  c.patch_len = 4;
  c.dropout = 0.0;
  return c;
}

// Variable 0: white noise (unpredictable from its own past); variable 1 repeats variable 0
// `lag` steps later; variable 2: noise. Variable 1's next `lag` steps are in variable 0's
// look-back, so a cross-variable model can forecast it exactly.
Tensor lead_lag_series(int64_t T, int64_t lag, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> x0(T + lag, 0.f);
  for (int64_t t = 0; t < T + lag; ++t) x0[t] = n(rng);
  Tensor s = Tensor::empty({T, 3});
  for (int64_t t = 0; t < T; ++t) {
    s.data<float>()[t * 3 + 0] = x0[t + lag];
    s.data<float>()[t * 3 + 1] = x0[t];
    s.data<float>()[t * 3 + 2] = n(rng);
  }
  return s;
}

}  // namespace

TEST(MambaForecaster, GradientsMatchFiniteDifferences) {
  for (const char* arch : {"s_mamba", "multiscale"}) {
    SCOPED_TRACE(arch);
    MambaForecaster m(small_config(arch, 12, 5, 3), 7);
    std::mt19937_64 rng(1);
    Tensor x = Tensor::empty({2, 12, 3});
    std::normal_distribution<float> n(0.f, 1.f);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = n(rng);
    Tensor y = Tensor::full({2, 5, 3}, 0.5);
    // Make the heads non-zero so every path carries gradient.
    auto loss_of = [&] {
      mamba::ag::NoGradGuard ng;
      return mamba::ag::mse_loss(m.forward(x, {}, false, rng), y).value().item();
    };
    m.store().zero_grad();
    mamba::ag::backward(mamba::ag::mse_loss(m.forward(x, {}, false, rng), y));
    int checked = 0;
    for (auto& e : m.store().entries()) {
      if (e.name.find("A_log") != std::string::npos) continue;
      float* p = e.value.data<float>();
      const float* g = e.grad.data<float>();
      for (int64_t i = 0; i < e.value.numel(); i += std::max<int64_t>(1, e.value.numel() / 3)) {
        const float keep = p[i];
        p[i] = keep + 1e-2f;
        m.refresh();
        const double up = loss_of();
        p[i] = keep - 1e-2f;
        m.refresh();
        const double down = loss_of();
        p[i] = keep;
        m.refresh();
        const double fd = (up - down) / 2e-2;
        EXPECT_NEAR(g[i], fd, 3e-2 * std::max(1.0, std::fabs(fd)) + 1e-4) << e.name << "[" << i << "]";
        ++checked;
      }
    }
    EXPECT_GT(checked, 20);
  }
}

TEST(MambaForecaster, LearnsCrossVariablePatternTheLinearModelCannot) {
  const int64_t L = 24, H = 4, T = 4000;
  const Tensor raw = lead_lag_series(T, H, 3);  // lag = horizon
  const Splits sp = make_splits(SplitProtocol::ratio, T, L, H);
  const StandardScaler sc = StandardScaler::fit(raw, sp.train);
  const Tensor z = sc.transform(raw);
  const WindowDataset train(z, sp.train, L, H), val(z, sp.val, L, H), test(z, sp.test, L, H);
  const LinearForecaster lin = LinearForecaster::fit(z, sp.train, L, H, {InstanceNorm::mean, 1e-6});
  const double lin_mse = evaluate(lin, test).mse;

  ForecasterConfig c = small_config("s_mamba", L, H, 3);
  c.d_model = 32;
  c.d_ff = 32;
  MambaForecaster m(c, 1);
  init_from_linear(m, lin);
  FitOptions o;
  o.max_epochs = 10;
  o.patience = 3;
  o.lr = 5e-3;
  o.quiet = true;
  o.loss = "mse";
  fit(m, window_source(train), window_source(val), o);
  const double mamba_mse = evaluate(m, window_source(test)).mse;
  // Variable 1 is predictable from variable 0 (ideal MSE about 2/3 over the three
  // variables), so a cross-variable model must do much better than the
  // channel-independent linear map (about 1).
  EXPECT_LT(mamba_mse, 0.85 * lin_mse) << "mamba " << mamba_mse << " linear " << lin_mse;
}

TEST(MambaForecaster, ModelDirectoryRoundTripAndQuantiles) {
  const int64_t L = 16, H = 4;
  const Tensor raw = lead_lag_series(400, 3, 5);
  const Splits sp = make_splits(SplitProtocol::ratio, 400, L, H);
  ForecastModel fm;
  fm.net = std::make_shared<MambaEnsemble>(std::vector<std::shared_ptr<MambaForecaster>>{
      std::make_shared<MambaForecaster>(small_config("s_mamba", L, H, 3), 2),
      std::make_shared<MambaForecaster>(small_config("s_mamba", L, H, 3), 3)});
  fm.scaler = StandardScaler::fit(raw, sp.train, {"a", "b", "c"});
  fm.variables = {"a", "b", "c"};
  fm.protocol = "ratio";
  fm.interval_seconds = 3600;
  fm.metrics = {{"test", {{"mse", 1.0}}}};
  const Tensor z = fm.scaler.transform(raw);
  const WindowDataset val(z, sp.val, L, H);
  fm.residual_levels = default_quantile_levels();
  fm.residual_quantiles = residual_quantiles(*fm.net, window_source(val), fm.residual_levels);
  const std::string dir = std::string(MAMBA_TEST_TMP) + "/forecast_model";
  fs::create_directories(MAMBA_TEST_TMP);
  fm.save(dir);
  fm.save(dir);  // replacing an existing directory works
  const ForecastModel back = ForecastModel::load(dir);
  EXPECT_EQ(back.variables, fm.variables);
  EXPECT_EQ(back.interval_seconds, 3600);
  const Tensor w = raw.slice(0, 100, 100 + L).contiguous();
  EXPECT_EQ(fm.forecast_raw(w).to_vector_f32(), back.forecast_raw(w).to_vector_f32());
  // Quantile offsets increase with q, the median is near zero bias.
  const auto q10 = back.quantile_offset(0.1).to_vector_f32(), q90 = back.quantile_offset(0.9).to_vector_f32();
  for (size_t i = 0; i < q10.size(); ++i) EXPECT_LT(q10[i], q90[i]);
  EXPECT_THROW(back.quantile_offset(1.5), mamba::Error);
  // A broken directory is refused with the file named.
  fs::remove(dir + "/preprocess.json");
  try {
    ForecastModel::load(dir);
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("preprocess.json"), std::string::npos) << e.what();
  }
}

TEST(MambaForecaster, ResumedTrainingEqualsUninterrupted) {
  const int64_t L = 16, H = 4, T = 600;
  const Tensor raw = lead_lag_series(T, 3, 9);
  const Splits sp = make_splits(SplitProtocol::ratio, T, L, H);
  const Tensor z = StandardScaler::fit(raw, sp.train).transform(raw);
  const WindowDataset train(z, sp.train, L, H), val(z, sp.val, L, H);
  ForecasterConfig c = small_config("s_mamba", L, H, 3);
  c.dropout = 0.1;  // dropout draws from the trainer's RNG: restored on resume
  FitOptions o;
  o.max_epochs = 3;
  o.patience = 0;
  o.quiet = true;
  o.batch_size = 64;
  const std::string dir = std::string(MAMBA_TEST_TMP) + "/forecast_resume";
  fs::remove_all(dir);
  fs::remove_all(dir + "_full");

  MambaForecaster full(c, 4);
  FitOptions of = o;
  of.checkpoint_dir = dir + "_full";
  fit(full, window_source(train), window_source(val), of);

  // The same run killed after its first epoch (its checkpoint written), then resumed.
  const int64_t steps_per_epoch = (train.size() + o.batch_size - 1) / o.batch_size;
  MambaForecaster part(c, 4);
  FitOptions op = o;
  op.checkpoint_dir = dir;
  op.stop_after_steps = steps_per_epoch;
  EXPECT_TRUE(fit(part, window_source(train), window_source(val), op).interrupted);
  MambaForecaster resumed(c, 99);  // a different initialisation: the checkpoint replaces it
  op.stop_after_steps = 0;
  op.resume = true;
  const FitResult r = fit(resumed, window_source(train), window_source(val), op);
  EXPECT_EQ(r.steps, 3 * steps_per_epoch);
  // Bit for bit the uninterrupted run's parameters.
  auto& fe = full.store().entries();
  auto& re = resumed.store().entries();
  ASSERT_EQ(fe.size(), re.size());
  for (size_t i = 0; i < fe.size(); ++i) EXPECT_EQ(fe[i].value.to_vector_f32(), re[i].value.to_vector_f32()) << fe[i].name;
}
