// RMSNorm and the gated, grouped RMSNorm of Mamba-2, over rows of a matrix.
//   rms_norm:        y = x / sqrt(mean(x^2) + eps) * w
//   gated_rms_norm:  norm_before_gate = false: y = rms_norm_grouped(x * silu(z)) * w
//                    norm_before_gate = true:  y = rms_norm_grouped(x) * w * silu(z)
//   The grouped form normalises each consecutive group of `group_size` columns on its own.
// x, z, y: `rows` rows of `dim` floats with the given row strides (columns contiguous).
// residual forms: add_rms_norm first writes residual_out = x + residual_in (the pre-norm
// residual stream of a Mamba block), then normalises it. All accumulate in f32 (double
// for the reference). OpenMP over rows.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void rms_norm(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
              int64_t y_stride);
void rms_norm_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
                  int64_t y_stride);

// residual_out = x + residual_in (residual_in may be null: residual_out = x); y = rms_norm(residual_out).
void add_rms_norm(int64_t rows, int64_t dim, const float* x, const float* residual_in, float* residual_out,
                  const float* w, float eps, float* y);

void gated_rms_norm(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride, const float* z,
                    int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y, int64_t y_stride);
void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y,
                        int64_t y_stride);

}  // namespace mamba::kernels
