// The autograd tape: every op's gradient against central finite differences in f64 at
// awkward sizes (h = 1e-6, agreement to 1e-7), the same ops in f32 against those f64
// gradients (the f32 paths: OpenBLAS linear, the fused cross-entropy kernel, the fast
// RMSNorm, im2col convolutions), a deliberately wrong derivative caught, mixed dtypes
// rejected, gradient accumulation through shared inputs, NoGradGuard, and the modules
// (ParameterStore, Linear, LayerNorm, Embedding, MixerLayer) in a small training loop.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>

#include "mamba/io/safetensors.h"
#include "mamba/ops/elementwise.h"
#include "mamba/ops/activation.h"
#include "mamba/ops/norm.h"
#include "mamba/train/autograd.h"
#include "mamba/train/modules.h"
#include "mamba/train/optimizer.h"
#include "util/compare.h"
#include "util/gradcheck.h"

using mamba::DType;
using mamba::Shape;
using mamba::Tensor;
namespace ag = mamba::ag;

namespace {

// f32 values (the modules and mixers are f32).
Tensor randn(const Shape& s, uint32_t seed, float scale = 1.f) {
  return Tensor::from_vector(mamba::testing::randn(static_cast<size_t>(mamba::shape_numel(s)), seed, scale), s);
}

// A fixed random projection of y to a scalar, in double, so every output element matters
// differently.
double project(const Tensor& y, uint32_t seed) { return mamba::testing::dot(y, randn(y.shape(), seed)); }

constexpr double kH = 1e-6;     // f64 finite-difference step
constexpr double kRtol = 1e-7;  // f64: |analytic - fd| <= kRtol * max(1, |fd|)

// Checks d/d(inputs) of project(f(inputs)) for every input: in f64 by finite differences
// (inputs drawn in f32 and widened, so the f32 run below sees the same values), then, when
// f32_rtol > 0, the same graph in f32 against the f64 gradients (max error relative to
// each gradient's scale).
void check_op(const std::vector<Shape>& shapes, const std::function<ag::Var(const std::vector<ag::Var>&)>& f,
              uint32_t seed = 1, double f32_rtol = 2e-5, float scale = 1.f) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < shapes.size(); ++i)
    xs.push_back(mamba::testing::randn64(shapes[i], seed + 17 * static_cast<uint32_t>(i), scale));
  std::vector<ag::Var> vars;
  for (auto& x : xs) vars.emplace_back(x, true);
  ag::Var y = f(vars);
  ASSERT_EQ(y.value().dtype(), DType::f64);
  ag::backward(y, randn(y.shape(), 999).to(DType::f64));
  for (size_t i = 0; i < xs.size(); ++i) {
    SCOPED_TRACE("input " + std::to_string(i));
    ASSERT_TRUE(vars[i].grad().defined());
    ASSERT_EQ(vars[i].grad().dtype(), DType::f64);
    mamba::testing::expect_matches_finite_differences(
        xs[i], vars[i].grad().contiguous(),
        [&] {
          ag::NoGradGuard ng;
          std::vector<ag::Var> c;
          for (auto& x : xs) c.emplace_back(x);
          return project(f(c).value(), 999);
        },
        kH, kRtol);
  }
  if (f32_rtol <= 0) return;
  std::vector<ag::Var> v32;
  for (auto& x : xs) v32.emplace_back(x.to(DType::f32), true);
  ag::Var y32 = f(v32);
  ASSERT_EQ(y32.value().dtype(), DType::f32);
  EXPECT_LT(mamba::testing::rel_error(y32.value(), y.value()), f32_rtol) << "f32 value";
  ag::backward(y32, randn(y32.shape(), 999));
  for (size_t i = 0; i < xs.size(); ++i)
    EXPECT_LT(mamba::testing::rel_error(v32[i].grad(), vars[i].grad()), f32_rtol) << "f32 gradient of input " << i;
}

}  // namespace

