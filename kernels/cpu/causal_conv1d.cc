#include "mamba/kernels/causal_conv1d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "mamba/kernels/selective_scan.h"  // silu_scalar
#include "vec_math.h"

namespace mamba::kernels {

namespace {
template <class T>
inline T input_at(const CausalConv1dParamsT<T>& p, int64_t b, int64_t t, int64_t c) {
  if (t >= 0) return p.x[b * p.x_sb + t * p.x_st + c];
  if (!p.initial_state) return T(0);
  const int64_t K1 = p.width - 1;  // state holds times -K1 .. -1
  return p.initial_state[(b * p.channels + c) * K1 + (K1 + t)];
}

// acc[c] = bias + sum_k w[c, k] * x[b, t - (K - 1) + k, c0 + c] for the nc channels of a
// block; wt holds the block's weights transposed to [k][c] with row length CB.
inline void conv_row(const CausalConv1dParams& p, int64_t b, int64_t t, int64_t c0, int64_t nc, const float* wt,
                     int64_t CB, float* acc) {
  const int64_t K1 = p.width - 1;
  for (int64_t c = 0; c < nc; ++c) acc[c] = p.bias ? p.bias[c0 + c] : 0.f;
  for (int64_t k = 0; k < p.width; ++k) {
    const int64_t ts = t - K1 + k;
    const float* wk = wt + k * CB;
    if (ts >= 0) {
      const float* xr = p.x + b * p.x_sb + ts * p.x_st + c0;
#pragma omp simd
      for (int64_t c = 0; c < nc; ++c) acc[c] += wk[c] * xr[c];
    } else if (p.initial_state) {
      for (int64_t c = 0; c < nc; ++c) acc[c] += wk[c] * input_at(p, b, ts, c0 + c);
    }
  }
}
}  // namespace

namespace {
template <class T>
void conv_ref(const CausalConv1dParamsT<T>& p) {
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.seqlen; ++t)
      for (int64_t c = 0; c < p.channels; ++c) {
        T acc = p.bias ? p.bias[c] : T(0);
        for (int64_t k = 0; k < p.width; ++k) acc += p.weight[c * p.width + k] * input_at(p, b, t - (p.width - 1) + k, c);
        p.out[(b * p.seqlen + t) * p.channels + c] = p.silu ? silu_ref(acc) : acc;
      }
}
}  // namespace

void causal_conv1d_ref(const CausalConv1dParams& p) { conv_ref(p); }
void causal_conv1d_ref(const CausalConv1dParamsT<double>& p) { conv_ref(p); }

void causal_conv1d(const CausalConv1dParams& p) {
  constexpr int64_t CB = 64;  // channels per task
  const int64_t K = p.width, nblk = (p.channels + CB - 1) / CB;
#pragma omp parallel if (p.batch * p.seqlen * p.channels > (1 << 16))
  {
    std::vector<float> wt(static_cast<size_t>(K * CB));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t blk = 0; blk < nblk; ++blk) {
        const int64_t c0 = blk * CB, nc = std::min(CB, p.channels - c0);
        for (int64_t k = 0; k < K; ++k)  // weights transposed to [k][c] for unit-stride lanes
          for (int64_t c = 0; c < nc; ++c) wt[k * CB + c] = p.weight[(c0 + c) * K + k];
        alignas(64) float acc[CB];
        for (int64_t t = 0; t < p.seqlen; ++t) {
          conv_row(p, b, t, c0, nc, wt.data(), CB, acc);  // in L1; the output row is written once
          float* o = p.out + (b * p.seqlen + t) * p.channels + c0;
          if (p.silu) {
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) o[c] = detail::silu_fast(acc[c]);
          } else {
            for (int64_t c = 0; c < nc; ++c) o[c] = acc[c];
          }
        }
      }
  }
}

