// RMSNorm kernels on the GPU: the fused residual add + RMSNorm of a Mamba block, and the
// gated, grouped RMSNorm of Mamba-2. Same mathematics as mamba/kernels/rms_norm.h (the CPU
// kernels are the definition):
//   add_rms_norm:   residual_out = x + residual_in (residual_in optional: residual_out = x);
//                   y = residual_out * rsqrt(mean(residual_out^2) + eps) * w
//   gated_rms_norm: per consecutive group of group_size columns,
//                   norm_before_gate = false: y = rms_norm_grouped(x * silu(z)) * w
//                   norm_before_gate = true:  y = rms_norm_grouped(x) * w * silu(z)
//                   (z null: the gate is 1)
// All pointers are DEVICE pointers; T (x, z, y) is float or __nv_bfloat16; residuals and w are
// f32; all arithmetic (sums of squares included) is f32. Asynchronous on `stream`; launch
// errors throw. One block per row (per row and group for the gated form); 16-byte loads and
// stores where a piece is aligned, element accesses otherwise.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// x, residual_in, residual_out, y: (rows, dim) contiguous. residual_out may equal residual_in
// (in-place update of the residual stream); y must not overlap the others. x may be null
// (x = 0: the RMSNorm of an f32 residual_in alone, e.g. the first layer of a trainer).
template <class T>
void add_rms_norm_cuda(int64_t rows, int64_t dim, const T* x, const float* residual_in, float* residual_out,
                       const float* w, float eps, T* y, cudaStream_t stream);

// x, z, y: `rows` rows of `dim` with their own row strides (columns contiguous). group_size
// divides dim. y must not overlap x or z.
template <class T>
void gated_rms_norm_cuda(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride, const T* z,
                         int64_t z_stride, const float* w, float eps, bool norm_before_gate, T* y, int64_t y_stride,
                         cudaStream_t stream);

}  // namespace mamba::kernels::cuda
