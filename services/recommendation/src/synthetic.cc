#include "mamba/recommendation/synthetic.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>

namespace mamba::recommendation {

std::vector<InteractionRow> generate_stride_walks(const StrideWalkOptions& o) {
  if (o.users < 1 || o.events_per_user < 1 || o.num_items < 2 || o.max_stride < 1 || o.max_stride >= o.num_items ||
      !(o.noise >= 0 && o.noise <= 1))
    fail("generate_stride_walks", "bad options");
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> pi(static_cast<size_t>(o.num_items));
  std::iota(pi.begin(), pi.end(), 1);
  std::shuffle(pi.begin(), pi.end(), rng);
  std::uniform_int_distribution<int64_t> stride(1, o.max_stride), pos(0, o.num_items - 1);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<InteractionRow> rows;
  for (int64_t u = 1; u <= o.users; ++u) {
    const int64_t s = stride(rng);
    int64_t p = pos(rng);
    for (int64_t t = 0; t < o.events_per_user; ++t) {
      int64_t item = pi[static_cast<size_t>(p)];
      if (u01(rng) < o.noise) item = pi[static_cast<size_t>(pos(rng))];
      InteractionRow r;
      char key[32];  // snprintf: "lit" + to_string() trips g++ 12's -Wrestrict
      std::snprintf(key, sizeof key, "u%lld", static_cast<long long>(u));
      r.user_key.assign(key);
      std::snprintf(key, sizeof key, "i%lld", static_cast<long long>(item));
      r.item_key.assign(key);
      r.ts = static_cast<double>(t + 1);
      rows.push_back(std::move(r));
      p = (p + s) % o.num_items;
    }
  }
  if (o.cover_all) {
    std::vector<char> seen(static_cast<size_t>(o.num_items) + 1, 0);
    for (const auto& r : rows) seen[static_cast<size_t>(std::stoll(r.item_key.substr(1)))] = 1;
    std::vector<int64_t> missing;  // cycle positions of the items never reached
    for (int64_t q = 0; q < o.num_items; ++q)
      if (!seen[static_cast<size_t>(pi[static_cast<size_t>(q)])]) missing.push_back(q);
    int64_t u = o.users;
    for (size_t i = 0; i < missing.size(); i += static_cast<size_t>(o.events_per_user)) {
      const size_t end = std::min(missing.size(), i + static_cast<size_t>(o.events_per_user));
      std::vector<int64_t> walk;
      walk.reserve(end - i + 1);
      for (size_t j = i; j < end; ++j) walk.push_back(missing[j]);
      if (walk.size() == 1) walk.push_back((missing[i] + 1) % o.num_items);
      ++u;
      char key[32];
      for (size_t t = 0; t < walk.size(); ++t) {
        InteractionRow r;
        std::snprintf(key, sizeof key, "u%lld", static_cast<long long>(u));
        r.user_key.assign(key);
        std::snprintf(key, sizeof key, "i%lld", static_cast<long long>(pi[static_cast<size_t>(walk[t])]));
        r.item_key.assign(key);
        r.ts = static_cast<double>(t + 1);
        rows.push_back(std::move(r));
      }
    }
  }
  return rows;
}

std::string to_recbole_inter(const std::vector<InteractionRow>& rows) {
  std::string out = "user_id:token\titem_id:token\ttimestamp:float\n";
  for (const auto& r : rows) {
    char ts[64];
    std::snprintf(ts, sizeof ts, "%.17g", r.ts);
    out += r.user_key + "\t" + r.item_key + "\t" + ts + "\n";
  }
  return out;
}

}  // namespace mamba::recommendation
