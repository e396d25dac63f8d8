// Fast vs reference for linear, matmul, convolutions and transposed convolutions.
#include "mamba/ops/conv.h"
#include "mamba/ops/matmul.h"
#include "unit/ops_test_util.h"

namespace ops = mamba::ops;
using namespace optest;

TEST(OpsMatmul, LinearFastMatchesRef) {
  uint32_t seed = 1;
  for (Shape xs : {Shape{1, 1}, Shape{7}, Shape{3, 5, 13}, Shape{2, 1, 65}})
    for (int64_t out : {1, 9, 33})
      for (DType dt : {DType::f32, DType::f64}) {
        const int64_t in = xs.back();
        Tensor x = randn(xs, seed++, dt), w = randn({out, in}, seed++, dt), b = randn({out}, seed++, dt);
        for_threads([&] {
          EXPECT_TRUE(close(ops::linear(x, w, b), ops::linear_ref(x, w, b)));
          EXPECT_TRUE(close(ops::linear(x, w), ops::linear_ref(x, w)));
        });
      }
  expect_error([] { ops::linear(Tensor::zeros({2, 5}), Tensor::zeros({3, 4})); }, {"ops::linear", "[3, 4]", "[2, 5]"});
}

TEST(OpsMatmul, BatchedBroadcastFastMatchesRef) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {4, 5}},          {{7}, {7, 3}},           {{2, 7}, {7}},          {{5}, {5}},
      {{2, 3, 9, 4}, {4, 6}},    {{3, 1, 5, 7}, {4, 7, 2}}, {{1, 1, 1}, {3, 1, 1}}, {{6, 65, 33}, {6, 33, 17}}};
  uint32_t seed = 50;
  for (auto [sa, sb] : cases)
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor a = randn(sa, seed++, dt), b = randn(sb, seed++, dt);
      for_threads([&] { EXPECT_TRUE(close(ops::matmul(a, b), ops::matmul_ref(a, b))); });
    }
  // Shapes follow torch.matmul.
  EXPECT_EQ(ops::matmul(Tensor::zeros({3, 1, 5, 7}), Tensor::zeros({4, 7, 2})).shape(), (Shape{3, 4, 5, 2}));
  EXPECT_EQ(ops::matmul(Tensor::zeros({7}), Tensor::zeros({2, 7, 3})).shape(), (Shape{2, 3}));
  EXPECT_EQ(ops::matmul(Tensor::zeros({5}), Tensor::zeros({5})).shape(), (Shape{}));
  // Transposed operand (non-contiguous).
  Tensor a = randn({9, 4}, 7).transpose(0, 1), b = randn({9, 3}, 8);
  EXPECT_TRUE(close(ops::matmul(a, b), ops::matmul_ref(a.contiguous(), b)));
  expect_error([] { ops::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); }, {"ops::matmul", "[2, 3]", "[4, 5]"});
  expect_error([] { ops::matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 5})); }, {"ops::matmul", "broadcast"});
}

struct ConvCase {
  int spatial;
  int64_t N, C_in, C_out;
  Shape in, k;
  ops::ConvOptions opt;
};

