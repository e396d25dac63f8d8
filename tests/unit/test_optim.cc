// Optimisers, schedules and gradient utilities against numbers computed here in double.
#include "mamba/train/grad_utils.h"
#include "mamba/train/optimizer.h"
#include "mamba/train/schedule.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include "util/compare.h"

using mamba::Tensor;
using namespace mamba::train;

namespace {

// A tiny model: one matrix that decays and three parameters that must not.
struct TinyModel {
  Tensor w = Tensor::from_vector({0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f}, {2, 3});
  Tensor a_log = Tensor::from_vector({0.1f, -0.2f, 0.3f, 0.7f}, {2, 2});
  Tensor d = Tensor::from_vector({1.0f, -2.0f}, {2});
  Tensor norm = Tensor::from_vector({1.0f, 1.0f, 0.9f}, {3});
  std::vector<Tensor> grads;
  std::vector<Param> params;
  TinyModel() {
    params = make_params({{"backbone.layers.0.mixer.in_proj.weight", &w},
                          {"backbone.layers.0.mixer.A_log", &a_log},
                          {"backbone.layers.0.mixer.D", &d},
                          {"backbone.layers.0.norm.weight", &norm}},
                         grads);
  }
  // Deterministic, step-dependent gradients.
  void set_grads(int step) {
    for (size_t k = 0; k < params.size(); ++k) {
      float* g = params[k].grad->data<float>();
      for (int64_t i = 0; i < params[k].grad->numel(); ++i)
        g[i] = static_cast<float>(std::sin(1.0 + 0.7 * i + 1.3 * k + 2.1 * step) * (0.5 + 0.25 * step));
    }
  }
};

std::vector<double> to_double(const Tensor& t) {
  std::vector<double> out;
  for (float x : t.to_vector_f32()) out.push_back(x);
  return out;
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol, const std::string& what) {
  const std::vector<float> g = got.to_vector_f32();
  ASSERT_EQ(g.size(), want.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], tol * std::max(1.0, std::fabs(want[i]))) << what << "[" << i << "]";
}

}  // namespace

TEST(DecayRule, ExcludesSsmParametersBiasesAndNorms) {
  for (const char* name : {"backbone.layers.0.mixer.A_log", "backbone.layers.3.mixer.D", "backbone.layers.0.mixer.dt_bias",
                           "backbone.layers.0.mixer.dt_proj.bias", "backbone.layers.0.mixer.conv1d.bias",
                           "backbone.layers.0.mixer.in_proj.bias", "backbone.layers.0.norm.weight",
                           "backbone.layers.0.norm.bias", "backbone.norm_f.weight", "backbone.layers.1.mixer.norm.weight"})
    EXPECT_FALSE(default_decay_rule(name)) << name;
  for (const char* name : {"backbone.embedding.weight", "lm_head.weight", "backbone.layers.0.mixer.in_proj.weight",
                           "backbone.layers.0.mixer.out_proj.weight", "backbone.layers.0.mixer.conv1d.weight",
                           "backbone.layers.0.mixer.x_proj.weight", "backbone.layers.0.mixer.dt_proj.weight",
                           "backbone.layers.0.mixer.Dx.weight"})
    EXPECT_TRUE(default_decay_rule(name)) << name;
}

TEST(MakeParams, AllocatesZeroGradsAndTakesAPredicate) {
  Tensor emb = Tensor::full({4, 2}, 1.0), bias = Tensor::full({2}, 1.0);
  std::vector<Tensor> grads;
  auto params = make_params({{"backbone.embedding.weight", &emb}, {"head.bias", &bias}}, grads);
  ASSERT_EQ(grads.size(), 2u);
  EXPECT_EQ(grads[0].shape(), emb.shape());
  EXPECT_EQ(params[0].grad, &grads[0]);
  EXPECT_TRUE(params[0].decay);
  EXPECT_FALSE(params[1].decay);
  for (float g : grads[1].to_vector_f32()) EXPECT_EQ(g, 0.f);

  std::vector<Tensor> grads2;
  auto custom = make_params({{"backbone.embedding.weight", &emb}, {"head.bias", &bias}}, grads2,
                            [](const std::string& n) { return n.find("embedding") == std::string::npos; });
  EXPECT_FALSE(custom[0].decay);
  EXPECT_TRUE(custom[1].decay);

  std::vector<Tensor> bad{Tensor::zeros({3, 2}), Tensor::zeros({2})};
  try {
    make_params({{"backbone.embedding.weight", &emb}, {"head.bias", &bias}}, bad);
    FAIL() << "expected a shape error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("backbone.embedding.weight"), std::string::npos) << e.what();
  }
}

