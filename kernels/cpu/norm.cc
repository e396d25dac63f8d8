#include "mamba/kernels/norm.h"

#include <cmath>

namespace mamba::kernels {

namespace {

// Mean and biased variance of n contiguous values: two passes (accurate for large means),
// double accumulators in 8 interleaved lanes (vectorised, fixed combination order).
inline void moments(const float* x, int64_t n, float& mean, float& var) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l];
  for (; i < n; ++i) acc[0] += x[i];
  const double m = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) /
                   static_cast<double>(n);
  const float mf = static_cast<float>(m);
  double q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const float d = x[i + l] - mf;
      q[l] += static_cast<double>(d * d);
    }
  for (; i < n; ++i) {
    const float d = x[i] - mf;
    q[0] += static_cast<double>(d * d);
  }
  mean = mf;
  var = static_cast<float>((((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]))) / static_cast<double>(n));
}

}  // namespace

namespace {

// The fast layer norm; xhat and rstd (the backward's saved values) are written when not null.
void layer_norm_rows(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                     float* y, float* xhat, float* rstd_out) {
#pragma omp parallel for schedule(static) if (rows * D > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    float* yr = y + r * D;
    float mean, var;
    moments(xr, D, mean, var);
    const float rstd = 1.f / std::sqrt(var + eps);
    if (rstd_out) rstd_out[r] = rstd;
    if (xhat) {
      float* hr = xhat + r * D;
      for (int64_t d = 0; d < D; ++d) hr[d] = (xr[d] - mean) * rstd;
    }
    if (weight && bias) {
      for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - mean) * rstd * weight[d] + bias[d];
    } else {
      for (int64_t d = 0; d < D; ++d) {
        float v = (xr[d] - mean) * rstd;
        if (weight) v *= weight[d];
        if (bias) v += bias[d];
        yr[d] = v;
      }
    }
  }
}

}  // namespace

void layer_norm_f32(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                    float* y) {
  layer_norm_rows(rows, D, x, weight, bias, eps, y, nullptr, nullptr);
}

void layer_norm_f32_saving(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                           float* y, float* xhat, float* rstd) {
  layer_norm_rows(rows, D, x, weight, bias, eps, y, xhat, rstd);
}

void layer_norm_f32_ref(int64_t rows, int64_t D, const float* x, const float* weight, const float* bias, float eps,
                        float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t d = 0; d < D; ++d) mean += x[r * D + d];
    mean /= static_cast<double>(D);
    for (int64_t d = 0; d < D; ++d) var += (x[r * D + d] - mean) * (x[r * D + d] - mean);
    var /= static_cast<double>(D);
    for (int64_t d = 0; d < D; ++d) {
      double v = (x[r * D + d] - mean) / std::sqrt(var + eps);
      if (weight) v *= weight[d];
      if (bias) v += bias[d];
      y[r * D + d] = static_cast<float>(v);
    }
  }
}

void group_norm_f32(int64_t N, int64_t C, int64_t S, int64_t G, const float* x, const float* weight, const float* bias,
                    float eps, float* y) {
  const int64_t cg = C / G;
#pragma omp parallel for schedule(static) if (N * C * S > 16384)
  for (int64_t t = 0; t < N * G; ++t) {
    const int64_t g = t % G;
    const float* xg = x + t * cg * S;  // group t's channels are contiguous
    float* yg = y + t * cg * S;
    float mean, var;
    moments(xg, cg * S, mean, var);
    const float rstd = 1.f / std::sqrt(var + eps);
    for (int64_t c = 0; c < cg; ++c) {
      const int64_t ch = g * cg + c;
      const float a = rstd * (weight ? weight[ch] : 1.f);
      const float b = (bias ? bias[ch] : 0.f) - mean * a;
      const float* xc = xg + c * S;
      float* yc = yg + c * S;
      for (int64_t s = 0; s < S; ++s) yc[s] = xc[s] * a + b;
    }
  }
}

void group_norm_f32_ref(int64_t N, int64_t C, int64_t S, int64_t G, const float* x, const float* weight,
                        const float* bias, float eps, float* y) {
  const int64_t cg = C / G;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      double mean = 0, var = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (int64_t s = 0; s < S; ++s) mean += x[(n * C + c) * S + s];
      mean /= static_cast<double>(cg * S);
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (int64_t s = 0; s < S; ++s) {
          const double d = x[(n * C + c) * S + s] - mean;
          var += d * d;
        }
      var /= static_cast<double>(cg * S);
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (int64_t s = 0; s < S; ++s) {
          double v = (x[(n * C + c) * S + s] - mean) / std::sqrt(var + eps);
          if (weight) v *= weight[c];
          if (bias) v += bias[c];
          y[(n * C + c) * S + s] = static_cast<float>(v);
        }
    }
}

}  // namespace mamba::kernels
