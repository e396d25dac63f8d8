#include "mamba/train/data_loader.h"

#include <algorithm>
#include <exception>
#include <random>
#include <sstream>

namespace mamba::train {
namespace {

constexpr const char* kOp = "DataLoader";

const Tensor& find_field(const NamedTensors& fields, const std::string& name, const char* what) {
  for (const auto& [n, t] : fields)
    if (n == name) return t;
  fail(what, "no field '" + name + "'");
}

// The generator for one epoch's shuffles: every bit of seed and epoch enters the state.
std::mt19937_64 epoch_rng(uint64_t seed, int64_t epoch) {
  const auto e = static_cast<uint64_t>(epoch);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(e),
                    static_cast<uint32_t>(e >> 32)};
  return std::mt19937_64(seq);
}

// Uniform in [0, n), n >= 1, by rejection (std::uniform_int_distribution differs between
// standard libraries; this does not).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t reject_below = (0 - n) % n;  // 2^64 mod n
  uint64_t r = rng();
  while (r < reject_below) r = rng();
  return r % n;
}

// Fisher–Yates.
template <class T> void shuffle_in_place(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_below(rng, i)]);
}

std::string join_indices(const std::vector<int64_t>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  return s.str();
}

}  // namespace

const Tensor& Sample::at(const std::string& name) const { return find_field(fields, name, "Sample::at"); }
const Tensor& Batch::at(const std::string& name) const { return find_field(fields, name, "Batch::at"); }

