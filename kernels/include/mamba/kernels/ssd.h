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

template <class T>
struct SsdParamsT {
  int64_t batch = 0, seqlen = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 1;
  int64_t chunk_size = 256;  // the chunked algorithm's block length; results do not depend on it
  const T* x = nullptr;      int64_t x_sb = 0, x_st = 0, x_sh = 0;
  const T* dt = nullptr;     int64_t dt_sb = 0, dt_st = 0, dt_sh = 0;
  const T* B = nullptr;      int64_t B_sb = 0, B_st = 0, B_sg = 0;
  const T* C = nullptr;      int64_t C_sb = 0, C_st = 0, C_sg = 0;
  const T* A = nullptr;
  const T* D = nullptr;
  const T* dt_bias = nullptr;
  bool dt_softplus = true;
  const T* initial_state = nullptr;
  T* y = nullptr;            int64_t y_sb = 0, y_st = 0, y_sh = 0;
  T* final_state = nullptr;
};
using SsdParams = SsdParamsT<float>;

// The sequential recurrence above, one step at a time (the reference), in f32 or f64.
void ssd_scan_ref(const SsdParams& p);
void ssd_scan_ref(const SsdParamsT<double>& p);

// The chunked SSD algorithm: within each chunk of Q steps, y = (L o C B^T) X as GEMMs
// (L the causal decay mask); chunk states X^T diag(w) B by GEMM; a sequential pass over
// chunks carries the state; the carried state reaches each output by a (C S^T) GEMM.
// OpenMP over (batch, head); C B^T computed once per (batch, chunk, group).
void ssd_chunk_scan(const SsdParams& p);

// Backward of the SSD scan: the gradient of sum(y * dy) + <final_state, dfinal_state> with
// respect to every forward input. With dt'_t = softplus(dt_t + dt_bias) (or dt_t + dt_bias),
// a_t = exp(dt'_t A), and g_t = dL/dS_t (P x N) through the recurrence, walking t backwards:
//   g_t    = dy_t C_t^T + a_{t+1} g_{t+1}           (a_L g_L := dfinal_state, or 0)
//   dC_t  += S_t^T dy_t,     dB_t += dt'_t g_t^T x_t   (summed over the heads of the group)
//   dx_t   = D dy_t + dt'_t g_t B_t
//   d dt'_t = A a_t <g_t, S_{t-1}> + x_t^T g_t B_t,     dA += dt'_t a_t <g_t, S_{t-1}>
//   ddt_t  = d dt'_t * sigmoid(dt_t + dt_bias) (softplus) or d dt'_t,  d dt_bias += ddt_t
//   dD    += <dy_t, x_t>,    d initial_state = a_0 g_0
// The forward inputs come in SsdParams (its y and final_state are not used). dy has y's
// layout [b, t, h, p] (p contiguous) with strides dy_sb, dy_st, dy_sh; dfinal_state is
// (batch, nheads, headdim, dstate) contiguous, optional (null: zero).
// Outputs follow the inputs' layouts: dx [b, t, h, p] (p contiguous), ddt [b, t, h] (the
// gradient of the RAW dt, before dt_bias and softplus), dB and dC [b, t, g, n] (n
// contiguous), dA, dD, ddt_bias (nheads), dinitial_state (batch, nheads, headdim, dstate)
// contiguous. Every output is overwritten (not accumulated); any output pointer may be null
// (that gradient is then not produced). Sums over shared inputs (dB/dC over the heads of a
// group, dA/dD/ddt_bias over batch and time) are reduced in a fixed order, so the result
// does not depend on the thread count.
template <class T>
struct SsdGradsT {
  T* dx = nullptr;  int64_t dx_sb = 0, dx_st = 0, dx_sh = 0;
  T* ddt = nullptr; int64_t ddt_sb = 0, ddt_st = 0, ddt_sh = 0;
  T* dB = nullptr;  int64_t dB_sb = 0, dB_st = 0, dB_sg = 0;
  T* dC = nullptr;  int64_t dC_sb = 0, dC_st = 0, dC_sg = 0;
  T* dA = nullptr;              // (nheads)
  T* dD = nullptr;              // (nheads)
  T* ddt_bias = nullptr;        // (nheads)
  T* dinitial_state = nullptr;  // (batch, nheads, headdim, dstate)
};
using SsdGrads = SsdGradsT<float>;

// Reference: one (batch, head) at a time, every state S_0..S_L kept, std::exp/log1p, the
// per-step sums and the sums over time/heads accumulated in double. The f64 form is what
// the fast f32 backward is checked against.
void ssd_scan_bwd_ref(const SsdParams& p, const float* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                      const float* dfinal_state, const SsdGrads& g);
void ssd_scan_bwd_ref(const SsdParamsT<double>& p, const double* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                      const double* dfinal_state, const SsdGradsT<double>& g);
// Fast path: OpenMP over (batch, head); each task replays the forward keeping a checkpoint
// of the state every 64 steps (P*N floats each), then walks the chunks backwards,
// recomputing a chunk's 64 states from its checkpoint. Per-task partial dB/dC ([t, n] per
// (batch, head)) and dA/dD/ddt_bias are reduced afterwards in head/batch order.
void ssd_scan_bwd(const SsdParams& p, const float* dy, int64_t dy_sb, int64_t dy_st, int64_t dy_sh,
                  const float* dfinal_state, const SsdGrads& g);

// One decoding step (Mamba-2 layout): state updated in place; x, y: [b, h, p] rows with
// stride x_sb/y_sb (h, p contiguous), dt: [b, h] with stride dt_sb, B/C: [b, g, n] with stride
// B_sb/C_sb. Parallel over batch x heads.
void ssd_state_update(const SsdParams& p, float* state);

}  // namespace mamba::kernels
