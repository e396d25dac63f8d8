// Scan forward v6 (selective_scan_v6.cu), called by selective_scan_fwd_cuda's dispatch.
// Private to kernels/cuda.
#pragma once
#include "mamba/kernels/cuda/scan_cuda.h"

namespace mamba::kernels::cuda {

// Launches v6 for p (1 <= dstate <= 64, arguments validated by the caller). forced_split:
// 0 = heuristic, else 1, 2 or 4 (clamped to what the state count and the tile allow).
template <class T>
void selective_scan_fwd_v6(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced_split);

}  // namespace mamba::kernels::cuda