TEST(Autograd, Arithmetic) {
  check_op({{3, 5}, {3, 5}}, [](auto& v) { return ag::add(v[0], v[1]); });
  check_op({{3, 5}, {5}}, [](auto& v) { return ag::sub(v[0], v[1]); });  // broadcast
  check_op({{2, 3, 5}, {3, 1}}, [](auto& v) { return ag::mul(v[0], v[1]); });
  check_op({{4, 3}, {1, 3}}, [](auto& v) { return ag::div(v[0], ag::add(ag::square(v[1]), 1.0)); });
  check_op({{7}}, [](auto& v) { return ag::mul(ag::neg(v[0]), 3.0); });
  check_op({{6}}, [](auto& v) { return ag::sqrt(ag::add(ag::square(v[0]), 0.5)); });
}

TEST(Autograd, LinearAndNorms) {
  check_op({{2, 3, 7}, {5, 7}, {5}}, [](auto& v) { return ag::linear(v[0], v[1], v[2]); });
  check_op({{1, 7}, {3, 7}}, [](auto& v) { return ag::linear(v[0], v[1], ag::Var()); });
  check_op({{3, 2, 9}, {9}, {9}}, [](auto& v) { return ag::layer_norm(v[0], v[1], v[2]); }, 3);
  check_op({{1, 13}}, [](auto& v) { return ag::layer_norm(v[0], ag::Var(), ag::Var()); }, 7);
  check_op({{5, 6}, {6}}, [](auto& v) { return ag::rms_norm(v[0], v[1]); }, 4);
  check_op({{2, 3, 37}, {37}}, [](auto& v) { return ag::rms_norm(v[0], v[1]); }, 8);
  check_op({{1, 13}, {1, 13}, {1}}, [](auto& v) { return ag::linear(v[0], v[1], v[2]); }, 9);  // batch 1, out 1
}

TEST(Autograd, Activations) {
  check_op({{4, 5}}, [](auto& v) { return ag::gelu(v[0]); });
  check_op({{4, 5}}, [](auto& v) { return ag::silu(v[0]); });
  check_op({{4, 5}}, [](auto& v) { return ag::sigmoid(v[0]); });
  check_op({{4, 5}}, [](auto& v) { return ag::tanh(v[0]); });
  check_op({{33}}, [](auto& v) { return ag::relu(v[0]); }, 5);
  // The f32 GELU (the kernels' polynomial erf, forward and backward) against the exact f64
  // tape to f32 rounding, over both tails (scale 4: |x| up to ~16).
  check_op({{2, 41}}, [](auto& v) { return ag::gelu(v[0]); }, 12, 1e-6, 4.f);
  // The f32 layer norm (the kernels' vectorised one) likewise, at the model's width.
  check_op({{3, 64}, {64}, {64}}, [](auto& v) { return ag::layer_norm(v[0], v[1], v[2]); }, 13, 1e-6);
}

TEST(Autograd, F32GeluAndLayerNormAreTheOpsForwardWithOrWithoutGrad) {
  const Tensor x = randn({5, 301}, 21, 3.f), w = randn({301}, 22), b = randn({301}, 23);
  const Tensor want_gelu = mamba::ops::gelu(x), want_norm = mamba::ops::layer_norm(x, w, b, 1e-5);
  for (bool grad : {false, true}) {
    SCOPED_TRACE(grad ? "recording" : "NoGradGuard");
    std::optional<ag::NoGradGuard> ng;
    if (!grad) ng.emplace();
    ag::Var xv(x, grad), wv(w, grad), bv(b, grad);
    EXPECT_EQ(ag::gelu(xv).value().to_vector_f32(), want_gelu.to_vector_f32());
    EXPECT_EQ(ag::layer_norm(xv, wv, bv, 1e-5).value().to_vector_f32(), want_norm.to_vector_f32());
  }
}

TEST(Autograd, Shapes) {
  check_op({{2, 3, 4}}, [](auto& v) { return ag::permute(v[0], {2, 0, 1}); });
  check_op({{2, 3, 4}}, [](auto& v) { return ag::transpose(v[0], 1, 2); });
  check_op({{2, 3, 4}}, [](auto& v) { return ag::reshape(v[0], {6, 4}); });
  check_op({{2, 5, 3}}, [](auto& v) { return ag::slice(v[0], 1, 1, 4); });
  check_op({{2, 2, 3}, {2, 5, 3}}, [](auto& v) { return ag::concat({v[0], v[1]}, 1); });
  check_op({{2, 5, 3}}, [](auto& v) { return ag::flip(v[0], {1}); });
  check_op({{3, 4, 2}}, [](auto& v) { return ag::gather_rows(v[0], {3, 0, 2}); });
}

