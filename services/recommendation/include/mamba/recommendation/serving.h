// Serving Mamba4Rec: the per-user recurrent state, its LRU cache, and top-k over the
// catalogue.
//
// Serving semantics ("the last max_seq_len events"): a user's recommendations are the
// model's scores of the user's newest max_seq_len events (those whose items the model
// knows), exactly what training and `mamba-rec evaluate` score (pad_right truncates the
// same way). A UserState keeps that window and the model's recurrent state over it:
//   - while the window is not full, a new event is one Mamba4Rec::advance (O(1) in the
//     history length: one embedding row, per layer one mixer step and the FFN);
//   - once it is full, the oldest event leaves the window and the state is rebuilt by one
//     parallel prefill over the max_seq_len events of the window (bounded by max_seq_len,
//     independent of how long the user's history is; no store read).
// So the cached state always equals a recompute over the truncated history (tested to
// 1e-4 relative), and a restarted server (cold cache, prefilled from the store) answers
// the same as a warm one. exclude_seen removes the items of that window.
//
// UserStateCache: a bounded LRU by user count. Thread-safety: every method may be called
// from any thread; a CachedUser's state is guarded by its own mutex. Write races with a
// cold prefill are closed by a write sequence number: a prefill takes token() before it
// reads the store and insert() refuses it when a write (note_write()) came in between.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mamba/recommendation/mamba4rec.h"
#include "mamba/recommendation/model_dir.h"

namespace mamba::recommendation {

struct UserState {
  std::deque<int32_t> window;  // the newest <= max_seq_len item ids, oldest first
  Mamba4RecState net;          // the recurrent state over exactly `window`
  double last_ts = -1e300;     // timestamp of the newest event (for out-of-order writes)
};

// The state of `history` (oldest first; its last max_seq_len entries are kept).
UserState make_user_state(const Mamba4Rec& net, const std::vector<int32_t>& history, double last_ts = -1e300);
// Appends one event under the serving semantics above.
void advance_user_state(const Mamba4Rec& net, UserState& s, int32_t item, double ts = -1e300);

// The items a request may return (Recommend filters, item_attributes.h): bit i of `bits`
// set = dense id i allowed (bit 0, padding, never).
struct AllowSet {
  std::vector<uint64_t> bits;
  int64_t count = 0;  // allowed items
  bool allowed(int32_t id) const {
    const auto w = static_cast<size_t>(id) >> 6;
    return w < bits.size() && ((bits[w] >> (static_cast<unsigned>(id) & 63u)) & 1u) != 0;
  }
};

struct ScoredId {
  int32_t id = 0;  // dense id 1..num_items
  float score = 0;
};
// The k best items for `hidden` (descending score, ties to the lower id), skipping
// `exclude`. Scores one row of num_items values; returns fewer than k when the catalogue
// minus the exclusions is smaller.
std::vector<ScoredId> top_k_items(const Mamba4Rec& net, const Tensor& hidden, int64_t k,
                                  const std::unordered_set<int32_t>& exclude);
// The same for several representations at once: one GEMM scores all of them (B x
// num_items scores in memory, once per batch), then each row's top k. All vectors have
// one entry per request. `allow` (empty, or one entry per request, null = no filter):
// an item outside a request's allow set never enters its heap, so the result is the
// unfiltered ranking restricted to the allowed items.
std::vector<std::vector<ScoredId>> top_k_items_batch(const Mamba4Rec& net, const std::vector<Tensor>& hidden,
                                                     const std::vector<int64_t>& k,
                                                     const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                     const std::vector<const AllowSet*>& allow = {});

struct CachedUser {
  std::mutex mu;      // guards everything below
  std::string model_key;                // "name/version" of the model the state belongs to
  std::shared_ptr<const RecModel> model;  // that model (kept alive while cached)
  UserState state;
};

class UserStateCache {
 public:
  explicit UserStateCache(size_t capacity);
  // The user's entry (most recently used now), or null.
  std::shared_ptr<CachedUser> find(const std::string& user);
  // The write sequence number to take before reading the store for a prefill.
  uint64_t token() const;
  // Inserts (or replaces) the entry unless a write came after `token`; evicts the least
  // recently used users beyond the capacity. Returns whether it was inserted.
  bool insert(const std::string& user, std::shared_ptr<CachedUser> entry, uint64_t token);
  // Marks a committed write (call after the store's commit, before updating entries).
  void note_write();
  void erase(const std::string& user);
  void clear();  // every entry (evictions are not counted)
  size_t size() const;
  size_t capacity() const { return capacity_; }
  uint64_t evictions() const;

