// Tensor-level state space operations: shape checks + adaptation to the kernel
// parameter structs (kernels/include/mamba/kernels/{selective_scan,ssd}.h). CPU.
// Element type: f32 (the other float inputs are converted to f32), or f64 when the first
// input (u / x) is f64: then every input is converted to f64, the plain reference loops
// run whatever `impl` says (there is no fast f64 path), and the results are f64. f64 is
// for gradient checks: the fast f32 backward is checked against the f64 reference.
// Every function throws mamba::Error naming the op, the argument and the shapes.
#pragma once

#include "mamba/tensor/tensor.h"

namespace mamba::ops {

struct ScanResult {
  Tensor y;           // same shape as u (or x)
  Tensor last_state;  // (batch, dim, dstate) for Mamba-1; (batch, nheads, headdim, dstate) for SSD
};

enum class Impl { fast, reference };

// Mamba-1 selective scan in the reference's argument layout:
//   u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d);
//   initial_state: (b, d, n). Optional tensors may be undefined.
ScanResult selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                          const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus,
                          const Tensor& initial_state = {}, Impl impl = Impl::fast);

// Gradients of selective_scan for an upstream gradient dy of its output y (and optionally
// of its last_state). Same argument layout as selective_scan; grads follow the inputs'
// shapes (B/C grads in the shape B/C were given). Undefined where the input was.
struct ScanGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state;
};
ScanGrads selective_scan_backward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                  const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                                  bool delta_softplus, const Tensor& initial_state, const Tensor& dy,
                                  const Tensor& dlast_state = {}, Impl impl = Impl::fast);

// Mamba-2 SSD scan: x (b, l, h, p); dt (b, l, h) raw (dt_bias and softplus applied inside);
// A (h) negative; B, C (b, l, g, n); D (h) optional; dt_bias (h) optional;
// initial_state (b, h, p, n) optional. Impl::reference runs the sequential recurrence,
// Impl::fast the chunked algorithm with `chunk_size`.
ScanResult ssd_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B, const Tensor& C,
                    const Tensor& D, const Tensor& dt_bias, bool dt_softplus, int64_t chunk_size,
                    const Tensor& initial_state = {}, Impl impl = Impl::fast);

// Gradients of ssd_scan for an upstream gradient dy (b, l, h, p) of its output y and
// optionally dlast_state (b, h, p, n) of its last_state. Same arguments as ssd_scan
// (chunk_size is checked but does not change the backward: Impl::fast replays the forward
// with checkpoints every 64 steps, Impl::reference keeps every state). Grads have their
// inputs' shapes: dx (b, l, h, p); ddt (b, l, h), of the RAW dt (through dt_bias and
// softplus); dA (h); dB, dC (b, l, g, n); dD, ddt_bias (h) and dinitial_state (b, h, p, n)
// only where that input was given (undefined otherwise).
struct SsdScanGrads {
  Tensor dx, ddt, dA, dB, dC, dD, ddt_bias, dinitial_state;
};
SsdScanGrads ssd_scan_backward(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B, const Tensor& C,
                               const Tensor& D, const Tensor& dt_bias, bool dt_softplus, int64_t chunk_size,
                               const Tensor& initial_state, const Tensor& dy, const Tensor& dlast_state = {},
                               Impl impl = Impl::fast);

// Depthwise causal conv1d: x (b, l, c), weight (c, k) or (c, 1, k), bias (c) optional -> (b, l, c).
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu, Impl impl = Impl::fast);
// Its backward for an upstream gradient dy (b, l, c) of the output (after the SiLU when
// silu): dx (b, l, c), dweight (weight's shape), dbias (c; undefined without bias).
struct Conv1dGrads {
  Tensor dx, dweight, dbias;
};
Conv1dGrads causal_conv1d_backward(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu,
                                   const Tensor& dy, Impl impl = Impl::fast);

// RMSNorm over the last dim: x (..., d), weight (d).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps, Impl impl = Impl::fast);
// Gated grouped RMSNorm (Mamba-2): x, z (..., d); weight (d); group_size divides d.
Tensor gated_rms_norm(const Tensor& x, const Tensor& z, const Tensor& weight, int64_t group_size, double eps,
                      bool norm_before_gate, Impl impl = Impl::fast);

// Backward of rms_norm / gated_rms_norm for an upstream gradient dy (shape of x): dx and
// dz (shape of x; dz undefined without z) and dweight (d), summed over all rows in a fixed
// order (independent of the thread count).
struct NormGrads {
  Tensor dx, dz, dweight;
};
NormGrads rms_norm_backward(const Tensor& x, const Tensor& weight, double eps, const Tensor& dy,
                            Impl impl = Impl::fast);
NormGrads gated_rms_norm_backward(const Tensor& x, const Tensor& z, const Tensor& weight, int64_t group_size,
                                  double eps, bool norm_before_gate, const Tensor& dy, Impl impl = Impl::fast);

}  // namespace mamba::ops