namespace {

// The backward for channels [c0, c1) of every batch. dpre = dout * act'(pre) is formed per
// row, then scattered to dx (and to the initial state for negative times).
// `fast` (f32 only) uses the polynomial sigmoid of the fast path.
template <class T>
void conv_bwd_channels(const CausalConv1dParamsT<T>& p, const T* dout, T* dx, int64_t dx_sb, int64_t dx_st, T* dweight,
                       T* dbias, T* dinit, int64_t c0, int64_t c1, bool fast) {
  const int64_t K = p.width, L = p.seqlen, K1 = K - 1, nc = c1 - c0;
  std::vector<double> dw(static_cast<size_t>(nc * K), 0.0), db(static_cast<size_t>(nc), 0.0);
  std::vector<T> dpre(static_cast<size_t>(L * nc));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = c0; c < c1; ++c) {
        T pre = p.bias ? p.bias[c] : T(0);
        for (int64_t k = 0; k < K; ++k) pre += p.weight[c * K + k] * input_at(p, b, t - K1 + k, c);
        T g = dout[(b * L + t) * p.channels + c];
        if (p.silu) {
          T sg;
          if constexpr (std::is_same_v<T, float>)
            sg = fast ? detail::sigmoid_fast(pre) : 1.f / (1.f + std::exp(-pre));
          else
            sg = T(1) / (T(1) + std::exp(-pre));
          g *= sg * (T(1) + pre * (T(1) - sg));
        }
        dpre[t * nc + (c - c0)] = g;
      }
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = c0; c < c1; ++c) {
        const T g = dpre[t * nc + (c - c0)];
        db[c - c0] += g;
        for (int64_t k = 0; k < K; ++k) dw[(c - c0) * K + k] += static_cast<double>(g) * input_at(p, b, t - K1 + k, c);
      }
    // dx[s] = sum_k w[k] dpre[s + K1 - k]; times s < 0 go to the initial state.
    for (int64_t s = -K1; s < L; ++s)
      for (int64_t c = c0; c < c1; ++c) {
        T acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t t = s + K1 - k;
          if (t >= 0 && t < L) acc += p.weight[c * K + k] * dpre[t * nc + (c - c0)];
        }
        if (s >= 0)
          dx[b * dx_sb + s * dx_st + c] = acc;
        else if (dinit)
          dinit[(b * p.channels + c) * K1 + (K1 + s)] = acc;
      }
  }
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t k = 0; k < K; ++k) dweight[c * K + k] = static_cast<T>(dw[(c - c0) * K + k]);
    if (dbias) dbias[c] = static_cast<T>(db[c - c0]);
  }
}

}  // namespace

void causal_conv1d_bwd_ref(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                           float* dweight, float* dbias, float* dinitial_state) {
  conv_bwd_channels(p, dout, dx, dx_sb, dx_st, dweight, dbias, dinitial_state, 0, p.channels, false);
}

void causal_conv1d_bwd_ref(const CausalConv1dParamsT<double>& p, const double* dout, double* dx, int64_t dx_sb,
                           int64_t dx_st, double* dweight, double* dbias, double* dinitial_state) {
  conv_bwd_channels(p, dout, dx, dx_sb, dx_st, dweight, dbias, dinitial_state, 0, p.channels, false);
}

