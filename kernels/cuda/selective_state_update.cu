// Mamba-1 decode step on the GPU: one thread per (b, d) row, the dstate loop in the thread
// (state row of dstate f32 read and written once). Blocks of 128 threads cover 128
// consecutive channels of one batch row, so x/dt/z/y accesses are contiguous and B/C rows
// (shared by the channels of a group) come from L1.
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#include <stdexcept>

#include "device_common.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kThreads = 128;

template <class T>
__global__ void __launch_bounds__(kThreads) selective_state_update_kernel(SelectiveStateUpdateCudaParams<T> p) {
  const int64_t d = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (d >= p.dim) return;
  const int64_t b = blockIdx.y, N = p.dstate;
  const int64_t g = d / (p.dim / p.n_groups);
  const float x = dev::to_f32(p.x[b * p.x_stride + d]);
  float dt = dev::to_f32(p.delta[b * p.delta_stride + d]) + (p.delta_bias ? p.delta_bias[d] : 0.f);
  if (p.delta_softplus) dt = dev::softplus(dt);
  const T* Bv = p.B + b * p.B_stride + g * N;
  const T* Cv = p.C + b * p.C_stride + g * N;
  const float* A = p.A + d * N;
  float* h = p.state + (b * p.dim + d) * N;
  const float dtx = dt * x, dt2 = dt * dev::kLog2e;
  float y = 0.f;
#pragma unroll 4
  for (int64_t n = 0; n < N; ++n) {
    const float hn = exp2f(dt2 * A[n]) * h[n] + dtx * dev::to_f32(Bv[n]);
    h[n] = hn;
    y += hn * dev::to_f32(Cv[n]);
  }
  if (p.D) y += p.D[d] * x;
  if (p.z) y *= dev::silu(dev::to_f32(p.z[b * p.z_stride + d]));
  p.y[b * p.y_stride + d] = dev::from_f32<T>(y);
}

}  // namespace

template <class T>
void selective_state_update_cuda(const SelectiveStateUpdateCudaParams<T>& p, cudaStream_t stream) {
  if (p.batch < 0 || p.dim < 0 || p.dstate < 1) throw std::invalid_argument("selective_state_update_cuda: bad sizes");
  if (p.n_groups <= 0 || p.dim % p.n_groups != 0)
    throw std::invalid_argument("selective_state_update_cuda: dim must be a multiple of n_groups");
  if (p.batch > 65535) throw std::invalid_argument("selective_state_update_cuda: batch > 65535");
  if (p.batch == 0 || p.dim == 0) return;
  if (!p.state || !p.x || !p.delta || !p.B || !p.C || !p.A || !p.y)
    throw std::invalid_argument("selective_state_update_cuda: state, x, delta, B, C, A and y are required");
  const dim3 grid(static_cast<unsigned>((p.dim + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  selective_state_update_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  MAMBA_CUDA_CHECK_LAUNCH("selective_state_update_cuda");
}

template void selective_state_update_cuda<float>(const SelectiveStateUpdateCudaParams<float>&, cudaStream_t);
template void selective_state_update_cuda<__nv_bfloat16>(const SelectiveStateUpdateCudaParams<__nv_bfloat16>&,
                                                         cudaStream_t);

}  // namespace mamba::kernels::cuda