Collate pad_collate(double pad_value) {
  return [pad_value](const std::vector<Sample>& samples) -> NamedTensors {
    constexpr const char* op = "pad_collate";
    if (samples.empty()) fail(op, "no samples");
    const NamedTensors& first = samples[0].fields;
    const auto B = static_cast<int64_t>(samples.size());
    for (int64_t b = 1; b < B; ++b) {
      const NamedTensors& f = samples[b].fields;
      if (f.size() != first.size())
        fail(op, "sample " + std::to_string(b) + " of the batch has " + std::to_string(f.size()) +
                     " fields, sample 0 has " + std::to_string(first.size()));
      for (size_t k = 0; k < f.size(); ++k)
        if (f[k].first != first[k].first)
          fail(op, "sample " + std::to_string(b) + " of the batch has field '" + f[k].first + "' where sample 0 has '" +
                       first[k].first + "'");
    }
    NamedTensors out;
    for (size_t k = 0; k < first.size(); ++k) {
      const std::string& name = first[k].first;
      const Tensor& t0 = first[k].second;
      if (!t0.defined()) fail(op, "field '" + name + "' of sample 0 is undefined");
      for (int64_t b = 0; b < B; ++b) {
        const Tensor& t = samples[b].fields[k].second;
        const bool same_rest =
            t.defined() && t.dim() == t0.dim() && std::equal(t.shape().begin() + (t.dim() > 0 ? 1 : 0), t.shape().end(),
                                                             t0.shape().begin() + (t0.dim() > 0 ? 1 : 0));
        if (!t.defined() || t.dtype() != t0.dtype() || !same_rest || !t.device().is_cpu())
          fail(op, "field '" + name + "': sample " + std::to_string(b) + " of the batch is " +
                       (t.defined() ? t.str() + " on " + t.device().str() : std::string("undefined")) +
                       ", sample 0 is " + t0.str() + " (must agree in dtype and all dims but dim 0, on cpu)");
      }
      if (t0.dim() == 0) {
        Tensor stacked = Tensor::empty({B}, t0.dtype());
        for (int64_t b = 0; b < B; ++b) stacked.select(0, b).copy_from(samples[b].fields[k].second);
        out.emplace_back(name, std::move(stacked));
        continue;
      }
      int64_t max_len = 0;
      std::vector<int64_t> lens(B);
      for (int64_t b = 0; b < B; ++b) {
        lens[b] = samples[b].fields[k].second.size(0);
        max_len = std::max(max_len, lens[b]);
      }
      Shape shape = t0.shape();
      shape[0] = max_len;
      shape.insert(shape.begin(), B);
      Tensor padded = Tensor::full(shape, pad_value, t0.dtype());
      for (int64_t b = 0; b < B; ++b)
        if (lens[b] > 0) padded.select(0, b).slice(0, 0, lens[b]).copy_from(samples[b].fields[k].second);
      out.emplace_back(name, std::move(padded));
      out.emplace_back(name + "_lengths", Tensor::from_vector_i64(lens, {B}));
    }
    for (size_t i = 0; i < out.size(); ++i)
      for (size_t j = i + 1; j < out.size(); ++j)
        if (out[i].first == out[j].first) fail(op, "output field '" + out[i].first + "' would appear twice");
    return out;
  };
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options, Collate collate)
    : dataset_(std::move(dataset)), options_(options), collate_(std::move(collate)) {
  if (!dataset_) fail(kOp, "dataset is null");
  if (!collate_) fail(kOp, "collate function is empty");
  if (options_.batch_size < 1) fail(kOp, "batch_size must be >= 1, got " + std::to_string(options_.batch_size));
  if (options_.num_workers < 0) fail(kOp, "num_workers must be >= 0, got " + std::to_string(options_.num_workers));
  if (options_.prefetch < 1) fail(kOp, "prefetch must be >= 1, got " + std::to_string(options_.prefetch));
  if (options_.bucket_size_multiplier < 0)
    fail(kOp, "bucket_size_multiplier must be >= 0, got " + std::to_string(options_.bucket_size_multiplier));
  if (options_.world < 1) fail(kOp, "world must be >= 1, got " + std::to_string(options_.world));
  if (options_.rank < 0 || options_.rank >= options_.world)
    fail(kOp, "rank must be in 0..world-1 = 0.." + std::to_string(options_.world - 1) + ", got " +
                  std::to_string(options_.rank));
  const int64_t n = dataset_->size();
  if (n < 0) fail(kOp, "dataset size is negative: " + std::to_string(n));
  if (options_.bucket_size_multiplier > 0) {
    lengths_.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      lengths_[i] = dataset_->length(i);
      if (lengths_[i] < 0) fail(kOp, "dataset length(" + std::to_string(i) + ") is negative");
    }
  }
  plan_ = std::make_shared<const Plan>(plan(0));
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::batches_per_epoch() const {
  const int64_t n = dataset_->size(), b = options_.batch_size * options_.world;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<std::vector<int64_t>> DataLoader::plan(int64_t epoch) const {
  if (epoch < 0) fail(kOp, "epoch must be >= 0, got " + std::to_string(epoch));
  const int64_t n = dataset_->size(), bs = options_.batch_size * options_.world;  // the global batch
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng = epoch_rng(options_.seed, epoch);
  if (options_.shuffle) shuffle_in_place(order, rng);

  if (options_.bucket_size_multiplier > 0) {
    const int64_t window = options_.bucket_size_multiplier * bs;
    for (int64_t w = 0; w < n; w += window) {
      const auto end = order.begin() + std::min(n, w + window);
      std::stable_sort(order.begin() + w, end, [&](int64_t a, int64_t b) { return lengths_[a] < lengths_[b]; });
    }
  }
  // Windows are multiples of batch_size, so cutting the whole order into batches cuts
  // every window into whole batches; only the last batch can be short.
  Plan batches;
  for (int64_t s = 0; s < n; s += bs) {
    const int64_t e = std::min(n, s + bs);
    if (e - s < bs && options_.drop_last) break;
    batches.emplace_back(order.begin() + s, order.begin() + e);
  }
  if (options_.bucket_size_multiplier > 0 && options_.shuffle) shuffle_in_place(batches, rng);
  if (options_.world > 1) {  // this rank's part of each global batch
    const int64_t W = options_.world, r = options_.rank;
    for (auto& b : batches) {
      const auto m = static_cast<int64_t>(b.size());
      b = std::vector<int64_t>(b.begin() + r * m / W, b.begin() + (r + 1) * m / W);
    }
  }
  return batches;
}

DataLoader::Built DataLoader::build(const Plan& plan, int64_t batch_index, int64_t epoch) const {
  const std::vector<int64_t>& indices = plan[batch_index];
  const std::string where = "epoch " + std::to_string(epoch) + ", batch " + std::to_string(batch_index);
  Built r;
  if (indices.empty()) {  // a rank's empty part of a short global batch
    r.batch = Batch{};
    return r;
  }
  std::vector<Sample> samples;
  samples.reserve(indices.size());
  for (int64_t idx : indices) {
    if (stop_.load(std::memory_order_relaxed)) return r;  // abandoned; nobody reads it
    try {
      samples.push_back(dataset_->get(idx));
    } catch (const std::exception& e) {
      r.error = std::string(kOp) + ": dataset.get(" + std::to_string(idx) + ") failed (" + where + "): " + e.what();
      return r;
    } catch (...) {
      r.error = std::string(kOp) + ": dataset.get(" + std::to_string(idx) + ") failed (" + where +
                "): unknown exception";
      return r;
    }
  }
  try {
    r.batch = Batch{collate_(samples), indices};
  } catch (const std::exception& e) {
    r.error = std::string(kOp) + ": collate failed (" + where + ", samples " + join_indices(indices) + "): " + e.what();
  } catch (...) {
    r.error = std::string(kOp) + ": collate failed (" + where + ", samples " + join_indices(indices) +
              "): unknown exception";
  }
  return r;
}

std::optional<Batch> DataLoader::next() {
  const auto n_batches = static_cast<int64_t>(plan_->size());
  if (position_ >= n_batches) {
    stop_workers();
    ++epoch_;
    position_ = 0;
    plan_ = std::make_shared<const Plan>(plan(epoch_));
    return std::nullopt;
  }
  Built r;
  if (options_.num_workers == 0) {
    r = build(*plan_, position_, epoch_);
  } else {
    if (workers_.empty()) start_workers();
    std::unique_lock<std::mutex> lk(mu_);
    ready_cv_.wait(lk, [&] { return ready_.count(position_) != 0; });
    auto it = ready_.find(position_);
    r = std::move(it->second);
    ready_.erase(it);
    deliver_ = position_ + 1;
    lk.unlock();
    work_cv_.notify_all();
  }
  if (!r.batch) {
    // Stay at this batch: a later next() rebuilds it from here.
    stop_workers();
    throw Error(r.error);
  }
  ++position_;
  return std::move(r.batch);
}

void DataLoader::set_position(int64_t epoch, int64_t batches_consumed) {
  if (epoch < 0) fail(kOp, "set_position: epoch must be >= 0, got " + std::to_string(epoch));
  const int64_t limit = batches_per_epoch();
  if (batches_consumed < 0 || batches_consumed > limit)
    fail(kOp, "set_position: batches_consumed must be in [0, " + std::to_string(limit) + "], got " +
                  std::to_string(batches_consumed));
  stop_workers();
  if (epoch != epoch_) plan_ = std::make_shared<const Plan>(plan(epoch));
  epoch_ = epoch;
  position_ = batches_consumed;
}

void DataLoader::start_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(false);
    claim_ = position_;
    deliver_ = position_;
    ready_.clear();
  }
  workers_.reserve(options_.num_workers);
  for (int w = 0; w < options_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  if (workers_.empty()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  ready_.clear();
}

void DataLoader::worker_loop() {
  // plan_ and epoch_ do not change while workers run (set_position and the epoch change
  // stop them first); hold our own reference anyway.
  const std::shared_ptr<const Plan> plan = plan_;
  const int64_t epoch = epoch_;
  const auto end = static_cast<int64_t>(plan->size());
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_.load() || (claim_ < end && claim_ <= deliver_ + options_.prefetch); });
    if (stop_.load()) return;
    const int64_t j = claim_++;
    lk.unlock();
    Built r = build(*plan, j, epoch);
    lk.lock();
    if (stop_.load()) return;
    ready_.emplace(j, std::move(r));
    ready_cv_.notify_all();
  }
}

}  // namespace mamba::train
