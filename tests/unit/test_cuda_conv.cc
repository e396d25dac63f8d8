// ops::conv / conv_transpose on cuda tensors (cuDNN) against the CPU path, and
// ops::conv_backward_cuda against the CPU tape's gradients (ag::conv with dy as the seed):
// 1D / 2D / 3D, stride, padding, dilation, groups, output_padding, bias, f32 / bf16 / f16.
// The GPU tests skip without a usable GPU (or without cuDNN in the build); the argument checks
// that need no GPU run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "mamba/ops/conv.h"
#include "mamba/ops/conv_cuda.h"
#include "mamba/tensor/cuda.h"
#include "mamba/train/autograd.h"

namespace {

using mamba::Device;
using mamba::DType;
using mamba::Shape;
using mamba::Tensor;
namespace ops = mamba::ops;
namespace ag = mamba::ag;

#define REQUIRE_CUDNN() \
  if (!ops::conv_cuda_available()) GTEST_SKIP() << "no CUDA device, or built without CUDA / cuDNN"

Tensor randn(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

double rel_err(const Tensor& got, const Tensor& ref) {
  const auto g = got.to_vector_f32(), r = ref.to_vector_f32();
  EXPECT_EQ(g.size(), r.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < r.size(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    num += (double(g[i]) - r[i]) * (double(g[i]) - r[i]);
    den += double(r[i]) * r[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

struct Case {
  int spatial;
  bool transpose;
  int64_t N, C_in, C_out;
  Shape in, k;
  ops::ConvOptions opt;
};

std::vector<Case> cases() {
  return {
      {1, false, 1, 3, 3, {29}, {3}, {.padding = {1}}},
      {1, true, 2, 3, 33, {29}, {3}, {.stride = {2}, .padding = {1}, .output_padding = {1}}},
      {1, false, 2, 33, 33, {17}, {3}, {.padding = {2}, .dilation = {2}, .groups = 33}},
      {2, false, 2, 6, 4, {7, 5}, {3, 3}, {.stride = {2}, .padding = {1}, .dilation = {2}, .groups = 2}},
      {2, true, 1, 4, 6, {7, 5}, {3, 2}, {.stride = {2, 1}, .padding = {1, 0}, .output_padding = {1, 0}, .groups = 2}},
      {3, false, 2, 3, 33, {7, 5, 3}, {3, 3, 3}, {.stride = {2}, .padding = {1}}},
      {3, true, 1, 33, 3, {7, 5, 3}, {3, 2, 1}, {.padding = {1, 1, 0}, .groups = 3}},
      {3, true, 2, 8, 4, {4, 3, 3}, {3, 3, 3}, {.stride = {2}, .padding = {1}, .dilation = {2}, .output_padding = {1}}},
  };
}

Shape x_shape(const Case& c) {
  Shape s{c.N, c.C_in};
  s.insert(s.end(), c.in.begin(), c.in.end());
  return s;
}
Shape w_shape(const Case& c) {
  Shape s = c.transpose ? Shape{c.C_in, c.C_out / c.opt.groups} : Shape{c.C_out, c.C_in / c.opt.groups};
  s.insert(s.end(), c.k.begin(), c.k.end());
  return s;
}
Tensor cpu_forward(const Case& c, const Tensor& x, const Tensor& w, const Tensor& b) {
  return c.transpose ? ops::conv_transpose(c.spatial, x, w, b, c.opt) : ops::conv(c.spatial, x, w, b, c.opt);
}

double tol(DType t) { return t == DType::f32 ? 1e-4 : 1e-2; }

TEST(CudaConv, ForwardMatchesCpu) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  uint64_t seed = 1;
  for (const Case& c : cases())
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(testing::Message() << c.spatial << "D transpose " << c.transpose << " " << mamba::dtype_name(t));
      // Round the inputs to t first, so the CPU sees the values the GPU sees.
      const Tensor x = randn(x_shape(c), seed++).to(t).to(DType::f32), w = randn(w_shape(c), seed++).to(t).to(DType::f32);
      const Tensor b = randn({c.C_out}, seed++).to(t).to(DType::f32);
      const Tensor ref = cpu_forward(c, x, w, b);
      const Tensor y = cpu_forward(c, x.to(t).to(dev), w.to(t).to(dev), b.to(t).to(dev));
      EXPECT_TRUE(y.is_cuda());
      EXPECT_EQ(y.dtype(), t);
      EXPECT_EQ(y.shape(), ref.shape());
      EXPECT_LT(rel_err(y.to(Device::cpu()).to(DType::f32), ref), tol(t));
    }
}

TEST(CudaConv, BackwardMatchesCpuTape) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  uint64_t seed = 1000;
  for (const Case& c : cases())
    for (DType t : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(testing::Message() << c.spatial << "D transpose " << c.transpose << " " << mamba::dtype_name(t));
      const Tensor x = randn(x_shape(c), seed++).to(t).to(DType::f32), w = randn(w_shape(c), seed++).to(t).to(DType::f32);
      const Tensor b = randn({c.C_out}, seed++);
      const Tensor y0 = cpu_forward(c, x, w, b);
      const Tensor dy = randn(y0.shape(), seed++).to(t).to(DType::f32);
      ag::Var xv(x, true), wv(w, true), bv(b, true);
      const ag::Var y = c.transpose ? ag::conv_transpose(c.spatial, xv, wv, bv, c.opt) : ag::conv(c.spatial, xv, wv, bv, c.opt);
      ag::backward(y, dy);
      const ops::ConvGrads g = ops::conv_backward_cuda(c.spatial, c.transpose, x.to(t).to(dev), w.to(t).to(dev),
                                                       dy.to(t).to(dev), c.opt);
      EXPECT_LT(rel_err(g.dx.to(Device::cpu()).to(DType::f32), xv.grad()), tol(t)) << "dx";
      EXPECT_LT(rel_err(g.dw.to(Device::cpu()).to(DType::f32), wv.grad()), tol(t)) << "dw";
      EXPECT_LT(rel_err(g.db.to(Device::cpu()).to(DType::f32), bv.grad()), tol(t)) << "db";
    }
}

TEST(CudaConv, Tf32IsOptInAndClose) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  Case c = cases()[5];
  c.opt.tf32 = true;
  const Tensor x = randn(x_shape(c), 7), w = randn(w_shape(c), 8);
  const Tensor ref = cpu_forward(c, x, w, Tensor());
  const Tensor y = cpu_forward(c, x.to(dev), w.to(dev), Tensor());
  EXPECT_LT(rel_err(y.to(Device::cpu()), ref), 5e-3);
  EXPECT_NE(ops::conv_cuda_plan_info(c.spatial, c.transpose, x.to(dev), w.to(dev), c.opt).find("fwd"), std::string::npos);
}

TEST(CudaConv, UnbatchedInput) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  const Tensor x = randn({3, 4, 9}, 11), w = randn({5, 3, 3, 3}, 12);
  const Tensor ref = ops::conv2d(x, w, Tensor(), {.padding = {1}});
  const Tensor y = ops::conv2d(x.to(dev), w.to(dev), Tensor(), {.padding = {1}});
  EXPECT_EQ(y.shape(), ref.shape());
  EXPECT_LT(rel_err(y.to(Device::cpu()), ref), 1e-4);
}

TEST(CudaConv, StridedInput) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  const Tensor w = randn({5, 3, 3, 3}, 12);
  // a transposed view: made contiguous on the device first
  const Tensor xt = randn({1, 3, 9, 4}, 13);
  const Tensor ref2 = ops::conv2d(xt.transpose(2, 3).contiguous(), w, Tensor(), {.padding = {1}});
  const Tensor y2 = ops::conv2d(xt.to(dev).transpose(2, 3), w.to(dev), Tensor(), {.padding = {1}});
  EXPECT_LT(rel_err(y2.to(Device::cpu()), ref2), 1e-4);
}

