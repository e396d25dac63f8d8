// torch.topk: the k largest (or smallest) entries along `dim`, f32 or f64.
// values has x's shape with size k along dim; indices (i64) are positions along dim.
// Sorted: largest first (largest = true) or smallest first. Ties go to the lower index;
// NaN counts as larger than every number. Errors: bad dim, k < 0 or k > x.size(dim).
// topk uses partial selection (nth_element + sort of the k chosen); topk_ref sorts fully.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

struct TopK {
  Tensor values;
  Tensor indices;
};

TopK topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);
TopK topk_ref(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

}  // namespace mamba::ops
