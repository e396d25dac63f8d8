#include "mamba/kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace mamba::kernels {

namespace {

// A strict total order on (value, index): "a comes before b" in the result.
template <class T> struct Before {
  const T* x;
  bool largest;
  bool operator()(int64_t a, int64_t b) const {
    const T va = x[a], vb = x[b];
    const bool na = std::isnan(va), nb = std::isnan(vb);
    if (na || nb) {
      if (na && nb) return a < b;
      return largest ? na : nb;  // NaN counts as the largest value
    }
    if (va != vb) return largest ? va > vb : va < vb;
    return a < b;
  }
};

template <class T>
void topk_impl(int64_t rows, int64_t n, int64_t k, bool largest, const T* x, T* values, int64_t* indices, bool ref) {
#pragma omp parallel for schedule(static) if (!ref && rows > 1 && rows * n > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    const Before<T> before{xr, largest};
    if (ref) {
      std::sort(idx.begin(), idx.end(), before);
    } else if (k < n) {
      std::nth_element(idx.begin(), idx.begin() + k, idx.end(), before);
      std::sort(idx.begin(), idx.begin() + k, before);
    } else {
      std::sort(idx.begin(), idx.end(), before);
    }
    for (int64_t j = 0; j < k; ++j) {
      indices[r * k + j] = idx[static_cast<size_t>(j)];
      values[r * k + j] = xr[idx[static_cast<size_t>(j)]];
    }
  }
}

}  // namespace

void topk_f32(int64_t rows, int64_t n, int64_t k, bool largest, const float* x, float* values, int64_t* indices) {
  topk_impl(rows, n, k, largest, x, values, indices, false);
}
void topk_f32_ref(int64_t rows, int64_t n, int64_t k, bool largest, const float* x, float* values, int64_t* indices) {
  topk_impl(rows, n, k, largest, x, values, indices, true);
}
void topk_f64(int64_t rows, int64_t n, int64_t k, bool largest, const double* x, double* values, int64_t* indices) {
  topk_impl(rows, n, k, largest, x, values, indices, false);
}
void topk_f64_ref(int64_t rows, int64_t n, int64_t k, bool largest, const double* x, double* values,
                  int64_t* indices) {
  topk_impl(rows, n, k, largest, x, values, indices, true);
}

}  // namespace mamba::kernels
