// Dynamic batching: requests for the same key (model name + version) that arrive close
// together run as one call of a batch function.
//
// submit() queues a request and returns a future. One worker thread forms batches: a key
// runs as soon as it has max_batch requests or its oldest has waited max_queue_delay
// (full batches first, then by the age of the oldest request), taking at most max_batch
// requests (oldest first). Before a request joins a batch it is dropped if its deadline has
// passed (future -> ServiceError DEADLINE_EXCEEDED) or its cancel flag is set (CANCELLED).
// The batch function runs on the worker thread without any lock held and returns one
// response per request, in order; if it throws, every request in the batch gets that
// exception; a wrong number of responses is INTERNAL. Variable-length inputs (padding,
// masks) are the batch function's business: it receives the requests themselves.
// Bounded: with max_queue requests waiting, submit() throws ServiceError RESOURCE_EXHAUSTED.
// After stop() (or destruction) submit() throws UNAVAILABLE, and waiting requests get
// UNAVAILABLE; a batch already running finishes first.
// Metrics (when options.metrics is set): mamba_batch_size{batcher} and
// mamba_batch_queue_seconds{batcher} histograms, mamba_batch_dropped_total{batcher,reason}.
// Thread-safety: submit() and queued() may be called from any thread.
//
// With Runtime::handle (runtime.h), a handler waits through Call::await, which observes the
// call's deadline and cancellation while it waits:
//   auto fut = batcher.submit(key, std::move(req), call.deadline(), call.cancel_flag());
//   Resp r = call.await(fut);
// With Runtime::handle_async (gRPC's callback API) nothing waits: submit_callback() runs
// `done` on the worker thread with the response (or the exception, as the future would
// hold it) and the callback ends the call:
//   batcher.submit_callback(key, std::move(req), call.deadline(), call.cancel_flag(),
//                           [&call, resp](std::exception_ptr e, Resp* r) {
//                             if (e) return call.fail(e);
//                             *resp = std::move(*r);
//                             call.finish();
//                           });
// `done` must not block (it delays the next batch) and must not throw (an exception it
// throws is logged to stderr and dropped).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mamba/serve/errors.h"
#include "mamba/serve/metrics.h"

namespace mamba::serve {

struct BatcherOptions {
  std::string name = "default";  // the metrics label
  size_t max_batch = 8;
  std::chrono::microseconds max_queue_delay{2000};
  size_t max_queue = 1024;  // requests waiting, over all keys
  MetricsRegistry* metrics = nullptr;
};

template <class Req, class Resp>
class DynamicBatcher {
 public:
  using Clock = std::chrono::steady_clock;
  // `key` is the key the requests were submitted under; `batch` holds 1..max_batch of them.
  using BatchFn = std::function<std::vector<Resp>(const std::string& key, std::vector<Req>& batch)>;

  DynamicBatcher(BatcherOptions options, BatchFn fn) : options_(std::move(options)), fn_(std::move(fn)) {
    if (options_.max_batch < 1) options_.max_batch = 1;
    if (options_.max_queue < 1) options_.max_queue = 1;
    if (options_.metrics) {
      const Labels l{{"batcher", options_.name}};
      batch_size_ = &options_.metrics->histogram("mamba_batch_size", "Requests per batch run",
                                                 MetricsRegistry::batch_size_buckets(), l);
      queue_time_ = &options_.metrics->histogram("mamba_batch_queue_seconds",
                                                 "Time a request waited in the batcher's queue",
                                                 MetricsRegistry::latency_buckets(), l);
      dropped_deadline_ = &options_.metrics->counter("mamba_batch_dropped_total", "Requests dropped before running",
                                                     {{"batcher", options_.name}, {"reason", "deadline"}});
      dropped_cancelled_ = &options_.metrics->counter("mamba_batch_dropped_total", "Requests dropped before running",
                                                      {{"batcher", options_.name}, {"reason", "cancelled"}});
    }
    worker_ = std::thread([this] { work(); });
  }
  ~DynamicBatcher() { stop(); }
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Queues `req`. `deadline`: drop it (DEADLINE_EXCEEDED) if it has not started by then.
  // `cancelled`: drop it (CANCELLED) if the flag is set before it starts.
  std::future<Resp> submit(std::string key, Req req, Clock::time_point deadline = Clock::time_point::max(),
                           std::shared_ptr<const std::atomic<bool>> cancelled = nullptr) {
    Item item{std::move(req), {}, Clock::now(), deadline, std::move(cancelled), nullptr};
    std::future<Resp> fut = item.promise.get_future();
    enqueue(std::move(key), std::move(item));
    return fut;
  }

 private:
  struct Item;
  void enqueue(std::string key, Item&& item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) throw ServiceError(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
      if (total_ >= options_.max_queue)
        throw ServiceError(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "batcher " + options_.name + ": " + std::to_string(total_) +
                               " requests waiting, the limit of " + std::to_string(options_.max_queue) +
                               " is reached; retry later");
      queues_[key].push_back(std::move(item));
      ++total_;
    }
    cv_.notify_one();
  }

 public:
  // Like submit(), with `done(nullptr, &response)` or `done(exception, nullptr)` called on
  // the worker thread instead of a future (exactly once, unless submit_callback itself
  // throws: then never).
  using Done = std::function<void(std::exception_ptr, Resp*)>;
  void submit_callback(std::string key, Req req, Clock::time_point deadline,
                       std::shared_ptr<const std::atomic<bool>> cancelled, Done done) {
    Item item{std::move(req), {}, Clock::now(), deadline, std::move(cancelled), std::move(done)};
    enqueue(std::move(key), std::move(item));
  }

