// DynamicBatcher: grouping, the delay flush, dropping expired/cancelled requests, the
// bounded queue, errors. No timing asserts: waits are generous and condition-driven.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "serve_test_util.h"
#include "mamba/serve/batcher.h"

using namespace mamba::serve;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using mamba::serve::testing::code_of;

namespace {

struct Req {
  std::string key;
  int value = 0;
};

// Records batch sizes; optionally blocks inside the batch function until released.
struct Recorder {
  std::mutex mu;
  std::vector<size_t> sizes;
  std::vector<std::string> keys_mixed;
  std::promise<void> entered;
  bool entered_set = false;
  std::shared_future<void> gate;  // when valid, every batch waits for it

  std::vector<int> run(const std::string& key, std::vector<Req>& batch) {
    {
      std::lock_guard<std::mutex> lock(mu);
      sizes.push_back(batch.size());
      for (auto& r : batch)
        if (r.key != key) keys_mixed.push_back(r.key);
      if (!entered_set) {
        entered_set = true;
        entered.set_value();
      }
    }
    if (gate.valid()) gate.wait();
    std::vector<int> out;
    for (auto& r : batch) out.push_back(r.value * 2);
    return out;
  }
};

}  // namespace

TEST(Batcher, GroupsUpToMaxBatch) {
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 4;
  o.max_queue_delay = 60s;  // only a full batch runs
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  std::vector<std::future<int>> futs;
  for (int i = 0; i < 8; ++i) futs.push_back(b.submit("m", Req{"m", i}));
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(futs[i].wait_for(30s), std::future_status::ready);
    EXPECT_EQ(futs[i].get(), 2 * i);
  }
  std::lock_guard<std::mutex> lock(rec.mu);
  EXPECT_EQ(rec.sizes, (std::vector<size_t>{4, 4}));
}

TEST(Batcher, FlushesAfterTheQueueDelay) {
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 100;
  o.max_queue_delay = 20ms;
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  std::vector<std::future<int>> futs;
  for (int i = 0; i < 3; ++i) futs.push_back(b.submit("m", Req{"m", i}));
  for (auto& f : futs) ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  std::lock_guard<std::mutex> lock(rec.mu);
  size_t total = 0;
  for (size_t s : rec.sizes) total += s;
  EXPECT_EQ(total, 3u);
  EXPECT_LE(rec.sizes.size(), 3u);
}

TEST(Batcher, NeverMixesKeys) {
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_queue_delay = 5ms;
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  std::vector<std::future<int>> futs;
  for (int i = 0; i < 20; ++i) {
    const std::string key = i % 2 ? "a" : "b";
    futs.push_back(b.submit(key, Req{key, i}));
  }
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(futs[i].wait_for(30s), std::future_status::ready);
    EXPECT_EQ(futs[i].get(), 2 * i);
  }
  std::lock_guard<std::mutex> lock(rec.mu);
  EXPECT_TRUE(rec.keys_mixed.empty());
}

