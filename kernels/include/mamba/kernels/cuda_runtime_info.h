// What the CUDA runtime can see. Always declared; without a CUDA build the count is 0.
#pragma once
#include <string>

namespace mamba::kernels {

// Number of usable CUDA devices (0 when the build has no CUDA, no driver or no GPU).
int cuda_device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or an explanation why there is none.
std::string cuda_device_description(int index);

}  // namespace mamba::kernels
