// Mamba-1 selective scan (forward) and the one-token state update on the GPU.
//
// Same mathematics as mamba/kernels/selective_scan.h (the CPU reference is the definition):
//   dt_t = softplus(delta_t + delta_bias)  (or delta_t + delta_bias)
//   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        per channel d and state n
//   y_t  = <h_t, C_t> + D * u_t, then y_t *= silu(z_t) when z is given
//
// All pointers are DEVICE pointers. Element type T of the activations is float or
// __nv_bfloat16; A, D, delta_bias and the states are always f32; arithmetic is f32.
// Launches are asynchronous on `stream`; launch errors throw std::runtime_error (see
// cuda_check.h); the caller owns every buffer and must keep it alive until the stream is done.
// No allocation, no synchronisation. Thread-safe as far as distinct streams/buffers go.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// Layouts (all contiguous, row-major, last index fastest):
//   u, delta, z, y : (batch, dim, seqlen)      z optional (nullptr)
//   B, C           : (batch, n_groups, dstate, seqlen); channel d uses group d / (dim / n_groups)
//   A              : (dim, dstate) f32 (negative for a decaying state)
//   D, delta_bias  : (dim) f32, optional
//   initial_state  : (batch, dim, dstate) f32, optional (zeros when null)
//   final_state    : (batch, dim, dstate) f32, optional (written when non-null)
// Limits: 1 <= dstate <= 256, dim % n_groups == 0, batch <= 65535; seqlen >= 0 (0 writes only
// final_state = initial_state).
template <class T>
struct SelectiveScanCudaParams {
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0, n_groups = 1;
  const T* u = nullptr;
  const T* delta = nullptr;
  const T* z = nullptr;
  const T* B = nullptr;
  const T* C = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  bool delta_softplus = false;
  const float* initial_state = nullptr;
  T* y = nullptr;
  float* final_state = nullptr;
  // Kernel choice, for A/B comparisons (see kernels/cuda/NOTES.md). version: 0 = automatic
  // (v6 for dstate <= 64 since branch scanfwd2, v1 above; env MAMBA_SCAN_VERSION=1|3|6 when
  // set), else 1 (one block per (batch, channel) row: any dstate), 3 (the previous default) or 6;
  // 3 and 6 run v1 for dstate > 64. Any other value throws std::invalid_argument naming the field
  // (versions 2, 4 and 5, measured slower than v6, were removed on branch prune). split: lanes per
  // channel of v3 / v6, 0 = heuristic (env MAMBA_SCAN_SPLIT=1|2|4 when set), else 1, 2 or 4
  // (clamped to what the state count allows).
  int version = 0;
  int split = 0;
  int poly = 0;
  int unroll = 0;
  // version 6 (the automatic choice; kernels/cuda/NOTES.md "Scan forward v6"): v3's layout with
  // 64-byte tiles, 16-byte B / C staging, 8 steps per rolled block, 1 in 8 exponentials on the
  // FMA pipe and MUFU.TANH silu for bf16 (H200, bf16 b8 d3072 l2048 n16: 363 us, v3 379). Its knobs (dstate 16, split 2; 0 = default):
  // tile = 32 | 64 (default) bytes of steps per tile, poly = every 4th / 8th (default) / 16th
  // exponential on the FMA pipe or -1 (none), unroll = 4 | 8 (default) steps per rolled block.
  int tile = 0;
  // v6 measurement variant (dstate 16, split 2, tile 64, unroll 8, poly 8): 1 = softplus with
  // one MUFU (ex2 + a polynomial log1p) instead of two (ex2 + lg2); measured no faster.
  int softplus1 = 0;
  // v6 measurement variant (dstate 16, split 2): 32 = one-warp blocks (no block barrier);
  // measured slower (392 vs 363 us).
  int block = 0;
  // v6 measurement variants of branch scanfwd (dstate 16 at split 2 only; NOTES.md "Scan forward
  // v7"): 1 .. N picks a compiled variant (cheaper FMA-pipe exponential, exponentials one step
  // ahead, other poly shares), 0 = none. Out of range: std::invalid_argument naming opt. With no
  // knob set, f32 at dstate 16 runs variant 16 (P3/16, per-tile tests, one-MUFU softplus: 380 vs
  // 391 us on an H200); bf16 keeps the T64 P1/8 U8 kernel.
  int opt = 0;
  // Backward checkpoints written by the forward (version 6 = 0; dstate <= 16; no cu_seqlens):
  // when non-null, the forward also writes the states the backward's pass A would compute into
  // this buffer, which must be the workspace of the matching selective_scan_bwd_cuda call (at
  // least selective_scan_bwd_cuda_workspace_bytes bytes, same shapes); that call then sets
  // checkpoints_from_forward and skips its pass A. Other versions / shapes: an error naming
  // the field.
  float* bwd_workspace = nullptr;
  // Variable-length packed batch (versions 0 / 3 and 6, dstate <= 64; 1 is refused): when cu_seqlens is non-null, batch
  // must be 1 and the (1, dim, seqlen) / (1, n_groups, dstate, seqlen) tensors hold n_seqs
  // sequences back to back; sequence s is [cu_seqlens[s], cu_seqlens[s + 1]) (DEVICE int32
  // array of n_seqs + 1 non-decreasing offsets, cu_seqlens[n_seqs] <= seqlen; offsets are
  // clamped to [0, seqlen]). The state starts at initial_state[s] (or 0) at every sequence
  // start, and final_state[s] gets its last state: both (n_seqs, dim, dstate). 1 <= n_seqs <= 65535.
  const int* cu_seqlens = nullptr;
  int64_t n_seqs = 0;
  // Sequence split (version 6 = 0, dstate <= 64; kernels/cuda/NOTES.md "Scan forward: sequence
  // split"): each sequence cut into K segments of whole 64-step pieces, scanned concurrently. A
  // first launch scans segments 0 .. K-2 from the zero state (no y) for their end states and
  // sums of dt; the second scans every segment from its exact entering state h_k = h_loc(k-1) +
  // exp(A * sum dt(k-1)) * h_{k-1} (h_0 = initial_state), writing y, the checkpoints and the
  // final state as without the split. Costs ~1.6x the exponentials, so it pays only when the grid
  // leaves most of the GPU idle (small batch x dim). segments: 0 = automatic (K > 1 only when
  // seg_workspace is given and one wave of resident blocks holds at least 4 (bf16) / 6 (f32)
  // copies of the unsplit grid, segments of >= 128 steps; K limited to what seg_workspace_bytes
  // holds; without a split the lane split is chosen as before), 1 = no split, K >= 2 forced (an error naming
  // seg_workspace_bytes when the workspace is smaller than
  // selective_scan_fwd_cuda_seg_workspace_bytes). seg_workspace: device memory, 16-byte aligned,
  // owned by the caller, not shared by calls running at the same time.
  int segments = 0;
  float* seg_workspace = nullptr;
  size_t seg_workspace_bytes = 0;
};

