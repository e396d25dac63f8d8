// Conversions between mamba.common.v1 messages and the core's types.
//
// tensor_from_proto() validates first (check_tensor_bytes, errors.h: dtype known, no
// negative dimension, product(shape) * element size without overflow and within
// max_bytes, equal to data.size()) and allocates only then: a request cannot make the
// server allocate more than max_bytes for a tensor. Element bytes are taken as
// little-endian, the host order of every target the suite builds for (x86-64, aarch64).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>

#include "mamba/common/v1/common.pb.h"
#include "mamba/serve/model_repository.h"
#include "mamba/tensor/tensor.h"

namespace mamba::serve {

// A new contiguous CPU tensor holding a copy of `t`'s data. ServiceError on bad input
// (INVALID_ARGUMENT) or over max_bytes (RESOURCE_EXHAUSTED), naming `field`.
mamba::Tensor tensor_from_proto(std::string_view field, const mamba::common::v1::Tensor& t, uint64_t max_bytes);
// Copies a CPU tensor (any layout) into `out`.
void tensor_to_proto(const mamba::Tensor& t, mamba::common::v1::Tensor* out);

mamba::common::v1::DType dtype_to_proto(mamba::DType dt);

// For ListModels / GetModel.
void model_info_to_proto(const LoadedModelInfo& info, mamba::common::v1::ModelInfo* out);

}  // namespace mamba::serve
