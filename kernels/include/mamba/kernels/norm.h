// Normalisations over contiguous f32 memory (biased variance, as PyTorch).
//
// layer_norm: x, y are [rows, D]; each row is normalised over D, then
//   y = (x - mean) / sqrt(var + eps) * weight[d] + bias[d]   (weight/bias may be null).
// group_norm: x, y are [N, C, S] (S = product of spatial sizes); channels are split into G
//   consecutive groups of C/G; statistics over (C/G, S) per (n, g); then per channel c
//   y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]   (weight/bias may be null).
//   Instance norm is group_norm with G = C.
// Threading: OpenMP over rows / (n, g) pairs; results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void layer_norm_f32(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                    float* y);
// layer_norm_f32 that also writes what its backward needs: xhat [rows, D] = (x - mean) *
// rstd and rstd [rows] = 1 / sqrt(var + eps); y is the same as layer_norm_f32's.
void layer_norm_f32_saving(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                           float* y, float* xhat, float* rstd);
void layer_norm_f32_ref(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                        float* y);

void group_norm_f32(int64_t N, int64_t C, int64_t S, int64_t G, const float* x, const float* weight, const float* bias,
                    float eps, float* y);
void group_norm_f32_ref(int64_t N, int64_t C, int64_t S, int64_t G, const float* x, const float* weight,
                        const float* bias, float eps, float* y);

}  // namespace mamba::kernels
