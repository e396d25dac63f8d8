#include "mamba/kernels/selective_scan.h"

#include "mamba/kernels/cpu_isa.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "vec_math.h"

namespace mamba::kernels {

namespace {

template <class T>
void check_params(const SelectiveScanParamsT<T>& p) {
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0) throw std::invalid_argument("selective_scan: dim must be a multiple of n_groups");
}

// The plain recurrence in the element type T.
template <class T>
void scan_ref(const SelectiveScanParamsT<T>& p) {
  check_params(p);
  const int64_t dpg = p.dim / p.n_groups;
  std::vector<T> h(static_cast<size_t>(p.dstate));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t d = 0; d < p.dim; ++d) {
      const int64_t g = d / dpg;
      for (int64_t n = 0; n < p.dstate; ++n)
        h[n] = p.initial_state ? p.initial_state[(b * p.dim + d) * p.dstate + n] : T(0);
      for (int64_t t = 0; t < p.seqlen; ++t) {
        const T u = p.u.ptr[b * p.u.s0 + d * p.u.s1 + t * p.u.s2];
        T dt = p.delta.ptr[b * p.delta.s0 + d * p.delta.s1 + t * p.delta.s2];
        if (p.delta_bias) dt += p.delta_bias[d];
        if (p.delta_softplus) dt = softplus_ref(dt);
        T y = 0;
        for (int64_t n = 0; n < p.dstate; ++n) {
          const T Bv = p.B.ptr[b * p.B.s0 + g * p.B.s1 + n * p.B.s2 + t * p.B.s3];
          const T Cv = p.C.ptr[b * p.C.s0 + g * p.C.s1 + n * p.C.s2 + t * p.C.s3];
          h[n] = std::exp(dt * p.A[d * p.dstate + n]) * h[n] + dt * Bv * u;
          y += h[n] * Cv;
        }
        if (p.D) y += p.D[d] * u;
        if (p.z.ptr) y *= silu_ref(p.z.ptr[b * p.z.s0 + d * p.z.s1 + t * p.z.s2]);
        p.y.ptr[b * p.y.s0 + d * p.y.s1 + t * p.y.s2] = y;
      }
      if (p.final_state)
        for (int64_t n = 0; n < p.dstate; ++n) p.final_state[(b * p.dim + d) * p.dstate + n] = h[n];
    }
  }
}

}  // namespace

void selective_scan_ref(const SelectiveScanParams& p) { scan_ref(p); }
void selective_scan_ref(const SelectiveScanParamsT<double>& p) { scan_ref(p); }

