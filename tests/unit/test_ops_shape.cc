// Fast vs reference for concat/split/flip/pad/permute_copy, topk and embedding.
#include "mamba/ops/embedding.h"
#include "mamba/ops/shape_ops.h"
#include "mamba/ops/topk.h"
#include "unit/ops_test_util.h"

namespace ops = mamba::ops;
using namespace optest;

TEST(OpsShape, ConcatAndSplitRoundTrip) {
  uint32_t seed = 1;
  for (DType dt : {DType::f32, DType::f64, DType::i64})
    for (int64_t d : {0, 1, 2, -1}) {
      Shape s1{3, 5, 7}, s2{3, 5, 7}, s3{3, 5, 7};
      const size_t k = static_cast<size_t>(d < 0 ? d + 3 : d);
      s1[k] = 1;
      s2[k] = 4;
      s3[k] = 0;
      Tensor a = randn(s1, seed++, dt, -100, 100), b = randn(s2, seed++, dt, -100, 100).transpose(0, 2);
      b = b.contiguous().transpose(0, 2);  // same shape as s2 but strided
      Tensor c = randn(s3, seed++, dt);
      for_threads([&] {
        Tensor y = ops::concat({a, b, c}, d);
        EXPECT_TRUE(close(y, ops::concat_ref({a, b, c}, d), 0));
        auto parts = ops::split(y, {1, 4, 0}, d);
        ASSERT_EQ(parts.size(), 3u);
        EXPECT_TRUE(close(parts[0], a, 0));
        EXPECT_TRUE(close(parts[1], b, 0));
        EXPECT_EQ(parts[2].shape(), c.shape());
      });
    }
  Tensor big = randn({2, 70000}, 9);
  EXPECT_TRUE(close(ops::concat({big, big}, 0), ops::concat_ref({big, big}, 0), 0));
  expect_error([] { ops::concat({Tensor::zeros({2, 3}), Tensor::zeros({3, 3})}, 1); },
               {"ops::concat", "[3, 3]", "[2, 3]"});
  expect_error([] { ops::split(Tensor::zeros({2, 5}), {2, 2}, 1); }, {"ops::split", "[2, 2]", "sum to 5"});
}

TEST(OpsShape, FlipAndPermuteCopy) {
  Tensor x = randn({3, 1, 5, 9}, 3);
  Tensor xs = randn({9, 5, 3}, 4).permute({2, 1, 0});  // strided [3, 5, 9]
  for_threads([&] {
    for (std::vector<int64_t> dims : {std::vector<int64_t>{}, {0}, {-1}, {0, 2, 3}, {1, 2}}) {
      Tensor f = ops::flip(x, dims);
      EXPECT_TRUE(close(f, ops::flip_ref(x, dims), 0));
      EXPECT_TRUE(close(ops::flip(f, dims), x, 0));
    }
    EXPECT_TRUE(close(ops::flip(xs, {1}), ops::flip_ref(xs.contiguous(), {1}), 0));
    for (std::vector<int64_t> p : {std::vector<int64_t>{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}}) {
      Tensor y = ops::permute_copy(x, p);
      EXPECT_TRUE(y.is_contiguous());
      EXPECT_TRUE(close(y, ops::permute_copy_ref(x, p), 0));
      EXPECT_TRUE(close(y, x.permute(p).contiguous(), 0));
    }
  });
  EXPECT_EQ(ops::flip(Tensor::from_vector({1, 2, 3}, {3}), {0}).to_vector_f32(), (std::vector<float>{3, 2, 1}));
  expect_error([&] { ops::flip(x, {0, 0}); }, {"ops::flip", "twice"});
  expect_error([&] { ops::permute_copy(x, {0, 1}); }, {"ops::permute_copy", "[3, 1, 5, 9]"});
}

TEST(OpsShape, PadModes) {
  Tensor x = randn({2, 3, 5, 7}, 5);
  Tensor xs = randn({7, 5, 3, 2}, 6).permute({3, 2, 1, 0});
  using P = std::vector<std::pair<int64_t, int64_t>>;
  for_threads([&] {
    for (auto mode : {ops::PadMode::constant, ops::PadMode::reflect, ops::PadMode::replicate})
      for (const P& pads : {P{{2, 3}}, P{{0, 0}, {4, 1}}, P{{1, 2}, {0, 3}, {4, 6}}, P{{1, 1}, {1, 2}, {2, 1}}}) {
        EXPECT_TRUE(close(ops::pad(x, pads, mode, 1.5), ops::pad_ref(x, pads, mode, 1.5), 0));
        EXPECT_TRUE(close(ops::pad(xs, pads, mode, -2), ops::pad_ref(xs.contiguous(), pads, mode, -2), 0));
      }
    Tensor big = randn({3, 300, 301}, 8);
    EXPECT_TRUE(close(ops::pad(big, P{{1, 2}, {3, 4}}, ops::PadMode::reflect),
                      ops::pad_ref(big, P{{1, 2}, {3, 4}}, ops::PadMode::reflect), 0));
  });
  Tensor v = Tensor::from_vector({1, 2, 3, 4}, {4});
  EXPECT_EQ(ops::pad(v, {{2, 1}}, ops::PadMode::reflect).to_vector_f32(), (std::vector<float>{3, 2, 1, 2, 3, 4, 3}));
  EXPECT_EQ(ops::pad(v, {{2, 1}}, ops::PadMode::replicate).to_vector_f32(), (std::vector<float>{1, 1, 1, 2, 3, 4, 4}));
  EXPECT_EQ(ops::pad(v, {{1, 2}}, ops::PadMode::constant, 9).to_vector_f32(),
            (std::vector<float>{9, 1, 2, 3, 4, 9, 9}));
  Tensor ids = Tensor::from_vector_i64({5, 6}, {2});
  EXPECT_EQ(ops::pad(ids, {{1, 0}}, ops::PadMode::constant, -1).data<int64_t>()[0], -1);
  expect_error([&] { ops::pad(v, {{-1, 0}}); }, {"ops::pad", "padding must be >= 0", "[4]"});
  expect_error([&] { ops::pad(v, {{4, 0}}, ops::PadMode::reflect); }, {"ops::pad", "reflect", "size 4"});
  expect_error([&] { ops::pad(v, {{0, 0}, {0, 0}}); }, {"ops::pad", "2 pad pairs"});
}

