// Softmax / log-softmax along the middle axis of a contiguous [outer, n, inner] block:
//   y[o, j, i] = exp(x[o, j, i] - m) / sum_j' exp(x[o, j', i] - m),  m = max_j x[o, j, i]
// (log_softmax: x - m - log(sum)). Subtracting the max keeps it finite for any finite input.
// Threading: OpenMP over (outer, inner) columns; each column is done by one thread in a fixed
// order, so results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void softmax_f32(int64_t outer, int64_t n, int64_t inner, bool log, const float* x, float* y);
void softmax_f64(int64_t outer, int64_t n, int64_t inner, bool log, const double* x, double* y);
void softmax_f32_ref(int64_t outer, int64_t n, int64_t inner, bool log, const float* x, float* y);
void softmax_f64_ref(int64_t outer, int64_t n, int64_t inner, bool log, const double* x, double* y);

}  // namespace mamba::kernels
