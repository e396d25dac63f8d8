#include "mamba/kernels/conv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "mamba/kernels/gemm.h"

namespace mamba::kernels {

namespace {

int64_t prod3(const int64_t* a) { return a[0] * a[1] * a[2]; }

Im2colGeom conv_geom(const ConvParams& p, int64_t C, const int64_t* img, const int64_t* col) {
  Im2colGeom g;
  g.C = C;
  for (int d = 0; d < 3; ++d) {
    g.img[d] = img[d];
    g.col[d] = col[d];
    g.k[d] = p.k[d];
    g.stride[d] = p.stride[d];
    g.pad[d] = p.pad[d];
    g.dilation[d] = p.dilation[d];
  }
  return g;
}

bool is_pointwise(const ConvParams& p) {
  for (int d = 0; d < 3; ++d)
    if (p.k[d] != 1 || p.stride[d] != 1 || p.pad[d] != 0 || p.in[d] != p.out[d]) return false;
  return true;
}

void add_bias(int64_t N, int64_t C, int64_t L, const float* bias, float* y) {
  if (!bias) return;
#pragma omp parallel for schedule(static) if (N * C * L > 32768 && !omp_in_parallel())
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const float b = bias[nc % C];
    float* yr = y + nc * L;
    for (int64_t i = 0; i < L; ++i) yr[i] += b;
  }
}

// Image position of kernel tap `kk` for output position `o` along one axis.
inline int64_t tap(const Im2colGeom& g, int d, int64_t o, int64_t kk) {
  return o * g.stride[d] - g.pad[d] + kk * g.dilation[d];
}

}  // namespace

void im2col_f32(const Im2colGeom& g, const float* img, float* cols) {
  const int64_t K = prod3(g.k), L = prod3(g.col), I = prod3(g.img);
  const int64_t rows = g.C * K;
#pragma omp parallel for schedule(static) if (rows * L > 32768 && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / K, kr = r % K;
    const int64_t k0 = kr / (g.k[1] * g.k[2]), k1 = (kr / g.k[2]) % g.k[1], k2 = kr % g.k[2];
    const float* im = img + c * I;
    float* out = cols + r * L;
    for (int64_t o0 = 0; o0 < g.col[0]; ++o0) {
      const int64_t i0 = tap(g, 0, o0, k0);
      for (int64_t o1 = 0; o1 < g.col[1]; ++o1) {
        const int64_t i1 = tap(g, 1, o1, k1);
        float* dst = out + (o0 * g.col[1] + o1) * g.col[2];
        if (i0 < 0 || i0 >= g.img[0] || i1 < 0 || i1 >= g.img[1]) {
          std::fill(dst, dst + g.col[2], 0.f);
          continue;
        }
        const float* src = im + (i0 * g.img[1] + i1) * g.img[2];
        const int64_t s = g.stride[2], base = k2 * g.dilation[2] - g.pad[2];
        for (int64_t o2 = 0; o2 < g.col[2]; ++o2) {
          const int64_t i2 = o2 * s + base;
          dst[o2] = (i2 >= 0 && i2 < g.img[2]) ? src[i2] : 0.f;
        }
      }
    }
  }
}

