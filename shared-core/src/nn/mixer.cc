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

Tensor Mixer::forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const {
  fail("Mixer::forward_train", "this layer has no training path yet");
}

void Mixer::to(Device device, DType compute) {
  if (device.is_cpu() && compute == DType::f32 && device_.is_cpu()) return;
  fail("Mixer::to", "this layer has no " + device.str() + " / " + dtype_name(compute) + " path");
}

Tensor Mixer::backward(const SavedActivations& saved, const Tensor& dy, std::vector<Tensor>& param_grads) const {
  fail("Mixer::backward", "this layer has no backward yet");
}

}  // namespace mamba::nn