TEST(Autograd, ReductionsAndLosses) {
  check_op({{3, 4}}, [](auto& v) { return ag::sum(v[0]); });
  check_op({{3, 4}}, [](auto& v) { return ag::mean(v[0]); });
  check_op({{3, 4, 2}}, [](auto& v) { return ag::mean(v[0], 1); });
  check_op({{3, 4, 2}}, [](auto& v) { return ag::mean(v[0], -1, true); });
  const Tensor target = randn({3, 5}, 77);
  check_op({{3, 5}}, [&](auto& v) { return ag::mse_loss(v[0], target); });
  const Tensor labels = Tensor::from_vector_i64({2, -1, 0, 4}, {4});
  check_op({{4, 6}}, [&](auto& v) { return ag::cross_entropy(v[0], labels); });
  check_op({{3, 5}}, [&](auto& v) { return ag::l1_loss(v[0], target); });
  const Tensor many = Tensor::from_vector_i64({0, 36, -1, 5, 17, 36, 2}, {7});
  check_op({{7, 37}}, [&](auto& v) { return ag::cross_entropy(v[0], many); }, 12, 2e-5, 3.f);
  const Tensor ids = Tensor::from_vector_i64({0, 2, 2, 4, 1, 0}, {2, 3});
  // (Without padding_idx: the padding row is read by the forward but gets no gradient by
  // definition; EmbeddingSkipsPadding checks that.)
  check_op({{5, 3}}, [&](auto& v) { return ag::embedding(ids, v[0]); });
}

TEST(Autograd, CrossEntropyValue) {
  // Two rows, uniform logits: loss = log(V); the ignored row does not count.
  ag::Var logits(Tensor::zeros({3, 4}), true);
  ag::Var loss = ag::cross_entropy(logits, Tensor::from_vector_i64({1, -1, 3}, {3}));
  EXPECT_NEAR(loss.value().item(), std::log(4.0), 1e-6);
  ag::backward(loss);
  const auto g = logits.grad().to_vector_f32();
  EXPECT_NEAR(g[1], (0.25 - 1.0) / 2, 1e-6);
  EXPECT_EQ(g[4], 0.f);  // ignored row
}

TEST(Autograd, EmbeddingSkipsPadding) {
  ag::Var table(randn({5, 3}, 3), true);
  const Tensor ids = Tensor::from_vector_i64({0, 2, 2, 4}, {2, 2});
  ag::Var y = ag::embedding(ids, table, /*padding_idx*/ 0);
  EXPECT_EQ(y.shape(), (Shape{2, 2, 3}));
  ag::backward(ag::sum(y));
  const auto g = table.grad().to_vector_f32();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(g[0 * 3 + i], 0.f);  // padding
    EXPECT_EQ(g[1 * 3 + i], 0.f);  // unused
    EXPECT_EQ(g[2 * 3 + i], 2.f);  // used twice
    EXPECT_EQ(g[4 * 3 + i], 1.f);
  }
}

TEST(Autograd, SharedInputsAccumulateAndNoGrad) {
  ag::Var x(Tensor::from_vector({1.f, 2.f, 3.f}, {3}), true);
  ag::Var y = ag::add(ag::mul(x, x), x);  // dy/dx = 2x + 1
  ag::backward(ag::sum(y));
  EXPECT_EQ(x.grad().to_vector_f32(), (std::vector<float>{3.f, 5.f, 7.f}));
  {
    ag::NoGradGuard ng;
    EXPECT_FALSE(ag::grad_enabled());
    ag::Var z = ag::mul(x, 2.0);
    EXPECT_FALSE(z.requires_grad());
    EXPECT_THROW(ag::backward(ag::sum(z)), mamba::Error);
  }
  EXPECT_TRUE(ag::grad_enabled());
}

