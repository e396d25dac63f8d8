#include "mamba/recommendation/bf16_scoring.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include <omp.h>

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

inline bool better(const ScoredId& a, const ScoredId& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

// A k-entry min-heap by better() (front = the worst kept).
struct TopK {
  size_t want = 0;
  std::vector<ScoredId> heap;
  float threshold() const {
    if (want == 0) return kInf;
    return heap.size() == want ? heap.front().score : -kInf;
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

constexpr int64_t kLanes = 16;      // requests per tile column group
constexpr int64_t kTileItems = 16;  // items per tile (rows)
constexpr int64_t kTileK = 32;      // bf16 dimensions per tile
constexpr int64_t kBlock = 2048;    // items per scoring block (a multiple of kTileItems)
constexpr int64_t kSparseFraction = 16;  // as serving.cc: sparse filters take the gathered path
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

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
  for (int t = 0; t < 3; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}
__attribute__((target("amx-tile"))) void tiles_end() { _tile_release(); }

// scores (nb, Bp) = bf16 rows [j0, j0 + nb) (nb a multiple of 16) times the request tiles
// qv (G groups x KT k-tiles of 16 pairs x 16 lanes x 2, the VNNI layout), f32.
__attribute__((target("amx-tile,amx-bf16"))) void score_tiles(const uint16_t* rows, int64_t dp, int64_t nb,
                                                             const uint16_t* qv, int64_t G, float* scores) {
  const int64_t KT = dp / kTileK, Bp = G * kLanes;
  for (int64_t t = 0; t < nb; t += kTileItems) {
    const uint16_t* a = rows + t * dp;
    for (int64_t g = 0; g < G; ++g) {
      _tile_zero(0);
      for (int64_t kt = 0; kt < KT; ++kt) {
        _tile_loadd(1, a + kt * kTileK, dp * 2);
        _tile_loadd(2, qv + (g * KT + kt) * 512, 64);
        _tile_dpbf16ps(0, 1, 2);
      }
      _tile_stored(0, scores + t * Bp + g * kLanes, Bp * 4);
    }
  }
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
  if (k.size() != hidden.size() || exclude.size() != hidden.size())
    fail("top_k_items_batch", "hidden, k and exclude must have one entry per request");
  if (!allow.empty() && allow.size() != hidden.size())
    fail("top_k_items_batch", "allow must be empty or have one entry per request");
  if (table.num_items != N || table.d != D) fail("top_k_items_batch_bf16", "the bf16 table is not this model's");
  bool fallback = !amx_bf16_available() || B == 0;
  for (size_t b = 0; b < allow.size() && !fallback; ++b)
    fallback = allow[b] && allow[b]->count * kSparseFraction <= N;
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
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), blocks)));
  struct Part {
    std::vector<TopK> lower;                       // per request: the k largest lower bounds
    std::vector<std::vector<ScoredId>> cand;       // per request: (id, upper bound)
  };
  std::vector<Part> parts(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    Part& mine = parts[static_cast<size_t>(t)];
    mine.lower.resize(static_cast<size_t>(B));
    mine.cand.resize(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      mine.lower[static_cast<size_t>(b)].want =
          static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k[static_cast<size_t>(b)], N)));
      mine.lower[static_cast<size_t>(b)].heap.reserve(mine.lower[static_cast<size_t>(b)].want);
    }
    std::vector<float> scores(static_cast<size_t>(Bp * kBlock));
    std::vector<float> thr(static_cast<size_t>(Bp), kInf);  // padding lanes never pass
    for (int64_t b = 0; b < B; ++b) thr[static_cast<size_t>(b)] = mine.lower[static_cast<size_t>(b)].threshold();
    tiles_begin();
    const int64_t nt = omp_get_num_threads();
    const int64_t lo = blocks * t / nt, hi = blocks * (t + 1) / nt;
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t j0 = blk * kBlock, nb = std::min(kBlock, N - j0);
      const int64_t nbp = (nb + kTileItems - 1) / kTileItems * kTileItems;  // rows to np are zero
      score_tiles(rows + j0 * dp, dp, nbp, qv.data(), G, scores.data());
      for (int64_t c0 = 0; c0 < nb; c0 += kLanes) {
        const int64_t c1 = std::min(nb, c0 + kLanes);
        bool hit = false;
        for (int64_t g = 0; g < G && !hit; ++g) {
          Lanes mx, sv, cv, av, tv;
          for (int64_t i = 0; i < kLanes; ++i) mx[i] = -kInf;
          __builtin_memcpy(&cv, cq.data() + g * kLanes, sizeof cv);
          __builtin_memcpy(&av, ab.data() + g * kLanes, sizeof av);
          for (int64_t j = c0; j < c1; ++j) {
            __builtin_memcpy(&sv, scores.data() + j * Bp + g * kLanes, sizeof sv);
            const Lanes ub = sv + cv * norms[j0 + j] + av;
            mx = ub > mx ? ub : mx;
          }
          __builtin_memcpy(&tv, thr.data() + g * kLanes, sizeof tv);
          const auto pass = mx >= tv;
          for (int64_t i = 0; i < kLanes; ++i) hit |= pass[i] != 0;
        }
        if (!hit) continue;
        for (int64_t j = c0; j < c1; ++j) {
          const float* s = scores.data() + j * Bp;
          const float en = norms[j0 + j];
          const auto id = static_cast<int32_t>(j0 + j + 1);
          for (int64_t b = 0; b < B; ++b) {
            const float err = cq[static_cast<size_t>(b)] * en + ab[static_cast<size_t>(b)];
            const float ub = s[b] + err;
            if (!(ub >= thr[static_cast<size_t>(b)])) continue;
            const auto& ex = *exclude[static_cast<size_t>(b)];
            if (!ex.empty() && ex.count(id)) continue;
            if (!allow.empty() && allow[static_cast<size_t>(b)] && !allow[static_cast<size_t>(b)]->allowed(id)) continue;
            TopK& low = mine.lower[static_cast<size_t>(b)];
            low.offer({id, s[b] - err});
            mine.cand[static_cast<size_t>(b)].push_back({id, ub});
            thr[static_cast<size_t>(b)] = low.threshold();
          }
        }
      }
    }
    tiles_end();
  }
  // Per request: the final threshold over every thread's lower bounds, then the exact f32
  // scores of the candidates that reach it (the f32 pass's arithmetic: products summed in
  // d order).
  const float* items = net.item_table().data<float>() + D;
  std::vector<std::vector<ScoredId>> all(static_cast<size_t>(B));
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) {
    TopK low;
    low.want = static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(k[static_cast<size_t>(b)], N)));
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
#endif
}

}  // namespace mamba::recommendation
