// Mamba-2 mixer (the reference `Mamba2` module), parameter names and semantics alike:
//   in_proj (2*d_inner + 2*ngroups*d_state + nheads, d_model) -> [z, xBC, dt];
//   conv1d (+bias) + SiLU over xBC = [x, B, C]; SSD with dt' = softplus(dt + dt_bias),
//   A = -exp(A_log) per head, D per head; y * silu(z) then grouped RMSNorm (group size
//   d_inner / ngroups, weight norm.weight) — or norm then gate when norm_before_gate;
//   out_proj (d_model, d_inner).
// chunk_size only sets the SSD block length: results do not depend on it.
// Thread-safety: forward/step are const and may run concurrently on distinct states.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "mamba/nn/mixer.h"

namespace mamba::nn {

struct Mamba2Config {
  int64_t d_model = 0;
  int64_t d_state = 128;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t headdim = 64;
  int64_t ngroups = 1;
  int64_t chunk_size = 256;
  double rmsnorm_eps = 1e-5;
  bool norm_before_gate = false;
  int64_t d_inner() const { return expand * d_model; }
  int64_t nheads() const { return d_inner() / headdim; }
  int64_t conv_dim() const { return d_inner() + 2 * ngroups * d_state; }
  int64_t d_in_proj() const { return 2 * d_inner() + 2 * ngroups * d_state + nheads(); }
  static Mamba2Config from_json(const nlohmann::json& j, int64_t d_model);
  void validate() const;  // throws mamba::Error naming the inconsistent field
};

class Mamba2 final : public Mixer {
 public:
  using Config = Mamba2Config;
  explicit Mamba2(const Mamba2Config& cfg);

  Tensor forward(const Tensor& x, LayerState* state = nullptr) const override;
  Tensor step(const Tensor& x, LayerState& state) const override;
  Tensor forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const override;
  Tensor backward(const SavedActivations& saved, const Tensor& dy, std::vector<Tensor>& param_grads) const override;
  bool has_backward() const override { return true; }
  LayerState init_state(int64_t batch) const override;
  std::vector<std::pair<std::string, Tensor*>> parameters() override;
  int64_t d_model() const override { return cfg_.d_model; }
  const Mamba2Config& config() const { return cfg_; }
  void refresh_derived() override;

  // GPU: weights moved once (in_proj / out_proj as `compute`, f32 or bf16; the rest f32);
  // forward/step then run cuBLASLt + the CUDA conv, SSD, state-update and gated-RMSNorm
  // kernels on cuda tensors of compute_dtype(); init_state allocates the states on the
  // device (f32). Limits: headdim <= 128, d_state <= 256, d_conv <= 4. No training on CUDA.
  void to(Device device, DType compute = DType::f32) override;

 private:
  Tensor forward_cuda(const Tensor& x, LayerState* state) const;
  Tensor step_cuda(const Tensor& x, LayerState& state) const;
  struct Activations;
  Tensor forward_impl(const Tensor& x, LayerState* state, Activations* keep) const;
  Mamba2Config cfg_;
  Tensor in_proj_w_, conv_w_, conv_b_, dt_bias_, A_log_, D_, norm_w_, out_proj_w_;
  Tensor A_;  // -exp(A_log), refreshed on load
};

}  // namespace mamba::nn
