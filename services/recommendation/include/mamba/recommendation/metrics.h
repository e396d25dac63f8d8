// Full-ranking evaluation for sequential recommendation: HR@K, NDCG@K and MRR@K over all
// items (the padding id 0 is never ranked), averaged over evaluation cases (one per user).
//
// Rank of the target (1-based), exact and deterministic with ties:
//   pessimistic (default): rank = 1 + #{items i != target : score_i >= score_target}
//   optimistic:            rank = 1 + #{items i : score_i > score_target}   (RecBole-like:
//                          the best rank a top-k could give the target among equals)
// A model that scores every item the same gets the worst rank under the pessimistic rule, so
// ties can never flatter a model or a baseline. Non-finite target scores rank last.
// With exclude_history, items of the case's history other than the target are removed from
// the ranking (RecBole's standard full-sort evaluation does not do this: off by default).
//   HR@K   = 1[rank <= K]
//   NDCG@K = 1[rank <= K] / log2(rank + 1)       (one relevant item: IDCG = 1)
//   MRR@K  = 1[rank <= K] / rank
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mamba/recommendation/protocol.h"

namespace mamba::recommendation {

enum class TiePolicy { pessimistic, optimistic };

struct RankOptions {
  std::vector<int64_t> ks = {10, 20};
  TiePolicy ties = TiePolicy::pessimistic;
  bool exclude_history = false;
  int64_t batch_size = 256;
};

// scores[0..num_items] (index 0 = padding, ignored). `excluded` (sorted or not) are ids not
// ranked (the target never is excluded).
int64_t target_rank(const double* scores, int64_t num_items, int32_t target, TiePolicy ties,
                    const std::vector<int32_t>* excluded = nullptr);

// Anything that scores every item for a batch of histories.
class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string name() const = 0;
  virtual int64_t num_items() const = 0;
  // out: histories.size() rows of num_items() + 1 scores (column 0 ignored).
  virtual void score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const = 0;
};

struct RankMetrics {
  int64_t cases = 0;
  std::map<std::string, double> values;  // "HR@10", "NDCG@10", "MRR@10", ... (means)
  double get(const std::string& name) const;
  // "HR@10 0.1234 NDCG@10 0.0567 MRR@10 0.0432" for the given K.
  std::string line(int64_t k = 10) const;
};

// Accumulates ranks into the means.
class RankAccumulator {
 public:
  explicit RankAccumulator(std::vector<int64_t> ks = {10, 20});
  void add(int64_t rank);
  RankMetrics result() const;

 private:
  std::vector<int64_t> ks_;
  std::vector<double> hr_, ndcg_, mrr_;
  int64_t n_ = 0;
};

RankMetrics evaluate_ranking(const Scorer& scorer, const std::vector<EvalCase>& cases, const RankOptions& opts = {});

}  // namespace mamba::recommendation