void col2im_f32(const Im2colGeom& g, const float* cols, float* img) {
  const int64_t K = prod3(g.k), L = prod3(g.col), I = prod3(g.img);
  // One channel per task: a channel's image only receives its own rows, in a fixed order.
#pragma omp parallel for schedule(static) if (g.C * K * L > 32768 && !omp_in_parallel())
  for (int64_t c = 0; c < g.C; ++c) {
    float* im = img + c * I;
    for (int64_t kr = 0; kr < K; ++kr) {
      const int64_t k0 = kr / (g.k[1] * g.k[2]), k1 = (kr / g.k[2]) % g.k[1], k2 = kr % g.k[2];
      const float* src = cols + (c * K + kr) * L;
      for (int64_t o0 = 0; o0 < g.col[0]; ++o0) {
        const int64_t i0 = tap(g, 0, o0, k0);
        if (i0 < 0 || i0 >= g.img[0]) continue;
        for (int64_t o1 = 0; o1 < g.col[1]; ++o1) {
          const int64_t i1 = tap(g, 1, o1, k1);
          if (i1 < 0 || i1 >= g.img[1]) continue;
          const float* s = src + (o0 * g.col[1] + o1) * g.col[2];
          float* dst = im + (i0 * g.img[1] + i1) * g.img[2];
          for (int64_t o2 = 0; o2 < g.col[2]; ++o2) {
            const int64_t i2 = tap(g, 2, o2, k2);
            if (i2 >= 0 && i2 < g.img[2]) dst[i2] += s[o2];
          }
        }
      }
    }
  }
}

void conv_f32(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  const int64_t K = prod3(p.k), Lout = prod3(p.out), Lin = prod3(p.in);
  const int64_t cin_g = p.C_in / p.groups, cout_g = p.C_out / p.groups;
  const bool pointwise = is_pointwise(p);
  const Im2colGeom geom = conv_geom(p, cin_g, p.in, p.out);
  const bool batch_parallel = p.N > 1 && p.N >= omp_get_max_threads();
  const size_t col_size = pointwise ? 0 : static_cast<size_t>(cin_g * K * Lout);
#pragma omp parallel if (batch_parallel)
  {
    std::vector<float> col(col_size);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t g = 0; g < p.groups; ++g) {
        const float* xg = x + (n * p.C_in + g * cin_g) * Lin;
        const float* B = xg;
        if (!pointwise) {
          im2col_f32(geom, xg, col.data());
          B = col.data();
        }
        sgemm(false, false, cout_g, Lout, cin_g * K, 1.f, w + g * cout_g * cin_g * K, cin_g * K, B, Lout, 0.f,
              y + (n * p.C_out + g * cout_g) * Lout, Lout);
      }
  }
  add_bias(p.N, p.C_out, Lout, bias, y);
}

void conv_transpose_f32(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  const int64_t K = prod3(p.k), Lout = prod3(p.out), Lin = prod3(p.in);
  const int64_t cin_g = p.C_in / p.groups, cout_g = p.C_out / p.groups;
  // The transpose scatters: the output image is what im2col would read, the input grid is
  // the column grid.
  const Im2colGeom geom = conv_geom(p, cout_g, p.out, p.in);
  const bool batch_parallel = p.N > 1 && p.N >= omp_get_max_threads();
  std::fill(y, y + p.N * p.C_out * Lout, 0.f);
#pragma omp parallel if (batch_parallel)
  {
    std::vector<float> col(static_cast<size_t>(cout_g * K * Lin));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t g = 0; g < p.groups; ++g) {
        sgemm(true, false, cout_g * K, Lin, cin_g, 1.f, w + g * cin_g * cout_g * K, cout_g * K,
              x + (n * p.C_in + g * cin_g) * Lin, Lin, 0.f, col.data(), Lin);
        col2im_f32(geom, col.data(), y + (n * p.C_out + g * cout_g) * Lout);
      }
  }
  add_bias(p.N, p.C_out, Lout, bias, y);
}

