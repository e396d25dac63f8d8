#include "mamba/recommendation/bf16_scoring.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>

#include <omp.h>

#include "top_k_heap.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MAMBA_REC_AMX 1
#endif

namespace mamba::recommendation {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// f32 -> bf16, round to nearest even (the value must be finite).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A float at least x (x >= 0).
inline float round_up(double x) {
  const auto f = static_cast<float>(x);
  return static_cast<double>(f) >= x ? f : std::nextafter(f, kInf);
}

using detail::better;
using detail::TopK;

// The exclusion sets of a batch as sorted vectors (a binary search per candidate instead
// of hashing; built once per batch).
struct Exclusions {
  std::vector<std::vector<int32_t>> ids;
  explicit Exclusions(const std::vector<const std::unordered_set<int32_t>*>& sets) {
    ids.reserve(sets.size());
    for (const auto* s : sets) {
      ids.emplace_back(s->begin(), s->end());
      std::sort(ids.back().begin(), ids.back().end());
    }
  }
  bool operator()(int64_t b, int32_t id) const {
    const auto& v = ids[static_cast<size_t>(b)];
    return !v.empty() && std::binary_search(v.begin(), v.end(), id);
  }
};

// The k of request b, clamped to [0, N].
inline size_t want_of(const std::vector<int64_t>& k, int64_t b, int64_t N) {
  return static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k[static_cast<size_t>(b)], N)));
}

// One OpenMP thread's share of a quantised pass (bf16 or int8): per request the k largest
// lower bounds seen so far and the candidates (id, upper bound) that reached the running
// threshold.
struct Part {
  std::vector<TopK> lower;
  std::vector<std::vector<ScoredId>> cand;
  [[gnu::always_inline]] void init(const std::vector<int64_t>& k, int64_t B, int64_t N) {
    lower.resize(static_cast<size_t>(B));
    cand.resize(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      lower[static_cast<size_t>(b)].want = want_of(k, b, N);
      lower[static_cast<size_t>(b)].heap.reserve(lower[static_cast<size_t>(b)].want);
    }
  }
  // Item `id` with bounds [lo, hi] for request b (already past the threshold, eligible);
  // returns the new threshold.
  float offer(int64_t b, int32_t id, float lo, float hi) {
    TopK& low = lower[static_cast<size_t>(b)];
    low.offer({id, lo});
    cand[static_cast<size_t>(b)].push_back({id, hi});
    return low.threshold();
  }
};

using detail::kLanes;  // requests per tile column group
using detail::Lanes;
constexpr int64_t kTileItems = 16;  // items per tile (rows)
constexpr int64_t kTileK = 32;      // bf16 dimensions per tile
constexpr int64_t kSparseFraction = 16;  // as serving.cc: sparse filters take the gathered path

// The checks both quantised passes start with: the arguments (the messages name the
// argument and the limit), then whether the pass applies at all (`amx` available, at
// least one request, no sparse filter: those take the f32 pass's gathered path).
bool quantised_pass_applies(bool amx, const std::vector<Tensor>& hidden, const std::vector<int64_t>& k,
                            const std::vector<const std::unordered_set<int32_t>*>& exclude,
                            const std::vector<const AllowSet*>& allow, int64_t table_items, int64_t table_d,
                            int64_t N, int64_t D, const char* fn, const char* kind) {
  if (k.size() != hidden.size() || exclude.size() != hidden.size())
    fail("top_k_items_batch", "hidden, k and exclude must have one entry per request");
  if (!allow.empty() && allow.size() != hidden.size())
    fail("top_k_items_batch", "allow must be empty or have one entry per request");
  if (table_items != N || table_d != D) fail(fn, std::string("the ") + kind + " table is not this model's");
  if (!amx || hidden.empty()) return false;
  for (const AllowSet* a : allow)
    if (a && a->count * kSparseFraction <= N) return false;
  return true;
}

// Per request: the final threshold over every thread's lower bounds, then the exact f32
// scores of the candidates that reach it (the f32 pass's arithmetic: products summed in
// d order), ranked. h holds the B requests' f32 representations (B x D).
std::vector<std::vector<ScoredId>> rescore_exact(const Mamba4Rec& net, const std::vector<float>& h,
                                                 const std::vector<int64_t>& k, const std::vector<Part>& parts,
                                                 int64_t* rescored) {
  const int64_t B = static_cast<int64_t>(k.size()), D = net.config().d_model, N = net.config().num_items;
  const float* items = net.item_table().data<float>() + D;
  std::vector<std::vector<ScoredId>> all(static_cast<size_t>(B));
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) {
    TopK low;
    low.want = want_of(k, b, N);
    for (const Part& p : parts)
      for (const ScoredId& x : p.lower[static_cast<size_t>(b)].heap) low.offer(x);
    const float tau = low.threshold();
    TopK top;
    top.want = low.want;
    const float* q = h.data() + b * D;
    for (const Part& p : parts)
      for (const ScoredId& x : p.cand[static_cast<size_t>(b)]) {
        if (!(x.score >= tau)) continue;
        const float* e = items + static_cast<int64_t>(x.id - 1) * D;
        float acc = 0.f;
        for (int64_t d = 0; d < D; ++d) acc = std::fma(e[d], q[d], acc);  // as the f32 pass (contracted)
        ++total;
        top.offer({x.id, acc});
      }
    std::sort_heap(top.heap.begin(), top.heap.end(), better);
    all[static_cast<size_t>(b)] = std::move(top.heap);
  }
  if (rescored) *rescored = total;
  return all;
}