TEST(OpsTopK, FastMatchesFullSort) {
  uint32_t seed = 30;
  for (Shape s : {Shape{1}, Shape{9}, Shape{3, 17}, Shape{4, 33, 5}, Shape{2, 1000}})
    for (DType dt : {DType::f32, DType::f64})
      for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
        Tensor x = randn(s, seed++, dt, -3, 3);
        // Coarse values to create ties.
        Tensor xr;
        {
          Tensor t = x.to(DType::f64);
          double* p = t.data<double>();
          for (int64_t i = 0; i < t.numel(); i += 3) p[i] = std::round(p[i]);
          xr = t.to(dt);
        }
        const int64_t n = s[static_cast<size_t>(d)];
        for (int64_t k : {int64_t{0}, int64_t{1}, n / 2, n})
          for (bool largest : {true, false})
            for_threads([&] {
              auto f = ops::topk(xr, k, d, largest), r = ops::topk_ref(xr, k, d, largest);
              EXPECT_TRUE(close(f.values, r.values, 0));
              EXPECT_TRUE(equal_i64(f.indices, r.indices));
            });
      }
  Tensor x = Tensor::from_vector({3, 1, 3, std::nanf(""), 2}, {5});
  auto r = ops::topk(x, 3);
  EXPECT_TRUE(std::isnan(r.values.to_vector_f32()[0]));
  EXPECT_EQ(r.indices.data<int64_t>()[0], 3);
  EXPECT_EQ(r.indices.data<int64_t>()[1], 0);  // tie: lower index first
  EXPECT_EQ(r.indices.data<int64_t>()[2], 2);
  auto s = ops::topk(x, 2, 0, false);
  EXPECT_EQ(s.values.to_vector_f32(), (std::vector<float>{1, 2}));
  expect_error([&] { ops::topk(x, 6); }, {"ops::topk", "k = 6", "[5]"});
  expect_error([&] { ops::topk(x, 1, 1); }, {"ops::topk", "dim 1"});
}

TEST(OpsEmbedding, LookupAndErrors) {
  Tensor table = randn({11, 13}, 40);
  std::vector<int64_t> idv;
  for (int i = 0; i < 3 * 7; ++i) idv.push_back((i * 5 + 3) % 11);
  Tensor ids = Tensor::from_vector_i64(idv, {3, 7});
  for_threads([&] {
    Tensor y = ops::embedding(ids, table);
    EXPECT_EQ(y.shape(), (Shape{3, 7, 13}));
    EXPECT_TRUE(close(y, ops::embedding_ref(ids, table), 0));
    EXPECT_TRUE(close(ops::embedding(ids.to(DType::i32), table), y, 0));
    EXPECT_TRUE(close(y.select(0, 1).select(0, 2), table.select(0, idv[9]), 0));
  });
  Tensor big_ids = Tensor::from_vector_i64(std::vector<int64_t>(5000, 7), {5000});
  Tensor wide = randn({8, 40}, 41, DType::f64);
  EXPECT_TRUE(close(ops::embedding(big_ids, wide), ops::embedding_ref(big_ids, wide), 0));
  expect_error([&] { ops::embedding(Tensor::from_vector_i64({1, 11}, {2}), table); },
               {"ops::embedding", "id 11", "position 1", "V = 11"});
  expect_error([&] { ops::embedding(Tensor::from_vector_i64({-1}, {1}), table); }, {"ops::embedding", "id -1"});
  expect_error([&] { ops::embedding(Tensor::zeros({2}), table); }, {"ops::embedding", "i32 or i64"});
}

TEST(OpsEdgeCases, EmptyTensors) {
  Tensor e = Tensor::zeros({3, 0, 4});
  EXPECT_EQ(ops::concat({e, e}, 1).shape(), (Shape{3, 0, 4}));
  EXPECT_EQ(ops::flip(e, {0, 1}).shape(), e.shape());
  EXPECT_EQ(ops::permute_copy(e, {2, 1, 0}).shape(), (Shape{4, 0, 3}));
  EXPECT_EQ(ops::pad(e, {{1, 1}, {0, 0}}, ops::PadMode::constant, 2).to_vector_f32(), std::vector<float>(24, 2.f));  // [3, 2, 4]
  auto t = ops::topk(e, 0, 1);
  EXPECT_EQ(t.values.shape(), (Shape{3, 0, 4}));
  EXPECT_EQ(ops::embedding(Tensor::from_vector_i64({}, {0}), randn({4, 3}, 1)).shape(), (Shape{0, 3}));
}
