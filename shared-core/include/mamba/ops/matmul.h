// Matrix products (PyTorch semantics). f32 or f64; operands must share the dtype.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

// x [..., in], weight [out, in], bias [out] (optional) -> [..., out]; y = x @ weight^T + bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
Tensor linear_ref(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

// torch.matmul: a [..., M, K] @ b [..., K, N] -> [broadcast(...), M, N]. Batch dims
// broadcast (NumPy rules). A 1-D a is [1, K] with the M dim dropped from the result; a 1-D
// b is [K, 1] with the N dim dropped. Any strides (non-contiguous operands are copied).
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor matmul_ref(const Tensor& a, const Tensor& b);

}  // namespace mamba::ops
