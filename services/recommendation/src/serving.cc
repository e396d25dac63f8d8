#include "mamba/recommendation/serving.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mamba/ops/topk.h"

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
  std::vector<float> row;
  net.score_representation(hidden, row);
  const int64_t N = static_cast<int64_t>(row.size());
  int64_t excluded = 0;
  for (int32_t id : exclude)
    if (id >= 1 && id <= N) {
      row[id - 1] = -std::numeric_limits<float>::infinity();
      ++excluded;
    }
  const int64_t want = std::min<int64_t>(k, N - excluded);
  std::vector<ScoredId> out;
  if (want <= 0) return out;
  // A row of N scores, viewed as a tensor without a copy of more than that row.
  Tensor t = Tensor::from_vector(row, {N});
  const ops::TopK tk = ops::topk(t, want, 0, true);
  const Tensor vals = tk.values.contiguous(), idx = tk.indices.contiguous();
  for (int64_t i = 0; i < want; ++i) {
    const int64_t j = idx.data<int64_t>()[i];
    if (exclude.count(static_cast<int32_t>(j + 1))) continue;
    out.push_back({static_cast<int32_t>(j + 1), vals.data<float>()[i]});
  }
  return out;
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
