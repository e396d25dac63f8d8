// Backward of the Mamba-1 selective scan (see selective_scan.h for the forward).
//
// With dt_t = softplus(delta_t + bias) (or delta_t + bias), a_t = exp(dt_t A),
// h_t = a_t h_{t-1} + dt_t u_t B_t, y_t = <h_t, C_t> + D u_t, out_t = y_t silu(z_t), and
// g_t = dL/dh_t (through the recurrence), walking t backwards:
//   dy_t = dout_t silu(z_t),   dz_t = dout_t y_t silu'(z_t)
//   g_t  = dy_t C_t + a_{t+1} g_{t+1}            (g_{l} seeded with d final_state)
//   dC_t += dy_t h_t,  dB_t += g_t dt_t u_t,  du_t = dy_t D + dt_t <g_t, B_t>
//   d dt_t = <g_t, h_{t-1} a_t A + u_t B_t>,  dA += g_t h_{t-1} a_t dt_t
//   d delta_t = d dt_t softplus'(delta_t + bias),  d bias += d delta_t,  dD += dy_t u_t
//   d h_0 = a_0 g_0
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "mamba/kernels/selective_scan.h"
#include "vec_math.h"

namespace mamba::kernels {

namespace {

template <class T>
void check(const SelectiveScanParamsT<T>& p) {
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_scan_bwd: dim must be a multiple of n_groups");
}

// Zero the [b, g, n, t] gradient of B or C (every element is then accumulated).
template <class T>
void zero4(const Strided4<T>& t, const SelectiveScanParamsT<T>& p) {
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t g = 0; g < p.n_groups; ++g)
      for (int64_t n = 0; n < p.dstate; ++n)
        for (int64_t s = 0; s < p.seqlen; ++s) t.ptr[b * t.s0 + g * t.s1 + n * t.s2 + s * t.s3] = T(0);
}

// The reference backward in the element type T (every state kept, sums over channels
// and time in double).
template <class T>
void scan_bwd_ref(const SelectiveScanParamsT<T>& p, Strided3<const T> dy, const T* dfinal,
                  const SelectiveScanGradsT<T>& g) {
  check(p);
  const int64_t N = p.dstate, L = p.seqlen, dpg = p.dim / p.n_groups;
  zero4(g.dB, p);
  zero4(g.dC, p);
  std::vector<double> dA(static_cast<size_t>(p.dim * N), 0.0), dD(static_cast<size_t>(p.dim), 0.0),
      dbias(static_cast<size_t>(p.dim), 0.0);
  std::vector<T> H(static_cast<size_t>((L + 1) * N)), dts(static_cast<size_t>(L)), gcur(static_cast<size_t>(N));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t d = 0; d < p.dim; ++d) {
      const int64_t grp = d / dpg;
      auto Bv = [&](int64_t n, int64_t t) { return p.B.ptr[b * p.B.s0 + grp * p.B.s1 + n * p.B.s2 + t * p.B.s3]; };
      auto Cv = [&](int64_t n, int64_t t) { return p.C.ptr[b * p.C.s0 + grp * p.C.s1 + n * p.C.s2 + t * p.C.s3]; };
      auto U = [&](int64_t t) { return p.u.ptr[b * p.u.s0 + d * p.u.s1 + t * p.u.s2]; };
      auto raw = [&](int64_t t) {
        return p.delta.ptr[b * p.delta.s0 + d * p.delta.s1 + t * p.delta.s2] + (p.delta_bias ? p.delta_bias[d] : T(0));
      };
      // Forward, keeping every state: H[t + 1] = h_t, H[0] = h_{-1} (the initial state).
      for (int64_t n = 0; n < N; ++n) H[n] = p.initial_state ? p.initial_state[(b * p.dim + d) * N + n] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const T dt = p.delta_softplus ? softplus_ref(raw(t)) : raw(t);
        dts[t] = dt;
        for (int64_t n = 0; n < N; ++n)
          H[(t + 1) * N + n] = std::exp(dt * p.A[d * N + n]) * H[t * N + n] + dt * Bv(n, t) * U(t);
      }
      // Backward.
      for (int64_t n = 0; n < N; ++n) gcur[n] = dfinal ? dfinal[(b * p.dim + d) * N + n] : T(0);  // a_{t+1} g_{t+1}
      for (int64_t t = L - 1; t >= 0; --t) {
        const T dt = dts[t], u = U(t);
        T y = (p.D ? p.D[d] : T(0)) * u;
        for (int64_t n = 0; n < N; ++n) y += H[(t + 1) * N + n] * Cv(n, t);
        const T dout = dy.ptr[b * dy.s0 + d * dy.s1 + t * dy.s2];
        T dyt = dout;
        if (p.z.ptr) {
          const T zv = p.z.ptr[b * p.z.s0 + d * p.z.s1 + t * p.z.s2];
          const T sg = sigmoid_ref(zv);
          dyt = dout * zv * sg;
          g.dz.ptr[b * g.dz.s0 + d * g.dz.s1 + t * g.dz.s2] = dout * y * (sg * (T(1) + zv * (T(1) - sg)));
        }
        T du = dyt * (p.D ? p.D[d] : T(0)), ddt = 0;
        dD[d] += static_cast<double>(dyt) * u;
        for (int64_t n = 0; n < N; ++n) {
          const T a = std::exp(dt * p.A[d * N + n]);
          const T gt = dyt * Cv(n, t) + gcur[n];
          const T hprev = H[t * N + n];
          g.dC.ptr[b * g.dC.s0 + grp * g.dC.s1 + n * g.dC.s2 + t * g.dC.s3] += dyt * H[(t + 1) * N + n];
          g.dB.ptr[b * g.dB.s0 + grp * g.dB.s1 + n * g.dB.s2 + t * g.dB.s3] += gt * dt * u;
          du += gt * dt * Bv(n, t);
          ddt += gt * (hprev * a * p.A[d * N + n] + u * Bv(n, t));
          dA[d * N + n] += static_cast<double>(gt) * hprev * a * dt;
          gcur[n] = a * gt;
        }
        const T ddelta = p.delta_softplus ? ddt * sigmoid_ref(raw(t)) : ddt;
        dbias[d] += ddelta;
        g.du.ptr[b * g.du.s0 + d * g.du.s1 + t * g.du.s2] = du;
        g.ddelta.ptr[b * g.ddelta.s0 + d * g.ddelta.s1 + t * g.ddelta.s2] = ddelta;
      }
      if (g.dinitial_state)
        for (int64_t n = 0; n < N; ++n) g.dinitial_state[(b * p.dim + d) * N + n] = gcur[n];
    }
  for (int64_t i = 0; i < p.dim * N; ++i) g.dA[i] = static_cast<T>(dA[i]);
  for (int64_t d = 0; d < p.dim; ++d) {
    if (g.dD) g.dD[d] = static_cast<T>(dD[d]);
    if (g.ddelta_bias) g.ddelta_bias[d] = static_cast<T>(dbias[d]);
  }
}

}  // namespace