TEST(AdamW, ThreeStepsMatchHandComputedDouble) {
  TinyModel m;
  const AdamWOptions o{0.9, 0.95, 1e-8, 0.1};
  AdamW opt(m.params, o);
  std::vector<std::vector<double>> p, mom, vel;
  for (const Param& q : m.params) {
    p.push_back(to_double(*q.value));
    mom.emplace_back(p.back().size(), 0.0);
    vel.emplace_back(p.back().size(), 0.0);
  }
  const double lrs[3] = {1e-2, 5e-3, 2e-3};
  for (int t = 1; t <= 3; ++t) {
    m.set_grads(t);
    const double lr = lrs[t - 1];
    for (size_t k = 0; k < m.params.size(); ++k) {
      const std::vector<double> g = to_double(*m.params[k].grad);
      const double wd = m.params[k].decay ? o.weight_decay : 0.0;
      for (size_t i = 0; i < g.size(); ++i) {
        p[k][i] *= 1.0 - lr * wd;
        mom[k][i] = o.beta1 * mom[k][i] + (1 - o.beta1) * g[i];
        vel[k][i] = o.beta2 * vel[k][i] + (1 - o.beta2) * g[i] * g[i];
        const double mhat = mom[k][i] / (1 - std::pow(o.beta1, t));
        const double vhat = vel[k][i] / (1 - std::pow(o.beta2, t));
        p[k][i] -= lr * mhat / (std::sqrt(vhat) + o.eps);
      }
    }
    opt.step(lr);
    for (size_t k = 0; k < m.params.size(); ++k)
      expect_near_all(*m.params[k].value, p[k], 2e-6, m.params[k].name + " step " + std::to_string(t));
  }
  EXPECT_EQ(opt.steps_taken(), 3);
  // The state tensors hold the raw (not bias-corrected) moments.
  const auto state = opt.state_tensors();
  EXPECT_EQ(state[0].first, "adamw.step");
  EXPECT_EQ(state[0].second.item(), 3.0);
  EXPECT_EQ(state[1].first, "adamw.exp_avg.backbone.layers.0.mixer.in_proj.weight");
  expect_near_all(state[1].second, mom[0], 1e-6, "exp_avg");
  expect_near_all(state[5].second, vel[0], 1e-6, "exp_avg_sq");
}

TEST(AdamW, FirstStepByHand) {
  // One element, g = 0.3, lr = 0.1, wd = 0.5: p = 2 * (1 - 0.05) - 0.1 * 0.3 / (0.3 + 1e-8).
  Tensor w = Tensor::from_vector({2.0f}, {1});
  std::vector<Tensor> grads;
  auto params = make_params({{"w", &w}}, grads);
  grads[0].fill(0.3);
  AdamW opt(params, {0.9, 0.999, 1e-8, 0.5});
  opt.step(0.1);
  EXPECT_NEAR(w.item(), 1.9 - 0.1 * 0.3 / (0.3 + 1e-8), 1e-6);
}

