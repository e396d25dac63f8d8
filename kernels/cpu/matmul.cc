#include "mamba/kernels/matmul.h"

#include <omp.h>

#include "mamba/kernels/gemm.h"

namespace mamba::kernels {

namespace {

inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc) {
  sgemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc);
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
                 int64_t ldb, double* C, int64_t ldc) {
  dgemm(ta, tb, M, N, K, 1.0, A, lda, B, ldb, 0.0, C, ldc);
}

template <class T>
void matmul_fast(int64_t batch, int64_t M, int64_t N, int64_t K, const T* A, const int64_t* a_off, const T* B,
                 const int64_t* b_off, T* C) {
  const bool small = M * N * K < (1 << 18);
#pragma omp parallel for schedule(static) if (small && batch > 1)
  for (int64_t b = 0; b < batch; ++b) gemm(false, false, M, N, K, A + a_off[b], K, B + b_off[b], N, C + b * M * N, N);
}

template <class T>
void matmul_reference(int64_t batch, int64_t M, int64_t N, int64_t K, const T* A, const int64_t* a_off, const T* B,
                      const int64_t* b_off, T* C) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(A[a_off[b] + i * K + k]) * B[b_off[b] + k * N + j];
        C[b * M * N + i * N + j] = static_cast<T>(acc);
      }
}

template <class T> void linear_fast(int64_t M, int64_t in, int64_t out, const T* x, const T* w, const T* bias, T* y) {
  gemm(false, true, M, out, in, x, in, w, in, y, out);
  if (bias) {
#pragma omp parallel for schedule(static) if (M * out > 32768)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] += bias[j];
  }
}

template <class T>
void linear_reference(int64_t M, int64_t in, int64_t out, const T* x, const T* w, const T* bias, T* y) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < out; ++j) {
      double acc = bias ? static_cast<double>(bias[j]) : 0.0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(x[i * in + k]) * w[j * in + k];
      y[i * out + j] = static_cast<T>(acc);
    }
}

}  // namespace

void matmul_f32(int64_t batch, int64_t M, int64_t N, int64_t K, const float* A, const int64_t* a_off, const float* B,
                const int64_t* b_off, float* C) {
  matmul_fast(batch, M, N, K, A, a_off, B, b_off, C);
}
void matmul_f64(int64_t batch, int64_t M, int64_t N, int64_t K, const double* A, const int64_t* a_off, const double* B,
                const int64_t* b_off, double* C) {
  matmul_fast(batch, M, N, K, A, a_off, B, b_off, C);
}
void matmul_f32_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const float* A, const int64_t* a_off,
                    const float* B, const int64_t* b_off, float* C) {
  matmul_reference(batch, M, N, K, A, a_off, B, b_off, C);
}
void matmul_f64_ref(int64_t batch, int64_t M, int64_t N, int64_t K, const double* A, const int64_t* a_off,
                    const double* B, const int64_t* b_off, double* C) {
  matmul_reference(batch, M, N, K, A, a_off, B, b_off, C);
}
void linear_f32(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* bias, float* y) {
  linear_fast(M, in, out, x, w, bias, y);
}
void linear_f32_ref(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* bias, float* y) {
  linear_reference(M, in, out, x, w, bias, y);
}
void linear_f64(int64_t M, int64_t in, int64_t out, const double* x, const double* w, const double* bias, double* y) {
  linear_fast(M, in, out, x, w, bias, y);
}
void linear_f64_ref(int64_t M, int64_t in, int64_t out, const double* x, const double* w, const double* bias,
                    double* y) {
  linear_reference(M, in, out, x, w, bias, y);
}

}  // namespace mamba::kernels
