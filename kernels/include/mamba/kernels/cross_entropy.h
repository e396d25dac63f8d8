// Softmax cross-entropy over rows of logits, fused with its gradient.
//   loss_r = logsumexp(logits_r[0:V]) - logits_r[target_r]   for rows with target_r >= 0
//   dlogits_r = (softmax(logits_r) - onehot(target_r)) * scale  (0 for ignored rows)
// logits: `rows` rows of `row_stride` floats of which the first V count (padding columns
// get zero gradient). Returns the summed loss (double) and counts the rows whose argmax
// equals the target. OpenMP over rows; the sum is reduced in row order.
#pragma once
#include <cstdint>

namespace mamba::kernels {

struct CrossEntropyResult {
  double loss_sum = 0;
  int64_t counted = 0;
  int64_t correct = 0;
};

CrossEntropyResult softmax_cross_entropy(int64_t rows, int64_t V, int64_t row_stride, const float* logits,
                                         const int64_t* targets, float scale, float* dlogits);
CrossEntropyResult softmax_cross_entropy_ref(int64_t rows, int64_t V, int64_t row_stride, const float* logits,
                                             const int64_t* targets, float scale, float* dlogits);
// The same loops in f64 (gradient checks).
CrossEntropyResult softmax_cross_entropy_ref(int64_t rows, int64_t V, int64_t row_stride, const double* logits,
                                             const int64_t* targets, double scale, double* dlogits);

}  // namespace mamba::kernels