TEST(AdamW, NoDecayOnExcludedNames) {
  // With zero gradients the only change is weight decay: decayed params shrink by
  // (1 - lr * wd) per step, the excluded ones stay bitwise unchanged.
  TinyModel m;
  const std::vector<float> before_w = m.w.to_vector_f32(), before_a = m.a_log.to_vector_f32(),
                           before_d = m.d.to_vector_f32(), before_n = m.norm.to_vector_f32();
  AdamW opt(m.params, {0.9, 0.999, 1e-8, 0.2});
  for (int t = 0; t < 3; ++t) opt.step(0.1);
  EXPECT_EQ(m.a_log.to_vector_f32(), before_a);
  EXPECT_EQ(m.d.to_vector_f32(), before_d);
  EXPECT_EQ(m.norm.to_vector_f32(), before_n);
  const std::vector<float> after_w = m.w.to_vector_f32();
  for (size_t i = 0; i < after_w.size(); ++i) EXPECT_NEAR(after_w[i], before_w[i] * std::pow(0.98, 3), 1e-6);
}

TEST(SGD, NesterovThreeStepsMatchHandComputedDouble) {
  TinyModel m;
  const SGDOptions o{0.9, 0.0, true, 0.05};
  SGD opt(m.params, o);
  std::vector<std::vector<double>> p, buf;
  for (const Param& q : m.params) {
    p.push_back(to_double(*q.value));
    buf.emplace_back(p.back().size(), 0.0);
  }
  const double lrs[3] = {0.1, 0.05, 0.02};
  for (int t = 1; t <= 3; ++t) {
    m.set_grads(t);
    for (size_t k = 0; k < m.params.size(); ++k) {
      const std::vector<double> g = to_double(*m.params[k].grad);
      const double wd = m.params[k].decay ? o.weight_decay : 0.0;
      for (size_t i = 0; i < g.size(); ++i) {
        const double d = g[i] + wd * p[k][i];
        buf[k][i] = t == 1 ? d : o.momentum * buf[k][i] + d;
        p[k][i] -= lrs[t - 1] * (d + o.momentum * buf[k][i]);
      }
    }
    opt.step(lrs[t - 1]);
    for (size_t k = 0; k < m.params.size(); ++k)
      expect_near_all(*m.params[k].value, p[k], 1e-6, m.params[k].name + " step " + std::to_string(t));
  }
}

TEST(SGD, FirstNesterovStepByHand) {
  // p = 1, g = 0.5, momentum 0.9, lr 0.1: b = 0.5, p = 1 - 0.1 * (0.5 + 0.45) = 0.905.
  Tensor w = Tensor::from_vector({1.0f}, {1});
  std::vector<Tensor> grads;
  auto params = make_params({{"w", &w}}, grads);
  grads[0].fill(0.5);
  SGD opt(params, {0.9, 0.0, true, 0.0});
  opt.step(0.1);
  EXPECT_NEAR(w.item(), 0.905, 1e-7);
  // Second step, same gradient: b = 0.9 * 0.5 + 0.5 = 0.95, p = 0.905 - 0.1 * (0.5 + 0.855).
  opt.step(0.1);
  EXPECT_NEAR(w.item(), 0.905 - 0.1355, 1e-7);
}

TEST(SGD, PlainAndDampenedMomentum) {
  Tensor w = Tensor::from_vector({1.0f}, {1});
  std::vector<Tensor> grads;
  auto params = make_params({{"w", &w}}, grads);
  grads[0].fill(1.0);
  SGD opt(params, {0.5, 0.5, false, 0.0});
  opt.step(1.0);  // b = 1, p = 0
  opt.step(1.0);  // b = 0.5 + 0.5 = 1, p = -1
  EXPECT_NEAR(w.item(), -1.0, 1e-7);
  EXPECT_THROW(SGD(params, {0.0, 0.0, true, 0.0}), mamba::Error);
  EXPECT_THROW(opt.step(-1.0), mamba::Error);
}

