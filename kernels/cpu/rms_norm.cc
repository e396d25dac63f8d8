#include "mamba/kernels/rms_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mamba/kernels/selective_scan.h"  // silu_scalar, silu_ref
#include "vec_math.h"

namespace mamba::kernels {

namespace {
inline void norm_row(int64_t dim, const float* x, const float* w, float eps, float* y) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  const float r = 1.f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * r * w[i];
}
}  // namespace

void rms_norm(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
              int64_t y_stride) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) norm_row(dim, x + r * x_stride, w, eps, y + r * y_stride);
}

namespace {
template <class T>
void rms_norm_ref_t(int64_t rows, int64_t dim, const T* x, int64_t x_stride, const T* w, T eps, T* y, int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * x_stride + i]) * x[r * x_stride + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * y_stride + i] = static_cast<T>(x[r * x_stride + i] * inv * w[i]);
  }
}
}  // namespace

void rms_norm_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps, float* y,
                  int64_t y_stride) {
  rms_norm_ref_t(rows, dim, x, x_stride, w, eps, y, y_stride);
}
void rms_norm_ref(int64_t rows, int64_t dim, const double* x, int64_t x_stride, const double* w, double eps, double* y,
                  int64_t y_stride) {
  rms_norm_ref_t(rows, dim, x, x_stride, w, eps, y, y_stride);
}

void add_rms_norm(int64_t rows, int64_t dim, const float* x, const float* residual_in, float* residual_out,
                  const float* w, float eps, float* y) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    float* ro = residual_out + r * dim;
    const float* xr = x + r * dim;
    if (residual_in) {
      const float* ri = residual_in + r * dim;
#pragma omp simd
      for (int64_t i = 0; i < dim; ++i) ro[i] = xr[i] + ri[i];
    } else if (ro != xr) {
      for (int64_t i = 0; i < dim; ++i) ro[i] = xr[i];
    }
    norm_row(dim, ro, w, eps, y + r * dim);
  }
}

void gated_rms_norm(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride, const float* z,
                    int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y, int64_t y_stride) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    const float* zr = z ? z + r * z_stride : nullptr;
    float* yr = y + r * y_stride;
    for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
      if (!norm_before_gate && zr) {
#pragma omp simd
        for (int64_t i = g0; i < g0 + group_size; ++i) yr[i] = xr[i] * detail::silu_fast(zr[i]);
        norm_row(group_size, yr + g0, w + g0, eps, yr + g0);
      } else {
        norm_row(group_size, xr + g0, w + g0, eps, yr + g0);
        if (zr) {
#pragma omp simd
          for (int64_t i = g0; i < g0 + group_size; ++i) yr[i] *= detail::silu_fast(zr[i]);
        }
      }
    }
  }
}

namespace {
template <class T>
void gated_rms_norm_ref_t(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride, const T* z,
                          int64_t z_stride, const T* w, T eps, bool norm_before_gate, T* y, int64_t y_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
      double ss = 0;
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        double v = x[r * x_stride + i];
        if (!norm_before_gate && z) v *= silu_ref(z[r * z_stride + i]);
        ss += v * v;
      }
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(group_size) + eps);
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        double v = x[r * x_stride + i];
        const double gate = z ? silu_ref(z[r * z_stride + i]) : 1.0;
        if (!norm_before_gate) v *= gate;
        double out = v * inv * w[i];
        if (norm_before_gate) out *= gate;
        y[r * y_stride + i] = static_cast<T>(out);
      }
    }
}
}  // namespace

void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate, float* y,
                        int64_t y_stride) {
  gated_rms_norm_ref_t(rows, dim, group_size, x, x_stride, z, z_stride, w, eps, norm_before_gate, y, y_stride);
}
void gated_rms_norm_ref(int64_t rows, int64_t dim, int64_t group_size, const double* x, int64_t x_stride,
                        const double* z, int64_t z_stride, const double* w, double eps, bool norm_before_gate,
                        double* y, int64_t y_stride) {
  gated_rms_norm_ref_t(rows, dim, group_size, x, x_stride, z, z_stride, w, eps, norm_before_gate, y, y_stride);
}

// ---- backward ------------------------------------------------------------------------

