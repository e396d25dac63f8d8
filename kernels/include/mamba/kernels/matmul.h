// Batched matrix products and the linear layer, row-major, contiguous matrices.
//
// matmul: for each b in [0, batch): C_b[M, N] = A[a_off[b]] [M, K] @ B[b_off[b]] [K, N],
//   where a_off/b_off are element offsets of each batch's matrix (so broadcast batches share
//   one operand) and C_b = C + b * M * N.
// linear: y[M, out] = x[M, in] @ w[out, in]^T + bias[out] (bias may be null).
// Threading: many small products go one per thread, large ones use BLAS threads; each
// output element is one dot product in a fixed order.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void matmul_f32(int64_t batch, int64_t M, int64_t N, int64_t K, const float* A, const int64_t* a_off, const float* B,
                const int64_t* b_off, float* C);
void matmul_f64(int64_t batch, int64_t M, int64_t N, int64_t K, const double* A, const int64_t* a_off, const double* B,
                const int64_t* b_off, double* C);
void matmul_f32_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const float* A, const int64_t* a_off,
                    const float* B, const int64_t* b_off, float* C);
void matmul_f64_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const double* A, const int64_t* a_off,
                    const double* B, const int64_t* b_off, double* C);

void linear_f32(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* bias, float* y);
void linear_f32_ref(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* bias, float* y);
void linear_f64(int64_t M, int64_t in, int64_t out, const double* x, const double* w, const double* bias, double* y);
void linear_f64_ref(int64_t M, int64_t in, int64_t out, const double* x, const double* w, const double* bias,
                    double* y);

}  // namespace mamba::kernels