#ifdef MAMBA_REC_AMX
struct alignas(64) TileConfig {
  uint8_t palette = 0, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool amx_probe() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
  if (!tile || !bf16) return false;
  // Linux: the tile data state must be requested once per process (ARCH_REQ_XCOMP_PERM,
  // XFEATURE_XTILEDATA).
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

__attribute__((target("amx-tile,amx-bf16"))) void tiles_begin() {
  TileConfig cfg;
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}
__attribute__((target("amx-tile"))) void tiles_end() { _tile_release(); }

// The item loop both quantised passes share. Items go in steps of kStep (two tiles: their
// scores stay in L1 between the tile stores and the candidate test); each OpenMP thread
// takes a contiguous range of steps, with its own Part and per-request thresholds (the
// padding lanes never pass), inside tiles_begin / tiles_end. Per step:
//   begin()                once per thread after tiles_begin (tiles kept across steps);
//   score(j0, nb, scores)  fills the (nb, 16 G) scores (T: float or int32) of items
//                          [j0, j0 + nb) (0-based rows of the table);
//   group(g, j0, scores)   a callable j -> Lanes: the upper bounds of group g's 16 requests
//                          for item j of the step; a chunk of 16 items is looked at item by
//                          item only when some request's bound reaches its threshold;
//   item(j0, j, scores)    a callable b -> {lower, upper}: request b's bounds for item j.
// An item whose upper bound reaches request b's threshold, not excluded and allowed, is
// offered to b (Part::offer). Returns the threads' Parts (for rescore_exact).
// `amx`: the score hook uses AMX tiles (configured per thread); false for the AVX-512 one.
template <class T, class Begin, class Score, class Group, class Item>
std::vector<Part> quantised_pass(const std::vector<int64_t>& k, int64_t B, int64_t N, int64_t G,
                                 const Exclusions& excluded, const std::vector<const AllowSet*>& allow, bool amx,
                                 Begin&& begin, Score&& score, Group&& group, Item&& item) {
  static_assert(sizeof(T) == 4);
  constexpr int64_t kStep = 2 * kTileItems;
  const int64_t Bp = G * kLanes;
  const int64_t steps = (N + kStep - 1) / kStep;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), steps / 64 + 1)));
  std::vector<Part> parts(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    Part& mine = parts[static_cast<size_t>(t)];
    mine.init(k, B, N);
    alignas(64) T sc_buf[kStep * 4 * kLanes];  // G <= 4 (B <= 64) in place; more on the heap
    std::vector<T> sc_heap(G > 4 ? static_cast<size_t>(kStep * Bp) : 0);
    T* const scores = G > 4 ? sc_heap.data() : sc_buf;
    std::vector<float> thr(static_cast<size_t>(Bp), kInf);
    for (int64_t b = 0; b < B; ++b) thr[static_cast<size_t>(b)] = mine.lower[static_cast<size_t>(b)].threshold();
    if (amx) tiles_begin();
    begin();
    const int64_t nt = omp_get_num_threads();
    const int64_t first = steps * t / nt, last = steps * (t + 1) / nt;
    for (int64_t st = first; st < last; ++st) {
      const int64_t j0 = st * kStep, nb = std::min(kStep, N - j0);
      score(j0, nb, scores);
      for (int64_t c0 = 0; c0 < nb; c0 += kLanes) {
        const int64_t c1 = std::min(nb, c0 + kLanes);
        bool hit = false;
        for (int64_t g = 0; g < G && !hit; ++g)
          hit = detail::chunk_reaches(thr.data() + g * kLanes, c0, c1, group(g, j0, static_cast<const T*>(scores)));
        if (!hit) continue;
        for (int64_t j = c0; j < c1; ++j) {
          const auto id = static_cast<int32_t>(j0 + j + 1);
          const auto bounds = item(j0, j, static_cast<const T*>(scores));
          for (int64_t b = 0; b < B; ++b) {
            const auto [lower, upper] = bounds(b);
            if (!(upper >= thr[static_cast<size_t>(b)])) continue;
            if (excluded(b, id)) continue;
            if (!allow.empty() && allow[static_cast<size_t>(b)] && !allow[static_cast<size_t>(b)]->allowed(id)) continue;
            thr[static_cast<size_t>(b)] = mine.offer(b, id, lower, upper);
          }
        }
      }
    }
    if (amx) tiles_end();
  }
  return parts;
}

bool amx_int8_probe() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 24) & 1u) || !((d >> 25) & 1u)) return false;
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

