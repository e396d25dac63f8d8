#include "mamba/recommendation/serving.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace mamba::recommendation {

UserState make_user_state(const Mamba4Rec& net, const std::vector<int32_t>& history, double last_ts) {
  UserState s;
  const size_t L = static_cast<size_t>(net.config().max_seq_len);
  const size_t first = history.size() > L ? history.size() - L : 0;
  s.window.assign(history.begin() + static_cast<std::ptrdiff_t>(first), history.end());
  s.net = net.prefill(std::vector<int32_t>(s.window.begin(), s.window.end()));
  s.last_ts = last_ts;
  return s;
}

void advance_user_state(const Mamba4Rec& net, UserState& s, int32_t item, double ts) {
  const size_t L = static_cast<size_t>(net.config().max_seq_len);
  if (s.window.size() < L) {
    net.advance(s.net, item);
    s.window.push_back(item);
  } else {
    // The window slides: the state over the new window is one prefill of L events.
    std::vector<int32_t> w(s.window.begin() + 1, s.window.end());
    w.push_back(item);
    Mamba4RecState fresh = net.prefill(w);
    s.window.pop_front();
    s.window.push_back(item);
    s.net = std::move(fresh);
  }
  s.last_ts = std::max(s.last_ts, ts);
}

std::vector<ScoredId> top_k_items(const Mamba4Rec& net, const Tensor& hidden, int64_t k,
                                  const std::unordered_set<int32_t>& exclude) {
  return top_k_items_batch(net, {hidden}, {k}, {&exclude}).front();
}

std::vector<std::vector<ScoredId>> top_k_items_batch(const Mamba4Rec& net, const std::vector<Tensor>& hidden,
                                                     const std::vector<int64_t>& k,
                                                     const std::vector<const std::unordered_set<int32_t>*>& exclude) {
  std::vector<float> scores;
  net.score_representations(hidden, scores);
  const int64_t N = net.config().num_items;
  std::vector<std::vector<ScoredId>> all(hidden.size());
  // Per row: one pass with a k-entry min-heap (ordered by score, then by id so that ties
  // go to the lower id), skipping excluded ids; O(N log k) without copying the row.
  auto better = [](const ScoredId& a, const ScoredId& b) { return a.score > b.score || (a.score == b.score && a.id < b.id); };
  for (size_t b = 0; b < hidden.size(); ++b) {
    const float* row = scores.data() + b * static_cast<size_t>(N);
    const auto& ex = *exclude[b];
    const size_t want = static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k[b], N)));
    std::vector<ScoredId>& heap = all[b];  // heap.front() = the worst of the best so far
    heap.reserve(want);
    for (int64_t j = 0; j < N && want > 0; ++j) {
      const ScoredId c{static_cast<int32_t>(j + 1), row[j]};
      if (std::isnan(c.score)) continue;
      if (heap.size() == want && !better(c, heap.front())) continue;
      if (!ex.empty() && ex.count(c.id)) continue;
      if (heap.size() == want) {
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back() = c;
      } else {
        heap.push_back(c);
      }
      std::push_heap(heap.begin(), heap.end(), better);
    }
    std::sort_heap(heap.begin(), heap.end(), better);  // best first
  }
  return all;
}

UserStateCache::UserStateCache(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

std::shared_ptr<CachedUser> UserStateCache::find(const std::string& user) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = index_.find(user);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

uint64_t UserStateCache::token() const {
  std::lock_guard<std::mutex> lk(mu_);
  return writes_;
}

bool UserStateCache::insert(const std::string& user, std::shared_ptr<CachedUser> entry, uint64_t token) {
  std::lock_guard<std::mutex> lk(mu_);
  if (token != writes_) return false;
  auto it = index_.find(user);
  if (it != index_.end()) {
    it->second->second = std::move(entry);
    lru_.splice(lru_.begin(), lru_, it->second);
  } else {
    lru_.emplace_front(user, std::move(entry));
    index_[user] = lru_.begin();
  }
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
    ++evictions_;
  }
  return true;
}

void UserStateCache::note_write() {
  std::lock_guard<std::mutex> lk(mu_);
  ++writes_;
}

void UserStateCache::erase(const std::string& user) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = index_.find(user);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

size_t UserStateCache::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

uint64_t UserStateCache::evictions() const {
  std::lock_guard<std::mutex> lk(mu_);
  return evictions_;
}

}  // namespace mamba::recommendation
