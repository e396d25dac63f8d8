// Reductions (PyTorch semantics). Input: any shape and strides, f32 or f64.
// Along a dim: the dim is removed, or kept with size 1 when keepdim. Over all: a 0-d tensor.
// sum/mean/var accumulate in double. max/min propagate NaN. argmax/argmin return i64 and
// the first index of the extreme value; over all they return the flat (row-major) index.
// var uses `correction` (1 = unbiased, torch.var's default; 0 = population variance).
// Errors: bad dim; max/min/argmax/argmin of an empty extent.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

enum class Reduce : uint8_t { sum, mean, max, min, var };

Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor var(const Tensor& x, int64_t dim, int64_t correction = 1, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false);

Tensor sum(const Tensor& x);
Tensor mean(const Tensor& x);
Tensor max(const Tensor& x);
Tensor min(const Tensor& x);
Tensor var(const Tensor& x);  // unbiased; for other corrections use var(x.reshape({-1}), 0, c)
Tensor argmax(const Tensor& x);
Tensor argmin(const Tensor& x);

// General entry points and their references (a plain loop per output element).
Tensor reduce(Reduce op, const Tensor& x, int64_t dim, bool keepdim = false, int64_t correction = 1);
Tensor reduce_ref(Reduce op, const Tensor& x, int64_t dim, bool keepdim = false, int64_t correction = 1);
Tensor arg_reduce(const Tensor& x, int64_t dim, bool largest, bool keepdim = false);
Tensor arg_reduce_ref(const Tensor& x, int64_t dim, bool largest, bool keepdim = false);

}  // namespace mamba::ops