// int32 scores (nb, Bp) = int8 rows [j0, j0 + nb) (nb 16 or 32, dp = 64) times the request
// tiles qv (G groups of 16 quads x 16 lanes x 4). Tiles: 0, 1 accumulators, 2, 3 the item
// tiles, 6 the group's request tile.
__attribute__((target("amx-tile,amx-int8"))) void score_tiles_int8(const int8_t* rows, int64_t nb, const int8_t* qv,
                                                                  int64_t G, int32_t* scores) {
  const int64_t Bp = G * kLanes;
  if (nb == 2 * kTileItems) {
    _tile_loadd(2, rows, 64);
    _tile_loadd(3, rows + kTileItems * 64, 64);
    for (int64_t g = 0; g < G; ++g) {
      _tile_loadd(6, qv + g * 1024, 64);
      _tile_zero(0);
      _tile_zero(1);
      _tile_dpbssd(0, 2, 6);
      _tile_dpbssd(1, 3, 6);
      _tile_stored(0, scores + g * kLanes, Bp * 4);
      _tile_stored(1, scores + kTileItems * Bp + g * kLanes, Bp * 4);
    }
  } else {
    _tile_loadd(2, rows, 64);
    for (int64_t g = 0; g < G; ++g) {
      _tile_loadd(6, qv + g * 1024, 64);
      _tile_zero(0);
      _tile_dpbssd(0, 2, 6);
      _tile_stored(0, scores + g * kLanes, Bp * 4);
    }
  }
}

// The same int32 scores (nb, Bp) with AVX-512 VNNI (VPDPBUSD: unsigned x signed bytes, 16
// int32 lanes = one group's 16 requests): qu holds the requests offset to unsigned, q^ + 128
// (the layout of score_tiles_int8's qv), each item's quad of signed bytes is broadcast, and
// 128 sum_d e^_jd (`sums`) is taken off again, so every score is the exact q^.e^_j that the
// AMX tiles give (|partial sums| < 2^22: no overflow). Any nb; dp = 64.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void score_items_int8_vnni(const int8_t* rows, int64_t nb,
                                                                                  const uint8_t* qu, int64_t G,
                                                                                  const int32_t* sums, int32_t* scores) {
  const int64_t Bp = G * kLanes;
  for (int64_t g = 0; g < G; ++g) {
    __m512i q[16];
    for (int r = 0; r < 16; ++r) q[r] = _mm512_loadu_si512(qu + g * 1024 + r * 64);
    for (int64_t j = 0; j < nb; ++j) {
      const int8_t* e = rows + j * 64;
      __m512i acc0 = _mm512_set1_epi32(-128 * sums[j]);
      __m512i acc1 = _mm512_setzero_si512();
      for (int r = 0; r < 16; r += 2) {  // two chains: VPDPBUSD's latency is several times its throughput
        int32_t e0, e1;
        std::memcpy(&e0, e + 4 * r, 4);
        std::memcpy(&e1, e + 4 * r + 4, 4);
        acc0 = _mm512_dpbusd_epi32(acc0, q[r], _mm512_set1_epi32(e0));
        acc1 = _mm512_dpbusd_epi32(acc1, q[r + 1], _mm512_set1_epi32(e1));
      }
      _mm512_storeu_si512(scores + j * Bp + g * kLanes, _mm512_add_epi32(acc0, acc1));
    }
  }
}

// scores (nb, Bp) = bf16 rows [j0, j0 + nb) (nb a multiple of 16) times the request tiles
// qv (G groups x KT k-tiles of 16 pairs x 16 lanes x 2, the VNNI layout), f32.
// Tiles: 0, 1 accumulators (two item tiles at once: two independent TDPBF16PS chains, the
// instruction's latency is several times its throughput); 2-5 item tiles (two items tiles
// x k-tiles 0, 1); 6, 7 the group's request tiles. dp <= 64 here (KT <= 2); wider models
// take the one-chain loop below. When G = 1 and KT <= 2 the caller has loaded the request
// tiles once per thread (load_request_tiles: a reload per call stalls on the previous
// call's multiplies), and they are left loaded on return.
__attribute__((target("amx-tile,amx-bf16"))) void load_request_tiles(const uint16_t* qv, int64_t KT) {
  _tile_loadd(6, qv, 64);
  if (KT == 2) _tile_loadd(7, qv + 512, 64);
}
__attribute__((target("amx-tile,amx-bf16"))) void score_tiles(const uint16_t* rows, int64_t dp, int64_t nb,
                                                             const uint16_t* qv, int64_t G, float* scores) {
  const int64_t KT = dp / kTileK, Bp = G * kLanes, stride = dp * 2;
  int64_t t = 0;
  if (KT <= 2) {
    for (; t + 2 * kTileItems <= nb; t += 2 * kTileItems) {
      const uint16_t* a = rows + t * dp;
      const uint16_t* b = a + kTileItems * dp;
      _tile_loadd(2, a, stride);
      _tile_loadd(4, b, stride);
      if (KT == 2) {
        _tile_loadd(3, a + kTileK, stride);
        _tile_loadd(5, b + kTileK, stride);
      }
      for (int64_t g = 0; g < G; ++g) {
        if (G > 1) {
          _tile_loadd(6, qv + g * KT * 512, 64);
          if (KT == 2) _tile_loadd(7, qv + (g * KT + 1) * 512, 64);
        }
        _tile_zero(0);
        _tile_zero(1);
        _tile_dpbf16ps(0, 2, 6);
        _tile_dpbf16ps(1, 4, 6);
        if (KT == 2) {
          _tile_dpbf16ps(0, 3, 7);
          _tile_dpbf16ps(1, 5, 7);
        }
        _tile_stored(0, scores + t * Bp + g * kLanes, Bp * 4);
        _tile_stored(1, scores + (t + kTileItems) * Bp + g * kLanes, Bp * 4);
      }
    }
  }
  const bool tail = t < nb;
  for (; t < nb; t += kTileItems) {
    const uint16_t* a = rows + t * dp;
    for (int64_t g = 0; g < G; ++g) {
      _tile_zero(0);
      for (int64_t kt = 0; kt < KT; ++kt) {
        _tile_loadd(2, a + kt * kTileK, stride);
        _tile_loadd(6, qv + (g * KT + kt) * 512, 64);
        _tile_dpbf16ps(0, 2, 6);
      }
      _tile_stored(0, scores + t * Bp + g * kLanes, Bp * 4);
    }
  }
  if (tail && KT <= 2 && G == 1) load_request_tiles(qv, KT);  // as the caller left them
}

