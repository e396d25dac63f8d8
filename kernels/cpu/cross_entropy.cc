#include "mamba/kernels/cross_entropy.h"

#include <cmath>
#include <vector>

#include "vec_math.h"

namespace mamba::kernels {

namespace {

// One row; returns the loss (0 when ignored) and whether the argmax hit the target.
template <class T, bool kFast>
double row_ce(int64_t V, int64_t stride, const T* x, int64_t target, T scale, T* dx, bool& hit) {
  hit = false;
  if (target < 0) {
    if (dx)
      for (int64_t j = 0; j < stride; ++j) dx[j] = T(0);
    return 0.0;
  }
  T mx = x[0];
  int64_t arg = 0;
  for (int64_t j = 1; j < V; ++j)
    if (x[j] > mx) {
      mx = x[j];
      arg = j;
    }
  hit = arg == target;
  double sum = 0;
  if constexpr (kFast) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; ++j) s += detail::exp_fast(x[j] - mx);
    sum = s;
  } else {
    for (int64_t j = 0; j < V; ++j) sum += std::exp(static_cast<double>(x[j]) - mx);
  }
  const double lse = mx + std::log(sum);
  if (dx) {
    const T inv = static_cast<T>(1.0 / sum);
    for (int64_t j = 0; j < V; ++j) {
      T e;
      if constexpr (kFast)
        e = detail::exp_fast(x[j] - mx);
      else
        e = static_cast<T>(std::exp(static_cast<double>(x[j]) - mx));
      dx[j] = e * inv * scale;
    }
    dx[target] -= scale;
    for (int64_t j = V; j < stride; ++j) dx[j] = T(0);
  }
  return lse - x[target];
}

template <class T, bool kFast>
CrossEntropyResult run(int64_t rows, int64_t V, int64_t stride, const T* logits, const int64_t* targets, T scale,
                       T* dlogits) {
  std::vector<double> loss(static_cast<size_t>(rows));
  std::vector<char> hit(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (kFast && rows * V > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    bool h = false;
    loss[r] = row_ce<T, kFast>(V, stride, logits + r * stride, targets[r], scale, dlogits ? dlogits + r * stride : nullptr, h);
    hit[r] = h;
  }
  CrossEntropyResult out;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    out.loss_sum += loss[r];
    ++out.counted;
    out.correct += hit[r];
  }
  return out;
}

}  // namespace

CrossEntropyResult softmax_cross_entropy(int64_t rows, int64_t V, int64_t row_stride, const float* logits,
                                         const int64_t* targets, float scale, float* dlogits) {
  return run<float, true>(rows, V, row_stride, logits, targets, scale, dlogits);
}

CrossEntropyResult softmax_cross_entropy_ref(int64_t rows, int64_t V, int64_t row_stride, const float* logits,
                                             const int64_t* targets, float scale, float* dlogits) {
  return run<float, false>(rows, V, row_stride, logits, targets, scale, dlogits);
}

CrossEntropyResult softmax_cross_entropy_ref(int64_t rows, int64_t V, int64_t row_stride, const double* logits,
                                             const int64_t* targets, double scale, double* dlogits) {
  return run<double, false>(rows, V, row_stride, logits, targets, scale, dlogits);
}

}  // namespace mamba::kernels
