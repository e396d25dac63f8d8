#include "mamba/recommendation/baselines.h"

#include <algorithm>

namespace mamba::recommendation {

PopularityScorer::PopularityScorer(const std::vector<std::vector<int32_t>>& train, int64_t num_items)
    : num_items_(num_items), pop_(static_cast<size_t>(num_items + 1), 0.0) {
  for (const auto& s : train)
    for (int32_t i : s) pop_.at(static_cast<size_t>(i)) += 1.0;
  pop_[0] = 0;
}

void PopularityScorer::score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const {
  out.resize(histories.size() * pop_.size());
  for (size_t b = 0; b < histories.size(); ++b) std::copy(pop_.begin(), pop_.end(), out.begin() + b * pop_.size());
}

MarkovScorer::MarkovScorer(const std::vector<std::vector<int32_t>>& train, int64_t num_items)
    : num_items_(num_items), pop_(static_cast<size_t>(num_items + 1), 0.0), next_(static_cast<size_t>(num_items + 1)) {
  for (const auto& s : train) {
    for (size_t j = 0; j < s.size(); ++j) {
      pop_.at(static_cast<size_t>(s[j])) += 1.0;
      if (j > 0) next_[s[j - 1]][s[j]] += 1.0;
    }
  }
  pop_[0] = 0;
  scale_ = *std::max_element(pop_.begin(), pop_.end()) + 1.0;
}

void MarkovScorer::score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const {
  const size_t row = pop_.size();
  out.resize(histories.size() * row);
  for (size_t b = 0; b < histories.size(); ++b) {
    double* o = out.data() + b * row;
    std::copy(pop_.begin(), pop_.end(), o);
    const auto& h = *histories[b];
    if (h.empty()) continue;
    const int32_t last = h.back();
    if (last < 1 || last > num_items_) continue;
    for (const auto& [item, c] : next_[last]) o[item] += c * scale_;
  }
}

}  // namespace mamba::recommendation
