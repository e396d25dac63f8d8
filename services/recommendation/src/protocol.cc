#include "mamba/recommendation/protocol.h"

#include <algorithm>
#include <fstream>
#include <numeric>

namespace mamba::recommendation {

namespace {
uint64_t key_hash(std::string_view key) { return std::hash<std::string_view>{}(key); }
uint64_t slot_tag(uint64_t h) { return (h >> 32) | 1u; }  // never 0: a used slot is never 0
uint64_t slot_value(int32_t id, uint64_t h) { return (slot_tag(h) << 32) | static_cast<uint32_t>(id); }
}  // namespace

ItemVocab::ItemVocab(std::vector<std::string> keys) : keys_(std::move(keys)) {
  if (keys_.empty() || !keys_[0].empty()) fail("item vocabulary", "entry 0 must be the padding id (empty key)");
  size_t cap = 16;
  while (cap < 2 * keys_.size()) cap *= 2;
  slots_.assign(cap, 0);
  for (size_t i = 1; i < keys_.size(); ++i) {
    if (keys_[i].empty()) fail("item vocabulary", "empty key at id " + std::to_string(i));
    const uint64_t h = key_hash(keys_[i]);
    const size_t at = slot_of(keys_[i], h);
    if (slots_[at] != 0) fail("item vocabulary", "duplicate key '" + keys_[i] + "' at id " + std::to_string(i));
    slots_[at] = slot_value(static_cast<int32_t>(i), h);
  }
}

[[gnu::always_inline]] inline size_t ItemVocab::slot_of(std::string_view key, uint64_t h) const {
  const size_t mask = slots_.size() - 1;
  const uint64_t tag = slot_tag(h);
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const uint64_t s = slots_[i];
    if (s == 0 || ((s >> 32) == tag && keys_[s & 0xffffffffu] == key)) return i;
  }
}

void ItemVocab::grow() {
  slots_.assign(std::max<size_t>(16, 2 * slots_.size()), 0);
  for (size_t i = 1; i < keys_.size(); ++i) {
    const uint64_t h = key_hash(keys_[i]);
    slots_[slot_of(keys_[i], h)] = slot_value(static_cast<int32_t>(i), h);
  }
}

int32_t ItemVocab::add(const std::string& key) {
  if (key.empty()) fail("item vocabulary", "empty item key (the padding id's)");
  const uint64_t h = key_hash(key);
  const size_t at = slot_of(key, h);  // one probe: the key's slot, or the free slot it takes
  if (slots_[at] != 0) return static_cast<int32_t>(slots_[at] & 0xffffffffu);
  const auto id = static_cast<int32_t>(keys_.size());
  keys_.push_back(key);
  if (2 * keys_.size() > slots_.size()) grow();
  else slots_[at] = slot_value(id, h);
  return id;
}

int32_t ItemVocab::find(std::string_view key) const {
  if (key.empty()) return 0;
  return static_cast<int32_t>(slots_[slot_of(key, key_hash(key))] & 0xffffffffu);
}

SequenceData sequences_from_rows(const std::vector<InteractionRow>& rows) {
  SequenceData d;
  std::unordered_map<std::string, size_t> user_index;
  std::vector<std::vector<std::pair<double, int32_t>>> events;
  for (const auto& r : rows) {
    auto [it, added] = user_index.emplace(r.user_key, d.user_keys.size());
    if (added) {
      d.user_keys.push_back(r.user_key);
      events.emplace_back();
    }
    events[it->second].emplace_back(r.ts, d.items.add(r.item_key));
  }
  d.sequences.resize(events.size());
  for (size_t u = 0; u < events.size(); ++u) {
    auto& ev = events[u];
    std::stable_sort(ev.begin(), ev.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    d.sequences[u].reserve(ev.size());
    for (const auto& e : ev) d.sequences[u].push_back(e.second);
  }
  d.interactions = static_cast<int64_t>(rows.size());
  return d;
}

SequenceData read_interaction_file(const std::string& path, InterFormat format, int64_t* rejected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("interaction file", "cannot open '" + path + "'");
  InteractionReader reader(in, path, format);
  std::vector<InteractionRow> rows;
  InteractionRow row;
  while (reader.next(row)) rows.push_back(row);
  if (rejected) *rejected = reader.rejected_count();
  return sequences_from_rows(rows);
}

SequenceData sequences_from_snapshot(const SequenceSnapshot& snap) {
  SequenceData d;
  d.items = ItemVocab(snap.item_keys);
  for (size_t u = 1; u < snap.sequences.size(); ++u) {
    if (snap.sequences[u].empty()) continue;
    d.user_keys.push_back(snap.user_keys[u]);
    d.sequences.push_back(snap.sequences[u]);
    d.interactions += static_cast<int64_t>(snap.sequences[u].size());
  }
  return d;
}

SequenceData remap(const SequenceData& data, const ItemVocab& vocab) {
  SequenceData d;
  d.items = vocab;
  std::vector<int32_t> map(static_cast<size_t>(data.items.num_items() + 1), 0);
  for (int64_t i = 1; i <= data.items.num_items(); ++i) map[i] = vocab.find(data.items.key(static_cast<int32_t>(i)));
  for (size_t u = 0; u < data.sequences.size(); ++u) {
    std::vector<int32_t> s;
    for (int32_t it : data.sequences[u]) {
      if (map[it] == 0) {
        ++d.dropped_unknown;
        continue;
      }
      s.push_back(map[it]);
    }
    d.interactions += static_cast<int64_t>(s.size());
    if (s.empty()) continue;
    d.user_keys.push_back(data.user_keys[u]);
    d.sequences.push_back(std::move(s));
  }
  return d;
}

LeaveOneOutSplit leave_one_out(const std::vector<std::vector<int32_t>>& sequences) {
  LeaveOneOutSplit s;
  s.train.resize(sequences.size());
  for (size_t u = 0; u < sequences.size(); ++u) {
    const auto& seq = sequences[u];
    const size_t n = seq.size();
    if (n < 3) {
      s.train[u] = seq;
      continue;
    }
    s.train[u].assign(seq.begin(), seq.end() - 2);
    s.valid.push_back({static_cast<int64_t>(u), s.train[u], seq[n - 2]});
    s.test.push_back({static_cast<int64_t>(u), std::vector<int32_t>(seq.begin(), seq.end() - 1), seq[n - 1]});
  }
  return s;
}

std::vector<TrainSample> training_samples(const std::vector<std::vector<int32_t>>& train) {
  std::vector<TrainSample> out;
  for (size_t u = 0; u < train.size(); ++u)
    for (size_t j = 1; j < train[u].size(); ++j) out.push_back({static_cast<int32_t>(u), static_cast<int32_t>(j)});
  return out;
}

std::vector<int32_t> sample_input(const std::vector<std::vector<int32_t>>& train, const TrainSample& s, int64_t max_len) {
  const auto& seq = train.at(static_cast<size_t>(s.user));
  const int64_t begin = std::max<int64_t>(0, s.end - max_len);
  return std::vector<int32_t>(seq.begin() + begin, seq.begin() + s.end);
}

}  // namespace mamba::recommendation
