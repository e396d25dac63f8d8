// Mamba-2 SSD scan (state space duality) on the GPU: forward and backward.
//
// Same mathematics as mamba/kernels/ssd.h (the CPU reference is the definition), per head h of
// group g = h / (nheads / ngroups), scalar A[h] < 0:
//   dt'_t = softplus(dt_t + dt_bias[h])   (or dt_t + dt_bias[h])
//   S_t   = exp(dt'_t A[h]) S_{t-1} + dt'_t x_t B_t^T        S: (headdim, dstate), f32
//   y_t   = S_t C_t + D[h] x_t, then y_t *= silu(z_t) when z is given
//
// All pointers are DEVICE pointers. Activations (x, dt, B, C, z, y and their gradients) are of
// element type T, float or __nv_bfloat16; A, D, dt_bias and the states are always f32;
// accumulation is f32. Launches are asynchronous on `stream`; launch errors and bad shapes
// throw (std::runtime_error / std::invalid_argument, naming the field and the limit). The
// caller owns every buffer and keeps it alive until the stream is done. No allocation, no
// synchronisation. Thread-safe as far as distinct streams and buffers go.
//
// Layouts (strides in elements, the innermost dimension contiguous):
//   x, z, y : [b, t, h, p]  strides x_sb, x_st, x_sh (p contiguous); z optional (nullptr)
//   dt      : [b, t, h]     strides dt_sb, dt_st, dt_sh
//   B, C    : [b, t, g, n]  strides B_sb, B_st, B_sg (n contiguous)
//   A, D, dt_bias : (nheads) f32; D and dt_bias optional
//   initial_state, final_state : (batch, nheads, headdim, dstate) f32 contiguous, optional
// Limits: batch, nheads >= 1 (batch * nheads <= 2^31 - 1), nheads % ngroups == 0, seqlen >= 0,
// 1 <= headdim <= 128, 1 <= dstate <= 256.
//
// Kernels (kernels/cuda/NOTES.md, section "ssd.cu"):
//  - tensor cores (bf16 only): one thread block of 4 warps per (batch, head) walks the sequence
//    in chunks of 64 steps, the chunk state (headdim x dstate, f32) in registers; per chunk the
//    intra-chunk part (C B^T masked by the decay segment sums, times dt, times x) flash-attention
//    style with mma.sync m16n8k16, the carried state's contribution C S^T, and the state update
//    X^T diag(w) B, all without a pass over memory between the stages: x, B, C, dt read once,
//    y written once. Taken when T is bf16, headdim == 64, dstate in {16, 32, 64, 128}, and the
//    rows of x, B, C (and z, y) start on 16-byte boundaries (strides multiples of 8 elements).
//    The state entering the C S^T product is rounded to bf16 (as the reference Triton kernels
//    do); the carried state itself stays f32.
//  - sequential (any T and shape in the limits): one block per (batch, head), the recurrence
//    step by step in f32 on the CUDA cores; the fallback, and the f32 path.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mamba::kernels::cuda {

template <class T>
struct SsdCudaParams {
  int64_t batch = 0, seqlen = 0, nheads = 0, headdim = 0, dstate = 0, ngroups = 1;
  const T* x = nullptr;  int64_t x_sb = 0, x_st = 0, x_sh = 0;
  const T* dt = nullptr; int64_t dt_sb = 0, dt_st = 0, dt_sh = 0;
  const T* B = nullptr;  int64_t B_sb = 0, B_st = 0, B_sg = 0;
  const T* C = nullptr;  int64_t C_sb = 0, C_st = 0, C_sg = 0;
  const float* A = nullptr;
  const float* D = nullptr;
  const float* dt_bias = nullptr;
  bool dt_softplus = true;
  const T* z = nullptr;  int64_t z_sb = 0, z_st = 0, z_sh = 0;
  const float* initial_state = nullptr;
  T* y = nullptr;        int64_t y_sb = 0, y_st = 0, y_sh = 0;
  float* final_state = nullptr;
  // Kernel choice: 0 = automatic (v20 where the shape fits it, else 1; env MAMBA_SSD_VERSION=1
  // forces 1), 1 = sequential, 20 = tensor cores (kernels/cuda/NOTES.md, "SSD forward v6-v23":
  // v2 with a y / z tile and the next chunk's dt', cs, w computed during the current chunk; 20
  // falls back to 1 when the shape does not fit it). Any other value throws
  // std::invalid_argument: the slower versions 2-19 and 21-23 were removed (branch prune).
  int version = 0;
};