TEST(Optimizer, RejectsNonF32AndMismatchedGrads) {
  Tensor w = Tensor::zeros({2, 2}, mamba::DType::f64);
  Tensor g = Tensor::zeros({2, 2});
  EXPECT_THROW(AdamW({Param{"w", &w, &g, true}}), mamba::Error);
  Tensor w2 = Tensor::zeros({2, 2}), g2 = Tensor::zeros({4});
  try {
    AdamW opt({Param{"layer.w", &w2, &g2, true}});
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.w"), std::string::npos) << e.what();
  }
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  TinyModel a, b;
  AdamW opt_a(a.params), opt_b(b.params);
  for (int t = 1; t <= 2; ++t) {
    a.set_grads(t);
    opt_a.step(1e-2);
  }
  // Copy a's values and state into b, then both take the same step.
  for (size_t k = 0; k < a.params.size(); ++k) b.params[k].value->copy_from(*a.params[k].value);
  mamba::train::NamedTensors state;
  for (auto& [n, t] : opt_a.state_tensors()) state.emplace_back(n, t.clone());
  opt_b.load_state_tensors(state);
  EXPECT_EQ(opt_b.steps_taken(), 2);
  a.set_grads(3);
  b.set_grads(3);
  opt_a.step(1e-2);
  opt_b.step(1e-2);
  for (size_t k = 0; k < a.params.size(); ++k)
    EXPECT_EQ(a.params[k].value->to_vector_f32(), b.params[k].value->to_vector_f32());

  // Missing and misshapen tensors name the tensor and leave the state alone.
  auto missing = state;
  missing.erase(missing.begin() + 2);
  try {
    opt_b.load_state_tensors(missing, "ckpt/optimizer.safetensors");
    FAIL();
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ckpt/optimizer.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("adamw.exp_avg.backbone.layers.0.mixer.A_log"), std::string::npos) << msg;
  }
  auto misshapen = state;
  misshapen[1].second = Tensor::zeros({3, 2});
  EXPECT_THROW(opt_b.load_state_tensors(misshapen), mamba::Error);
  EXPECT_EQ(opt_b.steps_taken(), 3);
  auto extra = state;
  extra.emplace_back("adamw.exp_avg.other", Tensor::zeros({1}));
  EXPECT_THROW(opt_b.load_state_tensors(extra), mamba::Error);
  SGD sgd(b.params, {0.9});
  EXPECT_THROW(sgd.load_state_tensors(state), mamba::Error);  // wrong kind: no "sgd.step"
}

TEST(Optimizer, BitwiseSameForAnyThreadCount) {
  // Large enough for several blocks, and an awkward length.
  const int64_t n = 100003;
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor w = Tensor::from_vector(mamba::testing::randn(n, 1), {n});
    std::vector<Tensor> grads{Tensor::from_vector(mamba::testing::randn(n, 2), {n})};
    auto params = make_params({{"w", &w}}, grads);
    AdamW opt(params);
    for (int t = 0; t < 3; ++t) opt.step(1e-3);
    const double norm = clip_grad_norm(params, 1.0);
    return std::make_pair(w.to_vector_f32(), norm);
  };
  const auto one = run(1), two = run(2), four = run(4);
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(one.first, two.first);
  EXPECT_EQ(one.first, four.first);
  EXPECT_EQ(std::memcmp(&one.second, &two.second, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&one.second, &four.second, sizeof(double)), 0);
}

TEST(Optimizer, ZeroGrad) {
  TinyModel m;
  m.set_grads(1);
  SGD opt(m.params);
  opt.zero_grad();
  for (const Param& p : m.params)
    for (float g : p.grad->to_vector_f32()) EXPECT_EQ(g, 0.f);
}

// ---- schedules -------------------------------------------------------------------------

TEST(Schedule, WarmupCosineKeySteps) {
  const WarmupCosine s{10, 110, 1e-3, 1e-5};
  EXPECT_DOUBLE_EQ(s(0), 0.0);
  EXPECT_DOUBLE_EQ(s(5), 5e-4);
  EXPECT_DOUBLE_EQ(s(10), 1e-3);                       // peak at the end of warm-up
  EXPECT_NEAR(s(60), (1e-3 + 1e-5) / 2, 1e-15);       // half-way down the cosine
  EXPECT_NEAR(s(35), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + std::cos(std::numbers::pi / 4)), 1e-15);
  EXPECT_DOUBLE_EQ(s(110), 1e-5);                      // the floor
  EXPECT_DOUBLE_EQ(s(1000), 1e-5);
  for (int64_t t = 11; t < 110; ++t) EXPECT_LT(s(t), s(t - 1));
  EXPECT_THROW(s(-1), mamba::Error);
  EXPECT_THROW((WarmupCosine{10, 5, 1e-3, 0}(0)), mamba::Error);
  EXPECT_DOUBLE_EQ((WarmupCosine{0, 100, 1.0, 0.0}(0)), 1.0);
}