// The int8 pass with 16 ITEMS in the lanes (AVX-512 VNNI), for batches that would leave most
// of score_items_int8_vnni's 16 request lanes empty: per block of 16 items the block's 16
// quads of bytes are loaded once (table.cols, 16 registers), and per request each VPDPBUSD
// multiplies one broadcast quad of the request (q^ + 128, unsigned) by those 16 items' quads,
// so the cost is B x 16 instructions per block instead of 256 whatever B (<= 16). The int32
// dot products are the same exact q^.e^_j (the 128 sum_d e^_jd offset taken off), and so are
// the block test (the chunk test's regrouped upper bound, 16 items at once against the
// request's threshold) and the per-item bounds (the arguments are top_k_items_batch_int8's
// per-request values): per request the items are offered in the same order, so the
// candidates equal the request-lanes pass's on one thread. qu: B x 64 bytes in d order.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vnni"))) std::vector<Part> item_lanes_pass(
    const Int8ItemTable& table, const std::vector<int64_t>& k, int64_t B, const uint8_t* qu, const float* tq,
    const float* hq, const float* hqs, const float* aq, float slack, const Exclusions& excluded,
    const std::vector<const AllowSet*>& allow) {
  const int64_t N = table.num_items, blocks = table.np / kTileItems;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), blocks / 128 + 1)));
  std::vector<Part> parts(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    Part& mine = parts[static_cast<size_t>(t)];
    mine.init(k, B, N);
    std::vector<float> thr(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) thr[static_cast<size_t>(b)] = mine.lower[static_cast<size_t>(b)].threshold();
    const int64_t nt = omp_get_num_threads();
    const int64_t first = blocks * t / nt, last = blocks * (t + 1) / nt;
    alignas(64) int32_t dots[16];
    for (int64_t blk = first; blk < last; ++blk) {
      const int8_t* c = table.cols.data() + blk * 1024;
      __m512i e[16];
      for (int r = 0; r < 16; ++r) e[r] = _mm512_loadu_si512(c + r * 64);
      const __m512i bias = _mm512_mullo_epi32(_mm512_loadu_si512(table.sums.data() + blk * 16), _mm512_set1_epi32(-128));
      const __m512 sj = _mm512_loadu_ps(table.col_scale.data() + blk * 16);
      const __m512 wj = _mm512_mul_ps(_mm512_loadu_ps(table.col_w.data() + blk * 16), _mm512_set1_ps(slack));
      const int64_t valid = std::min<int64_t>(16, N - blk * 16);
      const __mmask16 live = static_cast<__mmask16>(valid >= 16 ? 0xffffu : (1u << valid) - 1u);
      for (int64_t b = 0; b < B; ++b) {
        const uint8_t* q = qu + b * 64;
        __m512i acc0 = bias, acc1 = _mm512_setzero_si512();
        for (int r = 0; r < 16; r += 2) {  // two chains, as score_items_int8_vnni
          int32_t q0, q1;
          std::memcpy(&q0, q + 4 * r, 4);
          std::memcpy(&q1, q + 4 * r + 4, 4);
          acc0 = _mm512_dpbusd_epi32(acc0, _mm512_set1_epi32(q0), e[r]);
          acc1 = _mm512_dpbusd_epi32(acc1, _mm512_set1_epi32(q1), e[r + 1]);
        }
        const __m512i dot = _mm512_add_epi32(acc0, acc1);
        // t (s_j I + s_j h' + w'_j) + a, as the chunk test of the request-lanes pass.
        const __m512 x = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xffff, dot), sj),
                                       _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(hqs[b]), sj), wj));
        const __m512 up = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(tq[b])), _mm512_set1_ps(aq[b]));
        unsigned m = _mm512_mask_cmp_ps_mask(live, up, _mm512_set1_ps(thr[static_cast<size_t>(b)]), _CMP_GE_OQ);
        if (!m) continue;
        _mm512_store_si512(dots, dot);
        for (; m; m &= m - 1) {
          const int i = __builtin_ctz(m);
          const int64_t j = blk * 16 + i;
          const auto id = static_cast<int32_t>(j + 1);
          // The per-item bounds, the arithmetic of the request-lanes pass's item test.
          const float s = table.col_scale[static_cast<size_t>(j)], w = table.col_w[static_cast<size_t>(j)];
          const float ts = tq[b] * s;
          const float sv = static_cast<float>(dots[i]) * ts;
          const float err = (ts * hq[b] + tq[b] * w) * slack + aq[b];
          const float upper = sv + err;
          if (!(upper >= thr[static_cast<size_t>(b)])) continue;
          if (excluded(b, id)) continue;
          if (!allow.empty() && allow[static_cast<size_t>(b)] && !allow[static_cast<size_t>(b)]->allowed(id)) continue;
          thr[static_cast<size_t>(b)] = mine.offer(b, id, sv - err, upper);
        }
      }
    }
  }
  return parts;
}
#endif

}  // namespace

