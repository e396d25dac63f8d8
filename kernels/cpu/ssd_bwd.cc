// Backward of the Mamba-2 SSD scan (see ssd.h for the forward, the layouts and the
// gradient formulas). Per (batch b, head h), with P = headdim, N = dstate:
//   S_t (P x N) = a_t S_{t-1} + dt'_t x_t B_t^T,   y_t = S_t C_t + D x_t
// and, walking t backwards with G = a_{t+1} g_{t+1} carried (P x N):
//   g_t[i, n] = dy_t[i] C_t[n] + G[i, n]
//   gb_i      = sum_n g_t[i, n] B_t[n]              -> dx_t[i] = D dy_t[i] + dt'_t gb_i
//   gs        = sum_{i, n} g_t[i, n] S_{t-1}[i, n]   -> d dt'_t = A a_t gs + sum_i x_t[i] gb_i,
//                                                       dA += dt'_t a_t gs
//   dB_t[n]  += dt'_t sum_i g_t[i, n] x_t[i],        dC_t[n] += sum_i S_t[i, n] dy_t[i]
//   G = a_t g_t  (after step 0 this is d initial_state)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "mamba/kernels/selective_scan.h"  // softplus_scalar, softplus_ref
#include "mamba/kernels/ssd.h"
#include "vec_math.h"

