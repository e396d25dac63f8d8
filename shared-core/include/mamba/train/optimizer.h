// Optimisers for training: parameter references, AdamW and SGD (momentum, Nesterov).
//
// A Param refers to a parameter tensor and its gradient; it owns neither. The model owns
// the values (pointers from parameters() stay valid for the layer's lifetime) and the
// caller owns the gradients (make_params points into the caller's vector, so that vector
// must not be resized or destroyed while the Params are in use).
//
// Layout: every value and gradient is an f32, contiguous CPU tensor, value and gradient of
// the same shape; optimiser state is f32 of the same shape, owned by the optimiser.
// Optimiser constructors check this and throw mamba::Error naming the parameter.
//
// Determinism: an update is element-wise (each element's new value depends only on that
// element's value, gradient and state), so results are bitwise identical for any number
// of OpenMP threads. Large tensors are split into fixed blocks across threads.
//
// Thread-safety: an optimiser is not thread-safe; call step / zero_grad / state methods
// from one thread at a time. step() writes the values and the state, reads the gradients.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::train {

struct Param {
  std::string name;       // the reference's name, e.g. "backbone.layers.0.mixer.A_log"
  Tensor* value = nullptr;  // updated in place by Optimizer::step
  Tensor* grad = nullptr;   // read by step, zeroed by zero_grad
  bool decay = true;        // whether weight decay applies
};

// Decides Param::decay from a parameter's name.
using DecayRule = std::function<bool(const std::string& name)>;

// The default rule: weight decay for matrices and embeddings, none for parameters whose
// size or sign carries meaning and must not be pulled towards zero. No decay when the
// name's last component (after the last '.') is "A_log", "D", "dt_bias" or "bias" (this
// covers "dt_proj.bias" and "conv1d.bias"), or when the name contains "norm" (norm
// weights and biases, "norm_f", the Mamba2 gated norm). Everything else decays,
// "backbone.embedding.weight" and "lm_head.weight" included.
bool default_decay_rule(const std::string& name);

// Pairs each value with a gradient. When `grads` is empty it is filled with zero tensors
// shaped like the values; otherwise it must hold one gradient per value (same shapes, f32,
// contiguous) in the same order. Params point into `grads` (see the ownership note above).
// Throws mamba::Error naming the parameter on a null value or a mismatched gradient.
std::vector<Param> make_params(std::vector<std::pair<std::string, Tensor*>> values, std::vector<Tensor>& grads,
                               const DecayRule& decay = default_decay_rule);

// Named tensors, as stored in a safetensors file.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter from its gradient with learning rate `lr` (>= 0,
  // finite; throws otherwise). The caller computes lr from a schedule.
  virtual void step(double lr) = 0;
  // Sets every gradient to zero.
  void zero_grad();

  // "adamw" or "sgd"; stored with the state so a checkpoint is not loaded into the wrong kind.
  virtual const char* kind() const = 0;
  // Updates taken so far (restored by load_state_tensors).
  int64_t steps_taken() const { return step_; }
  const std::vector<Param>& params() const { return params_; }

  // The state as named tensors: "<kind>.step" (i64, shape [1]) and one tensor per
  // parameter and state slot, "<kind>.<slot>.<param name>" (f32, the parameter's shape).
  // The tensors share storage with the live state: save them before the next step().
  virtual NamedTensors state_tensors() const = 0;
  // Restores state written by state_tensors() (copies; the input may be freed after).
  // All-or-nothing: every expected tensor is checked first (present, shape, dtype
  // convertible; no unexpected names) and on any mismatch mamba::Error is thrown naming
  // `source` and the tensor, leaving the state unchanged.
  virtual void load_state_tensors(const NamedTensors& tensors, const std::string& source = "optimizer state") = 0;

 protected:
  // Checks the Params (see the layout note); throws mamba::Error naming `kind` and the param.
  Optimizer(std::vector<Param> params, const char* kind);

  // Helpers for the subclasses' state tensors.
  NamedTensors state_with_step(const std::vector<std::pair<const char*, const std::vector<Tensor>*>>& slots) const;
  void load_state_with_step(const NamedTensors& tensors, const std::string& source,
                            const std::vector<std::pair<const char*, std::vector<Tensor>*>>& slots);

  std::vector<Param> params_;
  int64_t step_ = 0;
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // decoupled; applied only where Param::decay
};

// AdamW (Loshchilov & Hutter), the PyTorch formulation with bias correction. At step t:
//   p <- p * (1 - lr * weight_decay)                       (decay params only)
//   m <- beta1 * m + (1 - beta1) * g
//   v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// State slots: "adamw.exp_avg.<name>", "adamw.exp_avg_sq.<name>", "adamw.step".
class AdamW final : public Optimizer {
 public:
  // Throws mamba::Error for betas outside [0, 1), eps <= 0 or weight_decay < 0.
  AdamW(std::vector<Param> params, const AdamWOptions& options = {});
  void step(double lr) override;
  const char* kind() const override { return "adamw"; }
  NamedTensors state_tensors() const override;
  void load_state_tensors(const NamedTensors& tensors, const std::string& source = "optimizer state") override;
  const AdamWOptions& options() const { return opt_; }

 private:
  AdamWOptions opt_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

struct SGDOptions {
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;       // requires momentum > 0 and dampening == 0
  double weight_decay = 0.0;   // L2, added to the gradient; only where Param::decay
};

// SGD, the PyTorch formulation. With d = g + weight_decay * p (decay params; else d = g):
//   momentum 0:  p <- p - lr * d
//   otherwise:   b <- d at the first step, else momentum * b + (1 - dampening) * d
//                p <- p - lr * (nesterov ? d + momentum * b : b)
// State slots: "sgd.momentum_buffer.<name>" (only with momentum), "sgd.step".
class SGD final : public Optimizer {
 public:
  // Throws mamba::Error for negative momentum/dampening/weight_decay or Nesterov
  // without momentum or with dampening.
  SGD(std::vector<Param> params, const SGDOptions& options = {});
  void step(double lr) override;
  const char* kind() const override { return "sgd"; }
  NamedTensors state_tensors() const override;
  void load_state_tensors(const NamedTensors& tensors, const std::string& source = "optimizer state") override;
  const SGDOptions& options() const { return opt_; }

 private:
  SGDOptions opt_;
  std::vector<Tensor> momentum_;  // empty when momentum == 0
};

}  // namespace mamba::train
