// torch.nn.functional.embedding: ids (i32 or i64, any shape [...]) index rows of
// table [V, D] (any dtype); the result is [..., D] of the table's dtype.
// Errors: an id outside [0, V) throws mamba::Error naming the id, its position and V.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

Tensor embedding(const Tensor& ids, const Tensor& table);
Tensor embedding_ref(const Tensor& ids, const Tensor& table);

}  // namespace mamba::ops