namespace mamba::kernels {

namespace {

template <class T>
void check(const SsdParamsT<T>& p) {
  if (p.ngroups <= 0 || p.nheads % p.ngroups != 0)
    throw std::invalid_argument("ssd_scan_bwd: nheads must be a multiple of ngroups");
}

template <class T>
inline T raw_dt(const SsdParamsT<T>& p, int64_t b, int64_t t, int64_t h) {
  return p.dt[b * p.dt_sb + t * p.dt_st + h * p.dt_sh] + (p.dt_bias ? p.dt_bias[h] : T(0));
}

// Write the (nheads) sums, or nothing where the output is null.
template <class T>
void store_head_sums(const SsdGradsT<T>& g, int64_t H, const std::vector<double>& dA, const std::vector<double>& dD,
                     const std::vector<double>& dbias) {
  for (int64_t h = 0; h < H; ++h) {
    if (g.dA) g.dA[h] = static_cast<T>(dA[h]);
    if (g.dD) g.dD[h] = static_cast<T>(dD[h]);
    if (g.ddt_bias) g.ddt_bias[h] = static_cast<T>(dbias[h]);
  }
}

// The reference backward in the element type T.
template <class T>
void scan_bwd_ref(const SsdParamsT<T>& p, const T* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh, const T* dfinal,
                  const SsdGradsT<T>& g) {
  check(p);
  const int64_t P = p.headdim, N = p.dstate, L = p.seqlen, H = p.nheads, G = p.ngroups, hpg = H / G;
  const int64_t PN = P * N;
  // dB, dC accumulated in double as [b, t, g, n] contiguous, copied out at the end.
  std::vector<double> dB(static_cast<size_t>(p.batch * L * G * N), 0.0), dC(dB.size(), 0.0);
  std::vector<double> dA(static_cast<size_t>(H), 0.0), dD(dA.size(), 0.0), dbias(dA.size(), 0.0);
  std::vector<T> S(static_cast<size_t>((L + 1) * PN)), dts(static_cast<size_t>(L)), gcur(static_cast<size_t>(PN));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t grp = h / hpg;
      const T A = p.A[h], Dh = p.D ? p.D[h] : T(0);
      // Forward, keeping every state: S[t + 1] = S_t, S[0] = the initial state.
      for (int64_t k = 0; k < PN; ++k) S[k] = p.initial_state ? p.initial_state[(b * H + h) * PN + k] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const T r = raw_dt(p, b, t, h);
        const T dt = p.dt_softplus ? softplus_ref(r) : r;
        dts[t] = dt;
        const T a = std::exp(dt * A);
        const T* x = p.x + b * p.x_sb + t * p.x_st + h * p.x_sh;
        const T* Bv = p.B + b * p.B_sb + t * p.B_st + grp * p.B_sg;
        for (int64_t i = 0; i < P; ++i)
          for (int64_t n = 0; n < N; ++n)
            S[(t + 1) * PN + i * N + n] = a * S[t * PN + i * N + n] + dt * x[i] * Bv[n];
      }
      // Backward.
      for (int64_t k = 0; k < PN; ++k) gcur[k] = dfinal ? dfinal[(b * H + h) * PN + k] : T(0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const T dt = dts[t], a = std::exp(dt * A);
        const T* x = p.x + b * p.x_sb + t * p.x_st + h * p.x_sh;
        const T* Bv = p.B + b * p.B_sb + t * p.B_st + grp * p.B_sg;
        const T* Cv = p.C + b * p.C_sb + t * p.C_st + grp * p.C_sg;
        const T* dyv = dy + b * dy_sb + t * dy_st + h * dy_sh;
        double* dBt = dB.data() + ((b * L + t) * G + grp) * N;
        double* dCt = dC.data() + ((b * L + t) * G + grp) * N;
        const T* Scur = S.data() + (t + 1) * PN;
        const T* Sprev = S.data() + t * PN;
        double gs = 0, ddtp = 0;
        for (int64_t i = 0; i < P; ++i) {
          double gb = 0;
          for (int64_t n = 0; n < N; ++n) {
            const T gt = dyv[i] * Cv[n] + gcur[i * N + n];
            dCt[n] += static_cast<double>(Scur[i * N + n]) * dyv[i];
            dBt[n] += static_cast<double>(dt) * gt * x[i];
            gb += static_cast<double>(gt) * Bv[n];
            gs += static_cast<double>(gt) * Sprev[i * N + n];
            gcur[i * N + n] = a * gt;
          }
          if (g.dx) g.dx[b * g.dx_sb + t * g.dx_st + h * g.dx_sh + i] = static_cast<T>(Dh * dyv[i] + dt * gb);
          ddtp += x[i] * gb;
          dD[h] += static_cast<double>(dyv[i]) * x[i];
        }
        ddtp += static_cast<double>(A) * a * gs;
        dA[h] += static_cast<double>(dt) * a * gs;
        const T r = raw_dt(p, b, t, h);
        const double ddt = p.dt_softplus ? ddtp / (1.0 + std::exp(-static_cast<double>(r))) : ddtp;
        dbias[h] += ddt;
        if (g.ddt) g.ddt[b * g.ddt_sb + t * g.ddt_st + h * g.ddt_sh] = static_cast<T>(ddt);
      }
      if (g.dinitial_state) std::copy(gcur.begin(), gcur.end(), g.dinitial_state + (b * H + h) * PN);
    }
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t grp = 0; grp < G; ++grp)
        for (int64_t n = 0; n < N; ++n) {
          const size_t k = static_cast<size_t>(((b * L + t) * G + grp) * N + n);
          if (g.dB) g.dB[b * g.dB_sb + t * g.dB_st + grp * g.dB_sg + n] = static_cast<T>(dB[k]);
          if (g.dC) g.dC[b * g.dC_sb + t * g.dC_st + grp * g.dC_sg + n] = static_cast<T>(dC[k]);
        }
  store_head_sums(g, H, dA, dD, dbias);
}

}  // namespace

void ssd_scan_bwd_ref(const SsdParams& p, const float* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                      const float* dfinal, const SsdGrads& g) {
  scan_bwd_ref(p, dy, dy_sb, dy_st, dy_sh, dfinal, g);
}
void ssd_scan_bwd_ref(const SsdParamsT<double>& p, const double* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                      const double* dfinal, const SsdGradsT<double>& g) {
  scan_bwd_ref(p, dy, dy_sb, dy_st, dy_sh, dfinal, g);
}