TEST(Schedule, PolyDecayKeySteps) {
  const PolyDecay s{1e-2, 1000, 0.9};
  EXPECT_DOUBLE_EQ(s(0), 1e-2);
  EXPECT_NEAR(s(500), 1e-2 * std::pow(0.5, 0.9), 1e-16);
  EXPECT_NEAR(s(999), 1e-2 * std::pow(0.001, 0.9), 1e-16);
  EXPECT_DOUBLE_EQ(s(1000), 0.0);
  EXPECT_DOUBLE_EQ(s(5000), 0.0);
  EXPECT_THROW((PolyDecay{1e-2, 0, 0.9}(0)), mamba::Error);
}

TEST(ReduceOnPlateau, PatienceCooldownAndFloor) {
  ReduceOnPlateau::Options o;
  o.factor = 0.5;
  o.patience = 2;
  o.cooldown = 1;
  o.min_lr = 0.2;
  ReduceOnPlateau s(1.0, o);
  EXPECT_EQ(s.step(10.0), 1.0);   // first metric improves on +inf
  EXPECT_EQ(s.step(10.0), 1.0);   // bad 1
  EXPECT_EQ(s.step(9.9995), 1.0); // bad 2: not better than 10 by the relative 1e-4
  EXPECT_EQ(s.step(10.0), 0.5);   // bad 3 > patience: reduce, cooldown 1
  EXPECT_EQ(s.cooldown_left(), 1);
  EXPECT_EQ(s.step(10.0), 0.5);   // cooldown: counter reset
  EXPECT_EQ(s.step(10.0), 0.5);   // bad 1
  EXPECT_EQ(s.step(10.0), 0.5);   // bad 2
  EXPECT_EQ(s.step(10.0), 0.25);  // reduce
  EXPECT_EQ(s.step(9.0), 0.25);   // improvement
  EXPECT_EQ(s.best(), 9.0);
  EXPECT_EQ(s.num_bad_evaluations(), 0);
  for (int i = 0; i < 10; ++i) s.step(std::nan(""));  // NaN never improves
  EXPECT_EQ(s.lr(), 0.2);         // floor
  EXPECT_EQ(s.num_reductions(), 3);
}

TEST(ReduceOnPlateau, MaxModeAbsThresholdAndStateRoundTrip) {
  ReduceOnPlateau::Options o;
  o.mode = ReduceOnPlateau::Mode::max;
  o.threshold_mode = ReduceOnPlateau::ThresholdMode::abs;
  o.threshold = 0.01;
  o.patience = 1;
  ReduceOnPlateau a(0.1, o);
  const double dice[] = {0.5, 0.505, 0.52, 0.52, 0.51, 0.6, 0.6, 0.6, 0.6};
  for (int i = 0; i < 4; ++i) a.step(dice[i]);
  // 0.5 best; 0.505 not +0.01 better (bad 1); 0.52 better; 0.52 bad 1.
  EXPECT_EQ(a.best(), 0.52);
  EXPECT_EQ(a.num_bad_evaluations(), 1);
  ReduceOnPlateau b(0.1, o);
  b.load_state(nlohmann::json::parse(a.state().dump()));
  for (int i = 4; i < 9; ++i) EXPECT_EQ(a.step(dice[i]), b.step(dice[i])) << i;
  EXPECT_NEAR(a.lr(), 0.001, 1e-15);  // reduced at 0.51 and at the third 0.6

  ReduceOnPlateau fresh(0.1, o);
  const nlohmann::json st = fresh.state();
  EXPECT_TRUE(st["best"].is_null());
  b.load_state(st);
  EXPECT_EQ(b.best(), -std::numeric_limits<double>::infinity());
  try {
    b.load_state(nlohmann::json{{"lr", "x"}});
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lr"), std::string::npos) << e.what();
  }
  o.factor = 1.5;
  EXPECT_THROW(ReduceOnPlateau(0.1, o), mamba::Error);
}

