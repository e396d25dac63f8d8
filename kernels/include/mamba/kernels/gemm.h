// Single-precision GEMM: C = alpha * op(A) @ op(B) + beta * C, row-major.
// op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides in elements.
// `sgemm` calls OpenBLAS (OpenMP build: single-threaded inside a parallel region, so it is
// safe to call from kernel threads); `sgemm_ref` is the plain triple loop it is tested with.
#pragma once
#include <cstdint>

namespace mamba::kernels {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

void sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Batched: `batch` independent GEMMs whose operands are `stride_a/b/c` elements apart.
void sgemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b,
                   float beta, float* C, int64_t ldc, int64_t stride_c);

// y = alpha * op(A) @ x + beta * y; A is (M, N) row-major with row stride lda.
void sgemv(bool trans_a, int64_t M, int64_t N, float alpha, const float* A, int64_t lda, const float* x, float beta,
           float* y);

// Double-precision reference GEMM (for gradient checks in f64).
void dgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
           const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

}  // namespace mamba::kernels
