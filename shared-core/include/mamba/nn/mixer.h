// The interface every sequence-mixing layer (Mamba1, Mamba2, and later the bidirectional
// wrappers) offers, plus the recurrent state a layer carries between calls.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::nn {

// Recurrent state of one layer for a batch of sequences.
//   conv_state: (batch, conv_channels, d_conv) — the last d_conv inputs of the short
//               convolution, oldest first (zeros before the sequence starts).
//   ssm_state:  (batch, d_inner, d_state) for Mamba-1; (batch, nheads, headdim, d_state)
//               for Mamba-2.
struct LayerState {
  Tensor conv_state;
  Tensor ssm_state;
};

// What a training forward keeps for its backward (layer-specific; opaque to callers).
struct SavedActivations {
  virtual ~SavedActivations() = default;
};

// Looks up a parameter by its full name; returns an undefined Tensor when absent.
using ParamSource = std::function<Tensor(const std::string& name)>;

class Mixer {
 public:
  virtual ~Mixer() = default;

  // Parallel path (training, prefill). x: (batch, seqlen, d_model) f32 -> same shape.
  // When `state` is given, the scan starts from it (zeros from init_state) and leaves
  // the final state there, so prefill-then-decode and chunked prefill both work.
  virtual Tensor forward(const Tensor& x, LayerState* state = nullptr) const = 0;
  // Recurrent path: one token per sequence. x: (batch, d_model) -> (batch, d_model).
  virtual Tensor step(const Tensor& x, LayerState& state) const = 0;
  // Training path: the parallel forward from a zero state that also keeps, in `saved`,
  // what backward needs (the layer's inputs and a few intermediate activations; scan
  // states are recomputed in the backward, never stored per time step).
  virtual Tensor forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const;
  // Gradients of sum(forward(x) * dy): returns dL/dx (batch, seqlen, d_model) and writes
  // one gradient per parameter into `param_grads`, in the order of parameters().
  virtual Tensor backward(const SavedActivations& saved, const Tensor& dy, std::vector<Tensor>& param_grads) const;
  virtual bool has_backward() const { return false; }

  // Zeroed state for `batch` sequences.
  virtual LayerState init_state(int64_t batch) const = 0;

  // Parameters under the reference module's names ("in_proj.weight", "A_log", ...),
  // in a fixed order. Pointers stay valid for the layer's lifetime.
  virtual std::vector<std::pair<std::string, Tensor*>> parameters() = 0;
  virtual int64_t d_model() const = 0;

  // Loads every parameter as `prefix + name` from `src`, checking shapes; converts
  // bf16/f16/f64 weights to f32. Throws mamba::Error naming the tensor on a mismatch.
  void load(const ParamSource& src, const std::string& prefix);

  // Recomputes values derived from the parameters (A = -exp(A_log)); load() calls it,
  // and so must anyone who changes parameters in place.
  virtual void refresh_derived() {}

  // Moves the parameters to `device`, once (load on the CPU first, then move). The weights
  // of the linear layers are stored as `compute` (f32; on a GPU also bf16 or f16), which is
  // then the dtype of forward/step inputs and outputs; A, D, biases, conv weights and states
  // stay f32. Layers without a GPU path throw mamba::Error naming what is missing.
  virtual void to(Device device, DType compute = DType::f32);
  Device device() const { return device_; }
  DType compute_dtype() const { return compute_; }

 protected:
  Device device_ = Device::cpu();
  DType compute_ = DType::f32;
};

}  // namespace mamba::nn