TEST(OpsConv, ForwardFastMatchesRef) {
  const std::vector<ConvCase> cases = {
      {1, 1, 1, 1, {1}, {1}, {}},
      {1, 2, 3, 5, {17}, {3}, {.stride = {2}, .padding = {1}}},
      {1, 3, 4, 6, {23}, {5}, {.padding = {4}, .dilation = {2}, .groups = 2}},
      {1, 1, 6, 6, {9}, {3}, {.padding = {1}, .groups = 6}},  // depthwise
      {2, 1, 3, 4, {7, 9}, {3, 3}, {.padding = {1}}},
      {2, 2, 4, 6, {11, 10}, {3, 2}, {.stride = {2, 3}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 2}},
      {2, 3, 5, 7, {5, 5}, {1, 1}, {}},  // pointwise
      {2, 5, 2, 3, {6, 6}, {5, 5}, {.padding = {2}}},
      {3, 1, 2, 3, {5, 6, 7}, {3, 3, 3}, {.padding = {1}}},
      {3, 2, 4, 4, {4, 7, 5}, {2, 3, 1}, {.stride = {2, 1, 2}, .padding = {1, 1, 0}, .groups = 4}},
  };
  uint32_t seed = 100;
  for (const auto& c : cases) {
    Shape xs{c.N, c.C_in};
    Shape ws{c.C_out, c.C_in / c.opt.groups};
    xs.insert(xs.end(), c.in.begin(), c.in.end());
    ws.insert(ws.end(), c.k.begin(), c.k.end());
    Tensor x = randn(xs, seed++), w = randn(ws, seed++), b = randn({c.C_out}, seed++);
    for_threads([&] {
      EXPECT_TRUE(close(ops::conv(c.spatial, x, w, b, c.opt), ops::conv_ref(c.spatial, x, w, b, c.opt)))
          << x.str() << " " << w.str();
      EXPECT_TRUE(close(ops::conv(c.spatial, x, w, {}, c.opt), ops::conv_ref(c.spatial, x, w, {}, c.opt)));
    });
  }
  // Unbatched input and the per-dimension wrappers.
  Tensor x = randn({3, 8, 8}, 1), w = randn({2, 3, 3, 3}, 2);
  EXPECT_EQ(ops::conv2d(x, w, {}, {.padding = {1}}).shape(), (Shape{2, 8, 8}));
  EXPECT_TRUE(close(ops::conv2d(x, w), ops::conv_ref(2, x.unsqueeze(0), w, {}, {}).squeeze(0)));
  // A hand-computed 1-D case: [1,2,3,4] * [1,1] = [3,5,7].
  Tensor y = ops::conv1d(Tensor::from_vector({1, 2, 3, 4}, {1, 1, 4}), Tensor::full({1, 1, 2}, 1.0));
  EXPECT_EQ(y.to_vector_f32(), (std::vector<float>{3, 5, 7}));
}

TEST(OpsConv, TransposeFastMatchesRef) {
  const std::vector<ConvCase> cases = {
      {1, 1, 1, 1, {1}, {1}, {}},
      {1, 2, 3, 5, {9}, {3}, {.stride = {2}, .padding = {1}, .output_padding = {1}}},
      {1, 3, 4, 6, {11}, {4}, {.stride = {3}, .dilation = {2}, .output_padding = {2}, .groups = 2}},
      {2, 1, 3, 2, {5, 7}, {3, 3}, {.stride = {2}, .padding = {1}, .output_padding = {1}}},
      {2, 2, 4, 6, {4, 5}, {2, 3}, {.stride = {2, 1}, .padding = {0, 1}, .dilation = {1, 2}, .groups = 2}},
      {3, 1, 2, 3, {3, 4, 5}, {2, 2, 2}, {.stride = {2}}},
      {3, 2, 4, 2, {3, 3, 2}, {3, 1, 2}, {.stride = {2, 1, 3}, .padding = {1, 0, 0}, .output_padding = {1, 0, 2},
                                           .groups = 2}},
  };
  uint32_t seed = 200;
  for (const auto& c : cases) {
    Shape xs{c.N, c.C_in};
    Shape ws{c.C_in, c.C_out / c.opt.groups};
    xs.insert(xs.end(), c.in.begin(), c.in.end());
    ws.insert(ws.end(), c.k.begin(), c.k.end());
    Tensor x = randn(xs, seed++), w = randn(ws, seed++), b = randn({c.C_out}, seed++);
    for_threads([&] {
      EXPECT_TRUE(
          close(ops::conv_transpose(c.spatial, x, w, b, c.opt), ops::conv_transpose_ref(c.spatial, x, w, b, c.opt)))
          << x.str() << " " << w.str();
    });
  }
  // Output size: (in-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1.
  Tensor y = ops::conv_transpose2d(Tensor::zeros({1, 4, 5, 7}), Tensor::zeros({4, 3, 3, 3}), {},
                                   {.stride = {2}, .padding = {1}, .output_padding = {1}});
  EXPECT_EQ(y.shape(), (Shape{1, 3, 10, 14}));
}