namespace {

// The vector paths (chosen at run time, cpu_isa.h): a block of channels is the lanes of one
// register, W = S::kLanes; the scalar path (S = Scalar) runs the same recurrence in blocks of
// 8 channels as plain loops (which the compiler may vectorise for the build's target).
struct Scalar {
  static constexpr int kLanes = 8;
};
constexpr int64_t T = 64;   // timesteps per chunk (staging buffers stay in L1)

// One block of up to W channels [d0, d0 + nc) of batch b, all in group g.
template <class S>
void scan_block(const SelectiveScanParams& p, int64_t b, int64_t d0, int nc, int64_t g, float* scratch) {
  constexpr int W = S::kLanes;
  const int64_t N = p.dstate;
  // scratch layout: h[N][W] | Al2[N][W] | dt[T][W] | du[T][W] | ub[T][W] | zb[T][W] | yb[T][W] | Bc[T][N] | Cc[T][N]
  float* h = scratch;
  float* Al2 = h + N * W;
  float* dtb = Al2 + N * W;
  float* dub = dtb + T * W;
  float* ub = dub + T * W;
  float* zb = ub + T * W;
  float* yb = zb + T * W;
  float* Bc = yb + T * W;
  float* Cc = Bc + T * N;

  for (int64_t n = 0; n < N; ++n)
    for (int c = 0; c < W; ++c) {
      const bool live = c < nc;
      Al2[n * W + c] = live ? p.A[(d0 + c) * N + n] * detail::kLog2e : 0.f;
      h[n * W + c] = live && p.initial_state ? p.initial_state[(b * p.dim + d0 + c) * N + n] : 0.f;
    }
  float Dv[W], bias[W];
  for (int c = 0; c < W; ++c) {
    Dv[c] = c < nc && p.D ? p.D[d0 + c] : 0.f;
    bias[c] = c < nc && p.delta_bias ? p.delta_bias[d0 + c] : 0.f;
  }

  const float* Bbase = p.B.ptr + b * p.B.s0 + g * p.B.s1;
  const float* Cbase = p.C.ptr + b * p.C.s0 + g * p.C.s1;
  for (int64_t t0 = 0; t0 < p.seqlen; t0 += T) {
    const int64_t tc = std::min(T, p.seqlen - t0);
    // Stage B and C as [t][n] (contiguous in n).
    if (p.B.s2 == 1 && p.C.s2 == 1) {  // (b, l, g, n) memory: rows already contiguous in n
      for (int64_t t = 0; t < tc; ++t) {
        const float* Br = Bbase + (t0 + t) * p.B.s3;
        const float* Cr = Cbase + (t0 + t) * p.C.s3;
        for (int64_t n = 0; n < N; ++n) {
          Bc[t * N + n] = Br[n];
          Cc[t * N + n] = Cr[n];
        }
      }
    } else {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t t = 0; t < tc; ++t) {
          Bc[t * N + n] = Bbase[n * p.B.s2 + (t0 + t) * p.B.s3];
          Cc[t * N + n] = Cbase[n * p.C.s2 + (t0 + t) * p.C.s3];
        }
    }
    // Stage u, delta + bias and z as [t][lane]; dead lanes read as zero.
    const float* up = p.u.ptr + b * p.u.s0 + d0 * p.u.s1 + t0 * p.u.s2;
    const float* dp = p.delta.ptr + b * p.delta.s0 + d0 * p.delta.s1 + t0 * p.delta.s2;
    const float* zp = p.z.ptr ? p.z.ptr + b * p.z.s0 + d0 * p.z.s1 + t0 * p.z.s2 : nullptr;
    const int64_t us1 = p.u.s1, us2 = p.u.s2, ds1 = p.delta.s1, ds2 = p.delta.s2, zs1 = p.z.s1, zs2 = p.z.s2;
    if (nc == W && us1 == 1 && ds1 == 1 && (!zp || zs1 == 1)) {  // channels contiguous: (b, l, d) memory
      for (int64_t t = 0; t < tc; ++t)
        for (int c = 0; c < W; ++c) {
          ub[t * W + c] = up[t * us2 + c];
          dtb[t * W + c] = dp[t * ds2 + c] + bias[c];
          zb[t * W + c] = zp ? zp[t * zs2 + c] : 0.f;
        }
    } else {
      for (int c = 0; c < W; ++c)
        for (int64_t t = 0; t < tc; ++t) {
          const bool live = c < nc;
          ub[t * W + c] = live ? up[c * us1 + t * us2] : 0.f;
          dtb[t * W + c] = live ? dp[c * ds1 + t * ds2] + bias[c] : 0.f;
          zb[t * W + c] = live && zp ? zp[c * zs1 + t * zs2] : 0.f;
        }
    }
    const int64_t m = tc * W;
    if (p.delta_softplus) {
#pragma omp simd
      for (int64_t i = 0; i < m; ++i) dtb[i] = detail::softplus_fast(dtb[i]);
    }
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) dub[i] = dtb[i] * ub[i];
    // The recurrence: lanes are channels, so every operation below is vertical.
    if constexpr (std::is_same_v<S, Scalar>) {
      for (int64_t t = 0; t < tc; ++t) {
        const float* dtt = dtb + t * W;
        const float* dut = dub + t * W;
        const float* Bt = Bc + t * N;
        const float* Ct = Cc + t * N;
        float y[W] = {};
        for (int64_t n = 0; n < N; ++n) {
          float* hn = h + n * W;
          const float* an = Al2 + n * W;
          const float bn = Bt[n], cn = Ct[n];
          for (int c = 0; c < W; ++c) {
            hn[c] = detail::exp2_fast(dtt[c] * an[c]) * hn[c] + dut[c] * bn;
            y[c] += hn[c] * cn;
          }
        }
        for (int c = 0; c < W; ++c) yb[t * W + c] = y[c] + Dv[c] * ub[t * W + c];
      }
    } else {
      using V = typename S::V;
      const V Dvv = S::load(Dv);
      for (int64_t t = 0; t < tc; ++t) {
        const V dtv = S::load(dtb + t * W), duv = S::load(dub + t * W);
        const float* Bt = Bc + t * N;
        const float* Ct = Cc + t * N;
        V yv = S::zero();
        for (int64_t n = 0; n < N; ++n) {
          const V dA = detail::exp2_vec<S>(S::mul(dtv, S::load(Al2 + n * W)));
          const V hn = S::fmadd(dA, S::load(h + n * W), S::mul(duv, S::set1(Bt[n])));
          S::store(h + n * W, hn);
          yv = S::fmadd(hn, S::set1(Ct[n]), yv);
        }
        S::store(yb + t * W, S::fmadd(Dvv, S::load(ub + t * W), yv));
      }
    }
    if (p.z.ptr) {
#pragma omp simd
      for (int64_t i = 0; i < m; ++i) yb[i] *= detail::silu_fast(zb[i]);
    }
    float* yp = p.y.ptr + b * p.y.s0 + d0 * p.y.s1 + t0 * p.y.s2;
    const int64_t ys1 = p.y.s1, ys2 = p.y.s2;
    if (nc == W && ys1 == 1) {
      for (int64_t t = 0; t < tc; ++t)
        for (int c = 0; c < W; ++c) yp[t * ys2 + c] = yb[t * W + c];
    } else {
      for (int c = 0; c < nc; ++c)
        for (int64_t t = 0; t < tc; ++t) yp[c * ys1 + t * ys2] = yb[t * W + c];
    }
  }
  if (p.final_state)
    for (int c = 0; c < nc; ++c)
      for (int64_t n = 0; n < N; ++n) p.final_state[(b * p.dim + d0 + c) * N + n] = h[n * W + c];
}

