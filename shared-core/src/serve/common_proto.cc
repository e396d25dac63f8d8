#include "mamba/serve/common_proto.h"

#include <cstring>

#include "mamba/serve/errors.h"

namespace mamba::serve {

mamba::common::v1::DType dtype_to_proto(mamba::DType dt) {
  // mamba.common.v1.DType numbers mamba::DType's values from 1 (0 is "unset").
  return static_cast<mamba::common::v1::DType>(static_cast<int>(dt) + 1);
}

mamba::Tensor tensor_from_proto(std::string_view field, const mamba::common::v1::Tensor& t, uint64_t max_bytes) {
  const std::span<const int64_t> shape(t.shape().data(), static_cast<size_t>(t.shape_size()));
  const uint64_t bytes = check_tensor_bytes(field, static_cast<int>(t.dtype()), shape, t.data().size(), max_bytes);
  const auto dtype = static_cast<mamba::DType>(static_cast<int>(t.dtype()) - 1);
  mamba::Tensor out = mamba::Tensor::empty(mamba::Shape(shape.begin(), shape.end()), dtype);
  if (bytes) std::memcpy(out.raw_data(), t.data().data(), bytes);
  return out;
}

void tensor_to_proto(const mamba::Tensor& t, mamba::common::v1::Tensor* out) {
  if (!t.device().is_cpu()) throw mamba::Error("tensor_to_proto: tensor is on " + t.device().str() + ", not the CPU");
  const mamba::Tensor c = t.contiguous();
  out->set_dtype(dtype_to_proto(c.dtype()));
  out->clear_shape();
  for (int64_t d : c.shape()) out->add_shape(d);
  out->set_data(static_cast<const char*>(c.raw_data()), c.nbytes());
}

void model_info_to_proto(const LoadedModelInfo& info, mamba::common::v1::ModelInfo* out) {
  out->set_name(info.name);
  out->set_version(info.version);
  out->set_config_json(info.config_json);
  out->set_metrics_json(info.metrics_json);
  out->set_loaded_at(info.loaded_at_rfc3339());
}

}  // namespace mamba::serve