TEST(Autograd, DropoutScalesAndIsIdentityWithoutGrad) {
  std::mt19937_64 rng(5);
  ag::Var x(Tensor::full({1000}, 1.0), true);
  ag::Var y = ag::dropout(x, 0.25, rng);
  const auto v = y.value().to_vector_f32();
  int zeros = 0;
  for (float f : v) {
    EXPECT_TRUE(f == 0.f || std::fabs(f - 4.f / 3.f) < 1e-6);
    zeros += f == 0.f;
  }
  EXPECT_GT(zeros, 180);
  EXPECT_LT(zeros, 320);
  ag::NoGradGuard ng;
  EXPECT_EQ(ag::dropout(x, 0.25, rng).value().to_vector_f32(), x.value().to_vector_f32());
}

TEST(Autograd, MixerLayerGradientsMatchFiniteDifferences) {
  for (const char* layer : {"Mamba1", "Mamba2"}) {
    SCOPED_TRACE(layer);
    mamba::train::ParameterStore store;
    nlohmann::json cfg = {{"layer", layer}, {"d_state", 4}, {"d_conv", 3}, {"expand", 2}};
    if (std::string(layer) == "Mamba2") cfg.update({{"headdim", 4}, {"chunk_size", 4}});
    mamba::train::MixerLayer m(store, "mixer", 8, cfg);
    std::mt19937_64 rng(11);
    for (auto& e : store.entries()) mamba::train::reference_init(e.name, e.value, rng);
    m.refresh();
    Tensor x = randn({2, 7, 8}, 21, 0.5f);
    ag::Var xv(x, true);
    ag::Var y = m(xv);
    ag::backward(y, randn(y.shape(), 999));
    auto loss = [&] {
      ag::NoGradGuard ng;
      return project(m(ag::Var(x)).value(), 999);
    };
    mamba::testing::expect_matches_finite_differences(x, xv.grad().contiguous(), loss, 1e-2f, 3e-2, 3);
    auto* w = store.find("mixer.in_proj.weight");
    ASSERT_NE(w, nullptr);
    mamba::testing::expect_matches_finite_differences(w->value, w->grad, loss, 1e-2f, 3e-2, 7);
  }
}

TEST(Autograd, ModulesTrainAndRoundTrip) {
  // A tiny regression y = W x + b learned by Linear -> LayerNorm-free MLP with AdamW.
  mamba::train::ParameterStore store;
  mamba::train::Linear l1(store, "fc1", 4, 16), l2(store, "fc2", 16, 2);
  std::mt19937_64 rng(3);
  for (auto& e : store.entries()) mamba::train::reference_init(e.name, e.value, rng);
  const Tensor X = randn({64, 4}, 8);
  const Tensor Wt = randn({2, 4}, 9);
  Tensor Y;
  {
    ag::NoGradGuard ng;
    Y = ag::linear(ag::Var(X), ag::Var(Wt), ag::Var()).value();
  }
  mamba::train::AdamW opt(store.params(), {});
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    store.zero_grad();
    ag::Var loss = ag::mse_loss(l2(ag::gelu(l1(ag::Var(X)))), Y);
    ag::backward(loss);
    opt.step(1e-2);
    if (step == 0) first = loss.value().item();
    last = loss.value().item();
  }
  EXPECT_LT(last, first * 0.05);
  // Save and load into a fresh store with the same layout.
  const std::string path = std::string(MAMBA_TEST_TMP) + "/autograd_modules.safetensors";
  std::filesystem::create_directories(MAMBA_TEST_TMP);
  mamba::io::save_safetensors(path, store.named_values());
  mamba::train::ParameterStore other;
  mamba::train::Linear o1(other, "fc1", 4, 16), o2(other, "fc2", 16, 2);
  mamba::io::SafeTensorsFile f(path);
  other.load([&](const std::string& n) { return f.has(n) ? f.tensor(n) : Tensor(); });
  ag::NoGradGuard ng;
  const auto a = l2(ag::gelu(l1(ag::Var(X)))).value().to_vector_f32();
  const auto b = o2(ag::gelu(o1(ag::Var(X)))).value().to_vector_f32();
  EXPECT_EQ(a, b);
  // A missing tensor is named.
  mamba::train::ParameterStore bad;
  mamba::train::Linear b1(bad, "fc9", 4, 16);
  try {
    bad.load([&](const std::string& n) { return f.has(n) ? f.tensor(n) : Tensor(); });
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc9.weight"), std::string::npos);
  }
}

