// Decoding a MambaLM on the GPU with CUDA graphs: one whole step (embedding gather, every
// layer's norm + mixer step, final norm, LM head) for a fixed batch is captured once and then
// replayed, so a token costs one graph launch instead of ~8 kernel launches per layer.
//
// The decoder owns the recurrent cache and every activation buffer (allocated once from the
// caching allocator, at fixed addresses, which is what makes the capture valid), a stream of
// its own (a blocking one: copies on the default stream, as Tensor::to does them, wait for
// it), and a pinned buffer for the token ids. Not thread-safe: one decoder per thread.
//
//   nn::CudaDecodeGraph dec(lm, batch);   // lm already moved with lm.to(Device::cuda(0), ...)
//   dec.prefill(prompt);                  // optional: parallel forward into the cache
//   const Tensor& logits = dec.step(ids); // (batch, padded_vocab) f32 on the device
//
// The first step runs eagerly (it builds the GEMM plans), the second captures the graph,
// every later one replays it. logits() is overwritten by the next step; read it (or copy it)
// before then. The model must outlive the decoder and must not be changed meanwhile.
#pragma once

#include <memory>

#include "mamba/nn/mamba_lm.h"

namespace mamba::nn {

class CudaDecodeGraph {
 public:
  // fused: at batch <= 8, run each layer as 4 kernels (RMSNorm + in_proj + conv update fused,
  // x_proj, dt_proj + state update fused, out_proj; mamba/kernels/cuda/mamba1_decode_cuda.h)
  // instead of 7; false: the unfused kernels of Mamba1::step_into (for comparisons).
  // persistent (with fused): the whole step as ONE persistent kernel with grid-wide barriers
  // (mamba/kernels/cuda/mamba1_decode_persistent_cuda.h) when the device allows a cooperative
  // launch; MAMBA_DECODE_PERSISTENT=0 in the environment turns it off. The default kernel is
  // version 3 (two grid barriers per layer, batch <= 16; it keeps transposed copies of x_proj
  // and out_proj, ~2.6 MB per layer at d_model 768 in bf16), which falls back to version 2
  // (four phases per layer, batch <= 8, with fused) where its shared-memory stage does not fit
  // (f32 at batch 16); MAMBA_DECODE_VERSION=2 selects version 2. By default the persistent step
  // runs at batch <= 8 (above, the unfused graph measured faster); MAMBA_DECODE_PERSISTENT=1: up to 16.
  CudaDecodeGraph(const MambaLM& lm, int64_t batch, bool fused = true, bool persistent = true);
  ~CudaDecodeGraph();
  CudaDecodeGraph(const CudaDecodeGraph&) = delete;
  CudaDecodeGraph& operator=(const CudaDecodeGraph&) = delete;

  // Runs the parallel forward over prompt (batch, seqlen) into the cache (states stay at their
  // addresses); returns its logits (batch, seqlen, padded_vocab) f32 on the device.
  Tensor prefill(const Tensor& prompt);
  // One token per sequence: ids (batch) i64/i32 on the CPU (checked against the vocabulary) or
  // i64 on the device. Returns the logits buffer (batch, padded_vocab) f32.
  const Tensor& step(const Tensor& ids);
  // The same step without the graph (every kernel launched one by one), for comparisons.
  const Tensor& step_eager(const Tensor& ids);
  // Replays the captured step on whatever ids the buffer holds (timing loops); requires a
  // captured graph (two step() calls).
  void replay();
  bool captured() const;
  // Zeroes the states (a new sequence batch).
  void reset();
  // Waits for the decoder's stream.
  void synchronize() const;

  InferenceCache& cache();
  const Tensor& logits() const;
  int64_t batch() const;
  void* stream() const;  // the cudaStream_t the decoder runs on
  bool fused() const;    // whether the fused kernels run (requested and the shape allows it)
  bool persistent() const;  // whether the one-kernel persistent step runs
  int persistent_version() const;  // its kernel version (2 or 3) when persistent(), else 0
  int64_t kernels_per_step() const;  // launches in one step (what the graph holds)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mamba::nn
