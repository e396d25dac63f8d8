// Mamba-1 selective scan and its one-token state update.
//
//   delta'_t = softplus(delta_t + delta_bias)        (or delta_t + delta_bias)
//   h_t      = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t   (per channel d, state n)
//   y_t      = <h_t, C_t> + D * u_t,   then y_t *= silu(z_t) when z is given
//
// Shapes (element strides given explicitly so callers can pass (b, l, d) views without
// transposing): u, delta, z, y are indexed [b, d, t]; B and C are indexed [b, g, n, t] with
// channel d using group d / (dim / n_groups); A is (dim, dstate) contiguous; D and
// delta_bias are (dim); initial_state and final_state are (batch, dim, dstate) contiguous.
// Optional pointers may be null. Memory is on the CPU: f32 for the fast path; the plain
// references also run in f64 (SelectiveScanParamsT<double>, for gradient checks).
#pragma once
#include <cstdint>

#include "mamba/kernels/cpu_isa.h"

namespace mamba::kernels {

template <class T>
struct Strided3 {  // element [i, j, k] at ptr[i * s0 + j * s1 + k * s2]
  T* ptr = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
};

template <class T>
struct Strided4 {  // element [i, j, k, m] at ptr[i * s0 + j * s1 + k * s2 + m * s3]
  T* ptr = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
};

template <class T>
struct SelectiveScanParamsT {
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0, n_groups = 1;
  Strided3<const T> u, delta, z;         // [b, d, t]; z optional
  Strided4<const T> B, C;                // [b, g, n, t]
  const T* A = nullptr;                  // (dim, dstate)
  const T* D = nullptr;                  // (dim), optional
  const T* delta_bias = nullptr;         // (dim), optional
  bool delta_softplus = false;
  const T* initial_state = nullptr;      // (batch, dim, dstate), optional (zeros)
  Strided3<T> y;                         // [b, d, t]
  T* final_state = nullptr;              // (batch, dim, dstate), optional
};
using SelectiveScanParams = SelectiveScanParamsT<float>;

// Plain reference: one channel at a time, std::exp, the arithmetic as written in the
// element type (f32, or f64 for gradient checks).
void selective_scan_ref(const SelectiveScanParams& p);
void selective_scan_ref(const SelectiveScanParamsT<double>& p);
// Fast path: OpenMP over (batch, blocks of 16 channels with AVX-512, 8 otherwise); the
// channels of a block are the vector lanes, so the recurrence and <h, C> are vertical
// FMAs; exp(delta * A) by a polynomial in the same lanes. Each channel's result is
// independent of the thread count and of the block width. The path is chosen at run time
// (cpu_isa_best()); the overload with `isa` runs the one named (tests and benchmarks of the
// fallbacks; std::invalid_argument when !cpu_isa_available(isa)).
void selective_scan(const SelectiveScanParams& p);
void selective_scan(const SelectiveScanParams& p, CpuIsa isa);

// Backward of selective_scan: given dy (the gradient of the gated output y, indexed
// [b, d, t] like y) and optionally d final_state, writes the gradient of every input.
// The forward states are recomputed inside (from checkpoints every 64 steps in the fast
// path), never stored as a (b, d, l, n) tensor. Every output is overwritten (not
// accumulated); optional outputs may be null. dB and dC have B's and C's layout
// [b, g, n, t]; their sums over the channels of a group are taken in a fixed order, so
// the result does not depend on the thread count.
template <class T>
struct SelectiveScanGradsT {
  Strided3<T> du, ddelta, dz;            // [b, d, t]; dz only when the forward had z
  Strided4<T> dB, dC;                    // [b, g, n, t]
  T* dA = nullptr;                       // (dim, dstate)
  T* dD = nullptr;                       // (dim), optional
  T* ddelta_bias = nullptr;              // (dim), optional
  T* dinitial_state = nullptr;           // (batch, dim, dstate), optional
};
using SelectiveScanGrads = SelectiveScanGradsT<float>;
// The reference keeps every state; its f64 form is what the fast f32 backward is checked
// against (and what f64 finite differences check).
void selective_scan_bwd_ref(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal_state,
                            const SelectiveScanGrads& g);
void selective_scan_bwd_ref(const SelectiveScanParamsT<double>& p, Strided3<const double> dy,
                            const double* dfinal_state, const SelectiveScanGradsT<double>& g);
void selective_scan_bwd(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal_state,
                        const SelectiveScanGrads& g);  // the run-time choice of cpu_isa_best()
void selective_scan_bwd(const SelectiveScanParams& p, Strided3<const float> dy, const float* dfinal_state,
                        const SelectiveScanGrads& g, CpuIsa isa);  // isa must be available

// One decoding step, Mamba-1 layout. state (batch, dim, dstate) is updated in place.
// x, delta, z, y: [b, d] with row stride given; B, C: [b, g, n] contiguous rows of
// n_groups * dstate. Parallel over batch x channels.
struct SelectiveStateUpdateParams {
  int64_t batch = 0, dim = 0, dstate = 0, n_groups = 1;
  float* state = nullptr;
  const float* x = nullptr; int64_t x_stride = 0;
  const float* delta = nullptr; int64_t delta_stride = 0;
  const float* z = nullptr; int64_t z_stride = 0;
  const float* B = nullptr; int64_t B_stride = 0;
  const float* C = nullptr; int64_t C_stride = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  bool delta_softplus = false;
  float* y = nullptr; int64_t y_stride = 0;
};
void selective_state_update(const SelectiveStateUpdateParams& p);

// Scalar helpers shared by the Mamba kernels (PyTorch semantics: softplus is linear above 20).
inline float softplus_scalar(float x);
inline float silu_scalar(float x);

}  // namespace mamba::kernels

#include <cmath>
namespace mamba::kernels {
inline float softplus_scalar(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }
inline float silu_scalar(float x) { return x / (1.f + std::exp(-x)); }
// The same in the element type of the references (identical to the above for float).
template <class T> inline T softplus_ref(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <class T> inline T silu_ref(T x) { return x / (T(1) + std::exp(-x)); }
template <class T> inline T sigmoid_ref(T x) { return T(1) / (T(1) + std::exp(-x)); }
}  // namespace mamba::kernels