TEST(Autograd, Convolutions) {
  using mamba::ops::ConvOptions;
  ConvOptions o1;
  o1.stride = {2};
  o1.padding = {1};
  check_op({{2, 3, 9}, {4, 3, 3}, {4}}, [&](auto& v) { return ag::conv(1, v[0], v[1], v[2], o1); });
  ConvOptions og;  // groups and dilation
  og.dilation = {2};
  og.groups = 2;
  og.padding = {2};
  check_op({{1, 4, 11}, {6, 2, 3}, {6}}, [&](auto& v) { return ag::conv(1, v[0], v[1], v[2], og); });
  ConvOptions o2;
  o2.stride = {1, 2};
  o2.padding = {1, 0};
  check_op({{2, 2, 5, 6}, {3, 2, 3, 2}, {3}}, [&](auto& v) { return ag::conv(2, v[0], v[1], v[2], o2); });
  ConvOptions o3;
  o3.padding = {1};
  o3.stride = {2};
  check_op({{1, 2, 5, 4, 5}, {2, 2, 3, 3, 3}, {2}}, [&](auto& v) { return ag::conv(3, v[0], v[1], v[2], o3); });
  // Transposed: upsampling by 2 (U-Net decoders), 1-D with groups and 3-D.
  ConvOptions t1;
  t1.stride = {2};
  t1.groups = 2;
  t1.padding = {1};
  t1.output_padding = {1};
  check_op({{2, 4, 5}, {4, 3, 3}, {6}}, [&](auto& v) { return ag::conv_transpose(1, v[0], v[1], v[2], t1); });
  ConvOptions t3;
  t3.stride = {2};
  check_op({{1, 2, 3, 2, 3}, {2, 3, 2, 2, 2}, {3}},
           [&](auto& v) { return ag::conv_transpose(3, v[0], v[1], v[2], t3); });
  // Unbatched input.
  check_op({{3, 8}, {2, 3, 3}}, [&](auto& v) { return ag::conv(1, v[0], v[1], ag::Var()); });
}

TEST(Autograd, NormsSoftmaxAndLeakyRelu) {
  check_op({{2, 3, 4, 5}, {3}, {3}}, [](auto& v) { return ag::instance_norm(v[0], v[1], v[2]); }, 3);
  check_op({{2, 4, 7}, {4}, {4}}, [](auto& v) { return ag::group_norm(v[0], 2, v[1], v[2]); }, 4);
  check_op({{3, 5}}, [](auto& v) { return ag::softmax(v[0], -1); });
  check_op({{3, 5, 2}}, [](auto& v) { return ag::log_softmax(v[0], 1); });
  check_op({{17}}, [](auto& v) { return ag::leaky_relu(v[0], 0.1); }, 6);
  // instance_norm matches the core op's forward.
  const Tensor x = randn({2, 3, 4, 5}, 8), w = randn({3}, 9), b = randn({3}, 10);
  ag::NoGradGuard ng;
  const auto a = ag::instance_norm(ag::Var(x), ag::Var(w), ag::Var(b)).value().to_vector_f32();
  const auto r = mamba::ops::instance_norm(x, w, b).to_vector_f32();
  const auto d = mamba::testing::diff(a.data(), r.data(), a.size());
  EXPECT_LT(d.max_abs, 1e-5);
}

namespace {
// y = x^2 elementwise whose backward is 2x except at element `bad`, which is off by a
// relative `error`.
ag::Var square_with_wrong_derivative(const ag::Var& x, int64_t bad, double error) {
  const Tensor xv = x.value();
  return ag::Var::make(mamba::ops::mul(xv, xv), "wrong_square", {x}, [xv, bad, error](const Tensor& g) {
    Tensor d = mamba::ops::mul(mamba::ops::mul(g, xv), 2.0).contiguous();
    d.data<double>()[bad] *= 1.0 + error;
    return std::vector<Tensor>{d};
  });
}
}  // namespace

