#include "mamba/kernels/ssd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "mamba/kernels/gemm.h"
#include "mamba/kernels/selective_scan.h"  // softplus_scalar, softplus_ref
#include "vec_math.h"

namespace mamba::kernels {

namespace {

template <class T>
void check_params(const SsdParamsT<T>& p) {
  if (p.ngroups <= 0 || p.nheads % p.ngroups != 0) throw std::invalid_argument("ssd: nheads must be a multiple of ngroups");
  if (p.chunk_size <= 0) throw std::invalid_argument("ssd: chunk_size must be positive");
}

template <class T>
inline T dt_of(const SsdParamsT<T>& p, int64_t b, int64_t t, int64_t h) {
  T dt = p.dt[b * p.dt_sb + t * p.dt_st + h * p.dt_sh] + (p.dt_bias ? p.dt_bias[h] : T(0));
  return p.dt_softplus ? softplus_ref(dt) : dt;
}

// The sequential recurrence in the element type T.
template <class T>
void scan_ref(const SsdParamsT<T>& p) {
  check_params(p);
  const int64_t P = p.headdim, N = p.dstate, hpg = p.nheads / p.ngroups;
  std::vector<T> S(static_cast<size_t>(P * N));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.nheads; ++h) {
      const int64_t g = h / hpg;
      for (int64_t i = 0; i < P * N; ++i) S[i] = p.initial_state ? p.initial_state[(b * p.nheads + h) * P * N + i] : T(0);
      for (int64_t t = 0; t < p.seqlen; ++t) {
        const T dt = dt_of(p, b, t, h);
        const T dA = std::exp(dt * p.A[h]);
        const T* x = p.x + b * p.x_sb + t * p.x_st + h * p.x_sh;
        const T* Bv = p.B + b * p.B_sb + t * p.B_st + g * p.B_sg;
        const T* Cv = p.C + b * p.C_sb + t * p.C_st + g * p.C_sg;
        T* y = p.y + b * p.y_sb + t * p.y_st + h * p.y_sh;
        for (int64_t i = 0; i < P; ++i) {
          T acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            T& s = S[i * N + n];
            s = dA * s + dt * x[i] * Bv[n];
            acc += s * Cv[n];
          }
          y[i] = acc + (p.D ? p.D[h] : T(0)) * x[i];
        }
      }
      if (p.final_state) std::copy(S.begin(), S.end(), p.final_state + (b * p.nheads + h) * P * N);
    }
}

}  // namespace

void ssd_scan_ref(const SsdParams& p) { scan_ref(p); }
void ssd_scan_ref(const SsdParamsT<double>& p) { scan_ref(p); }

void ssd_chunk_scan(const SsdParams& p) {
  check_params(p);
  const int64_t L = p.seqlen, P = p.headdim, N = p.dstate, G = p.ngroups, H = p.nheads;
  const int64_t hpg = H / G;
  const int64_t Q = std::min<int64_t>(p.chunk_size, std::max<int64_t>(L, 1));
  const int64_t nchunks = (L + Q - 1) / Q;

  // Pass 1: CB[b][c][g] = C_chunk B_chunk^T (Q x Q), shared by the heads of a group.
  std::vector<float> CB(static_cast<size_t>(p.batch * nchunks * G * Q * Q));
  // Small problems stay on one thread: waking a team costs more than the work.
  const bool parallel = p.batch * L * H * P * N > (1 << 16);
#pragma omp parallel for collapse(3) schedule(static) if (parallel)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t c = 0; c < nchunks; ++c)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t t0 = c * Q, q = std::min(Q, L - t0);
        float* out = CB.data() + ((b * nchunks + c) * G + g) * Q * Q;
        sgemm(false, true, q, q, N, 1.f, p.C + b * p.C_sb + t0 * p.C_st + g * p.C_sg, p.C_st,
              p.B + b * p.B_sb + t0 * p.B_st + g * p.B_sg, p.B_st, 0.f, out, Q);
      }

  // Pass 2: per (batch, head), chunks in order carrying the state S (P x N).