namespace {

constexpr int64_t kT = 64;  // forward states are checkpointed every kT steps

// Per-thread scratch of the fast path.
struct Scratch {
  std::vector<float> dts, raws, as, ckpt, Hc, gcur, rowB, rowC;
};

// One (batch, head): replay, then the backward sweep. Writes dx, ddt, d initial_state of
// this (b, h) directly; dB/dC rows [t][n] into pB/pC (this task's partials, may be null);
// returns its dA/dD/ddt_bias contributions in sums[0..2].
void bwd_task(const SsdParams& p, const float* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh, const float* dfinal,
              const SsdGrads& g, int64_t b, int64_t h, Scratch& s, float* pB, float* pC, double sums[3]) {
  const int64_t P = p.headdim, N = p.dstate, L = p.seqlen, H = p.nheads, hpg = H / p.ngroups, PN = P * N;
  const int64_t grp = h / hpg, nchunks = (L + kT - 1) / kT;
  const float A = p.A[h], Dh = p.D ? p.D[h] : 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const float r = raw_dt(p, b, t, h);
    s.raws[t] = r;
    s.dts[t] = p.dt_softplus ? detail::softplus_fast(r) : r;
    s.as[t] = detail::exp_fast(s.dts[t] * A);
  }
  const float* xb = p.x + b * p.x_sb + h * p.x_sh;
  const float* Bb = p.B + b * p.B_sb + grp * p.B_sg;
  const float* Cb = p.C + b * p.C_sb + grp * p.C_sg;
  const float* dyb = dy + b * dy_sb + h * dy_sh;
  // One forward step: out = a_t in + dt'_t x_t B_t^T.
  auto step = [&](int64_t t, const float* in, float* out) {
    const float a = s.as[t], dt = s.dts[t];
    const float* x = xb + t * p.x_st;
    const float* Bv = Bb + t * p.B_st;
    for (int64_t i = 0; i < P; ++i) {
      const float dtx = dt * x[i];
      const float* si = in + i * N;
      float* so = out + i * N;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) so[n] = a * si[n] + dtx * Bv[n];
    }
  };
  // Forward replay: ckpt[c] = the state entering chunk c (the last chunk's steps are not needed).
  float* S = s.Hc.data();  // reused as the running state here
  if (p.initial_state)
    std::memcpy(S, p.initial_state + (b * H + h) * PN, sizeof(float) * PN);
  else
    std::fill(S, S + PN, 0.f);
  for (int64_t c = 0; c < nchunks; ++c) {
    std::memcpy(s.ckpt.data() + c * PN, S, sizeof(float) * PN);
    if (c + 1 < nchunks)
      for (int64_t t = c * kT; t < (c + 1) * kT; ++t) step(t, S, S);
  }
  float* gc = s.gcur.data();  // a_{t+1} g_{t+1}
  if (dfinal)
    std::memcpy(gc, dfinal + (b * H + h) * PN, sizeof(float) * PN);
  else
    std::fill(gc, gc + PN, 0.f);
  double dA = 0, dD = 0, dbias = 0;
  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t ts = c * kT, te = std::min(L, ts + kT);
    // Hc[k] = S_{ts - 1 + k}, k = 0..te - ts.
    std::memcpy(s.Hc.data(), s.ckpt.data() + c * PN, sizeof(float) * PN);
    for (int64_t t = ts; t < te; ++t) step(t, s.Hc.data() + (t - ts) * PN, s.Hc.data() + (t - ts + 1) * PN);
    for (int64_t t = te - 1; t >= ts; --t) {
      const float dt = s.dts[t], a = s.as[t];
      const float* x = xb + t * p.x_st;
      const float* Bv = Bb + t * p.B_st;
      const float* Cv = Cb + t * p.C_st;
      const float* dyv = dyb + t * dy_st;
      const float* Scur = s.Hc.data() + (t - ts + 1) * PN;
      const float* Sprev = s.Hc.data() + (t - ts) * PN;
      float* dBt = pB ? pB + t * N : s.rowB.data();
      float* dCt = pC ? pC + t * N : s.rowC.data();
      std::fill(dBt, dBt + N, 0.f);
      std::fill(dCt, dCt + N, 0.f);
      float gs = 0.f, ddtp = 0.f, dDt = 0.f;
      for (int64_t i = 0; i < P; ++i) {
        const float dyi = dyv[i], dtx = dt * x[i];
        float* gi = gc + i * N;
        const float* sc = Scur + i * N;
        const float* sp = Sprev + i * N;
        float gb = 0.f, gsi = 0.f;
#pragma omp simd reduction(+ : gb, gsi)
        for (int64_t n = 0; n < N; ++n) {
          const float gt = dyi * Cv[n] + gi[n];
          dCt[n] += sc[n] * dyi;
          dBt[n] += dtx * gt;
          gb += gt * Bv[n];
          gsi += gt * sp[n];
          gi[n] = a * gt;
        }
        gs += gsi;
        if (g.dx) g.dx[b * g.dx_sb + t * g.dx_st + h * g.dx_sh + i] = Dh * dyi + dt * gb;
        ddtp += x[i] * gb;
        dDt += dyi * x[i];
      }
      ddtp += A * a * gs;
      dA += static_cast<double>(dt) * a * gs;
      dD += dDt;
      const float ddt = p.dt_softplus ? ddtp * detail::sigmoid_fast(s.raws[t]) : ddtp;
      dbias += ddt;
      if (g.ddt) g.ddt[b * g.ddt_sb + t * g.ddt_st + h * g.ddt_sh] = ddt;
    }
  }
  if (g.dinitial_state) std::memcpy(g.dinitial_state + (b * H + h) * PN, gc, sizeof(float) * PN);
  sums[0] = dA;
  sums[1] = dD;
  sums[2] = dbias;
}

}  // namespace