TEST(OpsConv, Errors) {
  Tensor x = Tensor::zeros({1, 4, 8, 8});
  expect_error([&] { ops::conv2d(x, Tensor::zeros({2, 3, 3, 3})); }, {"ops::conv2d", "[2, 3, 3, 3]", "[1, 4, 8, 8]"});
  expect_error([&] { ops::conv2d(x, Tensor::zeros({2, 4, 3, 3}), {}, {.padding = {-1}}); }, {"ops::conv2d", "padding"});
  expect_error([&] { ops::conv2d(x, Tensor::zeros({2, 4, 9, 9})); }, {"ops::conv2d", "empty output"});
  expect_error([&] { ops::conv2d(x, Tensor::zeros({3, 2, 3, 3}), {}, {.groups = 2}); }, {"ops::conv2d", "groups=2"});
  expect_error([&] { ops::conv1d(x, Tensor::zeros({2, 4, 3})); }, {"ops::conv1d", "input"});
  expect_error([&] { ops::conv_transpose2d(x, Tensor::zeros({4, 2, 3, 3}), {}, {.stride = {2}, .output_padding = {2}}); },
               {"ops::conv_transpose2d", "output_padding"});
  expect_error([&] { ops::conv2d(x, Tensor::zeros({2, 4, 3, 3}), Tensor::zeros({3})); }, {"ops::conv2d", "bias"});
}

// conv_transpose is the adjoint of conv (the gradient of conv with respect to its input):
// <conv(x, w), y> == <x, conv_transpose(y, w)> with output_padding chosen so that the
// transpose returns x's size. An independent check of both against PyTorch's definition.
TEST(OpsConv, TransposeIsAdjointOfConv) {
  struct Case {
    int spatial;
    Shape in, k;
    int64_t stride, pad, dil, groups;
  };
  const std::vector<Case> cases = {{1, {13}, {3}, 2, 1, 1, 1},
                                   {1, {10}, {4}, 3, 2, 2, 2},
                                   {2, {7, 9}, {3, 2}, 2, 1, 1, 1},
                                   {2, {8, 5}, {3, 3}, 1, 2, 2, 2},
                                   {3, {5, 6, 4}, {2, 3, 2}, 2, 1, 1, 1}};
  uint32_t seed = 300;
  for (const auto& c : cases) {
    const int64_t N = 2, C_in = 4, C_out = 6;
    Shape xs{N, C_in}, ws{C_out, C_in / c.groups};
    xs.insert(xs.end(), c.in.begin(), c.in.end());
    ws.insert(ws.end(), c.k.begin(), c.k.end());
    ops::ConvOptions o{.stride = {c.stride}, .padding = {c.pad}, .dilation = {c.dil}, .groups = c.groups};
    Tensor x = randn(xs, seed++, DType::f64).to(DType::f32), w = randn(ws, seed++);
    Tensor y = ops::conv(c.spatial, x, w, {}, o);
    std::vector<int64_t> outpad;
    for (int d = 0; d < c.spatial; ++d)
      outpad.push_back((c.in[static_cast<size_t>(d)] + 2 * c.pad - c.dil * (c.k[static_cast<size_t>(d)] - 1) - 1) %
                       c.stride);
    o.output_padding = outpad;
    Tensor gy = randn(y.shape(), seed++);
    Tensor gx = ops::conv_transpose(c.spatial, gy, w, {}, o);
    ASSERT_EQ(gx.shape(), x.shape());
    const auto vy = values(y), vgy = values(gy), vx = values(x), vgx = values(gx);
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < vy.size(); ++i) lhs += vy[i] * vgy[i];
    for (size_t i = 0; i < vx.size(); ++i) rhs += vx[i] * vgx[i];
    EXPECT_NEAR(lhs, rhs, 1e-3 * std::max(1.0, std::abs(lhs))) << "spatial " << c.spatial;
  }
}

TEST(OpsMatmul, KnownValues) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector({1, 0, 0, 1, 1, 1}, {3, 2});
  EXPECT_EQ(ops::matmul(a, b).to_vector_f32(), (std::vector<float>{4, 5, 10, 11}));
  Tensor w = Tensor::from_vector({1, 1, 1, 0, 0, 1}, {2, 3});
  EXPECT_EQ(ops::linear(a, w, Tensor::from_vector({10, 20}, {2})).to_vector_f32(),
            (std::vector<float>{16, 23, 25, 26}));
}
