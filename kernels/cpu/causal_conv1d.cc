#include "mamba/kernels/causal_conv1d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "mamba/kernels/selective_scan.h"  // silu_scalar
#include "vec_math.h"

namespace mamba::kernels {

namespace {
inline float input_at(const CausalConv1dParams& p, int64_t b, int64_t t, int64_t c) {
  if (t >= 0) return p.x[b * p.x_sb + t * p.x_st + c];
  if (!p.initial_state) return 0.f;
  const int64_t K1 = p.width - 1;  // state holds times -K1 .. -1
  return p.initial_state[(b * p.channels + c) * K1 + (K1 + t)];
}
}  // namespace

void causal_conv1d_ref(const CausalConv1dParams& p) {
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.seqlen; ++t)
      for (int64_t c = 0; c < p.channels; ++c) {
        float acc = p.bias ? p.bias[c] : 0.f;
        for (int64_t k = 0; k < p.width; ++k) acc += p.weight[c * p.width + k] * input_at(p, b, t - (p.width - 1) + k, c);
        p.out[(b * p.seqlen + t) * p.channels + c] = p.silu ? silu_scalar(acc) : acc;
      }
}

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
          // Accumulate in L1 and write the output row once.
          for (int64_t c = 0; c < nc; ++c) acc[c] = p.bias ? p.bias[c0 + c] : 0.f;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t ts = t - (K - 1) + k;
            const float* wk = wt.data() + k * CB;
            if (ts >= 0) {
              const float* xr = p.x + b * p.x_sb + ts * p.x_st + c0;
#pragma omp simd
              for (int64_t c = 0; c < nc; ++c) acc[c] += wk[c] * xr[c];
            } else if (p.initial_state) {
              for (int64_t c = 0; c < nc; ++c) acc[c] += wk[c] * input_at(p, b, ts, c0 + c);
            }
          }
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
void conv_bwd_channels(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                       float* dweight, float* dbias, float* dinit, int64_t c0, int64_t c1, bool fast) {
  const int64_t K = p.width, L = p.seqlen, K1 = K - 1, nc = c1 - c0;
  std::vector<double> dw(static_cast<size_t>(nc * K), 0.0), db(static_cast<size_t>(nc), 0.0);
  std::vector<float> dpre(static_cast<size_t>(L * nc));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = c0; c < c1; ++c) {
        float pre = p.bias ? p.bias[c] : 0.f;
        for (int64_t k = 0; k < K; ++k) pre += p.weight[c * K + k] * input_at(p, b, t - K1 + k, c);
        float g = dout[(b * L + t) * p.channels + c];
        if (p.silu) {
          const float sg = fast ? detail::sigmoid_fast(pre) : 1.f / (1.f + std::exp(-pre));
          g *= sg * (1.f + pre * (1.f - sg));
        }
        dpre[t * nc + (c - c0)] = g;
      }
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = c0; c < c1; ++c) {
        const float g = dpre[t * nc + (c - c0)];
        db[c - c0] += g;
        for (int64_t k = 0; k < K; ++k) dw[(c - c0) * K + k] += static_cast<double>(g) * input_at(p, b, t - K1 + k, c);
      }
    // dx[s] = sum_k w[k] dpre[s + K1 - k]; times s < 0 go to the initial state.
    for (int64_t s = -K1; s < L; ++s)
      for (int64_t c = c0; c < c1; ++c) {
        float acc = 0.f;
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
    for (int64_t k = 0; k < K; ++k) dweight[c * K + k] = static_cast<float>(dw[(c - c0) * K + k]);
    if (dbias) dbias[c] = static_cast<float>(db[c - c0]);
  }
}

}  // namespace

void causal_conv1d_bwd_ref(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                           float* dweight, float* dbias, float* dinitial_state) {
  conv_bwd_channels(p, dout, dx, dx_sb, dx_st, dweight, dbias, dinitial_state, 0, p.channels, false);
}

void causal_conv1d_bwd(const CausalConv1dParams& p, const float* dout, float* dx, int64_t dx_sb, int64_t dx_st,
                       float* dweight, float* dbias, float* dinitial_state) {
  constexpr int64_t CB = 16;  // channels per task; each task owns its channels' weight sums
  const int64_t nblk = (p.channels + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (p.batch * p.seqlen * p.channels > (1 << 15))
  for (int64_t blk = 0; blk < nblk; ++blk)
    conv_bwd_channels(p, dout, dx, dx_sb, dx_st, dweight, dbias, dinitial_state, blk * CB,
                      std::min(p.channels, (blk + 1) * CB), true);
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