bool amx_bf16_available() {
#ifdef MAMBA_REC_AMX
  static const bool ok = amx_probe();
  return ok;
#else
  return false;
#endif
}

std::shared_ptr<const Bf16ItemTable> make_bf16_item_table(const Mamba4Rec& net) {
  if (!amx_bf16_available()) return nullptr;
  const int64_t N = net.config().num_items, D = net.config().d_model;
  auto t = std::make_shared<Bf16ItemTable>();
  t->num_items = N;
  t->d = D;
  t->dp = (D + kTileK - 1) / kTileK * kTileK;
  t->np = (N + kTileItems - 1) / kTileItems * kTileItems;
  t->rows.assign(static_cast<size_t>(t->np * t->dp), 0);
  t->norms.resize(static_cast<size_t>(N));
  const float* items = net.item_table().data<float>() + D;  // rows 1..N (contiguous)
  float max_norm = 0;
  for (int64_t j = 0; j < N; ++j) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float x = items[j * D + d];
      if (!std::isfinite(x)) return nullptr;
      const uint16_t h = to_bf16(x);
      if (!std::isfinite(from_bf16(h))) return nullptr;  // beyond bf16's range
      t->rows[static_cast<size_t>(j * t->dp + d)] = h;
      s += static_cast<double>(x) * x;
    }
    t->norms[static_cast<size_t>(j)] = round_up(std::sqrt(s));
    max_norm = std::max(max_norm, t->norms[static_cast<size_t>(j)]);
  }
  t->max_norm = max_norm;
  return t;
}

std::vector<std::vector<ScoredId>> top_k_items_batch_bf16(const Mamba4Rec& net, const Bf16ItemTable& table,
                                                          const std::vector<Tensor>& hidden,
                                                          const std::vector<int64_t>& k,
                                                          const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                          const std::vector<const AllowSet*>& allow,
                                                          int64_t* rescored) {
  const int64_t B = static_cast<int64_t>(hidden.size()), D = net.config().d_model, N = net.config().num_items;
  if (rescored) *rescored = 0;
  bool fallback = !quantised_pass_applies(amx_bf16_available(), hidden, k, exclude, allow, table.num_items, table.d, N,
                                         D, "top_k_items_batch_bf16", "bf16");
  // The representations (f32) and their norms.
  std::vector<float> h(static_cast<size_t>(B * D));
  std::vector<float> qn(static_cast<size_t>(B));
  for (int64_t b = 0; b < B && !fallback; ++b) {
    if (hidden[static_cast<size_t>(b)].numel() != D)
      fail("top_k_items_batch", "hidden " + shape_str(hidden[static_cast<size_t>(b)].shape()) + " is not (d_model)");
    const Tensor c = hidden[static_cast<size_t>(b)].contiguous();
    double s = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float x = c.data<float>()[d];
      if (!std::isfinite(x) || !std::isfinite(from_bf16(to_bf16(x)))) fallback = true;
      h[static_cast<size_t>(b * D + d)] = x;
      s += static_cast<double>(x) * x;
    }
    qn[static_cast<size_t>(b)] = round_up(std::sqrt(s));
  }
  if (fallback) return top_k_items_batch(net, hidden, k, exclude, allow);
#ifndef MAMBA_REC_AMX
  return top_k_items_batch(net, hidden, k, exclude, allow);