void ssd_scan_bwd(const SsdParams& p, const float* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                  const float* dfinal, const SsdGrads& g) {
  check(p);
  const int64_t P = p.headdim, N = p.dstate, L = p.seqlen, H = p.nheads, G = p.ngroups, hpg = H / G;
  const int64_t PN = P * N, tasks = p.batch * H, nchunks = (L + kT - 1) / kT;
  // Partials: dB/dC as [b, h, t, n] (one (t, n) slab per task), head sums as [b, h, 3].
  std::vector<float> pB(g.dB ? static_cast<size_t>(tasks * L * N) : 0), pC(g.dC ? static_cast<size_t>(tasks * L * N) : 0);
  std::vector<double> sums(static_cast<size_t>(tasks * 3));
  const bool parallel = tasks > 1 && p.batch * L * H * PN > (1 << 15);
#pragma omp parallel if (parallel)
  {
    Scratch s;
    s.dts.resize(static_cast<size_t>(L));
    s.raws.resize(static_cast<size_t>(L));
    s.as.resize(static_cast<size_t>(L));
    s.ckpt.resize(static_cast<size_t>(nchunks * PN));
    s.Hc.resize(static_cast<size_t>((kT + 1) * PN));
    s.gcur.resize(static_cast<size_t>(PN));
    s.rowB.resize(static_cast<size_t>(N));
    s.rowC.resize(static_cast<size_t>(N));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task)
      bwd_task(p, dy, dy_sb, dy_st, dy_sh, dfinal, g, task / H, task % H, s,
               g.dB ? pB.data() + task * L * N : nullptr, g.dC ? pC.data() + task * L * N : nullptr,
               sums.data() + task * 3);
  }
  // dB/dC: each element sums the heads of its group in head order (any thread count).
  if (g.dB || g.dC) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t grp = 0; grp < G; ++grp) {
          for (int which = 0; which < 2; ++which) {
            const std::vector<float>& part = which ? pC : pB;
            float* out = which ? (g.dC ? g.dC + b * g.dC_sb + t * g.dC_st + grp * g.dC_sg : nullptr)
                               : (g.dB ? g.dB + b * g.dB_sb + t * g.dB_st + grp * g.dB_sg : nullptr);
            if (!out) continue;
            const float* first = part.data() + ((b * H + grp * hpg) * L + t) * N;
            std::copy(first, first + N, out);
            for (int64_t k = 1; k < hpg; ++k) {
              const float* src = part.data() + ((b * H + grp * hpg + k) * L + t) * N;
#pragma omp simd
              for (int64_t n = 0; n < N; ++n) out[n] += src[n];
            }
          }
        }
  }
  std::vector<double> dA(static_cast<size_t>(H), 0.0), dD(dA.size(), 0.0), dbias(dA.size(), 0.0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const double* s3 = sums.data() + (b * H + h) * 3;
      dA[h] += s3[0];
      dD[h] += s3[1];
      dbias[h] += s3[2];
    }
  store_head_sums(g, H, dA, dD, dbias);
}

}  // namespace mamba::kernels