void causal_conv1d_bwd(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                       float* dweight, float* dbias, float* dinitial_state) {
  // Channels are the vector lanes (x rows are contiguous in c); each task owns CB channels
  // and sums their weight gradients over batch and time in a fixed order.
  constexpr int64_t CB = 64;
  const int64_t K = p.width, K1 = K - 1, L = p.seqlen, C = p.channels, nblk = (C + CB - 1) / CB;
#pragma omp parallel if (p.batch * L * C > (1 << 15))
  {
    std::vector<float> wt(static_cast<size_t>(K * CB)), dpre(static_cast<size_t>((L + K1) * CB));
    std::vector<double> dw(static_cast<size_t>(K * CB)), db(static_cast<size_t>(CB));
    std::vector<float> dwf(static_cast<size_t>(K * CB)), dbf(static_cast<size_t>(CB));
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const int64_t c0 = blk * CB, nc = std::min(CB, C - c0);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < nc; ++c) wt[k * CB + c] = p.weight[(c0 + c) * K + k];
      std::fill(dw.begin(), dw.end(), 0.0);
      std::fill(db.begin(), db.end(), 0.0);
      for (int64_t b = 0; b < p.batch; ++b) {
        // dpre rows K1 .. K1 + L - 1 hold times 0 .. L - 1; the K1 rows after are zero.
        float* dp = dpre.data();
        std::fill(dp + (L + K1 - K1) * CB, dp + (L + K1) * CB, 0.f);
        std::fill(dwf.begin(), dwf.end(), 0.f);
        std::fill(dbf.begin(), dbf.end(), 0.f);
        for (int64_t t = 0; t < L; ++t) {
          float pre[CB];
          conv_row(p, b, t, c0, nc, wt.data(), CB, pre);
          const float* go = dout + (b * L + t) * C + c0;
          float* dpt = dp + t * CB;
          if (p.silu) {
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) {
              const float sg = detail::sigmoid_fast(pre[c]);
              dpt[c] = go[c] * sg * (1.f + pre[c] * (1.f - sg));
            }
          } else {
            for (int64_t c = 0; c < nc; ++c) dpt[c] = go[c];
          }
          for (int64_t c = 0; c < nc; ++c) dbf[c] += dpt[c];
          for (int64_t k = 0; k < K; ++k) {
            const int64_t ts = t - K1 + k;
            float* dwk = dwf.data() + k * CB;
            if (ts >= 0) {
              const float* xr = p.x + b * p.x_sb + ts * p.x_st + c0;
#pragma omp simd
              for (int64_t c = 0; c < nc; ++c) dwk[c] += dpt[c] * xr[c];
            } else if (p.initial_state) {
              for (int64_t c = 0; c < nc; ++c) dwk[c] += dpt[c] * input_at(p, b, ts, c0 + c);
            }
          }
        }
        for (int64_t i = 0; i < K * CB; ++i) dw[i] += dwf[i];
        for (int64_t c = 0; c < CB; ++c) db[c] += dbf[c];
        // dx[s] = sum_k w[k] dpre[s + K1 - k], s in [-K1, L); negative s -> initial state.
        for (int64_t s = -K1; s < L; ++s) {
          float acc[CB] = {};
          for (int64_t k = 0; k < K; ++k) {
            const int64_t t = s + K1 - k;
            if (t < 0 || t >= L) continue;
            const float* wk = wt.data() + k * CB;
            const float* dpt = dp + t * CB;
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) acc[c] += wk[c] * dpt[c];
          }
          if (s >= 0) {
            float* dxr = dx + b * dx_sb + s * dx_st + c0;
            for (int64_t c = 0; c < nc; ++c) dxr[c] = acc[c];
          } else if (dinitial_state) {
            for (int64_t c = 0; c < nc; ++c) dinitial_state[(b * C + c0 + c) * K1 + (K1 + s)] = acc[c];
          }
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        for (int64_t k = 0; k < K; ++k) dweight[(c0 + c) * K + k] = static_cast<float>(dw[k * CB + c]);
        if (dbias) dbias[c0 + c] = static_cast<float>(db[c]);
      }
    }
  }
}

void causal_conv1d_update(int64_t batch, int64_t channels, int64_t width, float* conv_state, const float* x,
                          int64_t x_sb, const float* weight, const float* bias, bool silu, float* out) {
#pragma omp parallel for collapse(2) schedule(static) if (batch * channels > 16384)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      float* s = conv_state + (b * channels + c) * width;
      std::memmove(s, s + 1, sizeof(float) * static_cast<size_t>(width - 1));
      s[width - 1] = x[b * x_sb + c];
      float acc = bias ? bias[c] : 0.f;
      for (int64_t k = 0; k < width; ++k) acc += weight[c * width + k] * s[k];
      out[b * channels + c] = silu ? silu_scalar(acc) : acc;
    }
}

}  // namespace mamba::kernels
