// Prometheus metrics: a registry of counters, gauges and histograms, rendered in the text
// exposition format (version 0.0.4), and a small HTTP server for /metrics and /healthz.
//
// Metrics the runtime records (runtime.h, batcher.h, model_repository.h):
//   mamba_requests_total{service,method,code}            counter
//   mamba_request_duration_seconds{service,method}       histogram
//   mamba_batch_queue_seconds{batcher}                   histogram (time a request waited)
//   mamba_batch_size{batcher}                            histogram (requests per batch run)
//   mamba_model_version{model}                           gauge (newest loaded version)
//   mamba_handler_bypass_total                           counter (handlers that skipped Runtime::handle)
//   mamba_memory_bytes{kind="rss"|"cpu_allocator_in_use"|"cpu_allocator_cached"} gauge
// Ownership: the registry owns every metric; the references it hands out stay valid for
// the registry's lifetime (hold them, don't look them up on the hot path).
// Thread-safety: everything here is thread-safe. Counter/Gauge updates are lock-free;
// Histogram::observe takes a short per-histogram lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mamba::serve {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds` strictly increasing; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then the +Inf bucket (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), bounds_.size() + 1
  double sum_ = 0;
};

class MetricsRegistry {
 public:
  // Returns the metric for (name, labels), creating it on first use. A name keeps the type
  // (and buckets) it was first registered with; asking for another type throws mamba::Error.
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, const std::vector<double>& upper_bounds,
                       const Labels& labels = {});
  // Runs before every render() (e.g. to refresh gauges from /proc). Called without the
  // registry's lock held, so it may call gauge() etc.
  void add_collector(std::function<void(MetricsRegistry&)> collect);
  // The text exposition of every metric, families sorted by name.
  std::string render();

  static std::vector<double> latency_buckets();       // 0.5 ms .. 60 s, seconds
  static std::vector<double> batch_size_buckets();    // 1, 2, 4, ... 1024

 private:
  enum class Type { counter, gauge, histogram };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;
    std::map<std::string, std::unique_ptr<Counter>> counters;  // key: rendered label set
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(std::string_view name, std::string_view help, Type type, const std::vector<double>* bounds);

  std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  std::vector<std::function<void(MetricsRegistry&)>> collectors_;
};

// Registers a collector for mamba_memory_bytes: process RSS (/proc/self/statm) and the CPU
// caching allocator's bytes in use and cached (mamba/tensor/allocator.h).
void add_process_metrics(MetricsRegistry& registry);

// GET /metrics (the registry's text) and GET /healthz (200 "ok" when healthy() is true,
// else 503 "not serving") on its own thread, via cpp-httplib.
class MetricsHttpServer {
 public:
  MetricsHttpServer(MetricsRegistry& registry, std::function<bool()> healthy);
  ~MetricsHttpServer();  // stop()s
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds host:port (port 0 = any free port) and starts serving; returns the bound port.
  // Throws mamba::Error if the port cannot be bound.
  int start(const std::string& host, int port);
  void stop();  // idempotent; joins the thread
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace mamba::serve