// A derivative wrong by 1e-5 (relative) in one element fails the f64 check at that element
// (and only there); the f32 check's tolerance (h = 1e-2, 2%) would not see it.
TEST(Autograd, GradcheckCatchesAWrongDerivative) {
  Tensor x = mamba::testing::randn64({9}, 3);
  ag::Var xv(x, true);
  ag::backward(ag::sum(square_with_wrong_derivative(xv, 4, 1e-5)));
  const Tensor g = xv.grad();
  auto loss = [&] {
    ag::NoGradGuard ng;
    return ag::sum(ag::square(ag::Var(x))).value().item();
  };
  EXPECT_NONFATAL_FAILURE(mamba::testing::expect_matches_finite_differences(x, g, loss, kH, kRtol), "element 4");
  mamba::testing::expect_matches_finite_differences(x, g, loss, 1e-2, 2e-2);  // too loose to notice
  // The correct derivative passes the f64 check.
  ag::Var ok(x, true);
  ag::backward(ag::sum(ag::square(ok)));
  mamba::testing::expect_matches_finite_differences(x, ok.grad(), loss, kH, kRtol);
}

// Every op takes f32 or f64 inputs of one dtype; a mix names the op and the dtypes.
TEST(Autograd, MixedDtypesAreAnErrorNamingTheOp) {
  const ag::Var a(randn({2, 3}, 1), true), b(randn({2, 3}, 2).to(DType::f64), true);
  const ag::Var w(randn({4, 3}, 3).to(DType::f64), true);
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const mamba::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  for (const auto& [op, f] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"ag::add", [&] { ag::add(a, b); }},
           {"ag::mul", [&] { ag::mul(b, a); }},
           {"ag::linear", [&] { ag::linear(a, w, ag::Var()); }},
           {"ag::concat", [&] { ag::concat({b, a}, 0); }},
           {"ag::rms_norm", [&] { ag::rms_norm(b, ag::Var(randn({3}, 4), true)); }},
           {"ag::conv", [&] { ag::conv(1, ag::Var(randn({1, 3, 5}, 5)), ag::Var(randn({2, 3, 2}, 6).to(DType::f64)), ag::Var()); }},
       }) {
    const std::string m = message(f);
    EXPECT_NE(m.find(op), std::string::npos) << m;
    EXPECT_NE(m.find("f32"), std::string::npos) << m;
    EXPECT_NE(m.find("f64"), std::string::npos) << m;
  }
  // Integer values are refused, naming the input.
  const std::string m = message([] { ag::relu(ag::Var(Tensor::from_vector_i64({1, 2}, {2}), true)); });
  EXPECT_NE(m.find("ag::relu"), std::string::npos) << m;
  // A seed or a parameter gradient of another dtype.
  ag::Var y = ag::mul(b, 2.0);
  EXPECT_NE(message([&] { ag::backward(y, randn({2, 3}, 7)); }).find("seed"), std::string::npos);
  Tensor g32 = Tensor::zeros({2, 3});
  EXPECT_NE(message([&] { ag::Var::parameter(b.value(), g32); }).find("dtype"), std::string::npos);
  // The mixers are f32 only.
  mamba::train::ParameterStore store;
  mamba::train::MixerLayer m1(store, "mixer", 8, {{"layer", "Mamba1"}, {"d_state", 4}});
  EXPECT_NE(message([&] { m1(ag::Var(randn({1, 3, 8}, 8).to(DType::f64), true)); }).find("f32"), std::string::npos);
}

// f64 parameters: the gradient lands in an f64 sink; f64 leaves through a small graph.
TEST(Autograd, F64ParametersAndDropout) {
  const Tensor wv = mamba::testing::randn64({3, 5}, 1);
  Tensor wg = Tensor::zeros({3, 5}, DType::f64);
  ag::Var w = ag::Var::parameter(wv, wg);
  const ag::Var x(mamba::testing::randn64({2, 5}, 2));
  ag::backward(ag::mean(ag::square(ag::linear(x, w, ag::Var()))));
  EXPECT_EQ(wg.dtype(), DType::f64);
  EXPECT_GT(mamba::testing::dot(wg, wg), 0);
  std::mt19937_64 rng(5);
  ag::Var d = ag::dropout(ag::Var(Tensor::full({100}, 1.0, DType::f64), true), 0.5, rng);
  EXPECT_EQ(d.value().dtype(), DType::f64);
  ag::backward(ag::sum(d));
}
