// Softmax and log-softmax along one dimension (negative dims count from the end), PyTorch
// semantics, numerically stable (the max is subtracted first). Any shape and strides;
// f32 or f64; the result is a new contiguous tensor of the same shape.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor softmax_ref(const Tensor& x, int64_t dim);
Tensor log_softmax_ref(const Tensor& x, int64_t dim);

}  // namespace mamba::ops
