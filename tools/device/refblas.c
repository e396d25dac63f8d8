// A plain reference implementation of the three CBLAS routines the CPU paths call
// (cblas_sgemm, cblas_dgemm, cblas_sgemv), built as libopenblas.so.0 for the GPU machine,
// which has no OpenBLAS: the prebuilt check and bench binaries (mamba-cuda-check,
// mamba-cuda-bench, mamba-golden) load it there instead of shipping the 36 MB library.
// Correct for any order / transpose / leading dimension / alpha / beta (beta 0 never reads C);
// OpenMP over rows, no blocking: only for the references of the device checks.
//   gcc -O3 -fopenmp -fPIC -shared -Wl,-soname,libopenblas.so.0 refblas.c -o libopenblas.so.0
#include <stdlib.h>

enum { kRowMajor = 101, kColMajor = 102, kNoTrans = 111 };

#define DEFINE_GEMM(NAME, T)                                                                             \
  static void NAME##_rm(int ta, int tb, int M, int N, int K, T alpha, const T* A, int lda, const T* B,      \
                        int ldb, T beta, T* C, int ldc) {                                                 \
    _Pragma("omp parallel for schedule(static)") for (int i = 0; i < M; ++i) {                            \
      T* arow = (T*)malloc(sizeof(T) * (K > 0 ? K : 1));                                                  \
      T* acc = (T*)malloc(sizeof(T) * (N > 0 ? N : 1));                                                   \
      for (int k = 0; k < K; ++k) arow[k] = ta ? A[(long)k * lda + i] : A[(long)i * lda + k];             \
      for (int j = 0; j < N; ++j) acc[j] = 0;                                                             \
      if (tb) {                                                                                           \
        for (int j = 0; j < N; ++j) {                                                                     \
          const T* br = B + (long)j * ldb;                                                                \
          T s = 0;                                                                                        \
          for (int k = 0; k < K; ++k) s += arow[k] * br[k];                                               \
          acc[j] = s;                                                                                     \
        }                                                                                                 \
      } else {                                                                                            \
        for (int k = 0; k < K; ++k) {                                                                     \
          const T a = arow[k];                                                                            \
          const T* br = B + (long)k * ldb;                                                                \
          for (int j = 0; j < N; ++j) acc[j] += a * br[j];                                                \
        }                                                                                                 \
      }                                                                                                   \
      T* cr = C + (long)i * ldc;                                                                          \
      for (int j = 0; j < N; ++j) cr[j] = alpha * acc[j] + (beta == 0 ? (T)0 : beta * cr[j]);            \
      free(arow);                                                                                         \
      free(acc);                                                                                          \
    }                                                                                                     \
  }                                                                                                       \
  void cblas_##NAME(int order, int transa, int transb, int M, int N, int K, T alpha, const T* A, int lda,  \
                    const T* B, int ldb, T beta, T* C, int ldc) {                                         \
    const int ta = transa != kNoTrans, tb = transb != kNoTrans;                                           \
    if (order == kColMajor) /* C^T = op(B)^T op(A)^T in row-major terms */                                \
      NAME##_rm(tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);                                    \
    else                                                                                                  \
      NAME##_rm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);                                    \
  }

DEFINE_GEMM(sgemm, float)
DEFINE_GEMM(dgemm, double)

// y = alpha op(A) x + beta y; A is M x N in `order`.
void cblas_sgemv(int order, int trans, int M, int N, float alpha, const float* A, int lda, const float* X, int incX,
                 float beta, float* Y, int incY) {
  // Row-major A (M x N) with no transpose: y_i = sum_j A[i, j] x_j. Column-major swaps the roles.
  const int tr = trans != kNoTrans;
  const int ylen = tr ? N : M, xlen = tr ? M : N;
  const int t = order == kColMajor ? !tr : tr;  // element (i of y, j of x): t ? A[j, i] : A[i, j] row-major
#pragma omp parallel for schedule(static)
  for (int i = 0; i < ylen; ++i) {
    float s = 0;
    for (int j = 0; j < xlen; ++j) {
      const float a = t ? A[(long)j * lda + i] : A[(long)i * lda + j];
      s += a * X[incX > 0 ? (long)j * incX : (long)(xlen - 1 - j) * -incX];
    }
    float* y = Y + (long)(incY > 0 ? i : (ylen - 1 - i)) * (incY > 0 ? incY : -incY);
    *y = alpha * s + (beta == 0 ? 0.f : beta * *y);
  }
}
