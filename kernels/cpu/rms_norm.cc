#include "mamba/kernels/rms_norm.h"

#include <cmath>

#include "mamba/kernels/selective_scan.h"  // silu_scalar
#include "vec_math.h"

namespace mamba::kernels {

namespace {
inline void norm_row(int64_t dim, const float* x, const float* w, float eps, float* y) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  const float r = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * r * w[i];
}
}  // namespace

void rms_norm(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
              int64_t y_stride) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) norm_row(dim, x + r * x_stride, w, eps, y + r * y_stride);
}

void rms_norm_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
                  int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * x_stride + i]) * x[r * x_stride + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * y_stride + i] = static_cast<float>(x[r * x_stride + i] * inv * w[i]);
  }
}

void add_rms_norm(int64_t rows, int64_t dim, const float* x, const float* residual_in, float* residual_out,
                  const float* w, float eps, float* y) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    float* ro = residual_out + r * dim;
    const float* xr = x + r * dim;
    if (residual_in) {
      const float* ri = residual_in + r * dim;
#pragma omp simd
      for (int64_t i = 0; i < dim; ++i) ro[i] = xr[i] + ri[i];
    } else if (ro != xr) {
      for (int64_t i = 0; i < dim; ++i) ro[i] = xr[i];
    }
    norm_row(dim, ro, w, eps, y + r * dim);
  }
}

void gated_rms_norm(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride, const float* z,
                    int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y, int64_t y_stride) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    const float* zr = z ? z + r * z_stride : nullptr;
    float* yr = y + r * y_stride;
    for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
      if (!norm_before_gate && zr) {
#pragma omp simd
        for (int64_t i = g0; i < g0 + group_size; ++i) yr[i] = xr[i] * detail::silu_fast(zr[i]);
        norm_row(group_size, yr + g0, w + g0, eps, yr + g0);
      } else {
        norm_row(group_size, xr + g0, w + g0, eps, yr + g0);
        if (zr) {
#pragma omp simd
          for (int64_t i = g0; i < g0 + group_size; ++i) yr[i] *= detail::silu_fast(zr[i]);
        }
      }
    }
  }
}

void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y,
                        int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
      double ss = 0;
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        double v = x[r * x_stride + i];
        if (!norm_before_gate && z) v *= silu_scalar(z[r * z_stride + i]);
        ss += v * v;
      }
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(group_size) + eps);
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        double v = x[r * x_stride + i];
        const double gate = z ? silu_scalar(z[r * z_stride + i]) : 1.0;
        if (!norm_before_gate) v *= gate;
        double out = v * inv * w[i];
        if (norm_before_gate) out *= gate;
        y[r * y_stride + i] = static_cast<float>(out);
      }
    }
}

}  // namespace mamba::kernels
