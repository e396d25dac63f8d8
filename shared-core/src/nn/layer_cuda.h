// Helpers shared by the CUDA paths of the Mamba layers (internal to shared-core/src/nn).
// Every function here runs asynchronously on the current stream of the tensors' device.
#pragma once

#include <initializer_list>

#include "mamba/nn/mixer.h"

namespace mamba::nn::detail {

// The checks of Mixer::to for a GPU target: a usable CUDA device, compute f32 or bf16, and a
// conv width the CUDA conv kernels take (<= 4). Throws mamba::Error naming `op` and the limit.
void check_cuda_target(Device device, DType compute, int64_t d_conv, const char* op);

// Moves a layer's parameters once (to any device): the linear-layer weights stored as
// `compute`, everything else (conv weights, biases, A, D, norm weights) as f32.
void move_params(std::initializer_list<Tensor*> linear, std::initializer_list<Tensor*> f32, Device device,
                 DType compute);

#ifdef MAMBA_HAVE_CUDA
// state (if given) must hold conv_state of shape `conv` and ssm_state of shape `ssm`, f32,
// contiguous, on `device`.
void check_cuda_states(const LayerState* state, const Shape& conv, const Shape& ssm, Device device, const char* op);

// The short causal conv1d + SiLU of a Mamba layer over the `channels` columns of `src`
// (b, l, width) contiguous starting at column col0; out (b, l, channels) contiguous in src's
// dtype (f32 or bf16). With a state: starts from its history and leaves the last d_conv inputs
// in state->conv_state (b, channels, d_conv).
void short_conv_cuda(const Tensor& src, int64_t col0, int64_t channels, const Tensor& w, const Tensor& bias,
                     LayerState* state, Tensor& out);

// One decoding step of the same convolution: src (b, width) contiguous, channels from column
// col0; conv_state shifted by one in place; out (b, channels) contiguous in src's dtype.
void conv_update_cuda(const Tensor& src, int64_t col0, int64_t channels, const Tensor& w, const Tensor& bias,
                      LayerState& state, Tensor& out);
#endif

}  // namespace mamba::nn::detail