TEST(CudaConv, BadArgumentsNameTheArgument) {
  REQUIRE_CUDNN();
  const Device dev = Device::cuda(0);
  const Tensor x = Tensor::zeros({1, 4, 8, 8}, DType::f32, dev), w = Tensor::zeros({6, 4, 3, 3}, DType::f32, dev);
  auto msg = [](auto f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_NE(msg([&] { ops::conv2d(x, w, {}, {.groups = 4}); }).find("groups"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv2d(x, w, {}, {.stride = {0}}); }).find("stride"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv2d(x, w.to(DType::bf16)); }).find("dtypes differ"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv2d(x, w, Tensor::zeros({5}, DType::f32, dev)); }).find("bias"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv2d(x, w.to(Device::cpu())); }).find("weight is on"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv2d(x.to(DType::i32), w); }).find("f32, bf16 or f16"), std::string::npos);
  EXPECT_NE(msg([&] { ops::conv_backward_cuda(2, false, x, w, Tensor::zeros({1, 6, 5, 6}, DType::f32, dev)); }).find("dy"),
            std::string::npos);
  const Tensor wt = Tensor::zeros({4, 2, 3, 3}, DType::f32, dev);
  EXPECT_NE(msg([&] { ops::conv_transpose2d(x, wt, {}, {.dilation = {2}, .output_padding = {1}}); }).find("output_padding"),
            std::string::npos);
}

// Without a GPU (or cuDNN) the CUDA entry points throw a clear error, never crash.
TEST(CudaConv, WithoutDeviceThrowsClearly) {
  if (ops::conv_cuda_available()) GTEST_SKIP() << "a GPU with cuDNN is present";
  const Tensor x = Tensor::zeros({1, 2, 5}), w = Tensor::zeros({2, 2, 3});
  EXPECT_THROW(ops::conv_backward_cuda(1, false, x, w, Tensor::zeros({1, 2, 3})), mamba::Error);
}

}  // namespace