template <class S>
void scan_blocks(const SelectiveScanParams& p) {
  constexpr int W = S::kLanes;
  const int64_t dpg = p.dim / p.n_groups;
  const int64_t blocks_per_group = (dpg + W - 1) / W;
  const int64_t tasks = p.batch * p.n_groups * blocks_per_group;
  const size_t scratch_floats = static_cast<size_t>(2 * p.dstate * W + 5 * T * W + 2 * T * p.dstate);
  // Small problems stay on one thread: waking a team costs more than the work.
  const bool parallel = tasks > 1 && p.batch * p.dim * p.seqlen * p.dstate > (1 << 16);
#pragma omp parallel if (parallel)
  {
    std::vector<float> scratch(scratch_floats);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (p.n_groups * blocks_per_group);
      const int64_t rem = task % (p.n_groups * blocks_per_group);
      const int64_t g = rem / blocks_per_group;
      const int64_t blk = rem % blocks_per_group;
      const int64_t d0 = g * dpg + blk * W;
      const int nc = static_cast<int>(std::min<int64_t>(W, (g + 1) * dpg - d0));
      scan_block<S>(p, b, d0, nc, g, scratch.data());
    }
  }
}

}  // namespace

void selective_scan(const SelectiveScanParams& p) { selective_scan(p, cpu_isa_best()); }

void selective_scan(const SelectiveScanParams& p, CpuIsa isa) {
  check_params(p);
  detail::with_isa<Scalar>(isa, "selective_scan", [&](auto s) { scan_blocks<decltype(s)>(p); });
}

void selective_state_update(const SelectiveStateUpdateParams& p) {
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_state_update: dim must be a multiple of n_groups");
  const int64_t dpg = p.dim / p.n_groups, N = p.dstate;
#pragma omp parallel for collapse(2) schedule(static) if (p.batch * p.dim * N > 32768)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t d = 0; d < p.dim; ++d) {
      const int64_t g = d / dpg;
      const float x = p.x[b * p.x_stride + d];
      float dt = p.delta[b * p.delta_stride + d] + (p.delta_bias ? p.delta_bias[d] : 0.f);
      if (p.delta_softplus) dt = detail::softplus_fast(dt);
      const float* Bv = p.B + b * p.B_stride + g * N;
      const float* Cv = p.C + b * p.C_stride + g * N;
      const float* A = p.A + d * N;
      float* h = p.state + (b * p.dim + d) * N;
      const float dtx = dt * x;
      float y = 0.f;
#pragma omp simd reduction(+ : y)
      for (int64_t n = 0; n < N; ++n) {
        h[n] = detail::exp_fast(dt * A[n]) * h[n] + dtx * Bv[n];
        y += h[n] * Cv[n];
      }
      y += (p.D ? p.D[d] : 0.f) * x;
      if (p.z) y *= detail::silu_fast(p.z[b * p.z_stride + d]);
      p.y[b * p.y_stride + d] = y;
    }
}

}  // namespace mamba::kernels