// ---- gradient utilities ----------------------------------------------------------------

TEST(GradUtils, ClipGlobalNorm) {
  Tensor a = Tensor::zeros({2}), b = Tensor::zeros({1});
  std::vector<Tensor> grads{Tensor::from_vector({3.f, 0.f}, {2}), Tensor::from_vector({4.f}, {1})};
  auto params = make_params({{"a", &a}, {"b", &b}}, grads);
  EXPECT_DOUBLE_EQ(grad_global_norm(params), 5.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 10.0), 5.0);  // under the limit: untouched
  EXPECT_EQ(grads[0].to_vector_f32()[0], 3.f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 1.0), 5.0);
  EXPECT_NEAR(grads[0].to_vector_f32()[0], 0.6, 1e-6);
  EXPECT_NEAR(grads[1].to_vector_f32()[0], 0.8, 1e-6);
  EXPECT_NEAR(grad_global_norm(params), 1.0, 1e-6);
  EXPECT_THROW(clip_grad_norm(params, 0.0), mamba::Error);
  grads[1].fill(INFINITY);
  EXPECT_TRUE(std::isinf(clip_grad_norm(params, 1.0)));
  EXPECT_NEAR(grads[0].to_vector_f32()[0], 0.6, 1e-6);  // left alone
}

TEST(GradUtils, NormInDoubleOnLargeTensors) {
  const int64_t n = 300001;
  std::vector<float> v = mamba::testing::randn(n, 7);
  double want = 0;
  for (float x : v) want += double(x) * double(x);
  Tensor w = Tensor::zeros({n});
  std::vector<Tensor> grads{Tensor::from_vector(v, {n})};
  auto params = make_params({{"w", &w}}, grads);
  EXPECT_NEAR(grad_global_norm(params), std::sqrt(want), 1e-12 * std::sqrt(want));
}

TEST(GradUtils, AccumulateMeanOfMicroBatches) {
  Tensor w = Tensor::zeros({3});
  std::vector<Tensor> grads;
  auto params = make_params({{"w", &w}}, grads);
  GradAccumulator acc(4);
  for (int i = 1; i <= 4; ++i) {
    EXPECT_FALSE(acc.ready());
    acc.add(params, {Tensor::full({3}, i)});
  }
  EXPECT_TRUE(acc.ready());
  acc.finish(params);
  for (float g : grads[0].to_vector_f32()) EXPECT_FLOAT_EQ(g, 2.5f);
  EXPECT_EQ(acc.count(), 0);
  try {
    acc.add(params, {Tensor::zeros({4})});
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GradAccumulator(0), mamba::Error);
}

TEST(GradUtils, NonFiniteCheckNamesTheParameter) {
  const int64_t n = 40000;  // several blocks
  Tensor a = Tensor::zeros({4}), b = Tensor::zeros({n});
  std::vector<Tensor> grads;
  auto params = make_params({{"backbone.layers.0.mixer.A_log", &a}, {"backbone.layers.1.mixer.in_proj.weight", &b}}, grads);
  EXPECT_FALSE(find_nonfinite_grad(params).has_value());
  EXPECT_NO_THROW(check_finite_grads(params));
  grads[1].data<float>()[n - 5] = NAN;
  grads[1].data<float>()[20000] = -INFINITY;
  EXPECT_EQ(find_nonfinite_grad(params).value(), "backbone.layers.1.mixer.in_proj.weight");
  try {
    check_finite_grads(params);
    FAIL();
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("backbone.layers.1.mixer.in_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("element 20000 is -inf"), std::string::npos) << msg;
  }
}
