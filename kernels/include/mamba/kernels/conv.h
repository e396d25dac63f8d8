// N-d convolution (1 to 3 spatial dims) and transposed convolution, f32, via im2col + GEMM
// (and plain f64 reference loops).
//
// Memory (contiguous, row-major):
//   conv:       x [N, C_in, in...],  w [C_out, C_in/groups, k...],  y [N, C_out, out...]
//   transpose:  x [N, C_in, in...],  w [C_in, C_out/groups, k...],  y [N, C_out, out...]
//   bias [C_out] or null.
// A 1-D or 2-D problem is a 3-D one with leading spatial sizes 1 (k 1, stride 1, pad 0,
// dilation 1). The caller computes `out` (for conv: (in + 2p - d(k-1) - 1)/s + 1; for the
// transpose: (in-1)s - 2p + d(k-1) + output_padding + 1) and checks the arguments.
// Threading: over the batch when it is large, otherwise inside im2col/col2im and BLAS;
// every output element is produced in a fixed order, so results do not depend on threads.
#pragma once
#include <cstdint>

namespace mamba::kernels {

struct ConvParams {
  int64_t N = 1, C_in = 1, C_out = 1, groups = 1;
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t k[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};
  int64_t dilation[3] = {1, 1, 1};
};

void conv_f32(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
void conv_f32_ref(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
void conv_transpose_f32(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
void conv_transpose_f32_ref(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
// f64: the plain loops only (gradient checks in f64).
void conv_f64_ref(const ConvParams& p, const double* x, const double* w, const double* bias, double* y);
void conv_transpose_f64_ref(const ConvParams& p, const double* x, const double* w, const double* bias, double* y);

// Geometry of one image for im2col/col2im: C channels of size img[3], kernel k[3], and the
// `cols` grid col[3] of kernel positions (the conv output size).
struct Im2colGeom {
  int64_t C = 1;
  int64_t img[3] = {1, 1, 1};
  int64_t col[3] = {1, 1, 1};
  int64_t k[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};
  int64_t dilation[3] = {1, 1, 1};
};
// cols [C * k0*k1*k2, col0*col1*col2]; out-of-image taps are 0.
void im2col_f32(const Im2colGeom& g, const float* img, float* cols);
// Adds each column entry into the image position it was taken from (img is accumulated).
void col2im_f32(const Im2colGeom& g, const float* cols, float* img);

}  // namespace mamba::kernels
