#include "mamba/recommendation/serving.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <omp.h>

#include "mamba/kernels/gemm.h"
#include "top_k_heap.h"


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

namespace {

using detail::better;
using detail::TopK;
using detail::chunk_reaches;

// Items per block: a block's B x kBlock scores stay in cache between the GEMM that writes
// them and the top-k scan that reads them.
constexpr int64_t kScoreBlock = 2048;

using detail::kLanes;
using detail::Lanes;

// scores (n, Bp) row-major = E (n, D) rows times hT, where hT is (G, D, 16) (group g holds
// requests 16g .. 16g + 15, zero-padded) and Bp = 16 G. Eight items at a time keep eight
// accumulators per group in registers; each hT vector load feeds eight FMAs, each item
// value is a broadcast. Why not OpenBLAS: for these shapes (B <= 64, D ~ 64) its sgemm
// re-packs the item block on every call, which cost as much as the multiply itself.
void score_items(const float* E, int64_t n, int64_t D, const float* hT, int64_t G, float* scores) {
  const int64_t Bp = G * kLanes;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const float* e = E + j * D;
    for (int64_t g = 0; g < G; ++g) {
      const float* hg = hT + g * D * kLanes;
      Lanes acc[8] = {};
      for (int64_t d = 0; d < D; ++d) {
        Lanes hv;
        __builtin_memcpy(&hv, hg + d * kLanes, sizeof hv);
        for (int i = 0; i < 8; ++i) acc[i] += e[i * D + d] * hv;
      }
      for (int i = 0; i < 8; ++i) __builtin_memcpy(scores + (j + i) * Bp + g * kLanes, &acc[i], sizeof(Lanes));
    }
  }
  for (; j < n; ++j) {
    const float* e = E + j * D;
    for (int64_t g = 0; g < G; ++g) {
      const float* hg = hT + g * D * kLanes;
      Lanes acc = {};
      for (int64_t d = 0; d < D; ++d) {
        Lanes hv;
        __builtin_memcpy(&hv, hg + d * kLanes, sizeof hv);
        acc += e[d] * hv;
      }
      __builtin_memcpy(scores + j * Bp + g * kLanes, &acc, sizeof(Lanes));
    }
  }
}

// A filter allowing at most N / kSparseFraction items is scored over those items only.
constexpr int64_t kSparseFraction = 16;

// The k best allowed items of one request, scoring only the allowed rows (gathered in
// blocks, lane 0 of score_items: the dense pass's arithmetic, so the same scores).
std::vector<ScoredId> top_k_allowed(const Mamba4Rec& net, const Tensor& hidden, int64_t k,
                                    const std::unordered_set<int32_t>& exclude, const AllowSet& allow) {
  const int64_t D = net.config().d_model, N = net.config().num_items;
  if (hidden.numel() != D) fail("top_k_items_batch", "hidden " + shape_str(hidden.shape()) + " is not (d_model)");
  const Tensor c = hidden.contiguous();
  std::vector<float> hT(static_cast<size_t>(D * kLanes), 0.f);
  for (int64_t d = 0; d < D; ++d) hT[static_cast<size_t>(d * kLanes)] = c.data<float>()[d];
  const float* table = net.item_table().data<float>();
  TopK top;
  top.want = static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k, N)));
  std::vector<int32_t> ids;
  std::vector<float> rows, scores;
  auto flush = [&] {
    const auto n = static_cast<int64_t>(ids.size());
    scores.resize(static_cast<size_t>(n * kLanes));
    score_items(rows.data(), n, D, hT.data(), 1, scores.data());
    for (int64_t j = 0; j < n; ++j) {
      const float sc = scores[static_cast<size_t>(j * kLanes)];
      if (!(sc >= top.threshold())) continue;
      if (!exclude.empty() && exclude.count(ids[static_cast<size_t>(j)])) continue;
      top.offer({ids[static_cast<size_t>(j)], sc});
    }
    ids.clear();
    rows.clear();
  };
  for (size_t w = 0; w < allow.bits.size(); ++w)
    for (uint64_t bits = allow.bits[w]; bits != 0; bits &= bits - 1) {
      const auto id = static_cast<int32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
      if (id < 1 || id > N) continue;
      ids.push_back(id);
      rows.insert(rows.end(), table + static_cast<int64_t>(id) * D, table + static_cast<int64_t>(id + 1) * D);
      if (static_cast<int64_t>(ids.size()) == kScoreBlock) flush();
    }
  if (!ids.empty()) flush();
  std::sort_heap(top.heap.begin(), top.heap.end(), better);
  return std::move(top.heap);
}

}  // namespace

