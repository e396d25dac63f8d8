// Error checking for CUDA runtime calls and kernel launches. Every call in the CUDA backend
// goes through MAMBA_CUDA_CHECK; a failure throws std::runtime_error naming the operation,
// the failing expression and the CUDA error string.
#pragma once
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace mamba::kernels::cuda_detail {
[[noreturn]] inline void throw_cuda_error(const char* op, const char* expr, cudaError_t e, const char* file, int line) {
  throw std::runtime_error(std::string(op) + ": " + expr + " failed: " + cudaGetErrorName(e) + " (" +
                           cudaGetErrorString(e) + ") at " + file + ":" + std::to_string(line));
}
}  // namespace mamba::kernels::cuda_detail

// MAMBA_CUDA_CHECK("selective_scan_cuda", cudaMemsetAsync(...));
#define MAMBA_CUDA_CHECK(op, expr)                                                                 \
  do {                                                                                             \
    const cudaError_t mamba_cuda_err_ = (expr);                                                    \
    if (mamba_cuda_err_ != cudaSuccess)                                                            \
      ::mamba::kernels::cuda_detail::throw_cuda_error(op, #expr, mamba_cuda_err_, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: catches bad configurations (and earlier asynchronous errors).
#define MAMBA_CUDA_CHECK_LAUNCH(op) MAMBA_CUDA_CHECK(op, cudaGetLastError())
