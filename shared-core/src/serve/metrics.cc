#include "mamba/serve/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "mamba/tensor/allocator.h"
#include "mamba/tensor/tensor.h"

namespace mamba::serve {

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  for (size_t i = 1; i < bounds_.size(); ++i)
    if (!(bounds_[i] > bounds_[i - 1])) throw Error("Histogram: bucket bounds must be strictly increasing");
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  const size_t b = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[b];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t acc = 0;
  for (uint64_t c : counts_) {
    acc += c;
    s.cumulative.push_back(acc);
  }
  s.count = acc;
  s.sum = sum_;
  return s;
}

namespace {

std::string escape_label_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// `{a="x",b="y"}` (or "" for no labels), in the given order.
std::string label_key(const Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ',';
    s += labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
  }
  return s + "}";
}

// Adds one more label to a rendered label set: {a="x"} + le -> {a="x",le="0.5"}.
std::string with_label(const std::string& key, const std::string& name, const std::string& value) {
  const std::string extra = name + "=\"" + value + "\"";
  if (key.empty()) return "{" + extra + "}";
  return key.substr(0, key.size() - 1) + "," + extra + "}";
}

std::string format_double(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string format_bound(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

bool valid_metric_name(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

}  // namespace

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help, Type type,
                                                 const std::vector<double>* bounds) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    if (!valid_metric_name(name)) throw Error("metrics: invalid metric name '" + std::string(name) + "'");
    Family f{type, std::string(help), bounds ? *bounds : std::vector<double>{}, {}, {}, {}};
    it = families_.emplace(std::string(name), std::move(f)).first;
  } else if (it->second.type != type) {
    throw Error("metrics: " + std::string(name) + " is already registered with another type");
  }
  return it->second;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = family(name, help, Type::counter, nullptr);
  auto& slot = f.counters[label_key(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = family(name, help, Type::gauge, nullptr);
  auto& slot = f.gauges[label_key(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      const std::vector<double>& upper_bounds, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& f = family(name, help, Type::histogram, &upper_bounds);
  auto& slot = f.histograms[label_key(labels)];
  if (!slot) slot = std::make_unique<Histogram>(f.bounds);
  return *slot;
}

void MetricsRegistry::add_collector(std::function<void(MetricsRegistry&)> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::render() {
  std::vector<std::function<void(MetricsRegistry&)>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    collectors = collectors_;
  }
  for (auto& c : collectors) c(*this);

  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::counter ? "counter" : f.type == Type::gauge ? "gauge" : "histogram";
    out << "# HELP " << name << ' ' << f.help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& [key, c] : f.counters) out << name << key << ' ' << c->value() << '\n';
    for (const auto& [key, g] : f.gauges) out << name << key << ' ' << format_double(g->value()) << '\n';
    for (const auto& [key, h] : f.histograms) {
      const auto s = h->snapshot();
      for (size_t i = 0; i < s.upper_bounds.size(); ++i)
        out << name << "_bucket" << with_label(key, "le", format_bound(s.upper_bounds[i])) << ' ' << s.cumulative[i]
            << '\n';
      out << name << "_bucket" << with_label(key, "le", "+Inf") << ' ' << s.count << '\n';
      out << name << "_sum" << key << ' ' << format_double(s.sum) << '\n';
      out << name << "_count" << key << ' ' << s.count << '\n';
    }
  }
  return out.str();
}

std::vector<double> MetricsRegistry::latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> MetricsRegistry::batch_size_buckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
}

void add_process_metrics(MetricsRegistry& registry) {
  const char* help = "Memory of this process: resident set size and the CPU caching allocator's blocks";
  Gauge& rss = registry.gauge("mamba_memory_bytes", help, {{"kind", "rss"}});
  Gauge& in_use = registry.gauge("mamba_memory_bytes", help, {{"kind", "cpu_allocator_in_use"}});
  Gauge& cached = registry.gauge("mamba_memory_bytes", help, {{"kind", "cpu_allocator_cached"}});
  registry.add_collector([&rss, &in_use, &cached](MetricsRegistry&) {
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
      unsigned long long size = 0, resident = 0;
      if (std::fscanf(f, "%llu %llu", &size, &resident) == 2)
        rss.set(static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)));
      std::fclose(f);
    }
    const AllocatorStats s = cpu_allocator_stats();
    in_use.set(static_cast<double>(s.bytes_in_use));
    cached.set(static_cast<double>(s.bytes_cached));
  });
}

}  // namespace mamba::serve