std::vector<std::vector<ScoredId>> top_k_items_batch(const Mamba4Rec& net, const std::vector<Tensor>& hidden,
                                                     const std::vector<int64_t>& k,
                                                     const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                     const std::vector<const AllowSet*>& allow) {
  const int64_t B = static_cast<int64_t>(hidden.size()), D = net.config().d_model, N = net.config().num_items;
  if (k.size() != hidden.size() || exclude.size() != hidden.size())
    fail("top_k_items_batch", "hidden, k and exclude must have one entry per request");
  if (!allow.empty() && allow.size() != hidden.size())
    fail("top_k_items_batch", "allow must be empty or have one entry per request");
  // Requests whose filter allows few items (at most 1/kSparseFraction of the catalogue)
  // are scored over their allowed items only (gathered rows, the same kernel and
  // arithmetic as the dense pass); the others share the dense pass below.
  if (!allow.empty()) {
    std::vector<size_t> dense, sparse;
    for (size_t b = 0; b < hidden.size(); ++b)
      (allow[b] && allow[b]->count * kSparseFraction <= N ? sparse : dense).push_back(b);
    if (!sparse.empty()) {
      std::vector<std::vector<ScoredId>> all(hidden.size());
      for (size_t b : sparse) all[b] = top_k_allowed(net, hidden[b], k[b], *exclude[b], *allow[b]);
      if (!dense.empty()) {
        std::vector<Tensor> dh;
        std::vector<int64_t> dk;
        std::vector<const std::unordered_set<int32_t>*> de;
        std::vector<const AllowSet*> da;
        for (size_t b : dense) {
          dh.push_back(hidden[b]);
          dk.push_back(k[b]);
          de.push_back(exclude[b]);
          da.push_back(allow[b]);
        }
        auto part = top_k_items_batch(net, dh, dk, de, da);
        for (size_t i = 0; i < dense.size(); ++i) all[dense[i]] = std::move(part[i]);
      }
      return all;
    }
  }
  std::vector<float> h(static_cast<size_t>(B * D));
  for (int64_t b = 0; b < B; ++b) {
    if (hidden[static_cast<size_t>(b)].numel() != D)
      fail("top_k_items_batch", "hidden " + shape_str(hidden[static_cast<size_t>(b)].shape()) + " is not (d_model)");
    const Tensor c = hidden[static_cast<size_t>(b)].contiguous();
    std::copy_n(c.data<float>(), D, h.data() + b * D);
  }
  // h transposed into groups of 16 requests (G, D, 16), zero-padded, for score_items.
  const int64_t G = (B + kLanes - 1) / kLanes, Bp = G * kLanes;
  std::vector<float> hT(static_cast<size_t>(G * D * kLanes), 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) hT[static_cast<size_t>(((b / kLanes) * D + d) * kLanes + b % kLanes)] = h[static_cast<size_t>(b * D + d)];
  // Rows 1..N of the item table, read in place (no copy per request or batch).
  const float* items = net.item_table().data<float>() + D;
  const int64_t blocks = (N + kScoreBlock - 1) / kScoreBlock;
  // Each thread scores a contiguous range of blocks into its own heaps (one per request);
  // the heaps are merged at the end. The GEMM inside runs single-threaded (OpenBLAS's
  // OpenMP build does inside a parallel region).
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), blocks)));
  std::vector<std::vector<TopK>> part(static_cast<size_t>(threads), std::vector<TopK>(static_cast<size_t>(B)));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    std::vector<TopK>& mine = part[static_cast<size_t>(t)];
    for (int64_t b = 0; b < B; ++b) {
      mine[static_cast<size_t>(b)].want = static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k[static_cast<size_t>(b)], N)));
      mine[static_cast<size_t>(b)].heap.reserve(mine[static_cast<size_t>(b)].want);
    }
    std::vector<float> scores(static_cast<size_t>(Bp * kScoreBlock));
    // Per request the score an item needs to enter its heap; the padding lanes never pass.
    std::vector<float> thr(static_cast<size_t>(Bp), std::numeric_limits<float>::infinity());
    for (int64_t b = 0; b < B; ++b) thr[static_cast<size_t>(b)] = mine[static_cast<size_t>(b)].threshold();
    const int64_t nt = omp_get_num_threads();  // the runtime may give fewer than asked
    const int64_t lo = blocks * t / nt, hi = blocks * (t + 1) / nt;
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t j0 = blk * kScoreBlock, nb = std::min(kScoreBlock, N - j0);
      // scores (nb, stride) row-major = E[j0 + 1 .. j0 + nb] h^T, item-major. One request
      // reads the table once per call anyway (memory-bound): sgemv.
      const int64_t stride = B == 1 ? 1 : Bp;
      if (B == 1)
        kernels::sgemv(false, nb, D, 1.f, items + j0 * D, D, h.data(), 0.f, scores.data());
      else
        score_items(items + j0 * D, nb, D, hT.data(), G, scores.data());
      // Most items enter no request's heap. Chunks of 16 items are tested at once: per
      // group of 16 requests, the items' maximum score (vectorised; this form ignores NaN)
      // against the requests' thresholds; only a chunk that passes is looked at item by
      // item. (NaN fails every comparison and is never returned.)
      for (int64_t c0 = 0; c0 < nb; c0 += kLanes) {
        const int64_t c1 = std::min(nb, c0 + kLanes);
        bool hit = false;
        if (B == 1) {
          for (int64_t j = c0; j < c1; ++j) hit |= scores[static_cast<size_t>(j)] >= thr[0];
        } else {
          for (int64_t g = 0; g < G && !hit; ++g)
            hit = chunk_reaches(thr.data() + g * kLanes, c0, c1, [&](int64_t j) {
              Lanes sv;
              __builtin_memcpy(&sv, scores.data() + j * stride + g * kLanes, sizeof sv);
              return sv;
            });
        }
        if (!hit) continue;
        for (int64_t j = c0; j < c1; ++j) {
          const float* s = scores.data() + j * stride;
          const int32_t id = static_cast<int32_t>(j0 + j + 1);
          for (int64_t b = 0; b < B; ++b) {
            if (!(s[b] >= thr[static_cast<size_t>(b)])) continue;
            TopK& top = mine[static_cast<size_t>(b)];
            const auto& ex = *exclude[static_cast<size_t>(b)];
            if (!ex.empty() && ex.count(id)) continue;
            if (!allow.empty() && allow[static_cast<size_t>(b)] && !allow[static_cast<size_t>(b)]->allowed(id)) continue;
            top.offer({id, s[b]});
            thr[static_cast<size_t>(b)] = top.threshold();
          }
        }
      }
    }
  }
  std::vector<std::vector<ScoredId>> all(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    TopK top = std::move(part[0][static_cast<size_t>(b)]);
    for (int t = 1; t < threads; ++t)
      for (const ScoredId& c : part[static_cast<size_t>(t)][static_cast<size_t>(b)].heap) top.offer(c);
    std::sort_heap(top.heap.begin(), top.heap.end(), better);  // best first
    all[static_cast<size_t>(b)] = std::move(top.heap);
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

void UserStateCache::clear() {
  std::lock_guard<std::mutex> lk(mu_);
  index_.clear();
  lru_.clear();
}

size_t UserStateCache::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

uint64_t UserStateCache::evictions() const {
  std::lock_guard<std::mutex> lk(mu_);
  return evictions_;
}

// ---- the history-state cache --------------------------------------------------------

namespace {

// FNV-1a over the model key, then over each id: prefix hashes come one id at a time.
constexpr uint64_t kFnvPrime = 1099511628211ull;
uint64_t hash_key(const std::string& model_key) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : model_key) h = (h ^ c) * kFnvPrime;
  return (h ^ 0xff) * kFnvPrime;  // separator
}
uint64_t hash_step(uint64_t h, int32_t id) {
  auto u = static_cast<uint32_t>(id);
  for (int i = 0; i < 4; ++i, u >>= 8) h = (h ^ (u & 0xffu)) * kFnvPrime;
  return h;
}

}  // namespace

