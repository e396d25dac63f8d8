// The RecBole sequential-recommendation protocol: interactions -> per-user item sequences
// ordered by time, leave-one-out splits, training samples (every prefix) and the item
// vocabulary (dense ids, 0 = padding).
//
// Ordering: each user's events are sorted by timestamp with a STABLE sort, so events with
// equal timestamps keep their input order (file order; the store already orders by
// (ts, id), which is insertion order).
//
// Leave-one-out (RecBole's "LS": valid_and_test, order TO): for a user with n >= 3 events,
// the last item is the test target, the second-to-last the validation target and the first
// n - 2 items are the training part. Validation input: the training part; test input: the
// training part plus the validation item. Users with fewer than 3 events are not
// evaluated: all their events are training events.
//
// Training samples: every prefix of a user's training part predicts the next item: for the
// part t_0..t_{m-1}, sample j (1 <= j < m) has input t_max(0, j-L)..t_{j-1} (the last
// L = max_seq_len items) and target t_j.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <string_view>
#include <vector>

#include "mamba/recommendation/interactions_file.h"
#include "mamba/recommendation/store.h"

namespace mamba::recommendation {

// Dense item ids for external keys; id 0 is padding (key "").
// The key -> id index is an open-addressing table of (32-bit hash tag, id) slots, at most half
// full: a lookup (every item of every RecommendFromHistory request) touches one or two slots
// and compares one key, instead of a node-based map's bucket and node chain.
class ItemVocab {
 public:
  ItemVocab() : keys_{""}, slots_(16, 0) {}
  explicit ItemVocab(std::vector<std::string> keys_with_padding);  // keys[0] must be ""
  // The id of `key`, adding it when new.
  int32_t add(const std::string& key);
  // The id of `key`, or 0 when unknown.
  int32_t find(std::string_view key) const;
  const std::string& key(int32_t id) const { return keys_.at(static_cast<size_t>(id)); }
  int64_t num_items() const { return static_cast<int64_t>(keys_.size()) - 1; }
  const std::vector<std::string>& keys() const { return keys_; }

 private:
  // The slot holding `key` (hash h), or the empty slot where it would go.
  size_t slot_of(std::string_view key, uint64_t h) const;
  void grow();  // twice the slots, every key re-placed
  std::vector<std::string> keys_;
  std::vector<uint64_t> slots_;  // (tag << 32) | id, 0 = empty; size a power of two, at most half full
};

// What the protocol works on: per-user dense item sequences, oldest first.
struct SequenceData {
  ItemVocab items;
  std::vector<std::string> user_keys;               // one per sequence
  std::vector<std::vector<int32_t>> sequences;      // dense ids in 1..num_items
  int64_t interactions = 0;
  int64_t dropped_unknown = 0;  // events of items outside a fixed vocabulary (remap)
};

// Groups rows by user (users in order of first appearance, items: ids in order of first
// appearance unless `vocab` is given), stable-sorts each user's events by ts.
SequenceData sequences_from_rows(const std::vector<InteractionRow>& rows);
// Reads an interaction file (InteractionReader) into sequences; rejected rows are counted
// in *rejected when given.
SequenceData read_interaction_file(const std::string& path, InterFormat format = InterFormat::auto_detect,
                                   int64_t* rejected = nullptr);
// The store's snapshot (already ordered by (ts, id)); users without events are skipped.
SequenceData sequences_from_snapshot(const SequenceSnapshot& snap);
// The same sequences in another vocabulary (a trained model's): events of unknown items
// are dropped (counted in dropped_unknown).
SequenceData remap(const SequenceData& data, const ItemVocab& vocab);

// One evaluation case: the history the model sees and the item to rank.
struct EvalCase {
  int64_t user = 0;              // index into SequenceData::sequences
  std::vector<int32_t> history;  // oldest first, not truncated
  int32_t target = 0;
};

struct LeaveOneOutSplit {
  std::vector<std::vector<int32_t>> train;  // per user, the training part
  std::vector<EvalCase> valid, test;
};

LeaveOneOutSplit leave_one_out(const std::vector<std::vector<int32_t>>& sequences);

// A training sample: train[user][max(0, end - L) .. end) predicts train[user][end].
struct TrainSample {
  int32_t user = 0;
  int32_t end = 0;
};

// Every prefix of every training part (in user order, then end), see the file comment.
std::vector<TrainSample> training_samples(const std::vector<std::vector<int32_t>>& train);

// The input of a sample, truncated to the last max_len items.
std::vector<int32_t> sample_input(const std::vector<std::vector<int32_t>>& train, const TrainSample& s, int64_t max_len);

}  // namespace mamba::recommendation