#else
  const int64_t dp = table.dp, KT = dp / kTileK;
  const int64_t G = (B + kLanes - 1) / kLanes, Bp = G * kLanes;
  // The requests in VNNI pairs: qv[g][kt][p][n][2] = q_{16g+n}[kt*32 + 2p + {0,1}].
  std::vector<uint16_t> qv(static_cast<size_t>(G * KT * 512), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = b / kLanes, n = b % kLanes, kt = d / kTileK, p = (d % kTileK) / 2, o = d % 2;
      qv[static_cast<size_t>(((g * KT + kt) * 16 + p) * 32 + n * 2 + o)] = to_bf16(h[static_cast<size_t>(b * D + d)]);
    }
  // The bound err_j = cq_b |e_j| + ab_b (see the header).
  const double u = 1.0 / 256, g32 = static_cast<double>(dp) * 0x1p-24 / (1 - static_cast<double>(dp) * 0x1p-24);
  const double c = 1.01 * ((2 * u + u * u) + g32 * ((1 + u) * (1 + u) + 1));
  std::vector<float> cq(static_cast<size_t>(Bp), 0.f), ab(static_cast<size_t>(Bp), 0.f);
  for (int64_t b = 0; b < B; ++b) {
    cq[static_cast<size_t>(b)] = round_up(c * qn[static_cast<size_t>(b)]);
    ab[static_cast<size_t>(b)] = round_up(0x1p-120 * (std::sqrt(static_cast<double>(dp)) *
                                                           (qn[static_cast<size_t>(b)] + table.max_norm) + 2.0 * dp));
  }
  const uint16_t* rows = table.rows.data();
  const float* norms = table.norms.data();
  const std::vector<Part> parts = quantised_pass<float>(
      k, B, N, G, Exclusions(exclude), allow, true,
      [&] {
        if (G == 1 && KT <= 2) load_request_tiles(qv.data(), KT);
      },
      [&](int64_t j0, int64_t nb, float* scores) {
        const int64_t nbp = (nb + kTileItems - 1) / kTileItems * kTileItems;  // rows to np are zero
        score_tiles(rows + j0 * dp, dp, nbp, qv.data(), G, scores);
      },
      // The chunk test: per lane the upper bound s + cq |e_j| + ab.
      [&](int64_t g, int64_t j0, const float* scores) {
        Lanes cv, av;
        __builtin_memcpy(&cv, cq.data() + g * kLanes, sizeof cv);
        __builtin_memcpy(&av, ab.data() + g * kLanes, sizeof av);
        return [=](int64_t j) {
          Lanes sv;
          __builtin_memcpy(&sv, scores + j * Bp + g * kLanes, sizeof sv);
          return sv + cv * norms[j0 + j] + av;
        };
      },
      [&](int64_t j0, int64_t j, const float* scores) {
        const float* s = scores + j * Bp;
        const float en = norms[j0 + j];
        return [&cq, &ab, s, en](int64_t b) {
          const float err = cq[static_cast<size_t>(b)] * en + ab[static_cast<size_t>(b)];
          return std::pair<float, float>(s[b] - err, s[b] + err);
        };
      });
  return rescore_exact(net, h, k, parts, rescored);
#endif
}

bool amx_int8_available() {
#ifdef MAMBA_REC_AMX
  static const bool ok = amx_int8_probe();
  return ok;
#else
  return false;
#endif
}

bool vnni_int8_available() {
#ifdef MAMBA_REC_AMX
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

bool int8_kernel_available(Int8Kernel kernel) {
  return kernel == Int8Kernel::amx ? amx_int8_available() : vnni_int8_available();
}

namespace {

// Symmetric int8 of x[0..D) with scale s = max|x| / 127 (1 for a zero vector); returns s.
float quantise(const float* x, int64_t D, int8_t* out, double* l1) {
  double mx = 0;
  for (int64_t d = 0; d < D; ++d) mx = std::max(mx, std::fabs(static_cast<double>(x[d])));
  const double scale = mx > 0 ? mx / 127.0 : 1.0;
  const auto s = static_cast<float>(scale);
  double sum = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double v = std::nearbyint(static_cast<double>(x[d]) / static_cast<double>(s));
    const auto q = static_cast<int8_t>(std::clamp(v, -127.0, 127.0));
    out[d] = q;
    sum += std::fabs(static_cast<double>(q));
  }
  *l1 = sum;
  return s;
}

}  // namespace

std::shared_ptr<const Int8ItemTable> make_int8_item_table(const Mamba4Rec& net, int64_t item_lanes_max_batch) {
  if (amx_int8_available()) return make_int8_item_table(net, Int8Kernel::amx, item_lanes_max_batch);
  return make_int8_item_table(net, Int8Kernel::vnni, item_lanes_max_batch);
}

std::shared_ptr<const Int8ItemTable> make_int8_item_table(const Mamba4Rec& net, Int8Kernel kernel,
                                                          int64_t item_lanes_max_batch) {
  if (!int8_kernel_available(kernel)) return nullptr;
  const int64_t N = net.config().num_items, D = net.config().d_model;
  if (D > 64) return nullptr;  // one k-tile (the kernel above)
  auto t = std::make_shared<Int8ItemTable>();
  t->kernel = kernel;
  t->item_lanes_max_batch = item_lanes_max_batch;
  t->sums.assign(static_cast<size_t>((N + kTileItems - 1) / kTileItems * kTileItems), 0);
  t->num_items = N;
  t->d = D;
  t->dp = 64;
  t->np = (N + kTileItems - 1) / kTileItems * kTileItems;
  t->rows.assign(static_cast<size_t>(t->np * t->dp), 0);
  t->meta.resize(static_cast<size_t>(2 * N));
  const float* items = net.item_table().data<float>() + D;
  float max_norm = 0;
  for (int64_t j = 0; j < N; ++j) {
    double n2 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float x = items[j * D + d];
      if (!std::isfinite(x)) return nullptr;
      n2 += static_cast<double>(x) * x;
    }
    double l1 = 0;
    const float s = quantise(items + j * D, D, t->rows.data() + j * t->dp, &l1);
    // The quantisation must be within half a step of every value (it is, unless a value
    // is so small that x / s underflows: then keep the f32 path).
    for (int64_t d = 0; d < D; ++d)
      if (std::fabs(static_cast<double>(items[j * D + d]) - static_cast<double>(s) * t->rows[static_cast<size_t>(j * t->dp + d)]) >
          0.5000001 * static_cast<double>(s))
        return nullptr;
    t->meta[static_cast<size_t>(2 * j)] = s;
    t->meta[static_cast<size_t>(2 * j + 1)] = round_up(0.5 * static_cast<double>(s) * l1);
    int32_t sum = 0;
    for (int64_t d = 0; d < D; ++d) sum += t->rows[static_cast<size_t>(j * t->dp + d)];
    t->sums[static_cast<size_t>(j)] = sum;
    max_norm = std::max(max_norm, round_up(std::sqrt(n2)));
  }
  t->max_norm = max_norm;
  if (kernel == Int8Kernel::vnni) {  // the items-in-lanes copy (item_lanes_pass)
    t->cols.assign(static_cast<size_t>(t->np * 64), 0);
    t->col_scale.assign(static_cast<size_t>(t->np), 0.f);
    t->col_w.assign(static_cast<size_t>(t->np), 0.f);
    for (int64_t j = 0; j < N; ++j) {
      const int64_t blk = j / kTileItems, i = j % kTileItems;
      for (int64_t d = 0; d < 64; ++d)
        t->cols[static_cast<size_t>((blk * 16 + d / 4) * 64 + i * 4 + d % 4)] = t->rows[static_cast<size_t>(j * 64 + d)];
      t->col_scale[static_cast<size_t>(j)] = t->meta[static_cast<size_t>(2 * j)];
      t->col_w[static_cast<size_t>(j)] = t->meta[static_cast<size_t>(2 * j + 1)];
    }
  }
  return t;
}