namespace {

// One row of the gated, grouped backward in f32. u, gate, dgate: scratch of `dim` floats.
// dw_acc (dim) receives this row's dw contribution (added), when not null.
void norm_bwd_row(int64_t dim, int64_t gsz, const float* x, const float* z, const float* w, float eps,
                  bool norm_before_gate, const float* dy, float* dx, float* dz, float* dw_acc, float* u, float* gate,
                  float* dgate) {
  for (int64_t i = 0; i < dim; ++i) {
    if (z) {
      const float s = detail::sigmoid_fast(z[i]);
      gate[i] = z[i] * s;
      dgate[i] = s * (1.f + z[i] * (1.f - s));  // silu'(z)
    } else {
      gate[i] = 1.f;
      dgate[i] = 0.f;
    }
    u[i] = !norm_before_gate ? x[i] * gate[i] : x[i];
  }
  for (int64_t g0 = 0; g0 < dim; g0 += gsz) {
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = g0; i < g0 + gsz; ++i) ss += u[i] * u[i];
    const float r = 1.f / std::sqrt(ss / static_cast<float>(gsz) + eps);
    float dot = 0.f;  // sum_j v_j u_j with v = dL/d(normed) * w
    for (int64_t i = g0; i < g0 + gsz; ++i) {
      const float dn = norm_before_gate ? dy[i] * gate[i] : dy[i];
      dot += dn * w[i] * u[i];
      if (dw_acc) dw_acc[i] += dn * u[i] * r;
      if (norm_before_gate && z && dz) dz[i] = dy[i] * u[i] * r * w[i] * dgate[i];
    }
    const float c = r * r * r * dot / static_cast<float>(gsz);
    for (int64_t i = g0; i < g0 + gsz; ++i) {
      const float dn = norm_before_gate ? dy[i] * gate[i] : dy[i];
      const float du = r * dn * w[i] - u[i] * c;
      if (!norm_before_gate && z) {
        if (dx) dx[i] = du * gate[i];
        if (dz) dz[i] = du * x[i] * dgate[i];
      } else if (dx) {
        dx[i] = du;
      }
    }
  }
}

}  // namespace

void gated_rms_norm_bwd(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                        const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                        const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dz,
                        int64_t dz_stride, float* dw) {
  // Rows split into blocks whose size depends only on `rows`; each block sums its rows' dw
  // in f32 (row order), blocks are then added in block order in double.
  const int64_t rb = std::max<int64_t>(16, (rows + 255) / 256);
  const int64_t nblocks = (rows + rb - 1) / rb;
  std::vector<float> part(dw ? static_cast<size_t>(nblocks * dim) : 0, 0.f);
#pragma omp parallel if (rows * dim > 65536 && nblocks > 1)
  {
    std::vector<float> scratch(static_cast<size_t>(3 * dim));
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk)
      for (int64_t r = blk * rb; r < std::min(rows, (blk + 1) * rb); ++r)
        norm_bwd_row(dim, group_size, x + r * x_stride, z ? z + r * z_stride : nullptr, w, eps, norm_before_gate,
                     dy + r * dy_stride, dx ? dx + r * dx_stride : nullptr, dz && z ? dz + r * dz_stride : nullptr,
                     dw ? part.data() + blk * dim : nullptr, scratch.data(), scratch.data() + dim,
                     scratch.data() + 2 * dim);
  }
  if (dw) {
    std::vector<double> acc(static_cast<size_t>(dim), 0.0);
    for (int64_t blk = 0; blk < nblocks; ++blk)
      for (int64_t i = 0; i < dim; ++i) acc[i] += part[blk * dim + i];
    for (int64_t i = 0; i < dim; ++i) dw[i] = static_cast<float>(acc[i]);
  }
}

