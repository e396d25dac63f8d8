#include "mamba/kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mamba::kernels {

namespace {

// One contiguous row (inner == 1).
template <class T> void softmax_row(int64_t n, bool log, const T* x, T* y) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  if (std::isinf(m) && m < 0) m = 0;  // all -inf: avoid (-inf) - (-inf)
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(x[j] - m));
  if (log) {
    const T ls = static_cast<T>(std::log(s));
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] - m - ls;
  } else {
    const T inv = static_cast<T>(1.0 / s);
    for (int64_t j = 0; j < n; ++j) y[j] = std::exp(x[j] - m) * inv;
  }
}

// A block of `w` adjacent columns (inner > 1): loops over n with the columns innermost so
// the compiler vectorises across them.
template <class T> void softmax_cols(int64_t n, int64_t inner, int64_t w, bool log, const T* x, T* y) {
  constexpr int64_t kW = 64;
  T m[kW];
  T s[kW];
  for (int64_t i = 0; i < w; ++i) m[i] = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < w; ++i) m[i] = std::max(m[i], x[j * inner + i]);
  for (int64_t i = 0; i < w; ++i) {
    if (std::isinf(m[i]) && m[i] < 0) m[i] = 0;
    s[i] = 0;
  }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < w; ++i) s[i] += std::exp(x[j * inner + i] - m[i]);
  if (log) {
    for (int64_t i = 0; i < w; ++i) s[i] = m[i] + std::log(s[i]);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) y[j * inner + i] = x[j * inner + i] - s[i];
  } else {
    for (int64_t i = 0; i < w; ++i) s[i] = T(1) / s[i];
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) y[j * inner + i] = std::exp(x[j * inner + i] - m[i]) * s[i];
  }
}

template <class T> void softmax_fast(int64_t outer, int64_t n, int64_t inner, bool log, const T* x, T* y) {
  if (outer == 0 || n == 0 || inner == 0) return;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 16384)
    for (int64_t o = 0; o < outer; ++o) softmax_row(n, log, x + o * n, y + o * n);
    return;
  }
  constexpr int64_t kW = 64;
  const int64_t blocks = (inner + kW - 1) / kW;
#pragma omp parallel for schedule(static) if (outer * n * inner > 16384)
  for (int64_t t = 0; t < outer * blocks; ++t) {
    const int64_t o = t / blocks, i0 = (t % blocks) * kW;
    const int64_t off = o * n * inner + i0;
    softmax_cols(n, inner, std::min(kW, inner - i0), log, x + off, y + off);
  }
}

template <class T> void softmax_reference(int64_t outer, int64_t n, int64_t inner, bool log, const T* x, T* y) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const T* xc = x + o * n * inner + i;
      T* yc = y + o * n * inner + i;
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(xc[j * inner]));
      if (std::isinf(m) && m < 0) m = 0;
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(xc[j * inner] - m);
      for (int64_t j = 0; j < n; ++j) {
        const double v = xc[j * inner] - m;
        yc[j * inner] = static_cast<T>(log ? v - std::log(s) : std::exp(v) / s);
      }
    }
}

}  // namespace

void softmax_f32(int64_t outer, int64_t n, int64_t inner, bool log, const float* x, float* y) {
  softmax_fast(outer, n, inner, log, x, y);
}
void softmax_f64(int64_t outer, int64_t n, int64_t inner, bool log, const double* x, double* y) {
  softmax_fast(outer, n, inner, log, x, y);
}
void softmax_f32_ref(int64_t outer, int64_t n, int64_t inner, bool log, const float* x, float* y) {
  softmax_reference(outer, n, inner, log, x, y);
}
void softmax_f64_ref(int64_t outer, int64_t n, int64_t inner, bool log, const double* x, double* y) {
  softmax_reference(outer, n, inner, log, x, y);
}

}  // namespace mamba::kernels
