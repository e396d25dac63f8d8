#include "mamba/kernels/embedding.h"

#include <cstring>

namespace mamba::kernels {

namespace {

template <class I> void lookup(int64_t n, const I* ids, int64_t D, const void* table, size_t es, void* out) {
  const size_t row = static_cast<size_t>(D) * es;
#pragma omp parallel for schedule(static) if (n * D > 65536)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(static_cast<char*>(out) + static_cast<size_t>(i) * row,
                static_cast<const char*>(table) + static_cast<size_t>(ids[i]) * row, row);
}

template <class I> void lookup_ref(int64_t n, const I* ids, int64_t D, const void* table, size_t es, void* out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d)
      std::memcpy(static_cast<char*>(out) + static_cast<size_t>(i * D + d) * es,
                  static_cast<const char*>(table) + static_cast<size_t>(static_cast<int64_t>(ids[i]) * D + d) * es, es);
}

}  // namespace

void embedding_i64(int64_t n, const int64_t* ids, int64_t D, const void* table, size_t es, void* out) {
  lookup(n, ids, D, table, es, out);
}
void embedding_i32(int64_t n, const int32_t* ids, int64_t D, const void* table, size_t es, void* out) {
  lookup(n, ids, D, table, es, out);
}
void embedding_i64_ref(int64_t n, const int64_t* ids, int64_t D, const void* table, size_t es, void* out) {
  lookup_ref(n, ids, D, table, es, out);
}
void embedding_i32_ref(int64_t n, const int32_t* ids, int64_t D, const void* table, size_t es, void* out) {
  lookup_ref(n, ids, D, table, es, out);
}

}  // namespace mamba::kernels