HistoryStateCache::HistoryStateCache(size_t capacity) : capacity_(capacity) {}

HistoryStateCache::Hit HistoryStateCache::longest_prefix(const std::string& model_key,
                                                         const std::vector<int32_t>& window, size_t min_length) {
  if (capacity_ == 0 || window.empty()) return {};
  min_length = std::max<size_t>(1, min_length);
  std::vector<uint64_t> prefix(window.size() + 1);
  prefix[0] = hash_key(model_key);
  for (size_t i = 0; i < window.size(); ++i) prefix[i + 1] = hash_step(prefix[i], window[i]);
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t n = window.size(); n >= min_length; --n) {
    auto it = index_.find(prefix[n]);
    if (it == index_.end()) continue;
    const Entry& e = *it->second;
    if (e.ids.size() != n || e.model_key != model_key || !std::equal(e.ids.begin(), e.ids.end(), window.begin()))
      continue;  // a hash collision
    lru_.splice(lru_.begin(), lru_, it->second);
    return {n, e.state};
  }
  return {};
}

void HistoryStateCache::insert(const std::string& model_key, const std::vector<int32_t>& window,
                               std::shared_ptr<const Mamba4RecState> state) {
  if (capacity_ == 0 || window.empty()) return;
  uint64_t h = hash_key(model_key);
  for (int32_t id : window) h = hash_step(h, id);
  std::lock_guard<std::mutex> lk(mu_);
  auto it = index_.find(h);
  if (it != index_.end()) {
    *it->second = {h, model_key, window, std::move(state)};  // the same key, or a collision: replaced
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front({h, model_key, window, std::move(state)});
  index_[h] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().hash);
    lru_.pop_back();
  }
}

