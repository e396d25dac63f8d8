// Top-k per row of a contiguous [rows, n] block: values [rows, k] and indices [rows, k],
// sorted (largest first when `largest`, else smallest first), ties broken by the lower
// index, NaN ordered above every number (as PyTorch). Requires 0 <= k <= n.
// The fast path selects with nth_element and sorts only the k chosen; the reference sorts
// the whole row. Threading: one row per task; results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void topk_f32(int64_t rows, int64_t n, int64_t k, bool largest, const float* x, float* values, int64_t* indices);
void topk_f32_ref(int64_t rows, int64_t n, int64_t k, bool largest, const float* x, float* values, int64_t* indices);
void topk_f64(int64_t rows, int64_t n, int64_t k, bool largest, const double* x, double* values, int64_t* indices);
void topk_f64_ref(int64_t rows, int64_t n, int64_t k, bool largest, const double* x, double* values,
                  int64_t* indices);

}  // namespace mamba::kernels
