#include "mamba/recommendation/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace mamba::recommendation {

int64_t target_rank(const double* scores, int64_t num_items, int32_t target, TiePolicy ties,
                    const std::vector<int32_t>* excluded) {
  if (target < 1 || target > num_items)
    fail("target_rank", "target " + std::to_string(target) + " outside 1.." + std::to_string(num_items));
  const double t = scores[target];
  if (!std::isfinite(t)) return num_items;
  std::vector<char> skip;
  if (excluded && !excluded->empty()) {
    skip.assign(static_cast<size_t>(num_items + 1), 0);
    for (int32_t e : *excluded)
      if (e >= 1 && e <= num_items && e != target) skip[e] = 1;
  }
  int64_t above = 0;
  for (int64_t i = 1; i <= num_items; ++i) {
    if (i == target || (!skip.empty() && skip[i])) continue;
    const double s = scores[i];
    if (s > t || (ties == TiePolicy::pessimistic && s == t)) ++above;
  }
  return above + 1;
}

double RankMetrics::get(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) fail("rank metrics", "no metric '" + name + "'");
  return it->second;
}

std::string RankMetrics::line(int64_t k) const {
  const std::string s = std::to_string(k);
  char buf[160];
  std::snprintf(buf, sizeof buf, "HR@%s %.4f NDCG@%s %.4f MRR@%s %.4f", s.c_str(), get("HR@" + s), s.c_str(),
                get("NDCG@" + s), s.c_str(), get("MRR@" + s));
  return buf;
}

RankAccumulator::RankAccumulator(std::vector<int64_t> ks)
    : ks_(std::move(ks)), hr_(ks_.size(), 0.0), ndcg_(ks_.size(), 0.0), mrr_(ks_.size(), 0.0) {}

void RankAccumulator::add(int64_t rank) {
  ++n_;
  for (size_t i = 0; i < ks_.size(); ++i) {
    if (rank > ks_[i]) continue;
    hr_[i] += 1.0;
    ndcg_[i] += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
    mrr_[i] += 1.0 / static_cast<double>(rank);
  }
}

RankMetrics RankAccumulator::result() const {
  RankMetrics m;
  m.cases = n_;
  const double d = n_ > 0 ? static_cast<double>(n_) : 1.0;
  for (size_t i = 0; i < ks_.size(); ++i) {
    const std::string k = std::to_string(ks_[i]);
    m.values["HR@" + k] = hr_[i] / d;
    m.values["NDCG@" + k] = ndcg_[i] / d;
    m.values["MRR@" + k] = mrr_[i] / d;
  }
  return m;
}

RankMetrics evaluate_ranking(const Scorer& scorer, const std::vector<EvalCase>& cases, const RankOptions& opts) {
  RankAccumulator acc(opts.ks);
  const int64_t N = scorer.num_items();
  const int64_t bs = std::max<int64_t>(1, opts.batch_size);
  std::vector<double> scores;
  for (size_t start = 0; start < cases.size(); start += static_cast<size_t>(bs)) {
    const size_t end = std::min(cases.size(), start + static_cast<size_t>(bs));
    std::vector<const std::vector<int32_t>*> hist;
    for (size_t c = start; c < end; ++c) hist.push_back(&cases[c].history);
    scorer.score(hist, scores);
    if (static_cast<int64_t>(scores.size()) != static_cast<int64_t>(hist.size()) * (N + 1))
      fail("evaluate_ranking", scorer.name() + " returned " + std::to_string(scores.size()) + " scores");
    for (size_t c = start; c < end; ++c)
      acc.add(target_rank(scores.data() + (c - start) * (N + 1), N, cases[c].target, opts.ties,
                          opts.exclude_history ? &cases[c].history : nullptr));
  }
  return acc.result();
}

}  // namespace mamba::recommendation
