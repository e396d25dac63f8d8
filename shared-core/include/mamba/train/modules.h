// Building blocks for trainable models on the autograd tape (autograd.h): a named
// parameter store that owns values and gradients, and the layers the services compose
// (Linear, LayerNorm, Embedding, a Mamba mixer layer). Parameter names follow PyTorch's
// module paths ("encoder.layers.0.mixer.in_proj.weight"), so a model directory's
// model.safetensors reads like a PyTorch state_dict.
//
// Ownership: the ParameterStore owns every value and gradient it creates (addresses stay
// valid for its lifetime: entries are never moved). A mixer layer owns its Mixer, whose
// parameters the store refers to (add_external). Layers hold pointers into the store, so
// the store must outlive them; a model usually owns both.
// Thread-safety: forward passes with grad mode off may run concurrently; training (which
// writes gradients) is single-threaded per store.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/nn/mixer.h"
#include "mamba/train/autograd.h"
#include "mamba/train/optimizer.h"

namespace mamba::train {

struct StoredParameter {
  std::string name;
  Tensor value;  // f32, contiguous; for an external parameter a handle sharing its storage
  Tensor grad;   // f32, zeros of the value's shape
};

class ParameterStore {
 public:
  // A new owned parameter, zero-filled. Throws mamba::Error on a duplicate name.
  StoredParameter& create(const std::string& name, const Shape& shape);
  // Refers to a tensor owned elsewhere (a mixer's parameter): optimiser updates write
  // through to it. The tensor must be f32 and contiguous.
  StoredParameter& add_external(const std::string& name, Tensor* value);

  // The leaf Var of a parameter (gradients accumulate into its grad).
  static ag::Var var(StoredParameter& p) { return ag::Var::parameter(p.value, p.grad); }

  std::deque<StoredParameter>& entries() { return entries_; }
  const std::deque<StoredParameter>& entries() const { return entries_; }
  StoredParameter* find(const std::string& name);
  int64_t count() const;  // number of scalar parameters

  // Optimiser parameters (train::Param) pointing at the stored values and gradients.
  std::vector<Param> params(const DecayRule& decay = default_decay_rule);
  void zero_grad();

  // Named values for save_safetensors, and loading them back: every stored parameter must
  // be present with its shape (mamba::Error naming the tensor otherwise); bf16/f16/f64
  // values are converted.
  std::vector<std::pair<std::string, Tensor>> named_values() const;
  void load(const nn::ParamSource& src);

 private:
  std::deque<StoredParameter> entries_;
  std::map<std::string, StoredParameter*> by_name_;
};

// The reference initialisation of a parameter by its name, as PyTorch and the Mamba
// reference do it: A_log = log(1..N) (Mamba-1, (d_inner, N)) or log(U[1, 16]) per head
// (Mamba-2), dt biases = softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1], D = 1,
// norm weights 1 and biases 0, conv1d / linear biases 0, embeddings N(0, 0.02), every
// other weight U(+-1/sqrt(fan_in)).
void reference_init(const std::string& name, Tensor& value, std::mt19937_64& rng);

// y = x W^T + b; W (out, in), b (out) (PyTorch nn.Linear).
class Linear {
 public:
  Linear() = default;
  Linear(ParameterStore& store, const std::string& prefix, int64_t in, int64_t out, bool bias = true);
  ag::Var operator()(const ag::Var& x) const;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  StoredParameter* weight() const { return w_; }
  StoredParameter* bias() const { return b_; }

 private:
  StoredParameter* w_ = nullptr;
  StoredParameter* b_ = nullptr;
  int64_t in_ = 0, out_ = 0;
};

// LayerNorm over the last dim (weight 1, bias 0 at init).
class LayerNorm {
 public:
  LayerNorm() = default;
  LayerNorm(ParameterStore& store, const std::string& prefix, int64_t dim, double eps = 1e-5);
  ag::Var operator()(const ag::Var& x) const;

 private:
  StoredParameter* w_ = nullptr;
  StoredParameter* b_ = nullptr;
  double eps_ = 1e-5;
};

// A table (num, dim); padding_idx rows get no gradient (and are zero at init).
class Embedding {
 public:
  Embedding() = default;
  Embedding(ParameterStore& store, const std::string& prefix, int64_t num, int64_t dim, int64_t padding_idx = -1);
  ag::Var operator()(const Tensor& ids) const;
  StoredParameter* table() const { return table_; }

 private:
  StoredParameter* table_ = nullptr;
  int64_t padding_idx_ = -1;
};

// A Mamba-1 or Mamba-2 mixer whose parameters live in the store as prefix + the
// reference's names ("in_proj.weight", "A_log", ...). cfg: {"layer": "Mamba1"|"Mamba2",
// plus that layer's keys (d_state, d_conv, expand, headdim...)}.
class MixerLayer {
 public:
  MixerLayer() = default;
  MixerLayer(ParameterStore& store, const std::string& prefix, int64_t d_model, const nlohmann::json& cfg);
  // x (b, l, d_model) -> (b, l, d_model) through the parallel path (with backward).
  ag::Var operator()(const ag::Var& x) const;
  const nn::Mixer& mixer() const { return *mixer_; }
  nn::Mixer& mixer() { return *mixer_; }
  // After an optimiser step or a load: recompute derived values (A = -exp(A_log)).
  void refresh() { mixer_->refresh_derived(); }

 private:
  std::shared_ptr<nn::Mixer> mixer_;
  std::vector<Tensor*> grads_;  // the store's gradients of the mixer's parameters, in order
};

}  // namespace mamba::train
