// Embedding lookup: out[i, :] = table[ids[i], :] for i in [0, n); table [V, D], out [n, D],
// contiguous. The caller has checked 0 <= ids[i] < V. Threading: rows split over threads.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mamba::kernels {

// elem_size: bytes per table element (the table may be any dtype).
void embedding_i64(int64_t n, const int64_t* ids, int64_t D, const void* table, size_t elem_size, void* out);
void embedding_i32(int64_t n, const int32_t* ids, int64_t D, const void* table, size_t elem_size, void* out);
void embedding_i64_ref(int64_t n, const int64_t* ids, int64_t D, const void* table, size_t elem_size, void* out);
void embedding_i32_ref(int64_t n, const int32_t* ids, int64_t D, const void* table, size_t elem_size, void* out);

}  // namespace mamba::kernels
