#include "mamba/kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace mamba::kernels {

namespace {

// NaN-propagating max/min.
template <class T> inline T pick(bool largest, T acc, T v) {
  if (std::isnan(acc)) return acc;
  if (std::isnan(v)) return v;
  return largest ? (v > acc ? v : acc) : (v < acc ? v : acc);
}

// Sum of a contiguous run (and of squared deviations from m) with double accumulators in
// 8 interleaved lanes: vectorised, combined in a fixed order.
template <class T> double sum_lanes(const T* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(x[j + l]);
  for (; j < n; ++j) acc[0] += static_cast<double>(x[j]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
template <class T> double sq_dev_lanes(const T* x, int64_t n, double m) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) {
      const double d = static_cast<double>(x[j + l]) - m;
      acc[l] += d * d;
    }
  for (; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - m;
    acc[0] += d * d;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// One contiguous row (the fast path's inner == 1 case).
template <class T> T reduce_row(const ReduceParams& p, const T* x) {
  const int64_t n = p.n;
  switch (p.op) {
    case ReduceOp::sum: return static_cast<T>(sum_lanes(x, n));
    case ReduceOp::mean: return static_cast<T>(sum_lanes(x, n) / static_cast<double>(n));
    case ReduceOp::var: {
      const double m = sum_lanes(x, n) / static_cast<double>(n);
      return static_cast<T>(sq_dev_lanes(x, n, m) / static_cast<double>(n - p.correction));
    }
    default: {
      T acc = x[0];
      for (int64_t j = 1; j < n; ++j) acc = pick(p.op == ReduceOp::max, acc, x[j]);
      return acc;
    }
  }
}

// Reduces one strided column x[j * stride], j in [0, n). Used by the reference and by the
// fast path for columns; a fixed order, so it is deterministic.
template <class T> T reduce_column(const ReduceParams& p, const T* x, int64_t stride) {
  const int64_t n = p.n;
  switch (p.op) {
    case ReduceOp::sum:
    case ReduceOp::mean: {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += x[j * stride];
      return static_cast<T>(p.op == ReduceOp::mean ? s / static_cast<double>(n) : s);
    }
    case ReduceOp::max:
    case ReduceOp::min: {
      T acc = x[0];
      for (int64_t j = 1; j < n; ++j) acc = pick(p.op == ReduceOp::max, acc, x[j * stride]);
      return acc;
    }
    case ReduceOp::var: {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += x[j * stride];
      const double m = s / static_cast<double>(n);
      double q = 0;
      for (int64_t j = 0; j < n; ++j) q += (x[j * stride] - m) * (x[j * stride] - m);
      return static_cast<T>(q / static_cast<double>(n - p.correction));
    }
  }
  return T(0);
}

constexpr int64_t kChunk = 4096;

// One long contiguous row: partial results of fixed-size chunks, combined in chunk order.
template <class T> T reduce_long_row(const ReduceParams& p, const T* x) {
  const int64_t n = p.n, chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks));
  const bool extreme = p.op == ReduceOp::max || p.op == ReduceOp::min;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const T* xc = x + c * kChunk;
    const int64_t len = std::min(kChunk, n - c * kChunk);
    if (extreme) {
      T acc = xc[0];
      for (int64_t j = 1; j < len; ++j) acc = pick(p.op == ReduceOp::max, acc, xc[j]);
      part[static_cast<size_t>(c)] = acc;
    } else {
      part[static_cast<size_t>(c)] = sum_lanes(xc, len);
    }
  }
  if (extreme) {
    double acc = part[0];
    for (double v : part) acc = pick(p.op == ReduceOp::max, acc, v);
    return static_cast<T>(acc);
  }
  double s = 0;
  for (double v : part) s += v;
  const double m = s / static_cast<double>(n);
  if (p.op == ReduceOp::sum) return static_cast<T>(s);
  if (p.op == ReduceOp::mean) return static_cast<T>(m);
  // var: second pass over the same chunks.
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const T* xc = x + c * kChunk;
    const int64_t len = std::min(kChunk, n - c * kChunk);
    part[static_cast<size_t>(c)] = sq_dev_lanes(xc, len, m);
  }
  double q = 0;
  for (double v : part) q += v;
  return static_cast<T>(q / static_cast<double>(n - p.correction));
}

template <class T> void reduce_fast(const ReduceParams& p, const T* x, T* y) {
  const int64_t outer = p.outer, n = p.n, inner = p.inner;
  if (outer * inner == 0) return;
  if (n == 0) {  // empty sum is 0, empty mean/var NaN
    const T v = p.op == ReduceOp::sum ? T(0) : std::numeric_limits<T>::quiet_NaN();
    std::fill(y, y + outer * inner, v);
    return;
  }
  if (inner == 1 && outer == 1 && n > 2 * kChunk) {
    y[0] = reduce_long_row(p, x);
    return;
  }
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n > 16384)
    for (int64_t o = 0; o < outer; ++o) y[o] = reduce_row(p, x + o * n);
    return;
  }
  // inner > 1: accumulate whole rows of `inner` so the loop over i vectorises.
  constexpr int64_t kW = 256;
  const int64_t blocks = (inner + kW - 1) / kW;