#pragma omp parallel if (parallel)
  {
    std::vector<float> S(static_cast<size_t>(P * N)), M(static_cast<size_t>(Q * Q)), cs(static_cast<size_t>(Q)),
        dts(static_cast<size_t>(Q)), tmp(static_cast<size_t>(Q * N)), Yc(static_cast<size_t>(Q * P));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / hpg;
        const float A = p.A[h], Dh = p.D ? p.D[h] : 0.f;
        if (p.initial_state)
          std::memcpy(S.data(), p.initial_state + (b * H + h) * P * N, sizeof(float) * P * N);
        else
          std::fill(S.begin(), S.end(), 0.f);
        for (int64_t c = 0; c < nchunks; ++c) {
          const int64_t t0 = c * Q, q = std::min(Q, L - t0);
          const float* X = p.x + b * p.x_sb + t0 * p.x_st + h * p.x_sh;  // (q, P), row stride x_st
          const float* Bm = p.B + b * p.B_sb + t0 * p.B_st + g * p.B_sg;  // (q, N)
          const float* Cm = p.C + b * p.C_sb + t0 * p.C_st + g * p.C_sg;  // (q, N)
          float acc = 0.f;
          for (int64_t t = 0; t < q; ++t) {
            dts[t] = dt_of(p, b, t0 + t, h);
            acc += dts[t] * A;
            cs[t] = acc;  // cumulative log-decay inside the chunk
          }
          // M = L o (C B^T) o dt_j, with L_ij = exp(cs_i - cs_j) for j <= i.
          const float* cb = CB.data() + ((b * nchunks + c) * G + g) * Q * Q;
          for (int64_t i = 0; i < q; ++i) {
            float* mi = M.data() + i * Q;
            const float* cbi = cb + i * Q;
            const float csi = cs[i];
#pragma omp simd
            for (int64_t j = 0; j <= i; ++j) mi[j] = cbi[j] * detail::exp_fast(csi - cs[j]) * dts[j];
            for (int64_t j = i + 1; j < q; ++j) mi[j] = 0.f;
          }
          // Yc = M X  (intra-chunk)
          sgemm(false, false, q, P, q, 1.f, M.data(), Q, X, p.x_st, 0.f, Yc.data(), P);
          // Yc += diag(exp(cs)) C S^T  (the state carried in from earlier chunks)
          for (int64_t t = 0; t < q; ++t) {
            const float e = std::exp(cs[t]);
            const float* crow = Cm + t * p.C_st;
            for (int64_t n = 0; n < N; ++n) tmp[t * N + n] = e * crow[n];
          }
          sgemm(false, true, q, P, N, 1.f, tmp.data(), N, S.data(), N, 1.f, Yc.data(), P);
          // Write y = Yc + D x.
          for (int64_t t = 0; t < q; ++t) {
            float* yrow = p.y + b * p.y_sb + (t0 + t) * p.y_st + h * p.y_sh;
            const float* xrow = X + t * p.x_st;
            for (int64_t i = 0; i < P; ++i) yrow[i] = Yc[t * P + i] + Dh * xrow[i];
          }
          // S = exp(cs_last) S + X^T diag(w) B,  w_t = exp(cs_last - cs_t) dt_t
          const float last = cs[q - 1];
          for (int64_t t = 0; t < q; ++t) {
            const float w = std::exp(last - cs[t]) * dts[t];
            const float* brow = Bm + t * p.B_st;
            for (int64_t n = 0; n < N; ++n) tmp[t * N + n] = w * brow[n];
          }
          const float decay = std::exp(last);
          for (auto& s : S) s *= decay;
          sgemm(true, false, P, N, q, 1.f, X, p.x_st, tmp.data(), N, 1.f, S.data(), N);
        }
        if (p.final_state) std::memcpy(p.final_state + (b * H + h) * P * N, S.data(), sizeof(float) * P * N);
      }
  }
}

void ssd_state_update(const SsdParams& p, float* state) {
  check_params(p);
  const int64_t P = p.headdim, N = p.dstate, hpg = p.nheads / p.ngroups;
#pragma omp parallel for collapse(2) schedule(static) if (p.batch * p.nheads * P * N > 32768)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.nheads; ++h) {
      const int64_t g = h / hpg;
      float dt = p.dt[b * p.dt_sb + h * p.dt_sh] + (p.dt_bias ? p.dt_bias[h] : 0.f);
      if (p.dt_softplus) dt = softplus_scalar(dt);
      const float dA = std::exp(dt * p.A[h]);
      const float* x = p.x + b * p.x_sb + h * p.x_sh;
      const float* Bv = p.B + b * p.B_sb + g * p.B_sg;
      const float* Cv = p.C + b * p.C_sb + g * p.C_sg;
      float* y = p.y + b * p.y_sb + h * p.y_sh;
      float* S = state + (b * p.nheads + h) * P * N;
      for (int64_t i = 0; i < P; ++i) {
        float* s = S + i * N;
        const float dtx = dt * x[i];
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          s[n] = dA * s[n] + dtx * Bv[n];
          acc += s[n] * Cv[n];
        }
        y[i] = acc + (p.D ? p.D[h] : 0.f) * x[i];
      }
    }
}

}  // namespace mamba::kernels
