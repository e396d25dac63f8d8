// The per-request k-best heap of the scoring passes (serving.cc's f32 pass and
// bf16_scoring.cc's AMX passes keep the same ranking: higher score first, ties to the
// lower id). Internal to the recommendation library.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "mamba/recommendation/serving.h"

namespace mamba::recommendation::detail {

// best-first order: higher score, then the lower id.
inline bool better(const ScoredId& a, const ScoredId& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// A k-entry min-heap by better() (front = the worst of the best kept so far).
struct TopK {
  size_t want = 0;
  std::vector<ScoredId> heap;
  // Candidates must score at least this to be considered (-inf until the heap is full;
  // +inf when nothing is wanted).
  float threshold() const {
    if (want == 0) return std::numeric_limits<float>::infinity();
    return heap.size() == want ? heap.front().score : -std::numeric_limits<float>::infinity();
  }
  void offer(const ScoredId& c) {
    if (heap.size() == want) {
      if (!better(c, heap.front())) return;
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = c;
    } else {
      heap.push_back(c);
    }
    std::push_heap(heap.begin(), heap.end(), better);
  }
};

// Requests are scored in groups of 16 (one 64-byte vector of floats; GCC/Clang vector
// extensions, lowered to AVX-512, AVX2 or SSE by the target).
constexpr int64_t kLanes = 16;
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

// The chunk test of the scoring passes: whether the largest of upper(j) over the items j
// in [c0, c1) (each a Lanes of 16 requests' scores or upper bounds) reaches the threshold
// of any of those 16 requests, thr[0..16). Most chunks fail it and need no look item by
// item. (This form of the maximum ignores NaN; NaN never passes.)
template <class Upper>
[[gnu::always_inline]] inline bool chunk_reaches(const float* thr, int64_t c0, int64_t c1, Upper&& upper) {
  Lanes mx, tv;
  for (int64_t i = 0; i < kLanes; ++i) mx[i] = -std::numeric_limits<float>::infinity();
  for (int64_t j = c0; j < c1; ++j) {
    const Lanes u = upper(j);
    mx = u > mx ? u : mx;
  }
  __builtin_memcpy(&tv, thr, sizeof tv);
  const auto pass = mx >= tv;
  bool hit = false;
  for (int64_t i = 0; i < kLanes; ++i) hit |= pass[i] != 0;
  return hit;
}

}  // namespace mamba::recommendation::detail
