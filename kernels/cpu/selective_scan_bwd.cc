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
#include <string>
#include <vector>

#include "mamba/kernels/cpu_isa.h"
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

constexpr int64_t T = 64;  // steps per chunk: forward states are checkpointed every T steps

// Channels per task: a whole group where batch x groups already makes 64 tasks (then the
// task's dB / dC sums are the group's), else the group split so that about 64 tasks exist
// (at least 8 channels each). Depends on the shape only, so the sums are the same at any
// thread count.
int64_t task_channels(int64_t batch, int64_t groups, int64_t dpg) {
  const int64_t want = std::max<int64_t>(1, (64 + batch * groups - 1) / (batch * groups));
  const int64_t splits = std::min(want, (dpg + 7) / 8);
  return (dpg + splits - 1) / splits;
}

// Per-task partial sums, reduced after the parallel loop in a fixed order.
struct Partials {
  int64_t np = 0;                     // the padded state width of dB / dC's rows
  std::vector<float> dB, dC;          // [t][np] for this task's (b, group), its channels summed
  std::vector<double> dA, dD, dbias;  // [c][n], [c], [c] for its channels
};

// One task: channels [d0, d0 + nc) of batch b, all in group grp. Lanes are state elements
// (S::kLanes of them per register, the state padded with zeros to Np, a multiple of it: a
// padded element has A = B = C = 0, so it stays 0 and adds nothing), one channel at a time:
// the recurrence, the decays and the gradient carried backwards are all vertical, and the
// channel sums of dB / dC are vertical adds into [t][n] rows; only du, d dt and y (for dz)
// are sums over the state, three per channel and step.
template <class S>
void bwd_task(const SelectiveScanParams& p, const Strided3<const float>& dyv, const float* dfinal,
              const SelectiveScanGrads& g, int64_t b, int64_t d0, int64_t nc, int64_t grp, Partials& part) {
  using V = typename S::V;
  constexpr int VL = S::kLanes;
  const int64_t N = p.dstate, L = p.seqlen, Np = (N + VL - 1) / VL * VL, nv = Np / VL;
  const int64_t nchunks = (L + T - 1) / T;
  // B, C as [t][n] (zero padded) and the task's dB, dC sums in the same layout.
  std::vector<float> Bs(static_cast<size_t>(L * Np), 0.f), Cs(Bs.size(), 0.f);
  part.np = Np;
  part.dB.assign(Bs.size(), 0.f);
  part.dC.assign(Bs.size(), 0.f);
  float* dBs = part.dB.data();
  float* dCs = part.dC.data();
  const float* Bb = p.B.ptr + b * p.B.s0 + grp * p.B.s1;
  const float* Cb = p.C.ptr + b * p.C.s0 + grp * p.C.s1;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < L; ++t) {
      Bs[t * Np + n] = Bb[n * p.B.s2 + t * p.B.s3];
      Cs[t * Np + n] = Cb[n * p.C.s2 + t * p.C.s3];
    }
  // Per channel: the step's scalars, A (and A log2 e) padded, the checkpoints, one chunk's
  // states [t][n] (Hc[0] = the state entering the chunk) and decays.
  // sraw: softplus'(raw delta) (or 1); zs, zg: silu(z) and silu'(z) (or 1 and 0).
  std::vector<float> dt(static_cast<size_t>(L)), dtu(dt.size()), u(dt.size()), sraw(dt.size()), zs(dt.size()),
      zg(dt.size());
  std::vector<float> Al(static_cast<size_t>(Np)), Al2(Al.size()), h(Al.size()), gv(Al.size()), dAc(Al.size());
  std::vector<float> ckpt(static_cast<size_t>(nchunks * Np)), Hc(static_cast<size_t>((T + 1) * Np)),
      Ac(static_cast<size_t>(T * Np));
  auto decay = [&](int64_t t, int64_t k) { return detail::exp2_vec<S>(S::mul(S::set1(dt[t]), S::load(&Al2[k * VL]))); };
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t d = d0 + c;
    const float Dd = p.D ? p.D[d] : 0.f, bias = p.delta_bias ? p.delta_bias[d] : 0.f;
    // Gathered first (strided loads), then the activations in loops the compiler vectorises.
    for (int64_t t = 0; t < L; ++t) {
      sraw[t] = p.delta.ptr[b * p.delta.s0 + d * p.delta.s1 + t * p.delta.s2] + bias;  // raw delta for now
      u[t] = p.u.ptr[b * p.u.s0 + d * p.u.s1 + t * p.u.s2];
      zs[t] = p.z.ptr ? p.z.ptr[b * p.z.s0 + d * p.z.s1 + t * p.z.s2] : 0.f;        // z for now
    }
    if (p.delta_softplus) {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {
        dt[t] = detail::softplus_fast(sraw[t]);
        sraw[t] = detail::sigmoid_fast(sraw[t]);
      }
    } else {
      for (int64_t t = 0; t < L; ++t) {
        dt[t] = sraw[t];
        sraw[t] = 1.f;
      }
    }
    if (p.z.ptr) {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {
        const float zv = zs[t], sg = detail::sigmoid_fast(zv);
        zs[t] = zv * sg;
        zg[t] = sg * (1.f + zv * (1.f - sg));
      }
    } else {
      std::fill(zs.begin(), zs.end(), 1.f);
      std::fill(zg.begin(), zg.end(), 0.f);
    }
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) dtu[t] = dt[t] * u[t];
    for (int64_t n = 0; n < Np; ++n) {
      const bool live = n < N;
      Al[n] = live ? p.A[d * N + n] : 0.f;
      Al2[n] = Al[n] * detail::kLog2e;
      h[n] = live && p.initial_state ? p.initial_state[(b * p.dim + d) * N + n] : 0.f;
      gv[n] = live && dfinal ? dfinal[(b * p.dim + d) * N + n] : 0.f;
    }
    // Forward replay, checkpointing the state entering each chunk (the last chunk's states
    // are recomputed below from its checkpoint).
    for (int64_t c0 = 0; c0 < nchunks; ++c0) {
      std::copy(h.begin(), h.end(), ckpt.begin() + c0 * Np);
      if (c0 + 1 == nchunks) break;
      for (int64_t t = c0 * T; t < (c0 + 1) * T; ++t)
        for (int64_t k = 0; k < nv; ++k)
          S::store(&h[k * VL], S::fmadd(decay(t, k), S::load(&h[k * VL]), S::mul(S::set1(dtu[t]), S::load(&Bs[t * Np + k * VL]))));
    }
    double dD = 0, dbias = 0;
    for (int64_t c0 = nchunks - 1; c0 >= 0; --c0) {
      const int64_t ts = c0 * T, te = std::min(L, ts + T);
      std::copy(ckpt.begin() + c0 * Np, ckpt.begin() + (c0 + 1) * Np, Hc.begin());
      for (int64_t t = ts; t < te; ++t)
        for (int64_t k = 0; k < nv; ++k) {
          const V a = decay(t, k);
          S::store(&Ac[(t - ts) * Np + k * VL], a);
          S::store(&Hc[(t - ts + 1) * Np + k * VL],
                   S::fmadd(a, S::load(&Hc[(t - ts) * Np + k * VL]), S::mul(S::set1(dtu[t]), S::load(&Bs[t * Np + k * VL]))));
        }
      std::fill(dAc.begin(), dAc.end(), 0.f);
      for (int64_t t = te - 1; t >= ts; --t) {
        const float* H1 = &Hc[(t - ts + 1) * Np];  // h_t
        const float* H0 = &Hc[(t - ts) * Np];      // h_{t-1}
        const float* At = &Ac[(t - ts) * Np];
        const float* Bt = &Bs[t * Np];
        const float* Ct = &Cs[t * Np];
        const float dout = dyv.ptr[b * dyv.s0 + d * dyv.s1 + t * dyv.s2];
        const float dyt = dout * zs[t];
        if (p.z.ptr) {
          V yv = S::zero();
          for (int64_t k = 0; k < nv; ++k) yv = S::fmadd(S::load(H1 + k * VL), S::load(Ct + k * VL), yv);
          g.dz.ptr[b * g.dz.s0 + d * g.dz.s1 + t * g.dz.s2] = dout * (S::hsum(yv) + Dd * u[t]) * zg[t];
        }
        dD += static_cast<double>(dyt) * u[t];
        const V dytv = S::set1(dyt), dtuv = S::set1(dtu[t]), uv = S::set1(u[t]), dtv = S::set1(dt[t]);
        V gB = S::zero(), gdt = S::zero();
        for (int64_t k = 0; k < nv; ++k) {
          const int64_t o = k * VL;
          const V bn = S::load(Bt + o), a = S::load(At + o);
          const V gt = S::fmadd(dytv, S::load(Ct + o), S::load(&gv[o]));
          const V ha = S::mul(S::load(H0 + o), a);
          S::store(&dCs[t * Np + o], S::fmadd(dytv, S::load(H1 + o), S::load(&dCs[t * Np + o])));
          S::store(&dBs[t * Np + o], S::fmadd(gt, dtuv, S::load(&dBs[t * Np + o])));
          gB = S::fmadd(gt, bn, gB);
          gdt = S::fmadd(gt, S::fmadd(ha, S::load(&Al[o]), S::mul(uv, bn)), gdt);
          S::store(&dAc[o], S::fmadd(S::mul(gt, ha), dtv, S::load(&dAc[o])));
          S::store(&gv[o], S::mul(a, gt));
        }
        const float ddelta = S::hsum(gdt) * sraw[t];
        dbias += ddelta;
        g.du.ptr[b * g.du.s0 + d * g.du.s1 + t * g.du.s2] = dyt * Dd + dt[t] * S::hsum(gB);
        g.ddelta.ptr[b * g.ddelta.s0 + d * g.ddelta.s1 + t * g.ddelta.s2] = ddelta;
      }
      for (int64_t n = 0; n < N; ++n) part.dA[c * N + n] += dAc[n];  // the chunk's float sums into the double totals
    }
    part.dD[c] = dD;
    part.dbias[c] = dbias;
    if (g.dinitial_state)
      for (int64_t n = 0; n < N; ++n) g.dinitial_state[(b * p.dim + d) * N + n] = gv[n];
  }
}