std::vector<std::vector<ScoredId>> top_k_items_batch_int8(const Mamba4Rec& net, const Int8ItemTable& table,
                                                          const std::vector<Tensor>& hidden,
                                                          const std::vector<int64_t>& k,
                                                          const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                          const std::vector<const AllowSet*>& allow,
                                                          int64_t* rescored) {
  const int64_t B = static_cast<int64_t>(hidden.size()), D = net.config().d_model, N = net.config().num_items;
  if (rescored) *rescored = 0;
  // VNNI: whole groups of 16 requests in the request lanes and a remainder of at most
  // item_lanes_max_batch requests in the item lanes (a second pass over the table instead of
  // a group of 16 lanes mostly empty: 17 requests cost 16 + 1, not 2 x 16).
  const int64_t rem = B % kLanes;
  if (table.kernel == Int8Kernel::vnni && B > kLanes && rem > 0 && rem <= table.item_lanes_max_batch &&
      k.size() == hidden.size() && exclude.size() == hidden.size() && (allow.empty() || allow.size() == hidden.size())) {
    const auto cut = static_cast<std::ptrdiff_t>(B - rem), end = static_cast<std::ptrdiff_t>(B);
    const auto part = [&](std::ptrdiff_t a, std::ptrdiff_t e, int64_t* r) {
      const std::vector<const AllowSet*> al =
          allow.empty() ? std::vector<const AllowSet*>{} : std::vector<const AllowSet*>(allow.begin() + a, allow.begin() + e);
      return top_k_items_batch_int8(net, table, std::vector<Tensor>(hidden.begin() + a, hidden.begin() + e),
                                    std::vector<int64_t>(k.begin() + a, k.begin() + e),
                                    std::vector<const std::unordered_set<int32_t>*>(exclude.begin() + a, exclude.begin() + e),
                                    al, r);
    };
    int64_t r_groups = 0, r_rest = 0;
    auto out = part(0, cut, &r_groups);
    auto rest = part(cut, end, &r_rest);
    for (auto& x : rest) out.push_back(std::move(x));
    if (rescored) *rescored = r_groups + r_rest;
    return out;
  }
  bool fallback = !quantised_pass_applies(int8_kernel_available(table.kernel), hidden, k, exclude, allow,
                                         table.num_items, table.d, N, D, "top_k_items_batch_int8", "int8");
  const int64_t G = (B + kLanes - 1) / kLanes, Bp = G * kLanes;
  std::vector<float> h(static_cast<size_t>(B * D));
  // Per lane: t_b, h_b = 0.5 |q^_b|_1 + 0.25 D, and the absolute part g |q_b| max|e| + 2^-100.
  std::vector<float> tq(static_cast<size_t>(Bp), 0.f), hq(static_cast<size_t>(Bp), 0.f), aq(static_cast<size_t>(Bp), 0.f);
  std::vector<int8_t> qv(static_cast<size_t>(G * 1024), 0);  // qv[g][r][n][4] = q^_{16g+n}[4r + i]
  const double g32 = static_cast<double>(D) * 0x1p-24 / (1 - static_cast<double>(D) * 0x1p-24);
  std::vector<int8_t> qb(64);
  for (int64_t b = 0; b < B && !fallback; ++b) {
    if (hidden[static_cast<size_t>(b)].numel() != D)
      fail("top_k_items_batch", "hidden " + shape_str(hidden[static_cast<size_t>(b)].shape()) + " is not (d_model)");
    const Tensor c = hidden[static_cast<size_t>(b)].contiguous();
    double n2 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float x = c.data<float>()[d];
      if (!std::isfinite(x)) fallback = true;
      h[static_cast<size_t>(b * D + d)] = x;
      n2 += static_cast<double>(x) * x;
    }
    if (fallback) break;
    double l1 = 0;
    std::fill(qb.begin(), qb.end(), int8_t{0});
    const float t = quantise(c.data<float>(), D, qb.data(), &l1);
    for (int64_t d = 0; d < D; ++d)
      if (std::fabs(static_cast<double>(c.data<float>()[d]) - static_cast<double>(t) * qb[static_cast<size_t>(d)]) >
          0.5000001 * static_cast<double>(t))
        fallback = true;
    const int64_t g = b / kLanes, n = b % kLanes;
    for (int64_t d = 0; d < 64; ++d) qv[static_cast<size_t>(g * 1024 + (d / 4) * 64 + n * 4 + d % 4)] = qb[static_cast<size_t>(d)];
    tq[static_cast<size_t>(b)] = t;
    hq[static_cast<size_t>(b)] = round_up(1.0001 * (0.5 * l1 + 0.25 * static_cast<double>(D)));
    aq[static_cast<size_t>(b)] =
        round_up(1.01 * g32 * std::sqrt(n2) * static_cast<double>(table.max_norm) + 0x1p-100);
  }
  if (fallback) return top_k_items_batch(net, hidden, k, exclude, allow);
