// Shared helpers of the CUDA GoogleTest files (include only under MAMBA_HAVE_CUDA): f32 / bf16
// conversion, a NaN-poisoned device buffer whose host copy is rounded to T, the relative error.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "mamba/kernels/cuda/cuda_check.h"

namespace mamba_cuda_test {

using bf16 = __nv_bfloat16;

inline float to_f(float v) { return v; }
inline float to_f(bf16 v) { return __bfloat162float(v); }
template <class T> T to_t(float v) {
  if constexpr (std::is_same_v<T, float>) return v; else return __float2bfloat16_rn(v);
}

// Device buffer; constructed from v, it rounds v to T in place (the reference sees the same values).
template <class T>
struct Dev {
  T* ptr = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    if (n) MAMBA_CUDA_CHECK("test cudaMalloc", cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)));
    if (n) MAMBA_CUDA_CHECK("test poison", cudaMemset(ptr, 0xFF, n * sizeof(T)));
  }
  explicit Dev(std::vector<float>& v) : Dev(v.size()) {
    std::vector<T> t(v.size());
    for (size_t i = 0; i < v.size(); ++i) { t[i] = to_t<T>(v[i]); v[i] = to_f(t[i]); }
    if (n) MAMBA_CUDA_CHECK("test upload", cudaMemcpy(ptr, t.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Dev() { if (ptr) cudaFree(ptr); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<float> get() const {
    MAMBA_CUDA_CHECK("test sync", cudaDeviceSynchronize());
    std::vector<T> t(n);
    if (n) MAMBA_CUDA_CHECK("test download", cudaMemcpy(t.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = to_f(t[i]);
    return v;
  }
};

inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    num += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

}  // namespace mamba_cuda_test