template <class S>
void scan_bwd_tasks(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal,
                    const SelectiveScanGrads& g) {
  const int64_t N = p.dstate, L = p.seqlen, G = p.n_groups, dpg = p.dim / G;
  const int64_t tc = task_channels(p.batch, G, dpg), bpg = (dpg + tc - 1) / tc, tasks = p.batch * G * bpg;
  std::vector<Partials> parts(static_cast<size_t>(tasks));
#pragma omp parallel for schedule(dynamic) if (tasks > 1 && p.batch * p.dim * L * N > (1 << 15))
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / (G * bpg), grp = (task / bpg) % G, blk = task % bpg;
    const int64_t d0 = grp * dpg + blk * tc, nc = std::min(tc, (grp + 1) * dpg - d0);
    Partials& pt = parts[static_cast<size_t>(task)];
    pt.dA.assign(static_cast<size_t>(nc * N), 0.0);
    pt.dD.assign(static_cast<size_t>(nc), 0.0);
    pt.dbias.assign(static_cast<size_t>(nc), 0.0);
    bwd_task<S>(p, dy, dfinal, g, b, d0, nc, grp, pt);
  }
  // Reduce the partials in task order (deterministic for any thread count).
  zero4(g.dB, p);
  zero4(g.dC, p);
  std::vector<double> dA(static_cast<size_t>(p.dim * N), 0.0), dD(static_cast<size_t>(p.dim), 0.0),
      dbias(static_cast<size_t>(p.dim), 0.0);
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / (G * bpg), grp = (task / bpg) % G, blk = task % bpg;
    const int64_t d0 = grp * dpg + blk * tc, nc = std::min(tc, (grp + 1) * dpg - d0);
    const Partials& pt = parts[static_cast<size_t>(task)];
    for (int64_t t = 0; t < L; ++t)
      for (int64_t n = 0; n < N; ++n) {
        g.dB.ptr[b * g.dB.s0 + grp * g.dB.s1 + n * g.dB.s2 + t * g.dB.s3] += pt.dB[t * pt.np + n];
        g.dC.ptr[b * g.dC.s0 + grp * g.dC.s1 + n * g.dC.s2 + t * g.dC.s3] += pt.dC[t * pt.np + n];
      }
    for (int64_t c = 0; c < nc; ++c) {
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

}  // namespace

void selective_scan_bwd(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal,
                        const SelectiveScanGrads& g) {
  selective_scan_bwd(p, dy, dfinal, g, cpu_isa_best());
}

void selective_scan_bwd(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal,
                        const SelectiveScanGrads& g, CpuIsa isa) {
  check(p);
  detail::with_isa<detail::Lane1>(isa, "selective_scan_bwd", [&](auto s) { scan_bwd_tasks<decltype(s)>(p, dy, dfinal, g); });
}

}  // namespace mamba::kernels
