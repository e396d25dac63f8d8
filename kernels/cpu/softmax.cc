#include "mamba/kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "vec_math.h"

namespace mamba::kernels {

namespace {

// Sum and max of a contiguous row in 8 interleaved lanes, combined in a fixed order: the
// compiler vectorises the lanes, and the result does not depend on the thread count.
template <class T> T sum_lanes(int64_t n, const T* v) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += v[j + l];
  for (; j < n; ++j) acc[0] += v[j];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
template <class T> T max_lanes(int64_t n, const T* v) {
  T acc[8];
  for (int l = 0; l < 8; ++l) acc[l] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] = v[j + l] > acc[l] ? v[j + l] : acc[l];
  for (; j < n; ++j) acc[0] = v[j] > acc[0] ? v[j] : acc[0];
  T m = acc[0];
  for (int l = 1; l < 8; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

// One contiguous row (inner == 1). y holds exp(x - max) before the final scaling.
template <class T> void softmax_row(int64_t n, bool log, const T* x, T* y) {
  T m = max_lanes(n, x);
  if (std::isinf(m) && m < 0) m = 0;  // all -inf: avoid (-inf) - (-inf)
  for (int64_t j = 0; j < n; ++j) y[j] = detail::vexp(x[j] - m);
  const T s = sum_lanes(n, y);
  if (log) {
    const T ls = m + std::log(s);
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] - ls;
  } else {
    const T inv = T(1) / s;
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
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
    for (int64_t i = 0; i < w; ++i) m[i] = x[j * inner + i] > m[i] ? x[j * inner + i] : m[i];
  for (int64_t i = 0; i < w; ++i) {
    if (std::isinf(m[i]) && m[i] < 0) m[i] = 0;
    s[i] = 0;
  }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < w; ++i) s[i] += detail::vexp(x[j * inner + i] - m[i]);
  if (log) {
    for (int64_t i = 0; i < w; ++i) s[i] = m[i] + std::log(s[i]);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) y[j * inner + i] = x[j * inner + i] - s[i];
  } else {
    for (int64_t i = 0; i < w; ++i) s[i] = T(1) / s[i];
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) y[j * inner + i] = detail::vexp(x[j * inner + i] - m[i]) * s[i];
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