size_t HistoryStateCache::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

std::shared_ptr<const Mamba4RecState> history_state(const Mamba4Rec& net, const std::string& model_key,
                                                    const std::vector<int32_t>& window, HistoryStateCache* cache,
                                                    size_t max_steps, bool* from_cache, bool prefill) {
  if (from_cache) *from_cache = false;
  if (!cache || window.empty()) return std::make_shared<const Mamba4RecState>(net.prefill(window));
  const size_t min_length = window.size() > max_steps ? window.size() - max_steps : 1;
  const HistoryStateCache::Hit hit = cache->longest_prefix(model_key, window, min_length);
  if (hit.length == window.size()) {
    if (from_cache) *from_cache = true;
    return hit.state;
  }
  std::shared_ptr<const Mamba4RecState> out;
  if (hit.length > 0) {
    Mamba4RecState s = hit.state->clone();
    for (size_t i = hit.length; i < window.size(); ++i) net.advance(s, window[i]);
    out = std::make_shared<const Mamba4RecState>(std::move(s));
    if (from_cache) *from_cache = true;
  } else if (!prefill) {
    return nullptr;
  } else {
    out = std::make_shared<const Mamba4RecState>(net.prefill(window));
  }
  cache->insert(model_key, window, out);
  return out;
}

// ---- the prefill queue ---------------------------------------------------------------

void PrefillQueue::submit(PrefillJob job) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    pending_.push_back(std::move(job));
    if (running_ >= workers_) return;  // a running batch's thread takes it
    ++running_;
  }
  for (;;) {
    std::vector<PrefillJob> batch;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (pending_.empty()) {
        --running_;
        return;
      }
      const size_t n = std::min(max_batch_, pending_.size());
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    run_(batch);
  }
}

}  // namespace mamba::recommendation
