// Without a CUDA build there is no device.
#ifndef MAMBA_HAVE_CUDA
#include "mamba/kernels/cuda_runtime_info.h"

namespace mamba::kernels {
int cuda_device_count() { return 0; }
std::string cuda_device_description(int index) {
  return "no CUDA device " + std::to_string(index) + ": built without CUDA (MAMBA_CUDA=OFF or nvcc not found)";
}
}  // namespace mamba::kernels
#endif
