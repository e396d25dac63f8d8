// Data loading for training: a Dataset of samples (named tensors), a Collate function that
// turns samples into a Batch, and a DataLoader that walks a dataset in batches — shuffled,
// optionally bucketed by length, optionally built ahead by worker threads — in an order
// that is a pure function of (seed, epoch), so that a run resumed at (epoch, position)
// sees exactly the batches the uninterrupted run would have seen.
//
// Resuming with a checkpoint: store loader.epoch() in TrainerState::extra (e.g.
// extra["data_epoch"]) and loader.position() (batches consumed in that epoch) in
// TrainerState::data_position; after loading, call set_position(epoch, position).
//
// Errors: mamba::Error. A failure in Dataset::get or in the collate function is reported
// by the next() call that would have returned that batch, with the sample index, epoch
// and batch number in the message.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::train {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// One example: tensors by name, in a fixed order (e.g. {"tokens", i64[T]}, {"label", i64[]}).
struct Sample {
  NamedTensors fields;
  // The tensor called `name`; throws mamba::Error naming it when absent.
  const Tensor& at(const std::string& name) const;
};

// Several samples collated. `indices` are the dataset indices of its samples, in order.
struct Batch {
  NamedTensors fields;
  std::vector<int64_t> indices;
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  const Tensor& at(const std::string& name) const;  // throws mamba::Error when absent
};

// A random-access collection of samples.
// Thread-safety: with num_workers > 0, get() is called from several worker threads at once,
// so it must be safe to call concurrently (const, no shared mutable state without a lock).
// size() and length() are called only from the thread that constructs or drives the loader.
// The loader assumes size() and length(i) do not change while it exists.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Sequence length of sample i, used only for length bucketing; should be cheap (no need
  // to load the sample). Must be >= 0.
  virtual int64_t length(int64_t i) const = 0;
  // Sample i, 0 <= i < size(). May throw; the loader reports it with the index.
  virtual Sample get(int64_t i) const = 0;
};

// Turns the samples of one batch (in batch order, at least one) into the batch's tensors.
// The loader fills Batch::indices afterwards. Called concurrently from worker threads
// when num_workers > 0.
using Collate = std::function<NamedTensors(const std::vector<Sample>& samples)>;

// The default collate. Every sample must have the same field names in the same order; for
// each field, the samples' tensors must agree in dtype, rank and every dimension but dim 0.
// Field `name` of rank r >= 1 becomes `name` of shape [B, L_max, ...] (the samples stacked
// along a new dim 0, dim 0 of each padded at the end with `pad_value` to the batch's
// largest L), plus `name + "_lengths"`, i64[B], holding each sample's L. A rank-0 field
// becomes shape [B] (no padding, no lengths). Output tensors are new, contiguous, CPU.
// Throws mamba::Error naming the field and the sample's position in the batch.
Collate pad_collate(double pad_value = 0.0);

struct DataLoaderOptions {
  int64_t batch_size = 1;  // >= 1
  bool shuffle = false;
  uint64_t seed = 0;       // with shuffle/bucketing: the order is a function of (seed, epoch)
  bool drop_last = false;  // drop the final batch when it has fewer than batch_size samples
  // Length bucketing, 0 = off. With k >= 1: take the (shuffled) indices in windows of
  // k * batch_size, sort each window by length (stable), cut it into batches, then shuffle
  // the list of batches (when shuffle is on). Batches hold samples of similar length;
  // every index still appears once. Only the last window can yield a short batch.
  int64_t bucket_size_multiplier = 0;
  // Worker threads that build batches ahead of the consumer; 0 = build in next().
  int num_workers = 0;
  // With workers: at most this many batches beyond the one the consumer waits for are
  // finished or being built at any time (bounds memory). >= 1; fewer than num_workers
  // leaves workers idle.
  int64_t prefetch = 2;
  // Data parallel (see distributed.h): `world` processes (>= 1) each run a loader with the
  // same options and their own `rank` (0..world-1). The plan is made for the global batch
  // of batch_size * world samples (shuffling, bucketing and drop_last act on global
  // batches, so the global batches are exactly those of one loader with batch_size *
  // world), and rank r takes samples [r * m / world, (r + 1) * m / world) (rounded down) of
  // each global batch of m samples: batch_size each for full batches, so the ranks' batches
  // concatenated in rank order are the global batch. A short last global batch (no
  // drop_last) is split as evenly as possible; with fewer samples than ranks, some ranks
  // get an empty Batch (size() 0, no fields: report samples 0 for it, see trainer.h).
  int64_t world = 1;
  int64_t rank = 0;
};

// Walks `dataset` epoch after epoch. Batches come out in plan order whatever num_workers is.
//
// Ownership: shares ownership of the dataset. Batches returned by next() are the caller's.
// Thread-safety: a DataLoader is driven by one thread at a time (next, set_position,
// epoch, position are not synchronised with each other); its worker threads are internal.
// Destruction stops the workers: each finishes at most the dataset.get() call it is in
// (never the rest of its batch), so the destructor does not wait for the epoch to end.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options,
             Collate collate = pad_collate(0.0));
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch of the current epoch, or nullopt when the epoch is over; in that case
  // the loader moves to (epoch() + 1, position 0), so the following call starts the next
  // epoch. On a dataset/collate failure it throws and stays at the failed batch (calling
  // next() again retries it; set_position can skip it).
  std::optional<Batch> next();

  int64_t epoch() const { return epoch_; }
  // Batches of the current epoch already returned by next().
  int64_t position() const { return position_; }
  // Continue from batch `batches_consumed` of `epoch`: the following next() returns the
  // batch an uninterrupted loader (same dataset, options, seed) returns there. Discards
  // any prefetched batches. Throws mamba::Error unless epoch >= 0 and
  // 0 <= batches_consumed <= batches_per_epoch().
  void set_position(int64_t epoch, int64_t batches_consumed);

  // Batches per epoch (the number of global batches when world > 1).
  int64_t batches_per_epoch() const;
  // The dataset indices of every batch of `epoch` (this rank's part when world > 1), in order. A pure function of the
  // dataset's size and lengths, the options and `epoch`; identical across platforms and
  // standard libraries (the shuffles use std::mt19937_64 seeded through std::seed_seq,
  // and no std:: distribution).
  std::vector<std::vector<int64_t>> plan(int64_t epoch) const;

 private:
  using Plan = std::vector<std::vector<int64_t>>;
  struct Built {  // one batch built by a worker, or why it could not be
    std::optional<Batch> batch;
    std::string error;
  };

  Built build(const Plan& plan, int64_t batch_index, int64_t epoch) const;
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  Collate collate_;
  std::vector<int64_t> lengths_;  // dataset lengths, cached when bucketing

  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::shared_ptr<const Plan> plan_;  // plan(epoch_)

  // Worker state, guarded by mu_ (stop_ is also read without the lock between samples).
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for room to claim a batch
  std::condition_variable ready_cv_;  // the consumer waits for its batch
  std::atomic<bool> stop_{false};
  int64_t claim_ = 0;    // next batch index a worker will take
  int64_t deliver_ = 0;  // batch index the consumer waits for
  std::map<int64_t, Built> ready_;
};

}  // namespace mamba::train