// Bytes of seg_workspace the call p would use (its automatic or forced segment count; 0 when it
// would not split). A device property query, no launch.
template <class T>
size_t selective_scan_fwd_cuda_seg_workspace_bytes(const SelectiveScanCudaParams<T>& p);

// v6 (default) / v3: a block of 128 lanes = 128 / S channels of one group of one batch row,
// S in {1, 2, 4} lanes per channel, each lane walking the whole sequence for its share of the
// states (see kernels/cuda/NOTES.md); v1: one block per (batch, channel) row.
template <class T>
void selective_scan_fwd_cuda(const SelectiveScanCudaParams<T>& p, cudaStream_t stream);

// Backward of selective_scan_fwd_cuda (same inputs and layouts), the semantics of the CPU
// selective_scan_bwd_ref (mamba/kernels/selective_scan.h): given dout, the gradient of y
// (batch, dim, seqlen) as T, and optionally dfinal_state (batch, dim, dstate) f32, writes
//   du, ddelta, dz : (batch, dim, seqlen) as T; ddelta is the gradient of the RAW delta (through
//                    delta_bias and softplus); dz required when z is given, unused otherwise
//   dA             : (dim, dstate) f32 (summed over batch and time)
//   dB, dC         : (batch, n_groups, dstate, seqlen) f32 (summed over the group's channels)
//   dD, ddelta_bias: (dim) f32, optional (written whether or not D / delta_bias were given)
//   dinitial_state : (batch, dim, dstate) f32, optional
// Every output is overwritten. The forward states are recomputed inside (checkpoints every 8
// steps in `workspace`), never stored as a (b, d, l, n) tensor; sums over channels, batch and
// time are taken in a fixed order (per-block partials in the workspace, then a reduction
// kernel), so the result is deterministic. workspace: device memory of at least
// selective_scan_bwd_cuda_workspace_bytes(p) bytes, 256-byte aligned, owned by the caller.
// Limits as the forward (1 <= dstate <= 256; dstate > 16 runs in slices of 16 states).
template <class T>
struct SelectiveScanBwdCudaParams {
  int64_t batch = 0, dim = 0, seqlen = 0, dstate = 0, n_groups = 1;
  // forward inputs
  const T* u = nullptr;
  const T* delta = nullptr;
  const T* z = nullptr;
  const T* B = nullptr;
  const T* C = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  bool delta_softplus = false;
  const float* initial_state = nullptr;
  // incoming gradients
  const T* dout = nullptr;
  const float* dfinal_state = nullptr;
  // outputs
  T* du = nullptr;
  T* ddelta = nullptr;
  T* dz = nullptr;
  float* dA = nullptr;
  float* dB = nullptr;
  float* dC = nullptr;
  float* dD = nullptr;
  float* ddelta_bias = nullptr;
  float* dinitial_state = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Kernel choice for A/B comparisons: 0 = automatic (env MAMBA_SCAN_BWD_VERSION=1|2|4 when set,
  // else 4 for 9 <= dstate <= 16, 2 otherwise), 1 = one thread per channel, 2 = two lanes per channel, 4 = four states x 2 channels
  // per lane (dstate <= 16 only: larger throws std::invalid_argument naming the version; NOTES.md
  // "Scan backward v4"). Any other value throws std::invalid_argument naming the field (v3,
  // measured slower than v2, was removed on branch prune). The workspace size does not depend on
  // the version.
  int version = 0;
  // true: `workspace` already holds the chunk checkpoints, written by a forward call on the same
  // inputs with SelectiveScanCudaParams::bwd_workspace = workspace (dstate <= 16, versions 0 / 2
  // / 4 of the backward); pass A is skipped. Otherwise an error naming the field.
  bool checkpoints_from_forward = false;
  // Version 4's lane layout (0 = automatic, env MAMBA_SCAN_BWD_V4_LAYOUT when set): 1 = 2 channels
  // per lane, 64 channels per block, the dB / dC sums over a warp's channels by shuffles; 2 = 1
  // channel per lane, 32 per block (4 blocks per SM; automatic while its blocks fit one wave:
  // batch x dim <= SMs x 128). NOTES.md "Scan backward v4: lane layouts". Other values throw
  // std::invalid_argument naming the field. The workspace is sized for both layouts.
  int v4_layout = 0;
};

template <class T>
size_t selective_scan_bwd_cuda_workspace_bytes(const SelectiveScanBwdCudaParams<T>& p);

template <class T>
void selective_scan_bwd_cuda(const SelectiveScanBwdCudaParams<T>& p, cudaStream_t stream);

// One decoding step (Mamba-1), batched. state (batch, dim, dstate) f32 is updated in place.
//   x, delta, z, y : [b, d] with row strides x_stride ... (elements); z optional
//   B, C           : [b, g, n] with row strides B_stride, C_stride (elements; each row holds
//                    n_groups * dstate contiguous values)
//   A (dim, dstate), D (dim), delta_bias (dim) f32; D and delta_bias optional.
template <class T>
struct SelectiveStateUpdateCudaParams {
  int64_t batch = 0, dim = 0, dstate = 0, n_groups = 1;
  float* state = nullptr;
  const T* x = nullptr; int64_t x_stride = 0;
  const T* delta = nullptr; int64_t delta_stride = 0;
  const T* z = nullptr; int64_t z_stride = 0;
  const T* B = nullptr; int64_t B_stride = 0;
  const T* C = nullptr; int64_t C_stride = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* delta_bias = nullptr;
  bool delta_softplus = false;
  T* y = nullptr; int64_t y_stride = 0;
};

template <class T>
void selective_state_update_cuda(const SelectiveStateUpdateCudaParams<T>& p, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
