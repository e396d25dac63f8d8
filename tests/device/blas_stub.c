/* Plain-loop stand-in for the three CBLAS calls the test binaries use (cblas_sgemm,
 * cblas_dgemm, cblas_sgemv), built as libopenblas.so.0 for the GPU machine, which has no
 * OpenBLAS. Slow and exact enough for references (sums in double). Test harness only. */
#include <stddef.h>

enum { RowMajor = 101, ColMajor = 102, NoTrans = 111 };

#define AT(M, ld, r, c, order) ((order) == RowMajor ? (M)[(size_t)(r) * (ld) + (c)] : (M)[(r) + (size_t)(c) * (ld)])

#define GEMM(NAME, T)                                                                                  \
  void NAME(int order, int ta, int tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, \
            int ldb, T beta, T* C, int ldc) {                                                          \
    for (int i = 0; i < m; ++i)                                                                        \
      for (int j = 0; j < n; ++j) {                                                                    \
        double acc = 0;                                                                                \
        for (int p = 0; p < k; ++p) {                                                                  \
          const T a = ta == NoTrans ? AT(A, lda, i, p, order) : AT(A, lda, p, i, order);               \
          const T b = tb == NoTrans ? AT(B, ldb, p, j, order) : AT(B, ldb, j, p, order);               \
          acc += (double)a * b;                                                                        \
        }                                                                                              \
        T* c = order == RowMajor ? &C[(size_t)i * ldc + j] : &C[i + (size_t)j * ldc];                  \
        *c = (T)(alpha * acc + (beta == 0 ? 0.0 : (double)beta * *c));                                 \
      }                                                                                                \
  }
GEMM(cblas_sgemm, float)
GEMM(cblas_dgemm, double)

void cblas_sgemv(int order, int trans, int m, int n, float alpha, const float* A, int lda, const float* x, int incx,
                 float beta, float* y, int incy) {
  const int rows = trans == NoTrans ? m : n, cols = trans == NoTrans ? n : m;
  for (int i = 0; i < rows; ++i) {
    double acc = 0;
    for (int j = 0; j < cols; ++j)
      acc += (double)(trans == NoTrans ? AT(A, lda, i, j, order) : AT(A, lda, j, i, order)) * x[(size_t)j * incx];
    float* yi = &y[(size_t)i * incy];
    *yi = (float)(alpha * acc + (beta == 0 ? 0.0 : (double)beta * *yi));
  }
}
