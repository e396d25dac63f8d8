// GEMM on the GPU at the tensor level: y = x W^T + b through cuBLASLt (the kernels behind it:
// mamba/kernels/cuda/gemm_cuda.h). Compiled in every build; without CUDA it throws
// "built without CUDA".
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

struct LinearCudaOptions {
  bool tf32 = false;              // f32 inputs on TF32 tensor cores (opt-in; ~1e-3 relative)
  bool w_kn = false;              // W stored (in, out): y = x W + b
  bool out_f32 = false;           // f32 output for bf16 / f16 inputs (default: x's dtype)
  // 0 automatic, 1 cuBLASLt only, 2 the m <= 8 kernel, 3 the fallback kernel (tests).
  int force_path = 0;
  const char** path_taken = nullptr;  // when set, receives "cublaslt", "small_m" or "fallback"
};

// x (..., in) and W (out, in) (or (in, out) with w_kn) on one GPU, one dtype (f32, bf16 or
// f16), the last dim of x contiguous (rows may be strided), W contiguous; bias (out) of the
// output dtype, optional. Returns (..., out), contiguous, on the same device, computed on the
// current stream (asynchronously). Shapes, dtypes and devices are checked (mamba::Error).
Tensor linear_cuda(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const LinearCudaOptions& opt = {});

}  // namespace mamba::ops