void selective_scan_bwd_ref(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal,
                            const SelectiveScanGrads& g) {
  scan_bwd_ref(p, dy, dfinal, g);
}
void selective_scan_bwd_ref(const SelectiveScanParamsT<double>& p, Strided3<const double> dy, const double* dfinal,
                            const SelectiveScanGradsT<double>& g) {
  scan_bwd_ref(p, dy, dfinal, g);
}

namespace {

constexpr int W = 8;       // channels per task = lanes
constexpr int64_t T = 64;  // steps per chunk: forward states are checkpointed every T steps

// Per-task partial sums, reduced after the parallel loop in a fixed order.
struct Partials {
  std::vector<float> dB, dC;                 // [n][t] for this task's (b, group)
  std::vector<double> dA, dD, dbias;         // [c][n], [c], [c] for its 8 channels
};

void bwd_block(const SelectiveScanParams& p, const Strided3<const float>& dyv, const float* dfinal,
               const SelectiveScanGrads& g, int64_t b, int64_t d0, int nc, int64_t grp, Partials& part) {
  const int64_t N = p.dstate, L = p.seqlen;
  const int64_t nchunks = (L + T - 1) / T;
  // Per-lane inputs for the whole sequence: dt, u, raw delta, z, dy as [t][lane].
  std::vector<float> dt(static_cast<size_t>(L * W)), u(static_cast<size_t>(L * W)), raw(static_cast<size_t>(L * W)),
      zz(static_cast<size_t>(L * W)), dy(static_cast<size_t>(L * W));
  std::vector<float> Al(static_cast<size_t>(N * W)), h(static_cast<size_t>(N * W)), ckpt(static_cast<size_t>(nchunks * N * W));
  std::vector<float> Hc(static_cast<size_t>((T + 1) * N * W)), gcur(static_cast<size_t>(N * W));
  for (int64_t t = 0; t < L; ++t)
    for (int c = 0; c < W; ++c) {
      const bool live = c < nc;
      const int64_t d = d0 + c;
      const float r = live ? p.delta.ptr[b * p.delta.s0 + d * p.delta.s1 + t * p.delta.s2] +
                                 (p.delta_bias ? p.delta_bias[d] : 0.f)
                           : 0.f;
      raw[t * W + c] = r;
      dt[t * W + c] = live ? (p.delta_softplus ? detail::softplus_fast(r) : r) : 0.f;
      u[t * W + c] = live ? p.u.ptr[b * p.u.s0 + d * p.u.s1 + t * p.u.s2] : 0.f;
      zz[t * W + c] = live && p.z.ptr ? p.z.ptr[b * p.z.s0 + d * p.z.s1 + t * p.z.s2] : 0.f;
      dy[t * W + c] = live ? dyv.ptr[b * dyv.s0 + d * dyv.s1 + t * dyv.s2] : 0.f;
    }
  for (int64_t n = 0; n < N; ++n)
    for (int c = 0; c < W; ++c) {
      const bool live = c < nc;
      Al[n * W + c] = live ? p.A[(d0 + c) * N + n] : 0.f;
      h[n * W + c] = live && p.initial_state ? p.initial_state[(b * p.dim + d0 + c) * N + n] : 0.f;
      gcur[n * W + c] = live && dfinal ? dfinal[(b * p.dim + d0 + c) * N + n] : 0.f;
    }
  const float* Bb = p.B.ptr + b * p.B.s0 + grp * p.B.s1;
  const float* Cb = p.C.ptr + b * p.C.s0 + grp * p.C.s1;
  auto Bv = [&](int64_t n, int64_t t) { return Bb[n * p.B.s2 + t * p.B.s3]; };
  auto Cv = [&](int64_t n, int64_t t) { return Cb[n * p.C.s2 + t * p.C.s3]; };
  // Forward replay, checkpointing the state entering each chunk.
  for (int64_t c0 = 0; c0 < nchunks; ++c0) {
    std::copy(h.begin(), h.end(), ckpt.begin() + c0 * N * W);
    for (int64_t t = c0 * T; t < std::min(L, (c0 + 1) * T); ++t)
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bv(n, t);
#pragma omp simd
        for (int c = 0; c < W; ++c)
          h[n * W + c] = detail::exp_fast(dt[t * W + c] * Al[n * W + c]) * h[n * W + c] + dt[t * W + c] * u[t * W + c] * bn;
      }
  }
  float Dv[W];
  for (int c = 0; c < W; ++c) Dv[c] = c < nc && p.D ? p.D[d0 + c] : 0.f;
  // Backward, chunk by chunk from the end, recomputing each chunk's states (and decays)
  // from its checkpoint. Lanes are channels: every inner loop below is over 8 lanes.
  std::vector<float> Ac(static_cast<size_t>(T * N * W)), dAacc(static_cast<size_t>(N * W));
  for (int64_t c0 = nchunks - 1; c0 >= 0; --c0) {
    const int64_t ts = c0 * T, te = std::min(L, ts + T);
    std::copy(ckpt.begin() + c0 * N * W, ckpt.begin() + (c0 + 1) * N * W, Hc.begin());  // Hc[0] = h_{ts-1}
    for (int64_t t = ts; t < te; ++t)
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bv(n, t);
        const float* hp = Hc.data() + ((t - ts) * N + n) * W;
        float* hn = Hc.data() + ((t - ts + 1) * N + n) * W;
        float* an = Ac.data() + ((t - ts) * N + n) * W;
#pragma omp simd
        for (int c = 0; c < W; ++c) {
          an[c] = detail::exp_fast(dt[t * W + c] * Al[n * W + c]);
          hn[c] = an[c] * hp[c] + dt[t * W + c] * u[t * W + c] * bn;
        }
      }
    std::fill(dAacc.begin(), dAacc.end(), 0.f);
    for (int64_t t = te - 1; t >= ts; --t) {
      const float* H1 = Hc.data() + (t - ts + 1) * N * W;  // h_t
      const float* H0 = Hc.data() + (t - ts) * N * W;      // h_{t-1}
      const float* At = Ac.data() + (t - ts) * N * W;
      const float* dtt = dt.data() + t * W;
      const float* ut = u.data() + t * W;
      float y[W], dyt[W], du[W], ddt[W], dtu[W];
      for (int c = 0; c < W; ++c) y[c] = Dv[c] * ut[c];
      for (int64_t n = 0; n < N; ++n) {
        const float cn = Cv(n, t);
#pragma omp simd
        for (int c = 0; c < W; ++c) y[c] += H1[n * W + c] * cn;
      }
      for (int c = 0; c < W; ++c) {
        const float dout = dy[t * W + c];
        dyt[c] = dout;
        if (p.z.ptr && c < nc) {
          const float zv = zz[t * W + c], sg = 1.f / (1.f + std::exp(-zv));
          dyt[c] = dout * zv * sg;
          g.dz.ptr[b * g.dz.s0 + (d0 + c) * g.dz.s1 + t * g.dz.s2] = dout * y[c] * (sg * (1.f + zv * (1.f - sg)));
        }
        du[c] = dyt[c] * Dv[c];
        ddt[c] = 0.f;
        dtu[c] = dtt[c] * ut[c];
        part.dD[c] += static_cast<double>(dyt[c]) * ut[c];
      }
      for (int64_t n = 0; n < N; ++n) {
        const float bn = Bv(n, t), cn = Cv(n, t);
        float* gn = gcur.data() + n * W;
        float* dan = dAacc.data() + n * W;
        const float* an = At + n * W;
        const float* h0 = H0 + n * W;
        const float* h1 = H1 + n * W;
        const float* al = Al.data() + n * W;
        float sB = 0.f, sC = 0.f;
#pragma omp simd reduction(+ : sB, sC)
        for (int c = 0; c < W; ++c) {
          const float gt = dyt[c] * cn + gn[c];
          const float ha = h0[c] * an[c];
          sC += dyt[c] * h1[c];
          sB += gt * dtu[c];
          du[c] += gt * dtt[c] * bn;
          ddt[c] += gt * (ha * al[c] + ut[c] * bn);
          dan[c] += gt * ha * dtt[c];
          gn[c] = an[c] * gt;
        }
        part.dB[n * L + t] += sB;
        part.dC[n * L + t] += sC;
      }
      for (int c = 0; c < nc; ++c) {
        const float r = raw[t * W + c];
        const float ddelta = p.delta_softplus ? ddt[c] / (1.f + std::exp(-r)) : ddt[c];
        part.dbias[c] += ddelta;
        g.du.ptr[b * g.du.s0 + (d0 + c) * g.du.s1 + t * g.du.s2] = du[c];
        g.ddelta.ptr[b * g.ddelta.s0 + (d0 + c) * g.ddelta.s1 + t * g.ddelta.s2] = ddelta;
      }
    }
    for (int c = 0; c < W; ++c)  // flush the chunk's float sums into the double totals
      for (int64_t n = 0; n < N; ++n) part.dA[c * N + n] += dAacc[n * W + c];
  }
  if (g.dinitial_state)
    for (int c = 0; c < nc; ++c)
      for (int64_t n = 0; n < N; ++n) g.dinitial_state[(b * p.dim + d0 + c) * N + n] = gcur[n * W + c];
}

}  // namespace

