// Training a Mamba-1 MambaLM on one GPU: f32 master weights, bf16 autocast (or f32) compute,
// hand-written backward, AdamW with global-norm clipping, everything on the current stream of
// the device (mamba/tensor/cuda.h), activations from the caching allocator (no cudaMalloc once
// the shapes have been seen), no host synchronisation except where a figure is read.
//
// It computes the same function as the CPU MambaLM::forward_backward with the same weights
// (the mean next-token cross-entropy over positions with a target >= 0, gradients of every
// parameter in the order of MambaLM::parameters()), and its optimiser step is the CPU
// clip_grad_norm + AdamW (train/optimizer.h, default_decay_rule).
//
// Per step and layer i (rows = batch * seqlen), forward, kept for the backward:
//   r_i (f32 residual stream), n_i = RMSNorm(r_i) (T), xz = n_i W_in^T (T), xc = SiLU(conv(x))
//   (T), xdbl = xc W_x^T (T), the scan inputs transposed to (b, d, l) (u, delta, z, B, C; T),
//   y = scan (T, (b, l, d)); no (b, d, l, n) states: the scan backward recomputes them from
//   the states entering every 8-step chunk, which the forward writes (f32, 8 bytes per
//   (token, d_inner channel) and layer) when d_state <= 16.
// T = bf16 (autocast: GEMMs on bf16 weight copies refreshed by the optimiser, f32
// accumulation) or f32 (true f32 everywhere, for exact comparison). Weight gradients are f32.
// Thread-safety: none (one trainer, one thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mamba/nn/mamba_lm.h"
#include "mamba/tensor/tensor.h"

namespace mamba::nn {

struct CudaTrainOptions {
  DType compute = DType::bf16;  // bf16 (autocast) or f32
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;   // decoupled, on the params default_decay_rule picks
  double max_grad_norm = 1.0;   // <= 0: no clipping
  // The scan forward writes the scan backward's chunk checkpoints (kept from the forward to the
  // backward: 8 bytes per token, d_inner channel and layer), so the backward skips recomputing
  // them. Used when d_state <= 16 and the default scan versions run; env MAMBA_GT_FWD_CKPT=0
  // turns it off in every trainer of the process.
  bool forward_checkpoints = true;
};

class MambaLMTrainerCuda {
 public:
  // Copies the CPU model's parameters to `device` (f32 masters). Requirements (else
  // mamba::Error naming the field): Mamba1 layers, selective, RMSNorm, d_conv <= 4,
  // d_state <= 256, compute f32 or bf16.
  MambaLMTrainerCuda(MambaLM& cpu_model, const CudaTrainOptions& options, Device device = Device::cuda(0));
  ~MambaLMTrainerCuda();
  MambaLMTrainerCuda(const MambaLMTrainerCuda&) = delete;
  MambaLMTrainerCuda& operator=(const MambaLMTrainerCuda&) = delete;

  // ids (batch, seqlen) i64/i32 in [0, vocab_size), targets (batch, seqlen) i64 in [-1,
  // vocab_size) (-1: not counted), both on the CPU (checked there). Fills the f32 gradients
  // of the mean loss; the loss stays on the device.
  void forward_backward(const Tensor& ids, const Tensor& targets);
  // Global-norm clipping (on the device) + one AdamW update with learning rate lr; refreshes
  // the bf16 copies and A = -exp(A_log).
  void optimizer_step(double lr);
  void step(const Tensor& ids, const Tensor& targets, double lr) {
    forward_backward(ids, targets);
    optimizer_step(lr);
  }

  double last_loss() const;       // mean loss of the last forward_backward (synchronises)
  double last_grad_norm() const;  // global norm before clipping of the last optimizer_step (synchronises)
  int64_t steps_taken() const { return step_; }
  const MambaLMConfig& config() const { return cfg_; }
  DType compute_dtype() const { return opt_.compute; }

  // CPU copies, in the order of MambaLM::parameters(): names, master values, gradients.
  std::vector<std::string> parameter_names() const;
  std::vector<Tensor> parameters_cpu() const;
  std::vector<Tensor> gradients_cpu() const;
  int64_t parameter_count() const;
  // Bytes of the scan checkpoint arena the last forward_backward kept from the forward to the
  // backward (the forward writes the scan backward's chunk checkpoints when d_state <= 16; 0
  // when it did not: MAMBA_GT_FWD_CKPT=0, d_state > 16 or other scan versions forced).
  int64_t scan_checkpoint_bytes() const;

  // Phase timing for measurements: with set_profile(true), CUDA events are recorded at the end
  // of every phase of forward_backward / optimizer_step (one stream, so the phases are
  // sequential); profile_ms() synchronises, returns the milliseconds per phase (summed over the
  // layers and over the steps since the last call, in first-seen order) and clears them.
  void set_profile(bool on);
  std::vector<std::pair<std::string, double>> profile_ms();

 private:
  struct Impl;
  template <class T>
  void forward_backward_impl(const Tensor& ids_dev, int64_t batch, int64_t seqlen, int64_t counted);
  std::unique_ptr<Impl> impl_;
  MambaLMConfig cfg_;
  CudaTrainOptions opt_;
  Device device_;
  int64_t step_ = 0;
};

}  // namespace mamba::nn

namespace mamba::nn {

// The device check of MambaLMTrainerCuda against the CPU (what `mamba-train-lm-cuda --check`
// and test_cuda_train run): a tiny MambaLM (2 layers, d_model 64, vocab 97, length 37, batch
// 3 by default: awkward sizes) with identical weights on the CPU and the GPU; one
// forward/backward compared (loss and every parameter's gradient, relative error
// ||gpu - cpu|| / ||cpu|| per tensor), then `steps` AdamW steps (clipping on) of the CPU
// optimiser (train/optimizer.h + clip_grad_norm) against the GPU's, compared per step (loss)
// and at the end (every parameter).
struct CudaTrainCheckOptions {
  DType compute = DType::f32;
  int64_t layers = 2, d_model = 64, vocab = 97, seqlen = 37, batch = 3;
  int64_t d_state = 16;
  bool tie_embeddings = true;
  bool forward_checkpoints = true;  // CudaTrainOptions::forward_checkpoints of the trainers
  int64_t steps = 20;  // 0: the gradient comparison only
  double lr = 1e-3;
  uint64_t seed = 1;
};
struct CudaTrainCheckResult {
  double loss_cpu = 0, loss_gpu = 0;
  double worst_grad_rel = 0;       // over every parameter
  std::string worst_grad_name;
  std::vector<std::pair<std::string, double>> grad_rel;  // per parameter
  double worst_step_loss_rel = 0;  // over the AdamW steps
  double worst_param_rel = 0;      // after the last step, over every parameter
  std::string worst_param_name;
  int64_t scan_checkpoint_bytes = 0;  // MambaLMTrainerCuda::scan_checkpoint_bytes after the comparison
};
CudaTrainCheckResult cuda_train_check(const CudaTrainCheckOptions& o);

}  // namespace mamba::nn
