// Internal: the CUDA path of ops::selective_scan (same arguments; every tensor on one GPU).
#pragma once
#include "mamba/ops/ssm.h"

namespace mamba::ops {
ScanResult selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                               const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                               const Tensor& initial_state);
}  // namespace mamba::ops
