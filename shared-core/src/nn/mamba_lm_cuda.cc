// MambaLM on the GPU: parameters moved once; forward (prefill) and step run the embedding
// gather, the fused residual add + RMSNorm kernel, the mixers' CUDA paths and the LM head
// through cuBLASLt (f32 logits).
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#endif

namespace mamba::nn {

void MambaLM::to(Device device, DType compute) {
  const char* op = "MambaLM::to";
  if (!device.is_cpu()) {
    cuda::require_device(device, op);
    if (!cfg_.rms_norm) fail(op, "LayerNorm models (rms_norm = false) have no CUDA path; only RMSNorm");
    if (compute != DType::f32 && compute != DType::bf16)
      fail(op, std::string("compute dtype must be f32 or bf16 on CUDA, got ") + dtype_name(compute));
  } else if (compute != DType::f32) {
    fail(op, "the CPU path computes in f32");
  }
  for (auto& m : mixers_) m->to(device, compute);
  embedding_ = embedding_.to(Device::cpu()).to(compute).to(device);
  if (lm_head_.defined()) lm_head_ = lm_head_.to(Device::cpu()).to(compute).to(device);
  for (auto& w : norm_w_) w = w.to(Device::cpu()).to(DType::f32).to(device);
  for (auto& b : norm_b_)
    if (b.defined()) b = b.to(Device::cpu()).to(DType::f32).to(device);
  norm_f_w_ = norm_f_w_.to(Device::cpu()).to(DType::f32).to(device);
  if (norm_f_b_.defined()) norm_f_b_ = norm_f_b_.to(Device::cpu()).to(DType::f32).to(device);
  device_ = device;
  compute_ = compute;
}

#ifndef MAMBA_HAVE_CUDA

Tensor MambaLM::forward_cuda(const Tensor&, InferenceCache*) const { fail("MambaLM::forward", "built without CUDA"); }
Tensor MambaLM::step_cuda(const Tensor&, InferenceCache&) const { fail("MambaLM::step", "built without CUDA"); }

#else

namespace {

// ids (any shape, i64/i32, CPU or device) -> i64 contiguous on `device`; CPU ids are range-checked.
Tensor device_ids(const Tensor& ids_in, int64_t vocab, Device device, const char* op) {
  if (!ids_in.defined() || (ids_in.dtype() != DType::i64 && ids_in.dtype() != DType::i32))
    fail(op, "input_ids must be i64 or i32, got " + ids_in.str());
  if (ids_in.is_cuda()) {
    if (ids_in.device() != device) fail(op, "input_ids are on " + ids_in.device().str() + ", the model on " + device.str());
    if (ids_in.dtype() == DType::i64 && ids_in.is_contiguous()) return ids_in;
    Tensor t = Tensor::empty(ids_in.shape(), DType::i64, device);
    cuda_glue::copy_on_stream(t, ids_in);
    return t;
  }
  const Tensor ids = ids_in.to(DType::i64).contiguous();
  const int64_t* p = ids.data<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    if (p[i] < 0 || p[i] >= vocab)
      fail(op, "token id " + std::to_string(p[i]) + " at position " + std::to_string(i) + " is out of range [0, " +
                   std::to_string(vocab) + ")");
  return ids.to(device);
}

template <class T>
void add_rms_norm(int64_t rows, int64_t d, const Tensor& x, const Tensor* residual_in, Tensor& residual,
                  const Tensor& w, float eps, Tensor& y) {
  kernels::cuda::add_rms_norm_cuda<T>(rows, d, static_cast<const T*>(x.raw_data()),
                                      residual_in ? static_cast<const float*>(residual_in->raw_data()) : nullptr,
                                      static_cast<float*>(residual.raw_data()), static_cast<const float*>(w.raw_data()),
                                      eps, static_cast<T*>(y.raw_data()), cuda_glue::stream(x.device()));
}

}  // namespace

// One pass over every layer for `rows` = b * l positions; `layer(i, normed)` returns hidden.
template <class Layer>
static Tensor run_layers(const MambaLMConfig& cfg, Device dev, DType compute, const Tensor& embedding,
                         const Tensor& head_w, const std::vector<Tensor>& norm_w, const Tensor& norm_f_w,
                         const Tensor& ids, const Shape& act_shape, Layer&& layer) {
  const int64_t d = cfg.d_model, rows = ids.numel(), V = head_w.size(0);
  const float eps = static_cast<float>(cfg.norm_eps);
  Tensor hidden = Tensor::empty(act_shape, compute, dev);
  kernels::cuda::embedding_gather_cuda(rows, d, embedding.size(0), static_cast<const int64_t*>(ids.raw_data()),
                                       embedding.raw_data(), cuda_glue::elem_type(compute), hidden.raw_data(),
                                       cuda_glue::stream(dev));
  Tensor residual = Tensor::empty(act_shape, DType::f32, dev);
  Tensor normed = Tensor::empty(act_shape, compute, dev);
  const bool bf = compute == DType::bf16;
  auto norm = [&](const Tensor& w, bool first) {
    if (bf)
      add_rms_norm<__nv_bfloat16>(rows, d, hidden, first ? nullptr : &residual, residual, w, eps, normed);
    else
      add_rms_norm<float>(rows, d, hidden, first ? nullptr : &residual, residual, w, eps, normed);
  };
  for (size_t i = 0; i < norm_w.size(); ++i) {
    norm(norm_w[i], i == 0);
    hidden = layer(i, normed);
  }
  norm(norm_f_w, norm_w.empty());
  Shape out_shape = act_shape;
  out_shape.back() = V;
  Tensor logits = Tensor::empty(out_shape, DType::f32, dev);
  cuda_glue::linear_rows(normed.raw_data(), rows, d, head_w, logits.raw_data(), V, DType::f32, dev);
  return logits;
}

Tensor MambaLM::forward_cuda(const Tensor& input_ids, InferenceCache* cache) const {
  const char* op = "MambaLM::forward";
  const Tensor ids = device_ids(input_ids, cfg_.vocab_size, device_, op);
  const int64_t b = input_ids.size(0), l = input_ids.size(1);
  Tensor logits = run_layers(cfg_, device_, compute_, embedding_, lm_head_.defined() ? lm_head_ : embedding_, norm_w_,
                             norm_f_w_, ids, {b, l, cfg_.d_model}, [&](size_t i, const Tensor& normed) {
                               return mixers_[i]->forward(normed, cache ? &cache->layers[i] : nullptr);
                             });
  if (cache) cache->seqlen_offset += l;
  return logits;
}

Tensor MambaLM::step_cuda(const Tensor& input_ids, InferenceCache& cache) const {
  const char* op = "MambaLM::step";
  const Tensor ids = device_ids(input_ids, cfg_.vocab_size, device_, op);
  const int64_t b = input_ids.size(0);
  Tensor logits = run_layers(cfg_, device_, compute_, embedding_, lm_head_.defined() ? lm_head_ : embedding_, norm_w_,
                             norm_f_w_, ids, {b, cfg_.d_model},
                             [&](size_t i, const Tensor& normed) { return mixers_[i]->step(normed, cache.layers[i]); });
  cache.seqlen_offset += 1;
  return logits;
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn
