// The recommendation serving path's costs (Google Benchmark): one recurrent step for a new
// event against a full recompute (prefill) of the history, and scoring + top-k over the
// catalogue. The model is untrained (speed does not depend on the weights).
//   build/services/recommendation/mamba-rec-bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <unordered_set>

#include "mamba/recommendation/bf16_scoring.h"
#include "mamba/recommendation/protocol.h"
#include "mamba/recommendation/serving.h"

using namespace mamba::recommendation;

namespace {

const Mamba4Rec& model(int64_t items, int64_t max_seq_len) {
  static std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Mamba4Rec>> cache;
  auto& m = cache[{items, max_seq_len}];
  if (!m) {
    Mamba4RecConfig c;
    c.num_items = items;
    c.d_model = 64;
    c.n_layers = 2;
    c.max_seq_len = max_seq_len;
    c.dropout = 0;
    m = std::make_unique<Mamba4Rec>(c, 1);
  }
  return *m;
}

std::vector<int32_t> history(int64_t n, int64_t items) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> d(1, static_cast<int32_t>(items));
  std::vector<int32_t> h(static_cast<size_t>(n));
  for (auto& x : h) x = d(rng);
  return h;
}

// RecommendFromHistory's key lookups: 200 external item keys ("i<N>", as mamba-rec generate
// writes them) against a 100k-item vocabulary, per iteration.
void BM_ItemVocabFind200(benchmark::State& st) {
  const int64_t items = st.range(0);
  std::vector<std::string> keys{""};
  for (int64_t i = 1; i <= items; ++i) keys.push_back("i" + std::to_string((i * 7919) % (items + 1)));
  const ItemVocab vocab(keys);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int64_t> pick(1, items);
  std::vector<std::string> asked(4096);
  for (auto& k : asked) k = keys[static_cast<size_t>(pick(rng))];
  size_t at = 0;
  int64_t sum = 0;
  for (auto _ : st) {
    for (int j = 0; j < 200; ++j, at = (at + 1) % asked.size()) sum += vocab.find(asked[at]);
    benchmark::DoNotOptimize(sum);
  }
}
BENCHMARK(BM_ItemVocabFind200)->Arg(100000)->Unit(benchmark::kMicrosecond);

// A new event on a cached state: one Mamba step per layer (history length does not matter).
void BM_AdvanceOneEvent(benchmark::State& st) {
  const Mamba4Rec& m = model(100000, 200);
  Mamba4RecState s = m.prefill(history(199, 100000));
  for (auto _ : st) {
    Mamba4RecState copy = s;
    m.advance(copy, 42);
    benchmark::DoNotOptimize(copy.hidden);
  }
}
BENCHMARK(BM_AdvanceOneEvent)->Unit(benchmark::kMicrosecond);

// The same event by a full recompute of the 200-item history (what a cache miss costs).
void BM_RecomputeHistory(benchmark::State& st) {
  const Mamba4Rec& m = model(100000, 200);
  const auto h = history(st.range(0), 100000);
  for (auto _ : st) benchmark::DoNotOptimize(m.prefill(h).hidden);
}
BENCHMARK(BM_RecomputeHistory)->Arg(50)->Arg(200)->Unit(benchmark::kMicrosecond);

// b cold 200-item histories prefilled together (Mamba4Rec::prefill_batch: one (b, 200)
// forward); per_history_us against BM_RecomputeHistory/200 is what batching saves.
void BM_PrefillBatch(benchmark::State& st) {
  const Mamba4Rec& m = model(100000, 200);
  const int64_t b = st.range(0);
  std::vector<std::vector<int32_t>> hs;
  for (int64_t i = 0; i < b; ++i) {
    hs.push_back(history(200, 100000));
    hs.back()[0] = static_cast<int32_t>(1 + i);  // distinct histories
  }
  std::vector<const std::vector<int32_t>*> ptrs;
  for (const auto& h : hs) ptrs.push_back(&h);
  for (auto _ : st) benchmark::DoNotOptimize(m.prefill_batch(ptrs));
  st.counters["per_history_us"] =
      benchmark::Counter(static_cast<double>(b), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_PrefillBatch)->Arg(1)->Arg(4)->Arg(8)->Arg(16)->Arg(32)->Unit(benchmark::kMicrosecond);

// Scores over every item and the top 10, seen items excluded.
void BM_ScoreTop10(benchmark::State& st) {
  const Mamba4Rec& m = model(st.range(0), 50);
  const Mamba4RecState s = m.prefill(history(50, st.range(0)));
  const auto h = history(200, st.range(0));
  const std::unordered_set<int32_t> seen(h.begin(), h.end());
  for (auto _ : st) benchmark::DoNotOptimize(top_k_items(m, s.hidden, 10, seen));
}
BENCHMARK(BM_ScoreTop10)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);

}  // namespace

