// RMSNorm and the gated, grouped RMSNorm of Mamba-2, over rows of a matrix.
//   rms_norm:        y = x / sqrt(mean(x^2) + eps) * w
//   gated_rms_norm:  norm_before_gate = false: y = rms_norm_grouped(x * silu(z)) * w
//                    norm_before_gate = true:  y = rms_norm_grouped(x) * w * silu(z)
//   The grouped form normalises each consecutive group of `group_size` columns on its own.
// x, z, y: `rows` rows of `dim` floats with the given row strides (columns contiguous).
// residual forms: add_rms_norm first writes residual_out = x + residual_in (the pre-norm
// residual stream of a Mamba block), then normalises it. All accumulate in f32 (double
// for the reference). OpenMP over rows. The references (*_ref) also take f64 rows (the
// same loops, for gradient checks in f64).
#pragma once
#include <cstdint>

namespace mamba::kernels {

void rms_norm(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
              int64_t y_stride);
void rms_norm_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
                  int64_t y_stride);
void rms_norm_ref(int64_t rows, int64_t dim, const double* x, int64_t x_stride, const double* w, double eps, double* y,
                  int64_t y_stride);

// residual_out = x + residual_in (residual_in may be null: residual_out = x); y = rms_norm(residual_out).
void add_rms_norm(int64_t rows, int64_t dim, const float* x, const float* residual_in, float* residual_out,
                  const float* w, float eps, float* y);

void gated_rms_norm(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride, const float* z,
                    int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y, int64_t y_stride);
void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y,
                        int64_t y_stride);
void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const double* x, int64_t x_stride,
                        const double* z, int64_t z_stride, const double* w, double eps, bool norm_before_gate,
                        double* y, int64_t y_stride);

// Backward passes: given dy (rows of `dim`, row stride dy_stride), write dx (and dz) with
// their own row strides and dw (dim) = the sum over rows of dL/dw. Per normalised group of
// G columns, with u the normalised input, r = 1 / sqrt(mean(u^2) + eps), v = dL/d(u r w) o w:
//   du_i = r v_i - u_i r^3 / G * sum_j v_j u_j,   dw_i += (dL/d(u r w))_i u_i r
// For gated_rms_norm, norm_before_gate = false: u = x silu(z), dx = du silu(z),
// dz = du x silu'(z); norm_before_gate = true: u = x, dL/d(u r w) = dy silu(z),
// dz = dy (u r w) silu'(z). Without z (null) the gate is 1 and dz is not written.
// Outputs are overwritten; dx, dz, dw may each be null. dw's sum over rows runs in a fixed
// order (blocks of rows fixed by `rows`, reduced in block order), independent of the
// thread count. The references accumulate in double.
void rms_norm_bwd(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps,
                  const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dw);
void rms_norm_bwd_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps,
                      const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dw);
void rms_norm_bwd_ref(int64_t rows, int64_t dim, const double* x, int64_t x_stride, const double* w, double eps,
                      const double* dy, int64_t dy_stride, double* dx, int64_t dx_stride, double* dw);

void gated_rms_norm_bwd(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                        const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dz,
                        int64_t dz_stride, float* dw);
void gated_rms_norm_bwd_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                            const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                            const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dz,
                            int64_t dz_stride, float* dw);
void gated_rms_norm_bwd_ref(int64_t rows, int64_t dim, int64_t group_size, const double* x, int64_t x_stride,
                            const double* z, int64_t z_stride, const double* w, double eps, bool norm_before_gate,
                            const double* dy, int64_t dy_stride, double* dx, int64_t dx_stride, double* dz,
                            int64_t dz_stride, double* dw);

}  // namespace mamba::kernels
