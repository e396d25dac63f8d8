// One whole MambaLM decode step (Mamba-1 layers, batch <= 8) as ONE persistent kernel:
// every block stays resident for the step and the phases are separated by a grid-wide barrier
// (an atomic counter in global memory; the launch is cooperative, so all blocks are resident).
//
// Per layer, four phases (the same mathematics and roundings as the fused 4-kernel path of
// mamba1_decode_cuda.h, so the results agree with it to f32 summation order):
//   1. residual add + RMSNorm (every block normalises the rows into shared memory; block 0
//      writes the residual) + in_proj (a warp per output column, 16-byte weight loads, two
//      columns in flight per warp) + the one-token conv update (+ SiLU) of the x half;
//   2. x_proj (n = dt_rank + 2 dstate is small: a block per output column, warps split k);
//   3. dt_proj + softplus + selective state update + D skip + SiLU(z) gate (a thread per channel);
//   4. out_proj (a warp per output column) -> hidden.
// Then the final RMSNorm + LM head (f32 logits). Layer 0 reads its input straight from the
// embedding rows of the token ids. Before each barrier the blocks prefetch the next phase's
// weights into L2 (prefetch.global.L2), so the barrier's latency overlaps memory traffic.
// Activations written inside the kernel are read with ld.global.cg (L2, never a stale L1 line).
//
// All pointers are DEVICE pointers; T = float or __nv_bfloat16; norm weights, conv weights /
// states, A, D, dt bias, ssm states f32. `layers` is a device array of n_layers entries.
// `barrier` is one device unsigned that must be 0 at launch: persistent_decode_cuda zeroes it
// with cudaMemsetAsync on `stream` before the launch (both are captured by a CUDA graph).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

template <class T>
struct PersistentDecodeLayer {
  const float* norm_w = nullptr;      // (d_model)
  const T* w_in = nullptr;            // (2 d_inner, d_model)
  float* conv_state = nullptr;        // (batch, d_inner, d_conv)
  const float* conv_w = nullptr;      // (d_inner, d_conv)
  const float* conv_b = nullptr;      // (d_inner), optional
  const T* w_x = nullptr;             // (dt_rank + 2 dstate, d_inner)
  const T* w_dt = nullptr;            // (d_inner, dt_rank)
  const float* dt_bias = nullptr;     // (d_inner)
  const float* A = nullptr;           // (d_inner, dstate)  (A = -exp(A_log))
  const float* D = nullptr;           // (d_inner), optional
  float* ssm_state = nullptr;         // (batch, d_inner, dstate)
  const T* w_out = nullptr;           // (d_model, d_inner)
  // Version 3 only: x_proj and out_proj transposed (one row per channel, so a channel
  // group's slice is contiguous); fill them once with transpose_rows_cuda.
  const T* w_x_t = nullptr;           // (d_inner, dt_rank + 2 dstate)
  const T* w_out_t = nullptr;         // (d_inner, d_model)
};

