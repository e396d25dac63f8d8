// DataLoader: order determinism across worker counts, coverage per epoch, length
// bucketing, resume via set_position, worker errors carrying the sample index, prompt
// destruction mid-epoch, and pad_collate's shapes and padding.
#include "mamba/train/data_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

using mamba::Tensor;
using namespace mamba::train;

namespace {

// Sample i: "tokens" i64[len(i)] filled with i, "id" i64[] = i. Lengths vary (1..37).
class ToyDataset : public Dataset {
 public:
  explicit ToyDataset(int64_t n, int64_t fail_at = -1, int sleep_ms = 0)
      : n_(n), fail_at_(fail_at), sleep_ms_(sleep_ms) {}
  int64_t size() const override { return n_; }
  int64_t length(int64_t i) const override { return 1 + (i * 7919) % 37; }
  Sample get(int64_t i) const override {
    gets_.fetch_add(1);
    if (sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    if (i == fail_at_) throw std::runtime_error("corrupt record");
    std::vector<int64_t> tok(length(i), i);
    return Sample{{{"tokens", Tensor::from_vector_i64(tok, {length(i)})}, {"id", Tensor::from_vector_i64({i}, {})}}};
  }
  mutable std::atomic<int64_t> gets_{0};

 private:
  int64_t n_, fail_at_;
  int sleep_ms_;
};

std::vector<int64_t> ids(const Batch& b) {
  const Tensor& t = b.at("id");
  return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

// All batches of the loader's current epoch, as dataset indices read from the tensors.
std::vector<std::vector<int64_t>> drain(DataLoader& dl) {
  std::vector<std::vector<int64_t>> out;
  while (auto b = dl.next()) {
    EXPECT_EQ(ids(*b), b->indices);
    out.push_back(ids(*b));
  }
  return out;
}

DataLoaderOptions opts(int64_t bs, bool shuffle, int workers, bool drop_last = false, int64_t bucket = 0) {
  DataLoaderOptions o;
  o.batch_size = bs;
  o.shuffle = shuffle;
  o.seed = 1234;
  o.num_workers = workers;
  o.drop_last = drop_last;
  o.bucket_size_multiplier = bucket;
  o.prefetch = 3;
  return o;
}

}  // namespace

TEST(DataLoader, SameSeedSameBatchesForZeroAndTwoWorkers) {
  auto ds = std::make_shared<ToyDataset>(103);
  DataLoader sync(ds, opts(8, true, 0));
  DataLoader par(ds, opts(8, true, 2));
  for (int e = 0; e < 3; ++e) {
    auto a = drain(sync), b = drain(par);
    EXPECT_EQ(a, b) << "epoch " << e;
    EXPECT_EQ(a, sync.plan(e));
    EXPECT_EQ(static_cast<int64_t>(a.size()), sync.batches_per_epoch());
  }
  EXPECT_EQ(sync.epoch(), 3);
  EXPECT_EQ(sync.position(), 0);
}

TEST(DataLoader, DifferentEpochsAndSeedsGiveDifferentOrders) {
  auto ds = std::make_shared<ToyDataset>(50);
  DataLoader dl(ds, opts(5, true, 0));
  EXPECT_NE(dl.plan(0), dl.plan(1));
  EXPECT_EQ(dl.plan(1), dl.plan(1));  // pure function of (seed, epoch)
  auto o = opts(5, true, 0);
  o.seed = 99;
  DataLoader other(ds, o);
  EXPECT_NE(dl.plan(0), other.plan(0));
  // No shuffle: natural order.
  DataLoader plain(ds, opts(5, false, 0));
  EXPECT_EQ(plain.plan(0)[0], (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(plain.plan(0), plain.plan(7));
}

TEST(DataLoader, EveryIndexOncePerEpoch) {
  for (bool drop_last : {false, true}) {
    for (int workers : {0, 2}) {
      auto ds = std::make_shared<ToyDataset>(23);
      DataLoader dl(ds, opts(4, true, workers, drop_last));
      for (int e = 0; e < 2; ++e) {
        auto batches = drain(dl);
        std::vector<int64_t> seen;
        for (auto& b : batches) {
          if (drop_last) {
            EXPECT_EQ(b.size(), 4u);
          }
          seen.insert(seen.end(), b.begin(), b.end());
        }
        std::set<int64_t> uniq(seen.begin(), seen.end());
        EXPECT_EQ(uniq.size(), seen.size()) << "duplicate index";
        EXPECT_EQ(seen.size(), drop_last ? 20u : 23u);
        EXPECT_EQ(batches.size(), drop_last ? 5u : 6u);
        if (!drop_last) {
          EXPECT_EQ(batches.back().size(), 3u);
        }
      }
    }
  }
}

TEST(DataLoader, BucketingKeepsLengthsCloseAndCoversAll) {
  auto ds = std::make_shared<ToyDataset>(200);
  DataLoader bucketed(ds, opts(8, true, 0, false, 25));  // window 200 = whole dataset
  DataLoader random(ds, opts(8, true, 0));
  auto spread = [&](const std::vector<std::vector<int64_t>>& plan) {
    int64_t total = 0;
    for (auto& b : plan) {
      int64_t lo = 1 << 30, hi = 0;
      for (int64_t i : b) lo = std::min(lo, ds->length(i)), hi = std::max(hi, ds->length(i));
      total += hi - lo;
    }
    return total;
  };
  for (int e = 0; e < 2; ++e) {
    auto plan = bucketed.plan(e);
    std::vector<int64_t> all;
    for (auto& b : plan) all.insert(all.end(), b.begin(), b.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(all.size(), 200u);
    for (int64_t i = 0; i < 200; ++i) EXPECT_EQ(all[i], i);
    // One window spanning the dataset: each batch covers at most a couple of lengths.
    EXPECT_LT(spread(plan), spread(random.plan(e)) / 4);
    for (auto& b : plan)
      for (size_t k = 1; k < b.size(); ++k) EXPECT_LE(ds->length(b[k - 1]), ds->length(b[k]));
  }
  EXPECT_NE(bucketed.plan(0), bucketed.plan(1));  // batches are shuffled per epoch
  // Smaller windows, partial last window, workers: still every index once, same as sync.
  DataLoader small(ds, opts(8, true, 2, false, 3));
  auto got = drain(small);
  EXPECT_EQ(got, small.plan(0));
  std::set<int64_t> uniq;
  for (auto& b : got) uniq.insert(b.begin(), b.end());
  EXPECT_EQ(uniq.size(), 200u);
}

TEST(DataLoader, ResumeReproducesRemainingBatches) {
  auto ds = std::make_shared<ToyDataset>(77);
  for (int workers : {0, 2}) {
    DataLoader full(ds, opts(6, true, workers, false, 2));
    drain(full);                   // epoch 0
    auto epoch1 = drain(full);     // epoch 1
    DataLoader resumed(ds, opts(6, true, workers, false, 2));
    resumed.next();                // consume something first; set_position must discard it
    resumed.set_position(1, 5);
    EXPECT_EQ(resumed.epoch(), 1);
    EXPECT_EQ(resumed.position(), 5);
    auto rest = drain(resumed);
    EXPECT_EQ(rest, std::vector<std::vector<int64_t>>(epoch1.begin() + 5, epoch1.end()));
    EXPECT_EQ(resumed.epoch(), 2);
    // Resuming at the very end of an epoch: next() ends it at once.
    resumed.set_position(0, resumed.batches_per_epoch());
    EXPECT_FALSE(resumed.next().has_value());
    EXPECT_EQ(resumed.epoch(), 1);
  }
  DataLoader dl(ds, opts(6, true, 0));
  EXPECT_THROW(dl.set_position(0, dl.batches_per_epoch() + 1), mamba::Error);
  EXPECT_THROW(dl.set_position(-1, 0), mamba::Error);
}

TEST(DataLoader, WorkerExceptionCarriesSampleIndex) {
  for (int workers : {0, 2}) {
    auto ds = std::make_shared<ToyDataset>(40, /*fail_at=*/17);
    DataLoader dl(ds, opts(4, false, workers));  // 17 is in batch 4
    for (int b = 0; b < 4; ++b) ASSERT_TRUE(dl.next().has_value());
    try {
      dl.next();
      FAIL() << "expected an exception";
    } catch (const mamba::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("dataset.get(17)"), std::string::npos) << msg;
      EXPECT_NE(msg.find("corrupt record"), std::string::npos) << msg;
      EXPECT_NE(msg.find("batch 4"), std::string::npos) << msg;
    }
    EXPECT_EQ(dl.position(), 4);  // stays at the failed batch
    EXPECT_THROW(dl.next(), mamba::Error);  // retried, fails again
    dl.set_position(0, 5);                  // skip it
    auto b = dl.next();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->indices, (std::vector<int64_t>{20, 21, 22, 23}));
  }
}

TEST(DataLoader, EarlyDestructionDoesNotHang) {
  // 10 ms per sample, 1000 samples: a full epoch would take ~5 s on two workers.
  auto ds = std::make_shared<ToyDataset>(1000, -1, /*sleep_ms=*/10);
  auto done = std::async(std::launch::async, [ds] {
    DataLoader dl(ds, opts(16, true, 2));
    dl.next();  // workers now busy building further batches
    DataLoader idle(ds, opts(16, true, 2));  // never started
  });  // both destroyed here, mid-epoch
  ASSERT_EQ(done.wait_for(std::chrono::seconds(3)), std::future_status::ready) << "destructor hung";
  done.get();
  // Bounded work: the first batch, plus at most prefetch+1 batches begun, each abandoned
  // after the current sample.
  EXPECT_LT(ds->gets_.load(), 16 * 6);
}

TEST(DataLoader, PadCollateShapesAndPadding) {
  Collate collate = pad_collate(-1.0);
  std::vector<Sample> s(3);
  s[0].fields = {{"x", Tensor::from_vector({1, 2, 3, 4}, {2, 2})}, {"y", Tensor::from_vector_i64({7}, {})}};
  s[1].fields = {{"x", Tensor::from_vector({5, 6}, {1, 2})}, {"y", Tensor::from_vector_i64({8}, {})}};
  s[2].fields = {{"x", Tensor::from_vector({9, 10, 11, 12, 13, 14}, {3, 2})}, {"y", Tensor::from_vector_i64({9}, {})}};
  Batch b{collate(s), {0, 1, 2}};
  ASSERT_EQ(b.fields.size(), 3u);
  EXPECT_EQ(b.fields[0].first, "x");
  EXPECT_EQ(b.fields[1].first, "x_lengths");
  EXPECT_EQ(b.fields[2].first, "y");
  EXPECT_EQ(b.at("x").shape(), (mamba::Shape{3, 3, 2}));
  EXPECT_EQ(b.at("x").to_vector_f32(),
            (std::vector<float>{1, 2, 3, 4, -1, -1, 5, 6, -1, -1, -1, -1, 9, 10, 11, 12, 13, 14}));
  const Tensor& lens = b.at("x_lengths");
  EXPECT_EQ(lens.dtype(), mamba::DType::i64);
  EXPECT_EQ(std::vector<int64_t>(lens.data<int64_t>(), lens.data<int64_t>() + 3), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(b.at("y").shape(), (mamba::Shape{3}));
  EXPECT_EQ(b.at("y").data<int64_t>()[2], 9);
  EXPECT_THROW(b.at("z"), mamba::Error);

  // Integer tokens pad with the pad value too; the loader's batches go through it.
  auto ds = std::make_shared<ToyDataset>(5);
  DataLoader dl(ds, opts(5, false, 0));
  auto batch = dl.next();
  ASSERT_TRUE(batch.has_value());
  const Tensor& tok = batch->at("tokens");
  int64_t maxlen = 0;
  for (int64_t i = 0; i < 5; ++i) maxlen = std::max(maxlen, ds->length(i));
  EXPECT_EQ(tok.shape(), (mamba::Shape{5, maxlen}));
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t t = 0; t < maxlen; ++t)
      EXPECT_EQ(tok.data<int64_t>()[i * maxlen + t], t < ds->length(i) ? i : 0) << i << "," << t;

  // Mismatched trailing dims / dtypes are rejected with the field's name.
  s[1].fields[0].second = Tensor::from_vector({5, 6, 7}, {1, 3});
  try {
    collate(s);
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
  }
}