namespace {
// A batch of B concurrent requests scored by one GEMM (what the server's scoring batcher
// does); the time is per batch (args: items, B).
void BM_ScoreTop10Batch(benchmark::State& st) {
  const Mamba4Rec& m = model(st.range(0), 50);
  const Mamba4RecState s = m.prefill(history(50, st.range(0)));
  const auto h = history(200, st.range(0));
  const std::unordered_set<int32_t> seen(h.begin(), h.end());
  const size_t B = static_cast<size_t>(st.range(1));
  const std::vector<mamba::Tensor> hidden(B, s.hidden);
  const std::vector<int64_t> ks(B, 10);
  const std::vector<const std::unordered_set<int32_t>*> ex(B, &seen);
  for (auto _ : st) benchmark::DoNotOptimize(top_k_items_batch(m, hidden, ks, ex));
  st.counters["per_request_us"] = benchmark::Counter(static_cast<double>(st.iterations() * B),
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_ScoreTop10Batch)->Args({100000, 8})->Args({100000, 16})->Args({100000, 32})->Unit(benchmark::kMicrosecond);
}  // namespace

namespace {
// The same batches through an AMX pass + exact f32 rescoring (bf16_scoring.h): `make`
// builds the quantised table (null without AMX), `score` runs one batch over it.
template <class Make, class Score>
void score_top10_batch_amx(benchmark::State& st, const char* what, Make make, Score score) {
  const Mamba4Rec& m = model(st.range(0), 50);
  const auto table = make(m);
  if (!table) {
    st.SkipWithError((std::string("no ") + what + " kernel on this machine").c_str());
    return;
  }
  const Mamba4RecState s = m.prefill(history(50, st.range(0)));
  const auto h = history(200, st.range(0));
  const std::unordered_set<int32_t> seen(h.begin(), h.end());
  const size_t B = static_cast<size_t>(st.range(1));
  const std::vector<mamba::Tensor> hidden(B, s.hidden);
  const std::vector<int64_t> ks(B, 10);
  const std::vector<const std::unordered_set<int32_t>*> ex(B, &seen);
  int64_t rescored = 0;
  for (auto _ : st) benchmark::DoNotOptimize(score(m, *table, hidden, ks, ex, &rescored));
  st.counters["per_request_us"] = benchmark::Counter(static_cast<double>(st.iterations() * B),
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  st.counters["rescored_per_request"] = static_cast<double>(rescored) / static_cast<double>(B);
}

void BM_ScoreTop10BatchBf16(benchmark::State& st) {
  score_top10_batch_amx(st, "AMX bf16", make_bf16_item_table,
                        [](const Mamba4Rec& m, const Bf16ItemTable& t, const auto& hidden, const auto& ks,
                           const auto& ex, int64_t* rescored) {
                          return top_k_items_batch_bf16(m, t, hidden, ks, ex, {}, rescored);
                        });
}
BENCHMARK(BM_ScoreTop10BatchBf16)->Args({100000, 1})->Args({100000, 8})->Args({100000, 16})->Args({100000, 32})
    ->Unit(benchmark::kMicrosecond);

// The int8 pass on `kernel` (AMX tiles or AVX-512 VNNI).
// lanes_max_batch: the table's item_lanes_max_batch (-1: as made, the automatic choice; 0:
// request lanes always; 64: items in the lanes always).
void score_top10_batch_int8(benchmark::State& st, Int8Kernel kernel, int64_t lanes_max_batch = -1) {
  score_top10_batch_amx(st, kernel == Int8Kernel::amx ? "int8" : "VNNI int8",
                        [kernel, lanes_max_batch](const Mamba4Rec& m) {
                          return make_int8_item_table(m, kernel, lanes_max_batch < 0 ? kItemLanesMaxBatch : lanes_max_batch);
                        },
                        [](const Mamba4Rec& m, const Int8ItemTable& t, const auto& hidden, const auto& ks,
                           const auto& ex, int64_t* rescored) {
                          return top_k_items_batch_int8(m, t, hidden, ks, ex, {}, rescored);
                        });
}
void BM_ScoreTop10BatchInt8(benchmark::State& st) { score_top10_batch_int8(st, Int8Kernel::amx); }
void BM_ScoreTop10BatchInt8Vnni(benchmark::State& st) { score_top10_batch_int8(st, Int8Kernel::vnni); }
BENCHMARK(BM_ScoreTop10BatchInt8)->Args({100000, 1})->Args({100000, 8})->Args({100000, 16})->Args({100000, 32})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ScoreTop10BatchInt8Vnni)->ArgsProduct({{100000}, {1, 8, 16, 20, 32}})->Unit(benchmark::kMicrosecond);
// The two VNNI layouts forced, for the crossover (item_lanes_max_batch).
void BM_ScoreTop10BatchInt8VnniRequestLanes(benchmark::State& st) { score_top10_batch_int8(st, Int8Kernel::vnni, 0); }
void BM_ScoreTop10BatchInt8VnniItemLanes(benchmark::State& st) { score_top10_batch_int8(st, Int8Kernel::vnni, 64); }
BENCHMARK(BM_ScoreTop10BatchInt8VnniRequestLanes)->ArgsProduct({{100000}, {1, 4, 8, 12, 16, 20}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ScoreTop10BatchInt8VnniItemLanes)->ArgsProduct({{100000}, {1, 4, 8, 12, 16}})->Unit(benchmark::kMicrosecond);
}  // namespace
