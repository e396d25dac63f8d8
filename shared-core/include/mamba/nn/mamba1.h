// Mamba-1 mixer (the reference `Mamba` module), parameter names and semantics alike:
//   in_proj (2*d_inner, d_model) -> x, z;  x -> depthwise causal conv1d (+bias) -> SiLU;
//   x_proj (dt_rank + 2*d_state, d_inner) -> dt, B, C;  dt_proj (d_inner, dt_rank) + bias;
//   selective scan with A = -exp(A_log), D, z gating, softplus(dt + dt_proj.bias);
//   out_proj (d_model, d_inner). No linear has a bias (conv1d does).
// Thread-safety: forward/step are const and may run concurrently on distinct states.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "mamba/nn/mixer.h"

namespace mamba::nn {

class CudaDecodeGraph;

struct Mamba1Config {
  int64_t d_model = 0;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0: ceil(d_model / 16), as the reference's "auto"
  // false: the ablation without selection (an LTI SSM like S4 inside the same block):
  // B and C are learned constants (parameters "B_lti", "C_lti", (d_state)) and delta is
  // dt_proj.bias alone, none of them input-dependent. Config key "selective".
  bool selective = true;
  int64_t d_inner() const { return expand * d_model; }
  int64_t rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  // Reads d_model and the reference's ssm_cfg keys (d_state, d_conv, expand, dt_rank: int
  // or "auto"); unknown keys are ignored.
  static Mamba1Config from_json(const nlohmann::json& j, int64_t d_model);
};

class Mamba1 final : public Mixer {
 public:
  using Config = Mamba1Config;
  explicit Mamba1(const Mamba1Config& cfg);  // parameters allocated, zero-filled

  Tensor forward(const Tensor& x, LayerState* state = nullptr) const override;
  Tensor step(const Tensor& x, LayerState& state) const override;
  Tensor forward_train(const Tensor& x, std::unique_ptr<SavedActivations>& saved) const override;
  Tensor backward(const SavedActivations& saved, const Tensor& dy, std::vector<Tensor>& param_grads) const override;
  bool has_backward() const override { return true; }
  LayerState init_state(int64_t batch) const override;
  std::vector<std::pair<std::string, Tensor*>> parameters() override;
  int64_t d_model() const override { return cfg_.d_model; }
  const Mamba1Config& config() const { return cfg_; }
  void refresh_derived() override;

  // GPU: weights moved once; forward/step then run the CUDA kernels + cuBLASLt on cuda
  // tensors of compute_dtype(); init_state allocates the states on the device (f32).
  void to(Device device, DType compute = DType::f32) override;
  // The recurrent step on a CUDA layer into caller-owned buffers, allocating nothing (what a
  // CUDA graph captures). x, out: (batch, d_model) contiguous, compute_dtype(), on the device.
  struct StepBuffers {
    Tensor xz, xc, xdbl, dt, y;  // (batch, 2*d_inner), (batch, d_inner), (batch, R+2N), (batch, d_inner) x2
  };
  StepBuffers make_step_buffers(int64_t batch) const;
  void step_into(const Tensor& x, LayerState& state, StepBuffers& buf, Tensor& out) const;

 private:
  friend class CudaDecodeGraph;  // the fused decode kernels read the weights directly
  Tensor forward_cuda(const Tensor& x, LayerState* state) const;
  struct Activations;  // what forward_impl leaves for backward
  Tensor forward_impl(const Tensor& x, LayerState* state, Activations* keep) const;
  void apply_lti(Tensor& xdbl) const;
  Mamba1Config cfg_;
  Tensor in_proj_w_, conv_w_, conv_b_, x_proj_w_, dt_proj_w_, dt_proj_b_, A_log_, D_, out_proj_w_;
  Tensor A_;  // -exp(A_log), refreshed on load
  Tensor B_lti_, C_lti_;  // only without selection
};

}  // namespace mamba::nn