#pragma omp parallel for schedule(static) if (outer * n * inner > 16384)
  for (int64_t t = 0; t < outer * blocks; ++t) {
    const int64_t o = t / blocks, i0 = (t % blocks) * kW, w = std::min(kW, inner - i0);
    const T* xb = x + o * n * inner + i0;
    T* yb = y + o * inner + i0;
    if (p.op == ReduceOp::max || p.op == ReduceOp::min) {
      const bool largest = p.op == ReduceOp::max;
      T acc[kW];
      for (int64_t i = 0; i < w; ++i) acc[i] = xb[i];
      for (int64_t j = 1; j < n; ++j)
        for (int64_t i = 0; i < w; ++i) acc[i] = pick(largest, acc[i], xb[j * inner + i]);
      for (int64_t i = 0; i < w; ++i) yb[i] = acc[i];
      continue;
    }
    double s[kW];
    for (int64_t i = 0; i < w; ++i) s[i] = 0;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) s[i] += xb[j * inner + i];
    if (p.op == ReduceOp::sum) {
      for (int64_t i = 0; i < w; ++i) yb[i] = static_cast<T>(s[i]);
      continue;
    }
    for (int64_t i = 0; i < w; ++i) s[i] /= static_cast<double>(n);
    if (p.op == ReduceOp::mean) {
      for (int64_t i = 0; i < w; ++i) yb[i] = static_cast<T>(s[i]);
      continue;
    }
    double q[kW];
    for (int64_t i = 0; i < w; ++i) q[i] = 0;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w; ++i) {
        const double d = xb[j * inner + i] - s[i];
        q[i] += d * d;
      }
    for (int64_t i = 0; i < w; ++i) yb[i] = static_cast<T>(q[i] / static_cast<double>(n - p.correction));
  }
}

template <class T> void reduce_reference(const ReduceParams& p, const T* x, T* y) {
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t i = 0; i < p.inner; ++i) {
      if (p.n == 0) {
        y[o * p.inner + i] = p.op == ReduceOp::sum ? T(0) : std::numeric_limits<T>::quiet_NaN();
        continue;
      }
      y[o * p.inner + i] = reduce_column(p, x + o * p.n * p.inner + i, p.inner);
    }
}

template <class T> inline int64_t arg_column(int64_t n, bool largest, const T* x, int64_t stride) {
  int64_t best = 0;
  T bv = x[0];
  if (std::isnan(bv)) return 0;
  for (int64_t j = 1; j < n; ++j) {
    const T v = x[j * stride];
    if (std::isnan(v)) return j;
    if (largest ? v > bv : v < bv) {
      bv = v;
      best = j;
    }
  }
  return best;
}

template <class T> void arg_fast(int64_t outer, int64_t n, int64_t inner, bool largest, const T* x, int64_t* out) {
#pragma omp parallel for schedule(static) if (outer * n * inner > 16384)
  for (int64_t t = 0; t < outer * inner; ++t) {
    const int64_t o = t / inner, i = t % inner;
    out[t] = arg_column(n, largest, x + o * n * inner + i, inner);
  }
}

template <class T> void arg_reference(int64_t outer, int64_t n, int64_t inner, bool largest, const T* x, int64_t* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      int64_t best = -1;
      for (int64_t j = 0; j < n; ++j) {
        const T v = x[(o * n + j) * inner + i];
        if (std::isnan(v)) {
          best = j;
          break;
        }
        if (best < 0 || (largest ? v > x[(o * n + best) * inner + i] : v < x[(o * n + best) * inner + i])) best = j;
      }
      out[o * inner + i] = best;
    }
}

}  // namespace

void reduce_f32(const ReduceParams& p, const float* x, float* y) { reduce_fast(p, x, y); }
void reduce_f64(const ReduceParams& p, const double* x, double* y) { reduce_fast(p, x, y); }
void reduce_f32_ref(const ReduceParams& p, const float* x, float* y) { reduce_reference(p, x, y); }
void reduce_f64_ref(const ReduceParams& p, const double* x, double* y) { reduce_reference(p, x, y); }

void arg_reduce_f32(int64_t outer, int64_t n, int64_t inner, bool largest, const float* x, int64_t* out) {
  arg_fast(outer, n, inner, largest, x, out);
}
void arg_reduce_f64(int64_t outer, int64_t n, int64_t inner, bool largest, const double* x, int64_t* out) {
  arg_fast(outer, n, inner, largest, x, out);
}
void arg_reduce_f32_ref(int64_t outer, int64_t n, int64_t inner, bool largest, const float* x, int64_t* out) {
  arg_reference(outer, n, inner, largest, x, out);
}
void arg_reduce_f64_ref(int64_t outer, int64_t n, int64_t inner, bool largest, const double* x, int64_t* out) {
  arg_reference(outer, n, inner, largest, x, out);
}

}  // namespace mamba::kernels
