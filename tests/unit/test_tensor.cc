#include <gtest/gtest.h>

#include "mamba/tensor/allocator.h"
#include "mamba/tensor/tensor.h"

using mamba::DType;
using mamba::Tensor;

namespace {

Tensor arange(int64_t n, const mamba::Shape& shape) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  return Tensor::from_vector(v, shape);
}

}  // namespace

TEST(Tensor, ContiguousStridesAndNumel) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (mamba::Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.str(), "f32[2, 3, 4]");
}

TEST(Tensor, TransposeIsAViewAndContiguousCopies) {
  Tensor t = arange(6, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.storage(), t.storage());
  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector_f32(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, SliceSelectAndStep) {
  Tensor t = arange(24, {2, 3, 4});
  Tensor s = t.slice(2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (mamba::Shape{2, 3, 2}));
  EXPECT_EQ(s.select(0, 1).select(0, 2).to_vector_f32(), (std::vector<float>{21, 23}));
  EXPECT_EQ(t.slice(1, -1, 3).shape(), (mamba::Shape{2, 1, 4}));
  EXPECT_THROW(t.select(1, 3), mamba::Error);
}

TEST(Tensor, ViewOfNonContiguousWhenStridesChain) {
  Tensor t = arange(24, {2, 3, 4}).permute({1, 0, 2});  // (3, 2, 4): last dim still contiguous
  Tensor v = t.view({3, 2, 2, 2});
  EXPECT_EQ(v.storage(), t.storage());
  EXPECT_THROW(t.view({6, 4}), mamba::Error);
  Tensor r = t.reshape({6, 4});
  EXPECT_EQ(r.to_vector_f32()[4], 12.f);
  EXPECT_EQ(t.reshape({-1}).numel(), 24);
}

TEST(Tensor, DTypeConversionsRoundTrip) {
  Tensor t = Tensor::from_vector({1.f, -2.5f, 65504.f, 1e-7f, 0.1f}, {5});
  for (DType dt : {DType::f64, DType::bf16, DType::f16}) {
    std::vector<float> back = t.to(dt).to(DType::f32).to_vector_f32();
    EXPECT_EQ(back[0], 1.f);
    EXPECT_EQ(back[1], -2.5f);
    EXPECT_NEAR(back[4], 0.1f, dt == DType::bf16 ? 1e-3 : 1e-4);
  }
  EXPECT_EQ(t.to(DType::f16).to(DType::f32).to_vector_f32()[2], 65504.f);
  EXPECT_EQ(t.to(DType::i64).to(DType::f32).to_vector_f32()[1], -2.f);
}

TEST(Tensor, ErrorsNameOpAndShapes) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.view({4, 2});
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Tensor::view"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.data<double>(), mamba::Error);
  EXPECT_THROW(Tensor::empty({-1, 2}), mamba::Error);
  EXPECT_THROW(Tensor::empty({1LL << 40, 1LL << 40}), mamba::Error);
}

TEST(Tensor, FromStorageChecksBounds) {
  auto st = std::make_shared<mamba::Storage>(16);
  EXPECT_NO_THROW(Tensor::from_storage(st, 0, {4}, {1}, DType::f32));
  EXPECT_THROW(Tensor::from_storage(st, 4, {4}, {1}, DType::f32), mamba::Error);
  EXPECT_THROW(Tensor::from_storage(st, 0, {2, 2}, {3, 1}, DType::f32), mamba::Error);
}

TEST(Allocator, LargeBlocksAreReusedAndCounted) {
  const auto before = mamba::cpu_allocator_stats();
  const void* first = nullptr;
  {
    Tensor a = Tensor::empty({3 << 20});  // 12 MiB
    first = a.raw_data();
    EXPECT_GE(mamba::cpu_allocator_stats().bytes_in_use, before.bytes_in_use + (12u << 20));
  }
  Tensor b = Tensor::empty({3 << 20});
  EXPECT_EQ(b.raw_data(), first);  // the freed block came back
  EXPECT_GT(mamba::cpu_allocator_stats().cache_hits, before.cache_hits);
  mamba::cpu_allocator_release_cache();
  EXPECT_EQ(mamba::cpu_allocator_stats().bytes_cached, 0u);
}