#ifndef MAMBA_REC_AMX
  return top_k_items_batch(net, hidden, k, exclude, allow);
#else
  constexpr float kSlack = 1.0001f;  // the float arithmetic of the bound itself
  // The chunk test computes the same bound sv + err regrouped: t (s_j I + s_j h' + w'_j) + a
  // with h' = h kSlack per lane and w'_j = w_j kSlack (the slack only on the error terms).
  std::vector<float> hqs(static_cast<size_t>(Bp), 0.f);
  for (int64_t b = 0; b < B; ++b) hqs[static_cast<size_t>(b)] = round_up(static_cast<double>(hq[static_cast<size_t>(b)]) * kSlack);
  const int8_t* rows = table.rows.data();
  const float* meta = table.meta.data();
  typedef int32_t ILanes __attribute__((vector_size(kLanes * sizeof(int32_t))));
  const bool amx = table.kernel == Int8Kernel::amx;
  std::vector<uint8_t> qu;  // VNNI: the requests offset to unsigned bytes, q^ + 128
  if (!amx)
    for (const int8_t x : qv) qu.push_back(static_cast<uint8_t>(static_cast<uint8_t>(x) ^ 0x80u));
  if (!amx && B <= table.item_lanes_max_batch && !table.cols.empty()) {
    std::vector<uint8_t> qd(static_cast<size_t>(B * 64));  // the requests in d order, q^ + 128
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < 64; ++d)
        qd[static_cast<size_t>(b * 64 + d)] = qu[static_cast<size_t>((b / kLanes) * 1024 + (d / 4) * 64 + (b % kLanes) * 4 + d % 4)];
    const std::vector<Part> parts = item_lanes_pass(table, k, B, qd.data(), tq.data(), hq.data(), hqs.data(), aq.data(),
                                                    kSlack, Exclusions(exclude), allow);
    return rescore_exact(net, h, k, parts, rescored);
  }
  const int32_t* sums = table.sums.data();
  const std::vector<Part> parts = quantised_pass<int32_t>(
      k, B, N, G, Exclusions(exclude), allow, amx, [] {},
      [&](int64_t j0, int64_t nb, int32_t* iscores) {
        if (!amx) return score_items_int8_vnni(rows + j0 * 64, nb, qu.data(), G, sums + j0, iscores);
        const int64_t nbp = nb > kTileItems ? 2 * kTileItems : kTileItems;  // rows to np are zero
        score_tiles_int8(rows + j0 * 64, nbp, qv.data(), G, iscores);
      },
      // The chunk test: per lane the upper bound t (s_j I + s_j h' + w'_j) + a.
      [&](int64_t g, int64_t j0, const int32_t* iscores) {
        Lanes tv, hv, av;
        __builtin_memcpy(&tv, tq.data() + g * kLanes, sizeof tv);
        __builtin_memcpy(&hv, hqs.data() + g * kLanes, sizeof hv);
        __builtin_memcpy(&av, aq.data() + g * kLanes, sizeof av);
        return [=](int64_t j) {
          ILanes iv;
          __builtin_memcpy(&iv, iscores + j * Bp + g * kLanes, sizeof iv);
          const float sj = meta[2 * (j0 + j)], wj = meta[2 * (j0 + j) + 1] * kSlack;
          const Lanes x = __builtin_convertvector(iv, Lanes) * sj + (hv * sj + wj);
          return x * tv + av;
        };
      },
      [&](int64_t j0, int64_t j, const int32_t* iscores) {
        const float sj = meta[2 * (j0 + j)], wj = meta[2 * (j0 + j) + 1];
        const int32_t* row = iscores + j * Bp;
        return [&tq, &hq, &aq, row, sj, wj](int64_t b) {
          const auto I = static_cast<float>(row[b]);
          const float ts = tq[static_cast<size_t>(b)] * sj;
          const float sv = I * ts;
          const float err = (ts * hq[static_cast<size_t>(b)] + tq[static_cast<size_t>(b)] * wj) * kSlack +
                            aq[static_cast<size_t>(b)];
          return std::pair<float, float>(sv - err, sv + err);
        };
      });
  // Per request the threshold, the exact f32 scores of the candidates, ranked (as bf16).
  return rescore_exact(net, h, k, parts, rescored);
#endif
}

}  // namespace mamba::recommendation