  size_t queued() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && !worker_.joinable()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  const BatcherOptions& options() const { return options_; }

 private:
  struct Item {
    Req req;
    std::promise<Resp> promise;
    Clock::time_point enqueued;
    Clock::time_point deadline;
    std::shared_ptr<const std::atomic<bool>> cancelled;
    Done done;  // null: the promise
  };

  static void call_done(Item& it, std::exception_ptr e, Resp* r) {
    try {
      it.done(e, r);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "DynamicBatcher: a completion callback threw (ignored): %s\n", x.what());
    } catch (...) {
      std::fprintf(stderr, "DynamicBatcher: a completion callback threw (ignored)\n");
    }
  }
  static void fail_with(Item& it, std::exception_ptr e) {
    if (it.done)
      call_done(it, e, nullptr);
    else
      it.promise.set_exception(e);
  }
  static void fail(Item& it, grpc::StatusCode code, const std::string& msg) {
    fail_with(it, std::make_exception_ptr(ServiceError(code, msg)));
  }

  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stopping_ || total_ > 0; });
      if (stopping_) {
        for (auto& [k, q] : queues_)
          for (auto& it : q) fail(it, grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
        queues_.clear();
        total_ = 0;
        return;
      }
      // Drop requests that can no longer run, in every queue.
      const auto now = Clock::now();
      std::vector<std::pair<Item, bool>> dead;  // (item, deadline passed?)
      for (auto q = queues_.begin(); q != queues_.end();) {
        for (auto it = q->second.begin(); it != q->second.end();) {
          const bool cancelled = it->cancelled && it->cancelled->load(std::memory_order_relaxed);
          const bool expired = it->deadline <= now;
          if (cancelled || expired) {
            dead.emplace_back(std::move(*it), !cancelled);
            it = q->second.erase(it);
            --total_;
          } else {
            ++it;
          }
        }
        q = q->second.empty() ? queues_.erase(q) : std::next(q);
      }
      if (!dead.empty()) {
        lock.unlock();
        for (auto& [it, expired] : dead) {
          if (expired) {
            if (dropped_deadline_) dropped_deadline_->inc();
            fail(it, grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed while the request was queued");
          } else {
            if (dropped_cancelled_) dropped_cancelled_->inc();
            fail(it, grpc::StatusCode::CANCELLED, "the call was cancelled while the request was queued");
          }
        }
        dead.clear();
        lock.lock();
        continue;
      }
      if (total_ == 0) continue;
      // A key with a full batch (the one waiting longest), else the key whose oldest
      // request has waited longest.
      auto pick = queues_.end();
      for (auto q = queues_.begin(); q != queues_.end(); ++q)
        if (q->second.size() >= options_.max_batch &&
            (pick == queues_.end() || q->second.front().enqueued < pick->second.front().enqueued))
          pick = q;
      if (pick == queues_.end()) {
        pick = queues_.begin();
        for (auto q = queues_.begin(); q != queues_.end(); ++q)
          if (q->second.front().enqueued < pick->second.front().enqueued) pick = q;
      }
      const auto ready_at = pick->second.front().enqueued + options_.max_queue_delay;
      if (pick->second.size() < options_.max_batch && now < ready_at) {
        // Wake at ready_at, or earlier for a new request or a deadline to honour.
        auto wake = ready_at;
        for (const auto& [k, q] : queues_)
          for (const auto& it : q) wake = std::min(wake, it.deadline);
        cv_.wait_until(lock, wake);
        continue;
      }
      const std::string key = pick->first;
      std::vector<Item> items;
      const size_t n = std::min(options_.max_batch, pick->second.size());
      for (size_t i = 0; i < n; ++i) {
        items.push_back(std::move(pick->second.front()));
        pick->second.pop_front();
      }
      total_ -= n;
      if (pick->second.empty()) queues_.erase(pick);
      lock.unlock();
      run_batch(key, items, now);
      lock.lock();
    }
  }

  void run_batch(const std::string& key, std::vector<Item>& items, Clock::time_point now) {
    if (batch_size_) batch_size_->observe(static_cast<double>(items.size()));
    if (queue_time_)
      for (const auto& it : items) queue_time_->observe(std::chrono::duration<double>(now - it.enqueued).count());
    std::vector<Req> reqs;
    reqs.reserve(items.size());
    for (auto& it : items) reqs.push_back(std::move(it.req));
    std::vector<Resp> resps;
    try {
      resps = fn_(key, reqs);
      if (resps.size() != items.size())
        throw ServiceError(grpc::StatusCode::INTERNAL, "batch function of " + options_.name + " returned " +
                                                           std::to_string(resps.size()) + " responses for " +
                                                           std::to_string(items.size()) + " requests");
    } catch (...) {
      const auto e = std::current_exception();
      for (auto& it : items) fail_with(it, e);
      return;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].done)
        call_done(items[i], nullptr, &resps[i]);
      else
        items[i].promise.set_value(std::move(resps[i]));
    }
  }

  BatcherOptions options_;
  BatchFn fn_;
  Histogram* batch_size_ = nullptr;
  Histogram* queue_time_ = nullptr;
  Counter* dropped_deadline_ = nullptr;
  Counter* dropped_cancelled_ = nullptr;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::deque<Item>> queues_;
  size_t total_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace mamba::serve