TEST(Batcher, AFullBatchIsNotHeldBackByAnOlderPartialOne) {
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 2;
  o.max_queue_delay = 600s;
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  auto lonely = b.submit("a", Req{"a", 1});  // oldest, but its batch never fills
  auto b1 = b.submit("b", Req{"b", 2});
  auto b2 = b.submit("b", Req{"b", 3});
  ASSERT_EQ(b1.wait_for(30s), std::future_status::ready);
  ASSERT_EQ(b2.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(b1.get() + b2.get(), 10);
  EXPECT_EQ(lonely.wait_for(0s), std::future_status::timeout);
  b.stop();
  EXPECT_EQ(code_of([&] { lonely.get(); }), grpc::StatusCode::UNAVAILABLE);
}

TEST(Batcher, DropsExpiredAndCancelledRequestsBeforeRunning) {
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_queue_delay = 1ms;
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  auto expired = b.submit("m", Req{"m", 1}, Clock::now() - 1s);
  auto flag = std::make_shared<std::atomic<bool>>(true);
  auto cancelled = b.submit("m", Req{"m", 2}, Clock::time_point::max(), flag);
  auto fine = b.submit("m", Req{"m", 3}, Clock::now() + 600s);
  ASSERT_EQ(fine.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(fine.get(), 6);
  EXPECT_EQ(code_of([&] { expired.get(); }), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(code_of([&] { cancelled.get(); }), grpc::StatusCode::CANCELLED);
  std::lock_guard<std::mutex> lock(rec.mu);
  size_t ran = 0;
  for (size_t s : rec.sizes) ran += s;
  EXPECT_EQ(ran, 1u);  // only the live request reached the batch function
}

TEST(Batcher, BoundedQueueRefusesWithResourceExhausted) {
  Recorder rec;
  std::promise<void> release;
  rec.gate = release.get_future().share();
  auto entered = rec.entered.get_future();
  BatcherOptions o;
  o.max_batch = 1;
  o.max_queue_delay = 0us;
  o.max_queue = 2;
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  auto first = b.submit("m", Req{"m", 1});
  ASSERT_EQ(entered.wait_for(30s), std::future_status::ready);  // the worker is busy with it
  auto second = b.submit("m", Req{"m", 2});
  auto third = b.submit("m", Req{"m", 3});
  EXPECT_EQ(b.queued(), 2u);
  EXPECT_EQ(code_of([&] { b.submit("m", Req{"m", 4}); }), grpc::StatusCode::RESOURCE_EXHAUSTED);
  release.set_value();
  EXPECT_EQ(first.get(), 2);
  EXPECT_EQ(second.get(), 4);
  EXPECT_EQ(third.get(), 6);
}

TEST(Batcher, BatchFunctionErrorsReachEveryWaiter) {
  BatcherOptions o;
  o.max_batch = 4;
  o.max_queue_delay = 60s;
  DynamicBatcher<Req, int> b(o, [](const std::string&, std::vector<Req>&) -> std::vector<int> {
    throw ServiceError(grpc::StatusCode::INVALID_ARGUMENT, "bad batch");
  });
  std::vector<std::future<int>> futs;
  for (int i = 0; i < 4; ++i) futs.push_back(b.submit("m", Req{"m", i}));
  for (auto& f : futs) EXPECT_EQ(code_of([&] { f.get(); }), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(Batcher, WrongResponseCountIsInternal) {
  BatcherOptions o;
  o.max_batch = 2;
  o.max_queue_delay = 60s;
  DynamicBatcher<Req, int> b(o, [](const std::string&, std::vector<Req>&) { return std::vector<int>{1}; });
  auto f1 = b.submit("m", Req{"m", 1});
  auto f2 = b.submit("m", Req{"m", 2});
  EXPECT_EQ(code_of([&] { f1.get(); }), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(code_of([&] { f2.get(); }), grpc::StatusCode::INTERNAL);
}

TEST(Batcher, StopFailsWaitingRequestsWithUnavailable) {
  BatcherOptions o;
  o.max_batch = 100;
  o.max_queue_delay = 600s;
  MetricsRegistry metrics;
  o.metrics = &metrics;
  auto b = std::make_unique<DynamicBatcher<Req, int>>(
      o, [](const std::string&, std::vector<Req>& v) { return std::vector<int>(v.size(), 0); });
  auto f = b->submit("m", Req{"m", 1});
  b->stop();
  EXPECT_EQ(code_of([&] { f.get(); }), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(code_of([&] { b->submit("m", Req{"m", 2}); }), grpc::StatusCode::UNAVAILABLE);
}

TEST(Batcher, RecordsBatchSizeAndQueueTimeMetrics) {
  MetricsRegistry metrics;
  BatcherOptions o;
  o.name = "echo";
  o.max_batch = 2;
  o.max_queue_delay = 60s;
  o.metrics = &metrics;
  DynamicBatcher<Req, int> b(o, [](const std::string&, std::vector<Req>& v) { return std::vector<int>(v.size(), 7); });
  auto f1 = b.submit("m", Req{"m", 1});
  auto f2 = b.submit("m", Req{"m", 2});
  EXPECT_EQ(f1.get(), 7);
  EXPECT_EQ(f2.get(), 7);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("mamba_batch_size_count{batcher=\"echo\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("mamba_batch_size_sum{batcher=\"echo\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("mamba_batch_queue_seconds_count{batcher=\"echo\"} 2"), std::string::npos) << text;
}

TEST(Batcher, SubmitCallbackRunsDoneOnceWithTheResponseOrTheError) {
  // submit_callback: the same batching, the response (or the exception a future would
  // hold) handed to `done` exactly once; futures and callbacks share batches.
  Recorder rec;
  BatcherOptions o;
  o.max_batch = 4;
  o.max_queue_delay = 60s;  // only a full batch runs
  DynamicBatcher<Req, int> b(o, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  std::mutex mu;
  std::vector<std::pair<int, int>> got;  // (request, response)
  std::promise<void> all_done;
  for (int i = 0; i < 3; ++i)
    b.submit_callback("m", Req{"m", i}, Clock::time_point::max(), nullptr, [&, i](std::exception_ptr e, int* r) {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_FALSE(e);
      ASSERT_NE(r, nullptr);
      got.emplace_back(i, *r);
      if (got.size() == 3) all_done.set_value();
    });
  auto fut = b.submit("m", Req{"m", 10});  // the fourth: the batch runs
  ASSERT_EQ(all_done.get_future().wait_for(30s), std::future_status::ready);
  EXPECT_EQ(fut.get(), 20);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{0, 0}, {1, 2}, {2, 4}}));
    std::lock_guard<std::mutex> lock2(rec.mu);
    EXPECT_EQ(rec.sizes, (std::vector<size_t>{4}));
  }
  // Dropped before running (cancelled), and refused after stop(): the error, once.
  BatcherOptions o2;
  o2.max_batch = 8;
  o2.max_queue_delay = 1ms;
  DynamicBatcher<Req, int> b2(o2, [&](const std::string& k, std::vector<Req>& v) { return rec.run(k, v); });
  auto flag = std::make_shared<std::atomic<bool>>(true);
  std::promise<grpc::StatusCode> code;
  std::atomic<int> calls{0};
  b2.submit_callback("m", Req{"m", 1}, Clock::time_point::max(), flag, [&](std::exception_ptr e, int* r) {
    ++calls;
    EXPECT_EQ(r, nullptr);
    code.set_value(code_of([&] { std::rethrow_exception(e); }));
  });
  auto cf = code.get_future();
  ASSERT_EQ(cf.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(cf.get(), grpc::StatusCode::CANCELLED);
  b2.stop();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(code_of([&] { b2.submit_callback("m", Req{"m", 2}, Clock::time_point::max(), nullptr, [](auto, auto) {}); }),
            grpc::StatusCode::UNAVAILABLE);
}
