// Fast vs reference for elementwise, activation, softmax, norm and reduction ops.
#include "mamba/kernels/activation.h"
#include "mamba/ops/activation.h"
#include "mamba/ops/elementwise.h"
#include "mamba/ops/norm.h"
#include "mamba/ops/reduce.h"
#include "mamba/ops/softmax.h"
#include "unit/ops_test_util.h"

namespace ops = mamba::ops;
using namespace optest;

TEST(OpsElementwise, BroadcastFastMatchesRef) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 5, 7}, {3, 5, 7}}, {{3, 5, 7}, {7}},       {{3, 1, 7}, {1, 5, 1}}, {{1}, {4, 3}},
      {{}, {2, 3}},          {{65537}, {65537}},     {{2, 40000}, {2, 1}},   {{1, 9, 1, 13}, {5, 1, 11, 1}}};
  uint32_t seed = 1;
  for (auto [sa, sb] : cases)
    for (DType dt : {DType::f32, DType::f64})
      for (int op = 0; op < 4; ++op) {
        Tensor a = randn(sa, seed++, dt), b = randn(sb, seed++, dt, 0.5, 2.0);
        for_threads([&] {
          EXPECT_TRUE(close(ops::binary(ops::BinaryOp(op), a, b), ops::binary_ref(ops::BinaryOp(op), a, b), 1e-6));
        });
      }
}

TEST(OpsElementwise, StridedInputsScalarsAndInPlace) {
  Tensor a = randn({6, 9}, 3).transpose(0, 1);  // (9, 6), non-contiguous
  Tensor b = randn({9, 12}, 4).slice(1, 0, 12, 2);
  EXPECT_TRUE(close(ops::mul(a, b), ops::binary_ref(ops::BinaryOp::mul, a.contiguous(), b.contiguous())));
  EXPECT_TRUE(close(ops::add(a, 2.5), ops::add(a, Tensor::full({1}, 2.5))));
  EXPECT_TRUE(close(ops::div(a, 4.0), ops::mul(a, 0.25)));
  EXPECT_TRUE(close(ops::sub(a, 1.0), ops::add(a, -1.0)));
  Tensor base = randn({9, 6}, 5);
  Tensor view = base.transpose(0, 1);  // in place through a strided view
  Tensor expect = ops::add(view, Tensor::full({9}, 1.0));
  ops::add_(view, Tensor::full({9}, 1.0));
  EXPECT_TRUE(close(view, expect, 0));
  EXPECT_TRUE(close(base, expect.transpose(0, 1), 0));
}

TEST(OpsElementwise, Errors) {
  expect_error([] { ops::add(Tensor::zeros({3, 4}), Tensor::zeros({5})); }, {"ops::add", "[3, 4]", "[5]"});
  expect_error([] { ops::mul(Tensor::zeros({3}), Tensor::zeros({3}, DType::f64)); }, {"ops::mul", "f64"});
  Tensor a = Tensor::zeros({1, 4});
  expect_error([&] { ops::add_(a, Tensor::zeros({3, 4})); }, {"ops::add_", "[3, 4]"});
}

TEST(OpsActivation, FastMatchesRef) {
  using A = ops::Activation;
  for (A k : {A::relu, A::sigmoid, A::tanh, A::exp, A::silu, A::gelu_erf, A::gelu_tanh, A::softplus, A::leaky_relu})
    for (DType dt : {DType::f32, DType::f64})
      for (Shape s : {Shape{1}, Shape{7, 13}, Shape{3, 5, 2001}}) {
        Tensor x = randn(s, 7, dt, -30, 30);
        ops::ActivationOptions o;
        o.slope = 0.2;
        o.beta = 1.5;
        for_threads([&] { EXPECT_TRUE(close(ops::activation(k, x, o), ops::activation_ref(k, x, o), 1e-6)); });
      }
}

