// Non-neural baselines of the sequential protocol, scored by the same evaluation code
// (metrics.h): most popular items and a first-order Markov chain.
//
// Both are fitted on the training parts of a leave-one-out split (protocol.h) only.
//   popularity: score(i) = number of training events of item i.
//   markov:     score(i | last item a) = C(a -> i) * (P + 1) + pop(i), where C counts the
//               transitions a -> i inside the training parts and P is the largest
//               popularity, so items are ranked by transition count first and popularity
//               breaks the ties (popularity back-off, also for an unseen last item). All
//               values are integers below 2^53: exact in double.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mamba/recommendation/metrics.h"

namespace mamba::recommendation {

class PopularityScorer final : public Scorer {
 public:
  PopularityScorer(const std::vector<std::vector<int32_t>>& train, int64_t num_items);
  std::string name() const override { return "popularity"; }
  int64_t num_items() const override { return num_items_; }
  void score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const override;
  const std::vector<double>& counts() const { return pop_; }

 private:
  int64_t num_items_;
  std::vector<double> pop_;  // num_items + 1
};

class MarkovScorer final : public Scorer {
 public:
  MarkovScorer(const std::vector<std::vector<int32_t>>& train, int64_t num_items);
  std::string name() const override { return "markov"; }
  int64_t num_items() const override { return num_items_; }
  void score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const override;

 private:
  int64_t num_items_;
  std::vector<double> pop_;
  double scale_ = 1;
  std::vector<std::unordered_map<int32_t, double>> next_;  // per last item: next item -> count
};

}  // namespace mamba::recommendation