void selective_scan_bwd(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal,
                        const SelectiveScanGrads& g) {
  check(p);
  const int64_t N = p.dstate, L = p.seqlen, G = p.n_groups, dpg = p.dim / G;
  const int64_t bpg = (dpg + W - 1) / W, tasks = p.batch * G * bpg;
  std::vector<Partials> parts(static_cast<size_t>(tasks));
#pragma omp parallel for schedule(dynamic) if (tasks > 1 && p.batch * p.dim * L * N > (1 << 15))
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / (G * bpg), grp = (task / bpg) % G, blk = task % bpg;
    const int64_t d0 = grp * dpg + blk * W;
    const int nc = static_cast<int>(std::min<int64_t>(W, (grp + 1) * dpg - d0));
    Partials& pt = parts[static_cast<size_t>(task)];
    pt.dB.assign(static_cast<size_t>(N * L), 0.f);
    pt.dC.assign(static_cast<size_t>(N * L), 0.f);
    pt.dA.assign(static_cast<size_t>(W * N), 0.0);
    pt.dD.assign(W, 0.0);
    pt.dbias.assign(W, 0.0);
    bwd_block(p, dy, dfinal, g, b, d0, nc, grp, pt);
  }
  // Reduce the partials in task order (deterministic for any thread count).
  zero4(g.dB, p);
  zero4(g.dC, p);
  std::vector<double> dA(static_cast<size_t>(p.dim * N), 0.0), dD(static_cast<size_t>(p.dim), 0.0),
      dbias(static_cast<size_t>(p.dim), 0.0);
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / (G * bpg), grp = (task / bpg) % G, blk = task % bpg;
    const int64_t d0 = grp * dpg + blk * W;
    const int nc = static_cast<int>(std::min<int64_t>(W, (grp + 1) * dpg - d0));
    const Partials& pt = parts[static_cast<size_t>(task)];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < L; ++t) {
        g.dB.ptr[b * g.dB.s0 + grp * g.dB.s1 + n * g.dB.s2 + t * g.dB.s3] += pt.dB[n * L + t];
        g.dC.ptr[b * g.dC.s0 + grp * g.dC.s1 + n * g.dC.s2 + t * g.dC.s3] += pt.dC[n * L + t];
      }
    for (int c = 0; c < nc; ++c) {
      for (int64_t n = 0; n < N; ++n) dA[(d0 + c) * N + n] += pt.dA[c * N + n];
      dD[d0 + c] += pt.dD[c];
      dbias[d0 + c] += pt.dbias[c];
    }
  }
  for (int64_t i = 0; i < p.dim * N; ++i) g.dA[i] = static_cast<float>(dA[i]);
  for (int64_t d = 0; d < p.dim; ++d) {
    if (g.dD) g.dD[d] = static_cast<float>(dD[d]);
    if (g.ddelta_bias) g.ddelta_bias[d] = static_cast<float>(dbias[d]);
  }
}

}  // namespace mamba::kernels