// The GELU backward kernel (the polynomial Phi and phi of the f32 forward) against the
// double reference, at sizes around its 4096-element blocks, at 1 and 2 threads.
TEST(OpsActivation, GeluBackwardFastMatchesRef) {
  for (int64_t n : {1, 7, 4095, 4097, 3 * 5 * 2001}) {
    const std::vector<float> x = randn({n}, 31, DType::f32, -12, 12).to_vector_f32(),
                             dy = randn({n}, 32).to_vector_f32();
    std::vector<float> fast(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
    mamba::kernels::gelu_erf_backward_f32_ref(n, x.data(), dy.data(), ref.data());
    for_threads([&] {
      mamba::kernels::gelu_erf_backward_f32(n, x.data(), dy.data(), fast.data());
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(fast[i], ref[i], 2.5e-7 * std::fabs(dy[i]) + 1e-7 * std::fabs(ref[i])) << n << " " << i;
    });
  }
}

TEST(OpsActivation, KnownValues) {
  Tensor x = Tensor::from_vector({-1.f, 0.f, 2.f, 25.f}, {4});
  auto v = values(ops::gelu(x));
  EXPECT_NEAR(v[0], -0.158655254, 1e-6);
  EXPECT_NEAR(values(ops::gelu(x, ops::GeluApprox::tanh))[0], -0.158808009, 1e-6);
  EXPECT_NEAR(values(ops::softplus(x))[3], 25.0, 0);          // above the threshold: x
  EXPECT_NEAR(values(ops::softplus(x))[0], 0.313261687, 1e-6);
  EXPECT_NEAR(values(ops::silu(x))[2], 2.0 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_NEAR(values(ops::leaky_relu(x, 0.1))[0], -0.1, 1e-7);
  EXPECT_EQ(values(ops::relu(x))[0], 0.0);
}

TEST(OpsActivation, PreluPerChannelAndShared) {
  Tensor x = randn({3, 5, 7, 2}, 9);
  Tensor w = randn({5}, 10);
  for_threads([&] {
    EXPECT_TRUE(close(ops::prelu(x, w), ops::prelu_ref(x, w), 0));
    EXPECT_TRUE(close(ops::prelu(x, Tensor::full({1}, 0.25)), ops::leaky_relu(x, 0.25), 1e-7));
  });
  expect_error([&] { ops::prelu(x, Tensor::zeros({4})); }, {"ops::prelu", "[4]", "[3, 5, 7, 2]"});
}

TEST(OpsSoftmax, AnyDimFastMatchesRef) {
  for (Shape s : {Shape{1}, Shape{5, 1}, Shape{3, 17, 129}, Shape{2, 1001}, Shape{4, 3, 70, 5}})
    for (DType dt : {DType::f32, DType::f64})
      for (int64_t d = -1; d >= -static_cast<int64_t>(s.size()); --d) {
        Tensor x = randn(s, 11, dt, -50, 50);
        for_threads([&] {
          EXPECT_TRUE(close(ops::softmax(x, d), ops::softmax_ref(x, d), 1e-5));
          EXPECT_TRUE(close(ops::log_softmax(x, d), ops::log_softmax_ref(x, d), 1e-5));
        });
      }
  // Stable for large inputs; sums to 1.
  Tensor big = Tensor::from_vector({1000.f, 1001.f, 999.f}, {3});
  EXPECT_NEAR(values(ops::sum(ops::softmax(big, 0)))[0], 1.0, 1e-6);
  expect_error([] { ops::softmax(Tensor::zeros({2, 3}), 2); }, {"ops::softmax", "dim 2", "[2, 3]"});
}

TEST(OpsNorm, LayerInstanceGroupFastMatchesRef) {
  uint32_t seed = 20;
  for (Shape s : {Shape{1, 1}, Shape{3, 7}, Shape{2, 5, 33}, Shape{4, 1025}}) {
    const int64_t D = s.back();
    Tensor x = randn(s, seed++, DType::f32, -3, 5), w = randn({D}, seed++), b = randn({D}, seed++);
    for_threads([&] {
      EXPECT_TRUE(close(ops::layer_norm(x, w, b), ops::layer_norm_ref(x, w, b)));
      EXPECT_TRUE(close(ops::layer_norm(x, {}, b, 1e-3), ops::layer_norm_ref(x, {}, b, 1e-3)));
      EXPECT_TRUE(close(ops::layer_norm(x), ops::layer_norm_ref(x)));
    });
  }
  for (Shape s : {Shape{1, 6, 1}, Shape{2, 6, 5, 3}, Shape{3, 4, 3, 5, 7}, Shape{1, 12, 999}}) {
    const int64_t C = s[1];
    Tensor x = randn(s, seed++), w = randn({C}, seed++), b = randn({C}, seed++);
    for_threads([&] {
      EXPECT_TRUE(close(ops::instance_norm(x, w, b), ops::instance_norm_ref(x, w, b)));
      EXPECT_TRUE(close(ops::instance_norm(x), ops::instance_norm_ref(x)));
      for (int64_t g : {1, 2, 3, 6})
        if (C % g == 0) {
          EXPECT_TRUE(close(ops::group_norm(x, g, w, b), ops::group_norm_ref(x, g, w, b)));
        }
    });
  }
  // Normalised rows have mean 0 and (biased) variance 1.
  Tensor y = ops::layer_norm(randn({4, 64}, 99, DType::f32, 10, 20), {}, {}, 0);
  EXPECT_TRUE(close(ops::mean(y, -1), Tensor::zeros({4}), 1e-5));
  EXPECT_TRUE(close(ops::var(y, -1, 0), Tensor::full({4}, 1.0), 1e-4));
  expect_error([] { ops::group_norm(Tensor::zeros({2, 6, 3}), 4); }, {"ops::group_norm", "num_groups 4", "C = 6"});
  expect_error([] { ops::layer_norm(Tensor::zeros({2, 6}), Tensor::zeros({5})); }, {"ops::layer_norm", "weight"});
}

TEST(OpsReduce, AlongDimFastMatchesRef) {
  using R = ops::Reduce;
  uint32_t seed = 40;
  for (Shape s : {Shape{1}, Shape{7}, Shape{3, 1, 5}, Shape{5, 301, 3}, Shape{2, 9, 300}, Shape{20000}})
    for (DType dt : {DType::f32, DType::f64})
      for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
        Tensor x = randn(s, seed++, dt, -1, 3);
        for_threads([&] {
          for (R op : {R::sum, R::mean, R::max, R::min, R::var})
            for (bool keep : {false, true}) {
              Tensor f = ops::reduce(op, x, d, keep), r = ops::reduce_ref(op, x, d, keep);
              if (op == R::var && s[static_cast<size_t>(d)] == 1) continue;  // NaN both
              EXPECT_TRUE(close(f, r, 1e-5)) << int(op) << " dim " << d;
            }
          EXPECT_TRUE(equal_i64(ops::arg_reduce(x, d, true), ops::arg_reduce_ref(x, d, true)));
          EXPECT_TRUE(equal_i64(ops::arg_reduce(x, d, false, true), ops::arg_reduce_ref(x, d, false, true)));
        });
      }
}

TEST(OpsReduce, OverAllThreadIndependentAndKnown) {
  Tensor x = randn({100003}, 77, DType::f32, 0, 1);
  mamba::kernels::set_num_threads(1);
  const double s1 = ops::sum(x).item(), v1 = ops::var(x).item();
  mamba::kernels::set_num_threads(2);
  EXPECT_EQ(ops::sum(x).item(), s1);
  EXPECT_EQ(ops::var(x).item(), v1);
  mamba::kernels::set_num_threads(0);
  EXPECT_TRUE(close(ops::sum(x), ops::reduce_ref(ops::Reduce::sum, x, 0), 1e-6));
  EXPECT_TRUE(close(ops::var(x), ops::reduce_ref(ops::Reduce::var, x, 0), 1e-6));

  Tensor t = Tensor::from_vector({1, 5, 2, 5, -3, 0}, {2, 3});
  EXPECT_EQ(ops::sum(t).item(), 10);
  EXPECT_EQ(ops::max(t).item(), 5);
  EXPECT_EQ(ops::min(t).item(), -3);
  EXPECT_EQ(ops::argmax(t).item(), 1);  // first of the tied maxima
  EXPECT_EQ(ops::argmin(t).item(), 4);
  EXPECT_EQ(ops::argmax(t, 1).to_vector_f32(), (std::vector<float>{1, 0}));
  EXPECT_NEAR(ops::var(t).item(), (64.0 - 100.0 / 6.0) / 5.0, 1e-5);
  EXPECT_NEAR(ops::var(t.reshape({6}), 0, 0).item(), (64.0 - 100.0 / 6.0) / 6.0, 1e-5);
  EXPECT_EQ(ops::mean(t, 0, true).shape(), (Shape{1, 3}));
  expect_error([] { ops::sum(Tensor::zeros({2, 3}), -3); }, {"ops::sum", "-3", "[2, 3]"});
  expect_error([] { ops::max(Tensor::zeros({2, 0}), 1); }, {"ops::max", "empty"});
}

TEST(OpsEdgeCases, EmptyAndZeroDim) {
  Tensor e = Tensor::zeros({3, 0, 4});
  EXPECT_EQ(ops::add(e, Tensor::zeros({4})).shape(), e.shape());
  EXPECT_EQ(ops::silu(e).shape(), e.shape());
  EXPECT_EQ(ops::softmax(e, 1).shape(), e.shape());
  EXPECT_TRUE(close(ops::sum(e, 1), Tensor::zeros({3, 4}), 0));
  EXPECT_EQ(ops::sum(e).item(), 0.0);
  EXPECT_EQ(ops::layer_norm(e).shape(), e.shape());
  Tensor s = Tensor::full({}, 3.0);
  EXPECT_EQ(ops::mul(s, s).item(), 9.0);
  EXPECT_EQ(ops::sum(s, 0).item(), 3.0);
  EXPECT_EQ(ops::softmax(s, 0).item(), 1.0);
  EXPECT_EQ(ops::argmax(s).item(), 0.0);
}
