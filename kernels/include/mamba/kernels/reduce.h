// Reductions along the middle axis of a contiguous [outer, n, inner] block; the output is
// [outer, inner]. sum/mean/var accumulate in double. var uses `correction` (1 = unbiased,
// as torch.var's default; the result is NaN/inf when n - correction <= 0, as PyTorch).
// max/min propagate NaN; argmax/argmin return the first index of the extreme value (or of
// the first NaN). n must be >= 1 for max/min/argmax/argmin.
// Threading: outputs are split over threads; a full reduction of one long row is split into
// fixed-size chunks whose partial results are combined in order, so results never depend
// on the thread count.
#pragma once
#include <cstdint>

namespace mamba::kernels {

enum class ReduceOp : uint8_t { sum, mean, max, min, var };

struct ReduceParams {
  ReduceOp op = ReduceOp::sum;
  int64_t outer = 1, n = 1, inner = 1;
  int64_t correction = 1;  // var only
};

void reduce_f32(const ReduceParams& p, const float* x, float* y);
void reduce_f64(const ReduceParams& p, const double* x, double* y);
void reduce_f32_ref(const ReduceParams& p, const float* x, float* y);
void reduce_f64_ref(const ReduceParams& p, const double* x, double* y);

// Index of the max (largest = true) or min along n; out is [outer, inner].
void arg_reduce_f32(int64_t outer, int64_t n, int64_t inner, bool largest, const float* x, int64_t* out);
void arg_reduce_f64(int64_t outer, int64_t n, int64_t inner, bool largest, const double* x, int64_t* out);
void arg_reduce_f32_ref(int64_t outer, int64_t n, int64_t inner, bool largest, const float* x, int64_t* out);
void arg_reduce_f64_ref(int64_t outer, int64_t n, int64_t inner, bool largest, const double* x, int64_t* out);

}  // namespace mamba::kernels