template <class T>
struct PersistentDecodeParams {
  int64_t batch = 0, n_layers = 0, d_model = 0, d_inner = 0, d_conv = 4, dstate = 16, dt_rank = 0;
  int64_t vocab_rows = 0;             // rows of the LM head (= logits row length)
  float eps = 1e-5f;
  const int64_t* ids = nullptr;       // (batch), checked in range by the caller
  const T* embedding = nullptr;       // (vocab, d_model)
  const T* head = nullptr;            // (vocab_rows, d_model)
  const float* norm_f_w = nullptr;    // (d_model)
  const PersistentDecodeLayer<T>* layers = nullptr;  // device array (n_layers)
  T* hidden = nullptr;                // (batch, d_model): the mixer output between layers
  float* residual[2] = {nullptr, nullptr};  // (batch, d_model) each, ping-pong
  T* xz = nullptr;                    // (batch, 2 d_inner)
  T* xc = nullptr;                    // (batch, d_inner)
  T* xdbl = nullptr;                  // (batch, dt_rank + 2 dstate)
  T* y = nullptr;                     // (batch, d_inner)
  float* logits = nullptr;            // (batch, vocab_rows)
  unsigned* barrier = nullptr;        // one counter, zeroed before every launch
  bool prefetch = true;               // L2 prefetch of the next phase's weights
  bool p3_smem = false;               // phase 3 with xdbl in shared memory + vector loads (dt_rank % 8, dstate % 4)
  // 2: the four-phase kernel above (batch <= 8). 3: two grid-wide barriers per layer (below).
  // (4, version 3 with tuning knobs, measured slower at every setting and was removed.)
  int version = 2;
  // Version 3: f32 workspace of persistent_decode_workspace_floats() floats (zeroed with the
  // barrier by persistent_decode_cuda before every launch); stages of the per-layer weight
  // ring in shared memory (0 = as many as fit, at most 3; MAMBA_DECODE_STAGES overrides).
  float* work = nullptr;
  int stages = 0;
  // Optional timing: when non-null, thread 0 of every block writes %globaltimer (ns) when
  // it arrives at and leaves each grid barrier: stamps[(e * grid + block) * 2 + {0, 1}] for
  // barrier e = 1 .. (phases per layer) * n_layers, and e = 0: {kernel start, kernel end}.
  unsigned long long* stamps = nullptr;
};

// Version 3 ("two barriers per layer"): one block per SM (512 threads); block j owns the
// channels [j cpb, (j + 1) cpb) of d_inner (cpb = ceil(d_inner / grid)) for BOTH halves of
// in_proj, the conv, the state update and the gate, so only two reductions per layer cross
// blocks: x_proj (each block adds its channels' partial sums of the dt_rank + 2 dstate outputs
// into an f32 accumulator with atomics) and out_proj (partial sums of the d_model outputs,
// float4 atomics). Per layer:
//   A: every block: v = round_T(hidden sums) + residual (the residual stays in shared
//      memory), RMSNorm, its 2 cpb in_proj columns, conv update + SiLU, x_proj partials;
//      grid barrier;
//   B: dt_proj + softplus + state update + D + SiLU(z) gate of its channels, out_proj
//      partials; grid barrier.
// A block's weights and states for a layer (in_proj rows, out_proj / x_proj columns, dt_proj
// rows, A, conv, D, dt bias, norm weight, conv and ssm states: ~63 KB at d_model 768, batch 1)
// are copied into a ring of shared-memory stages with cp.async, `stages` layers ahead, so
// weight reads overlap the barriers. The barrier: one counter, red.release + ld.acquire spin.
// Roundings as version 2 (normed, xz, xc, xdbl, dt, y, hidden rounded to T); sums in another
// order (atomics), so not bitwise reproducible. Limits: 1 <= batch <= 16.
template <class T>
int64_t persistent_decode_workspace_floats(int64_t batch, int64_t d_model, int64_t dt_rank, int64_t dstate);

// Grid for `p`'s version and shape (reads batch, d_model, d_inner, d_conv, dstate, dt_rank,
// version, stages); 0 when the device or the shape does not allow it.
template <class T>
int persistent_decode_grid_for(const PersistentDecodeParams<T>& p, int blocks_per_sm = 0);

// out (cols, rows) = in (rows, cols) transposed, row-major, on `stream`.
template <class T>
void transpose_rows_cuda(const T* in, int64_t rows, int64_t cols, T* out, cudaStream_t stream);

// The grid the kernel will use (blocks = SMs x min(resident blocks per SM, blocks_per_sm)),
// 0 when the shape or the device does not allow it (no cooperative launch, too much shared
// memory). blocks_per_sm <= 0: the default (2, or MAMBA_DECODE_BLOCKS_PER_SM).
template <class T>
int persistent_decode_grid(int64_t batch, int64_t d_model, int64_t d_inner, int64_t d_conv, int blocks_per_sm = 0);

// Runs p.version (2 or 3). Limits (std::invalid_argument naming the field): 1 <= batch <= 8 (16 for version 3), d_conv 1..4, dstate 1..256,
// dt_rank >= 1, a grid from persistent_decode_grid > 0.
template <class T>
void persistent_decode_cuda(const PersistentDecodeParams<T>& p, int grid_blocks, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