namespace {
template <class T>
void gated_rms_norm_bwd_ref_t(int64_t rows, int64_t dim, int64_t group_size, const T* x, int64_t x_stride, const T* z,
                              int64_t z_stride, const T* w, T eps, bool norm_before_gate, const T* dy,
                              int64_t dy_stride, T* dx, int64_t dx_stride, T* dz, int64_t dz_stride, T* dw) {
  std::vector<double> dwacc(static_cast<size_t>(dim), 0.0), u(static_cast<size_t>(dim)), gate(u.size()),
      dgate(u.size());
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * x_stride;
    const T* dyr = dy + r * dy_stride;
    for (int64_t i = 0; i < dim; ++i) {
      if (z) {
        const double zv = z[r * z_stride + i], s = 1.0 / (1.0 + std::exp(-zv));
        gate[i] = zv * s;
        dgate[i] = s * (1.0 + zv * (1.0 - s));
      } else {
        gate[i] = 1.0;
        dgate[i] = 0.0;
      }
      u[i] = norm_before_gate ? xr[i] : xr[i] * gate[i];
    }
    for (int64_t g0 = 0; g0 < dim; g0 += group_size) {
      double ss = 0;
      for (int64_t i = g0; i < g0 + group_size; ++i) ss += u[i] * u[i];
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(group_size) + eps);
      double dot = 0;
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        const double dn = norm_before_gate ? dyr[i] * gate[i] : dyr[i];
        dot += dn * w[i] * u[i];
        dwacc[i] += dn * u[i] * inv;
        if (norm_before_gate && z && dz) dz[r * dz_stride + i] = static_cast<T>(dyr[i] * u[i] * inv * w[i] * dgate[i]);
      }
      const double c = inv * inv * inv * dot / static_cast<double>(group_size);
      for (int64_t i = g0; i < g0 + group_size; ++i) {
        const double dn = norm_before_gate ? dyr[i] * gate[i] : dyr[i];
        const double du = inv * dn * w[i] - u[i] * c;
        if (!norm_before_gate && z) {
          if (dx) dx[r * dx_stride + i] = static_cast<T>(du * gate[i]);
          if (dz) dz[r * dz_stride + i] = static_cast<T>(du * xr[i] * dgate[i]);
        } else if (dx) {
          dx[r * dx_stride + i] = static_cast<T>(du);
        }
      }
    }
  }
  if (dw)
    for (int64_t i = 0; i < dim; ++i) dw[i] = static_cast<T>(dwacc[i]);
}
}  // namespace

void gated_rms_norm_bwd_ref(int64_t rows, int64_t dim, int64_t group_size, const float* x, int64_t x_stride,
                            const float* z, int64_t z_stride, const float* w, float eps, bool norm_before_gate,
                            const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dz,
                            int64_t dz_stride, float* dw) {
  gated_rms_norm_bwd_ref_t(rows, dim, group_size, x, x_stride, z, z_stride, w, eps, norm_before_gate, dy, dy_stride,
                           dx, dx_stride, dz, dz_stride, dw);
}
void gated_rms_norm_bwd_ref(int64_t rows, int64_t dim, int64_t group_size, const double* x, int64_t x_stride,
                            const double* z, int64_t z_stride, const double* w, double eps, bool norm_before_gate,
                            const double* dy, int64_t dy_stride, double* dx, int64_t dx_stride, double* dz,
                            int64_t dz_stride, double* dw) {
  gated_rms_norm_bwd_ref_t(rows, dim, group_size, x, x_stride, z, z_stride, w, eps, norm_before_gate, dy, dy_stride,
                           dx, dx_stride, dz, dz_stride, dw);
}

void rms_norm_bwd(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps,
                  const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dw) {
  gated_rms_norm_bwd(rows, dim, dim, x, x_stride, nullptr, 0, w, eps, false, dy, dy_stride, dx, dx_stride, nullptr, 0,
                     dw);
}

void rms_norm_bwd_ref(int64_t rows, int64_t dim, const float* x, int64_t x_stride, const float* w, float eps,
                      const float* dy, int64_t dy_stride, float* dx, int64_t dx_stride, float* dw) {
  gated_rms_norm_bwd_ref(rows, dim, dim, x, x_stride, nullptr, 0, w, eps, false, dy, dy_stride, dx, dx_stride,
                         nullptr, 0, dw);
}

void rms_norm_bwd_ref(int64_t rows, int64_t dim, const double* x, int64_t x_stride, const double* w, double eps,
                      const double* dy, int64_t dy_stride, double* dx, int64_t dx_stride, double* dw) {
  gated_rms_norm_bwd_ref(rows, dim, dim, x, x_stride, nullptr, 0, w, eps, false, dy, dy_stride, dx, dx_stride,
                         nullptr, 0, dw);
}

}  // namespace mamba::kernels
