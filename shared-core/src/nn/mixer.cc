#include "mamba/nn/mixer.h"

namespace mamba::nn {

void Mixer::load(const ParamSource& src, const std::string& prefix) {
  for (auto& [name, param] : parameters()) {
    const std::string full = prefix + name;
    Tensor t = src(full);
    if (!t.defined()) fail("load", "missing tensor '" + full + "' (expected shape " + shape_str(param->shape()) + ")");
    if (t.shape() != param->shape())
      fail("load", "tensor '" + full + "' has shape " + shape_str(t.shape()) + ", the config needs " +
                       shape_str(param->shape()));
    if (!dtype_is_float(t.dtype())) fail("load", "tensor '" + full + "' has dtype " + dtype_name(t.dtype()) + ", expected a float type");
    param->copy_from(t);
  }
  refresh_derived();
}

}  // namespace mamba::nn
