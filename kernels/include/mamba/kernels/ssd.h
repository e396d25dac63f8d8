// Mamba-2 state space duality (SSD) scan and its one-token state update.
//
// Per head h (group g = h / (nheads / ngroups)), with scalar A[h] < 0:
//   dt'_t = softplus(dt_t + dt_bias[h])        (or dt_t + dt_bias[h])
//   S_t   = exp(dt'_t * A[h]) * S_{t-1} + dt'_t * x_t B_t^T      S: (headdim, dstate)
//   y_t   = S_t C_t + D[h] * x_t
//
// Layouts: x and y are [b, t, h, p] with p contiguous (strides for b, t, h given); dt is
// [b, t, h]; B and C are [b, t, g, n] with n contiguous; A, D, dt_bias are (nheads);
// states are (batch, nheads, headdim, dstate) contiguous. Optional pointers may be null.
#pragma once
#include <cstdint>

namespace mamba::kernels {

struct SsdParams {
  int64_t batch = 0, seqlen = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 1;
  int64_t chunk_size = 256;  // the chunked algorithm's block length; results do not depend on it
  const float* x = nullptr;  int64_t x_sb = 0, x_st = 0, x_sh = 0;
  const float* dt = nullptr; int64_t dt_sb = 0, dt_st = 0, dt_sh = 0;
  const float* B = nullptr;  int64_t B_sb = 0, B_st = 0, B_sg = 0;
  const float* C = nullptr;  int64_t C_sb = 0, C_st = 0, C_sg = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* dt_bias = nullptr;
  bool dt_softplus = true;
  const float* initial_state = nullptr;
  float* y = nullptr;        int64_t y_sb = 0, y_st = 0, y_sh = 0;
  float* final_state = nullptr;
};

// The sequential recurrence above, one step at a time (the reference).
void ssd_scan_ref(const SsdParams& p);

// The chunked SSD algorithm: within each chunk of Q steps, y = (L o C B^T) X as GEMMs
// (L the causal decay mask); chunk states X^T diag(w) B by GEMM; a sequential pass over
// chunks carries the state; the carried state reaches each output by a (C S^T) GEMM.
// OpenMP over (batch, head); C B^T computed once per (batch, chunk, group).
void ssd_chunk_scan(const SsdParams& p);

// One decoding step (Mamba-2 layout): state updated in place; x, y: [b, h, p] rows with
// stride x_sb/y_sb (h, p contiguous), dt: [b, h] with stride dt_sb, B/C: [b, g, n] with stride
// B_sb/C_sb. Parallel over batch x heads.
void ssd_state_update(const SsdParams& p, float* state);

}  // namespace mamba::kernels