 private:
  using List = std::list<std::pair<std::string, std::shared_ptr<CachedUser>>>;
  const size_t capacity_;
  mutable std::mutex mu_;
  List lru_;  // front = most recently used
  std::unordered_map<std::string, List::iterator> index_;
  uint64_t writes_ = 0;
  uint64_t evictions_ = 0;
};

// States of explicit histories (RecommendFromHistory), so that an anonymous session that
// sends its history again, or sends it again with a few events appended, does not pay a
// full prefill: entries map (model key, the window's item ids) to the immutable state over
// exactly those ids from the empty state; bounded LRU by entry count. A hit on a prefix of
// the window is advanced by the remaining events (Mamba4Rec::advance), which equals a
// prefill of the whole window (the recurrence is the same computation). Keys are compared
// in full (a 64-bit hash finds candidates; a collision is a miss).
// Thread-safety: every method may be called from any thread.
class HistoryStateCache {
 public:
  explicit HistoryStateCache(size_t capacity);  // capacity 0: caches nothing
  struct Hit {
    size_t length = 0;  // items of the window's prefix the state covers (0: no hit)
    std::shared_ptr<const Mamba4RecState> state;
  };
  // The longest cached prefix of `window` (its first `length` ids) for `model_key`, of at
  // least `min_length` ids.
  Hit longest_prefix(const std::string& model_key, const std::vector<int32_t>& window, size_t min_length = 1);
  void insert(const std::string& model_key, const std::vector<int32_t>& window,
              std::shared_ptr<const Mamba4RecState> state);
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  struct Entry {
    uint64_t hash = 0;
    std::string model_key;
    std::vector<int32_t> ids;
    std::shared_ptr<const Mamba4RecState> state;
  };
  using List = std::list<Entry>;
  const size_t capacity_;
  mutable std::mutex mu_;
  List lru_;  // front = most recently used
  std::unordered_map<uint64_t, List::iterator> index_;
};

// The state of a history's window (its last max_seq_len ids) through `cache`: a cached
// prefix is advanced when at most `max_steps` events remain, else the window is prefilled;
// the result is cached. `from_cache` (optional) tells whether a cached state was used.
// `cache` may be null (always a prefill). With `prefill` false a window that needs a
// prefill gives null instead (the caller prefills it, batched, and caches it).
std::shared_ptr<const Mamba4RecState> history_state(const Mamba4Rec& net, const std::string& model_key,
                                                    const std::vector<int32_t>& window, HistoryStateCache* cache,
                                                    size_t max_steps, bool* from_cache = nullptr, bool prefill = true);

// Cold prefills of concurrent calls, batched. A call whose state must be prefilled (a
// Recommend cache miss, a RecommendFromHistory window with no usable cached prefix) queues
// a PrefillJob. When fewer than `workers` batches are running, the queuing thread (a
// WorkPool thread in the service) runs one at once with everything queued, up to `max_batch` jobs, and
// keeps running batches while jobs are queued; otherwise the job waits for a running batch
// to end, whose thread takes it next. So a lone call is prefilled at once (no timer, no
// added latency at one stream), and under load the calls that arrive during one prefill
// share the next: their users' events are read in ONE store query
// (last_interactions_batch) and their windows encoded by one batched forward
// (Mamba4Rec::prefill_batch). Thread-safety: submit() from any thread.
struct PrefillJob {
  std::string model_key;
  std::shared_ptr<const RecModel> model;
  std::string user;             // non-empty: the window is the user's newest events in the store
  std::vector<int32_t> window;  // else: this window (RecommendFromHistory), oldest first
  struct Result {
    Mamba4RecState state;         // over `window`
    std::vector<int32_t> window;  // the user's window (its known items) for a store read
    double last_ts = -1e300;      // a store read: the newest event's timestamp
    uint64_t token = 0;           // a store read: UserStateCache::token() taken before it
  };
  // Called once, on the batch's thread, with the result, or with the error (result null):
  // an unknown user (NOT_FOUND naming it), the store unreachable (UNAVAILABLE). Must not
  // throw.
  std::function<void(std::exception_ptr, Result*)> done;
};

class PrefillQueue {
 public:
  using RunBatch = std::function<void(std::vector<PrefillJob>&)>;  // must call every job's done
  PrefillQueue(size_t max_batch, int workers, RunBatch run)
      : max_batch_(std::max<size_t>(1, max_batch)), workers_(std::max(1, workers)), run_(std::move(run)) {}
  void submit(PrefillJob job);

 private:
  const size_t max_batch_;
  const int workers_;
  const RunBatch run_;
  std::mutex mu_;
  std::deque<PrefillJob> pending_;
  int running_ = 0;
};

}  // namespace mamba::recommendation
