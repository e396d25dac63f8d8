// Internal: fixed-size blocks of a flat range, spread over OpenMP threads.
// Block boundaries depend only on n (never on the thread count), so per-block results and
// anything combined from them in block order are the same for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace mamba::train::detail {

inline constexpr int64_t kBlock = 1 << 14;  // elements per block

inline int64_t num_blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

// Calls fn(block_index, begin, end) for every block of [0, n); blocks run in parallel when
// there are several.
template <class Fn>
void for_each_block(int64_t n, Fn&& fn) {
  const int64_t blocks = num_blocks(n);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock;
    fn(b, begin, std::min(n, begin + kBlock));
  }
}

}  // namespace mamba::train::detail