// Which kernel ssd_chunk_scan_cuda runs for p: 1 or 20 (see version above).
template <class T>
int ssd_cuda_kernel_version(const SsdCudaParams<T>& p);

template <class T>
void ssd_chunk_scan_cuda(const SsdCudaParams<T>& p, cudaStream_t stream);

// Backward of ssd_chunk_scan_cuda: the gradient of sum(out * dout) + <final_state, dfinal_state>
// (out = y, gated by silu(z) when z is given) with respect to every forward input, the semantics
// of the CPU ssd_scan_bwd_ref (mamba/kernels/ssd.h) plus the gate:
//   dz = dout * y_pre * silu'(z),  dy = dout * silu(z)   (y_pre: y before the gate)
// Inputs: `fwd` (the forward's inputs; its y and final_state are not used), dout with y's
// layout (strides dout_sb, dout_st, dout_sh), dfinal_state (batch, nheads, headdim, dstate) f32,
// optional. Outputs (every one overwritten; all required but dz, dinitial_state):
//   dx     : [b, t, h, p] T, strides dx_sb, dx_st, dx_sh (p contiguous)
//   ddt    : [b, t, h] T, strides ddt_sb, ddt_st, ddt_sh: the gradient of the RAW dt
//   dB, dC : [b, t, g, n] f32, contiguous (summed over the heads of the group)
//   dz     : z's layout, strides dz_sb, dz_st, dz_sh; required when z is given
//   dA, dD, ddt_bias : (nheads) f32 (summed over batch and time)
//   dinitial_state   : (batch, nheads, headdim, dstate) f32, optional
// Kernel: tensor cores only (bf16, headdim 64, dstate in {16, 32, 64, 128}, rows on 16-byte
// boundaries); other shapes and f32 throw std::invalid_argument. One block of 4 warps per
// (batch, head): a forward pass over the chunks stores each chunk's entering state (bf16) in the
// workspace, then the chunks are walked backwards carrying dL/dS (f32, registers); per chunk the
// intra-chunk products (C B^T, dy x^T masked by the decay) and the state products on mma.sync.
// dB and dC are summed over heads with f32 atomics (their order, hence the last bits, may vary
// between runs); dA, dD, ddt_bias are reduced in a fixed order.
// workspace: device memory of at least ssd_chunk_scan_bwd_cuda_workspace_bytes(p) bytes,
// 256-byte aligned, owned by the caller.
template <class T>
struct SsdBwdCudaParams {
  SsdCudaParams<T> fwd;
  const T* dout = nullptr; int64_t dout_sb = 0, dout_st = 0, dout_sh = 0;
  const float* dfinal_state = nullptr;
  T* dx = nullptr;  int64_t dx_sb = 0, dx_st = 0, dx_sh = 0;
  T* ddt = nullptr; int64_t ddt_sb = 0, ddt_st = 0, ddt_sh = 0;
  float* dB = nullptr;
  float* dC = nullptr;
  T* dz = nullptr;  int64_t dz_sb = 0, dz_st = 0, dz_sh = 0;
  float* dA = nullptr;
  float* dD = nullptr;
  float* ddt_bias = nullptr;
  float* dinitial_state = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

template <class T>
size_t ssd_chunk_scan_bwd_cuda_workspace_bytes(const SsdBwdCudaParams<T>& p);

template <class T>
void ssd_chunk_scan_bwd_cuda(const SsdBwdCudaParams<T>& p, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