namespace {

// The plain loops in the element type T (sums in double).
template <class T>
void conv_ref(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const int64_t cin_g = p.C_in / p.groups, cout_g = p.C_out / p.groups;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t co = 0; co < p.C_out; ++co) {
      const int64_t g = co / cout_g;
      for (int64_t o0 = 0; o0 < p.out[0]; ++o0)
        for (int64_t o1 = 0; o1 < p.out[1]; ++o1)
          for (int64_t o2 = 0; o2 < p.out[2]; ++o2) {
            double acc = bias ? bias[co] : 0.0;
            for (int64_t ci = 0; ci < cin_g; ++ci)
              for (int64_t a = 0; a < p.k[0]; ++a)
                for (int64_t b = 0; b < p.k[1]; ++b)
                  for (int64_t c = 0; c < p.k[2]; ++c) {
                    const int64_t i0 = o0 * p.stride[0] - p.pad[0] + a * p.dilation[0];
                    const int64_t i1 = o1 * p.stride[1] - p.pad[1] + b * p.dilation[1];
                    const int64_t i2 = o2 * p.stride[2] - p.pad[2] + c * p.dilation[2];
                    if (i0 < 0 || i0 >= p.in[0] || i1 < 0 || i1 >= p.in[1] || i2 < 0 || i2 >= p.in[2]) continue;
                    const T xv = x[(((n * p.C_in + g * cin_g + ci) * p.in[0] + i0) * p.in[1] + i1) * p.in[2] + i2];
                    const T wv = w[(((co * cin_g + ci) * p.k[0] + a) * p.k[1] + b) * p.k[2] + c];
                    acc += static_cast<double>(xv) * wv;
                  }
            y[(((n * p.C_out + co) * p.out[0] + o0) * p.out[1] + o1) * p.out[2] + o2] = static_cast<T>(acc);
          }
    }
}

template <class T>
void conv_transpose_ref(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const int64_t cin_g = p.C_in / p.groups, cout_g = p.C_out / p.groups;
  const int64_t Lout = prod3(p.out);
  std::vector<double> acc(static_cast<size_t>(p.N * p.C_out * Lout), 0.0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t ci = 0; ci < p.C_in; ++ci) {
      const int64_t g = ci / cin_g;
      for (int64_t i0 = 0; i0 < p.in[0]; ++i0)
        for (int64_t i1 = 0; i1 < p.in[1]; ++i1)
          for (int64_t i2 = 0; i2 < p.in[2]; ++i2) {
            const double xv = x[(((n * p.C_in + ci) * p.in[0] + i0) * p.in[1] + i1) * p.in[2] + i2];
            for (int64_t col = 0; col < cout_g; ++col)
              for (int64_t a = 0; a < p.k[0]; ++a)
                for (int64_t b = 0; b < p.k[1]; ++b)
                  for (int64_t c = 0; c < p.k[2]; ++c) {
                    const int64_t o0 = i0 * p.stride[0] - p.pad[0] + a * p.dilation[0];
                    const int64_t o1 = i1 * p.stride[1] - p.pad[1] + b * p.dilation[1];
                    const int64_t o2 = i2 * p.stride[2] - p.pad[2] + c * p.dilation[2];
                    if (o0 < 0 || o0 >= p.out[0] || o1 < 0 || o1 >= p.out[1] || o2 < 0 || o2 >= p.out[2]) continue;
                    const T wv = w[(((ci * cout_g + col) * p.k[0] + a) * p.k[1] + b) * p.k[2] + c];
                    const int64_t co = g * cout_g + col;
                    acc[static_cast<size_t>((((n * p.C_out + co) * p.out[0] + o0) * p.out[1] + o1) * p.out[2] + o2)] +=
                        xv * wv;
                  }
          }
    }
  for (int64_t i = 0; i < p.N * p.C_out * Lout; ++i)
    y[i] = static_cast<T>(acc[static_cast<size_t>(i)] + (bias ? bias[(i / Lout) % p.C_out] : T(0)));
}

}  // namespace

void conv_f32_ref(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  conv_ref(p, x, w, bias, y);
}
void conv_f64_ref(const ConvParams& p, const double* x, const double* w, const double* bias, double* y) {
  conv_ref(p, x, w, bias, y);
}
void conv_transpose_f32_ref(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  conv_transpose_ref(p, x, w, bias, y);
}
void conv_transpose_f64_ref(const ConvParams& p, const double* x, const double* w, const double* bias, double* y) {
  conv_transpose_ref(p, x, w, bias, y);
}

}  // namespace mamba::kernels
