// CudaDecodeGraph (cuda_decode_graph.h): one MambaLM decode step captured in a CUDA graph.
#include "mamba/nn/cuda_decode_graph.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mamba/nn/mamba1.h"
#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/mamba1_decode_cuda.h"
#include "mamba/kernels/cuda/mamba1_decode_persistent_cuda.h"
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#endif

namespace mamba::nn {

#ifndef MAMBA_HAVE_CUDA

struct CudaDecodeGraph::Impl {};
CudaDecodeGraph::CudaDecodeGraph(const MambaLM&, int64_t, bool, bool) { fail("CudaDecodeGraph", "built without CUDA"); }
CudaDecodeGraph::~CudaDecodeGraph() = default;
Tensor CudaDecodeGraph::prefill(const Tensor&) { fail("CudaDecodeGraph", "built without CUDA"); }
const Tensor& CudaDecodeGraph::step(const Tensor&) { fail("CudaDecodeGraph", "built without CUDA"); }
const Tensor& CudaDecodeGraph::step_eager(const Tensor&) { fail("CudaDecodeGraph", "built without CUDA"); }
void CudaDecodeGraph::replay() { fail("CudaDecodeGraph", "built without CUDA"); }
bool CudaDecodeGraph::captured() const { return false; }
void CudaDecodeGraph::reset() {}
void CudaDecodeGraph::synchronize() const {}
InferenceCache& CudaDecodeGraph::cache() { fail("CudaDecodeGraph", "built without CUDA"); }
const Tensor& CudaDecodeGraph::logits() const { fail("CudaDecodeGraph", "built without CUDA"); }
int64_t CudaDecodeGraph::batch() const { return 0; }
void* CudaDecodeGraph::stream() const { return nullptr; }
bool CudaDecodeGraph::fused() const { return false; }
bool CudaDecodeGraph::persistent() const { return false; }
int CudaDecodeGraph::persistent_version() const { return 0; }
int64_t CudaDecodeGraph::kernels_per_step() const { return 0; }

#else

struct CudaDecodeGraph::Impl {
  const MambaLM* lm = nullptr;
  int64_t batch = 0;
  Device dev;
  DType dt = DType::f32;
  cuda::Stream stream;
  InferenceCache cache;
  Tensor ids_dev, ids_host;  // (batch) i64: device buffer and its pinned staging
  Tensor hidden, residual, normed, logits;
  Tensor residual2;  // the fused path ping-pongs the residual stream between two buffers
  bool fused = false;
  std::vector<const Mamba1*> layers;
  std::vector<Mamba1::StepBuffers> bufs;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  int64_t steps = 0;
  // The persistent path: one kernel per step (mamba1_decode_persistent_cuda.h).
  bool persistent = false;
  int grid_blocks = 0;
  void* layer_table = nullptr;  // device array of PersistentDecodeLayer<T>
  unsigned* barrier = nullptr;
  int version = 3;                 // persistent kernel version (MAMBA_DECODE_VERSION=2: four phases per layer)
  std::vector<Tensor> transposed;  // version 3: x_proj and out_proj transposed, per layer
  Tensor work;                     // version 3: f32 accumulators (persistent_decode_workspace_floats)

  template <class T>
  void build_layer_table() {
    const char* op = "CudaDecodeGraph (persistent layer table)";
    std::vector<kernels::cuda::PersistentDecodeLayer<T>> t(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const Mamba1& L = *layers[i];
      LayerState& st = cache.layers[i];
      auto& e = t[i];
      e.norm_w = static_cast<const float*>(lm->norm_w_[i].raw_data());
      e.w_in = static_cast<const T*>(L.in_proj_w_.raw_data());
      e.conv_state = static_cast<float*>(st.conv_state.raw_data());
      e.conv_w = static_cast<const float*>(L.conv_w_.raw_data());
      e.conv_b = L.conv_b_.defined() ? static_cast<const float*>(L.conv_b_.raw_data()) : nullptr;
      e.w_x = static_cast<const T*>(L.x_proj_w_.raw_data());
      e.w_dt = static_cast<const T*>(L.dt_proj_w_.raw_data());
      e.dt_bias = static_cast<const float*>(L.dt_proj_b_.raw_data());
      e.A = static_cast<const float*>(L.A_.raw_data());
      e.D = L.D_.defined() ? static_cast<const float*>(L.D_.raw_data()) : nullptr;
      e.ssm_state = static_cast<float*>(st.ssm_state.raw_data());
      e.w_out = static_cast<const T*>(L.out_proj_w_.raw_data());
      if (version >= 3) {
        const int64_t di = L.cfg_.d_inner(), xd = L.cfg_.rank() + 2 * L.cfg_.d_state, d = L.cfg_.d_model;
        Tensor wxt = Tensor::empty({di, xd}, dt, dev), wot = Tensor::empty({di, d}, dt, dev);
        kernels::cuda::transpose_rows_cuda<T>(e.w_x, xd, di, static_cast<T*>(wxt.raw_data()), s());
        kernels::cuda::transpose_rows_cuda<T>(e.w_out, d, di, static_cast<T*>(wot.raw_data()), s());
        e.w_x_t = static_cast<const T*>(wxt.raw_data());
        e.w_out_t = static_cast<const T*>(wot.raw_data());
        transposed.push_back(std::move(wxt));
        transposed.push_back(std::move(wot));
      }
    }
    if (version >= 3 && !layers.empty()) {
      const Mamba1Config& c = layers[0]->cfg_;
      work = Tensor::zeros({kernels::cuda::persistent_decode_workspace_floats<T>(batch, c.d_model, c.rank(), c.d_state)},
                           DType::f32, dev);
    }
    const size_t bytes = std::max<size_t>(1, t.size()) * sizeof(t[0]);
    MAMBA_CUDA_CHECK(op, cudaMalloc(&layer_table, bytes));
    if (!t.empty()) MAMBA_CUDA_CHECK(op, cudaMemcpy(layer_table, t.data(), t.size() * sizeof(t[0]), cudaMemcpyHostToDevice));
    MAMBA_CUDA_CHECK(op, cudaMalloc(reinterpret_cast<void**>(&barrier), sizeof(unsigned)));
  }

  template <class T>
  void persistent_step() {
    const MambaLM& m = *lm;
    const Tensor& head = m.lm_head_.defined() ? m.lm_head_ : m.embedding_;
    kernels::cuda::PersistentDecodeParams<T> p;
    p.batch = batch;
    p.n_layers = static_cast<int64_t>(layers.size());
    p.d_model = m.cfg_.d_model;
    if (!layers.empty()) {
      const Mamba1Config& c = layers[0]->cfg_;
      p.d_inner = c.d_inner(); p.d_conv = c.d_conv; p.dstate = c.d_state; p.dt_rank = c.rank();
    } else {
      p.d_inner = 1; p.dt_rank = 1;
    }
    p.vocab_rows = head.size(0);
    p.eps = static_cast<float>(m.cfg_.norm_eps);
    p.ids = static_cast<const int64_t*>(ids_dev.raw_data());
    p.embedding = static_cast<const T*>(m.embedding_.raw_data());
    p.head = static_cast<const T*>(head.raw_data());
    p.norm_f_w = static_cast<const float*>(m.norm_f_w_.raw_data());
    p.layers = static_cast<const kernels::cuda::PersistentDecodeLayer<T>*>(layer_table);
    p.hidden = static_cast<T*>(hidden.raw_data());
    p.residual[0] = static_cast<float*>(residual.raw_data());
    p.residual[1] = static_cast<float*>(residual2.raw_data());
    Mamba1::StepBuffers& b = bufs.empty() ? fallback_bufs : bufs[0];
    p.xz = static_cast<T*>(b.xz.raw_data());
    p.xc = static_cast<T*>(b.xc.raw_data());
    p.xdbl = static_cast<T*>(b.xdbl.raw_data());
    p.y = static_cast<T*>(b.y.raw_data());
    p.logits = static_cast<float*>(logits.raw_data());
    p.barrier = barrier;
    p.version = version;
    p.work = work.defined() ? static_cast<float*>(work.raw_data()) : nullptr;
    const char* e = std::getenv("MAMBA_DECODE_PREFETCH");
    p.prefetch = !(e && std::string(e) == "0");
    const char* e3 = std::getenv("MAMBA_DECODE_P3SMEM");
    p.p3_smem = !(e3 && std::string(e3) == "0");  // default on (measured 518 vs 529 us, NOTES.md)
    kernels::cuda::persistent_decode_cuda<T>(p, grid_blocks, s());
  }
  Mamba1::StepBuffers fallback_bufs;  // unused placeholder when the model has no layers

  cudaStream_t s() const { return static_cast<cudaStream_t>(stream.native()); }

  void norm(const Tensor& w, bool first) {
    const int64_t d = lm->cfg_.d_model;
    const float eps = static_cast<float>(lm->cfg_.norm_eps);
    const float* rin = first ? nullptr : static_cast<const float*>(residual.raw_data());
    float* rout = static_cast<float*>(residual.raw_data());
    if (dt == DType::bf16)
      kernels::cuda::add_rms_norm_cuda<__nv_bfloat16>(batch, d, static_cast<const __nv_bfloat16*>(hidden.raw_data()), rin,
                                                      rout, static_cast<const float*>(w.raw_data()), eps,
                                                      static_cast<__nv_bfloat16*>(normed.raw_data()), s());
    else
      kernels::cuda::add_rms_norm_cuda<float>(batch, d, static_cast<const float*>(hidden.raw_data()), rin, rout,
                                              static_cast<const float*>(w.raw_data()), eps,
                                              static_cast<float*>(normed.raw_data()), s());
  }

  template <class T>
  void fused_layer(size_t i, const Tensor* res_in, Tensor& res_out) {
    const MambaLM& m = *lm;
    const Mamba1& L = *layers[i];
    const Mamba1Config& c = L.cfg_;
    Mamba1::StepBuffers& b = bufs[i];
    LayerState& st = cache.layers[i];
    const int64_t di = c.d_inner(), N = c.d_state, R = c.rank(), xd = R + 2 * N;
    kernels::cuda::NormInProjConvParams<T> np;
    np.batch = batch; np.d_model = c.d_model; np.d_inner = di; np.d_conv = c.d_conv;
    np.hidden = static_cast<const T*>(hidden.raw_data());
    np.residual_in = res_in ? static_cast<const float*>(res_in->raw_data()) : nullptr;
    np.residual_out = static_cast<float*>(res_out.raw_data());
    np.norm_w = static_cast<const float*>(m.norm_w_[i].raw_data());
    np.eps = static_cast<float>(m.cfg_.norm_eps);
    np.w_in = static_cast<const T*>(L.in_proj_w_.raw_data());
    np.conv_state = static_cast<float*>(st.conv_state.raw_data());
    np.conv_w = static_cast<const float*>(L.conv_w_.raw_data());
    np.conv_b = static_cast<const float*>(L.conv_b_.raw_data());
    np.xz = static_cast<T*>(b.xz.raw_data());
    np.xc = static_cast<T*>(b.xc.raw_data());
    kernels::cuda::norm_in_proj_conv_cuda<T>(np, s());
    cuda_glue::linear_rows(b.xc.raw_data(), batch, di, L.x_proj_w_, b.xdbl.raw_data(), xd, dt, dev);
    kernels::cuda::DtStateUpdateParams<T> up;
    up.batch = batch; up.d_inner = di; up.dstate = N; up.dt_rank = R;
    up.xdbl = static_cast<const T*>(b.xdbl.raw_data());
    up.w_dt = static_cast<const T*>(L.dt_proj_w_.raw_data());
    up.dt_bias = static_cast<const float*>(L.dt_proj_b_.raw_data());
    up.xc = static_cast<const T*>(b.xc.raw_data());
    up.z = static_cast<const T*>(b.xz.raw_data()) + di;
    up.z_stride = 2 * di;
    up.A = static_cast<const float*>(L.A_.raw_data());
    up.D = static_cast<const float*>(L.D_.raw_data());
    up.state = static_cast<float*>(st.ssm_state.raw_data());
    up.y = static_cast<T*>(b.y.raw_data());
    kernels::cuda::dt_state_update_cuda<T>(up, s());
    cuda_glue::linear_rows(b.y.raw_data(), batch, di, L.out_proj_w_, hidden.raw_data(), c.d_model, dt, dev);
  }

  // Every kernel of one step on the decoder's stream (the current stream while it runs).
  void enqueue_step() {
    const MambaLM& m = *lm;
    if (persistent) {
      if (dt == DType::bf16)
        persistent_step<__nv_bfloat16>();
      else
        persistent_step<float>();
      return;
    }
    if (fused) {
      const int64_t d = m.cfg_.d_model;
      kernels::cuda::embedding_gather_cuda(batch, d, m.embedding_.size(0),
                                           static_cast<const int64_t*>(ids_dev.raw_data()), m.embedding_.raw_data(),
                                           cuda_glue::elem_type(dt), hidden.raw_data(), s());
      Tensor* res[2] = {&residual, &residual2};
      for (size_t i = 0; i < layers.size(); ++i) {
        const Tensor* rin = i == 0 ? nullptr : res[i % 2];
        if (dt == DType::bf16)
          fused_layer<__nv_bfloat16>(i, rin, *res[(i + 1) % 2]);
        else
          fused_layer<float>(i, rin, *res[(i + 1) % 2]);
      }
      // The final norm reads and updates the residual in place (one kernel, no aliasing issue).
      Tensor& last = *res[layers.size() % 2];
      if (&last != &residual) std::swap(residual, residual2);  // norm() works on `residual`
      norm(m.norm_f_w_, layers.empty());
      if (&last != &residual) std::swap(residual, residual2);
      const Tensor& head = m.lm_head_.defined() ? m.lm_head_ : m.embedding_;
      cuda_glue::linear_rows(normed.raw_data(), batch, d, head, logits.raw_data(), head.size(0), DType::f32, dev);
      return;
    }
    const int64_t d = m.cfg_.d_model;
    kernels::cuda::embedding_gather_cuda(batch, d, m.embedding_.size(0), static_cast<const int64_t*>(ids_dev.raw_data()),
                                         m.embedding_.raw_data(), cuda_glue::elem_type(dt), hidden.raw_data(), s());
    for (size_t i = 0; i < layers.size(); ++i) {
      norm(m.norm_w_[i], i == 0);
      layers[i]->step_into(normed, cache.layers[i], bufs[i], hidden);
    }
    norm(m.norm_f_w_, layers.empty());
    const Tensor& head = m.lm_head_.defined() ? m.lm_head_ : m.embedding_;
    cuda_glue::linear_rows(normed.raw_data(), batch, d, head, logits.raw_data(), head.size(0), DType::f32, dev);
  }

  void load_ids(const Tensor& ids_in) {
    const char* op = "CudaDecodeGraph::step";
    if (!ids_in.defined() || ids_in.dim() != 1 || ids_in.size(0) != batch)
      fail(op, "ids must be (batch=" + std::to_string(batch) + "), got " + ids_in.str());
    if (ids_in.is_cuda()) {
      if (ids_in.device() != dev || ids_in.dtype() != DType::i64)
        fail(op, "device ids must be i64 on " + dev.str() + ", got " + ids_in.str() + " on " + ids_in.device().str());
      cuda::copy_async(ids_dev, ids_in, stream);
      return;
    }
    if (ids_in.dtype() != DType::i64 && ids_in.dtype() != DType::i32) fail(op, "ids must be i64 or i32, got " + ids_in.str());
    const Tensor ids = ids_in.to(DType::i64).contiguous();
    // The previous step's copy from the pinned buffer must be done before it is rewritten.
    MAMBA_CUDA_CHECK(op, cudaStreamSynchronize(s()));
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t v = ids.data<int64_t>()[i];
      if (v < 0 || v >= lm->cfg_.vocab_size)
        fail(op, "token id " + std::to_string(v) + " at position " + std::to_string(i) + " is out of range [0, " +
                     std::to_string(lm->cfg_.vocab_size) + ")");
      ids_host.data<int64_t>()[i] = v;
    }
    MAMBA_CUDA_CHECK(op, cudaMemcpyAsync(ids_dev.raw_data(), ids_host.raw_data(), static_cast<size_t>(batch) * 8,
                                         cudaMemcpyHostToDevice, s()));
  }

  void capture() {
    const char* op = "CudaDecodeGraph (capture)";
    MAMBA_CUDA_CHECK(op, cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
    try {
      enqueue_step();
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(s(), &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    MAMBA_CUDA_CHECK(op, cudaStreamEndCapture(s(), &graph));
    MAMBA_CUDA_CHECK(op, cudaGraphInstantiate(&exec, graph, 0));
  }
};

CudaDecodeGraph::CudaDecodeGraph(const MambaLM& lm, int64_t batch, bool fused, bool persistent) : impl_(std::make_unique<Impl>()) {
  const char* op = "CudaDecodeGraph";
  Impl& I = *impl_;
  I.lm = &lm;
  I.batch = batch;
  I.dev = lm.device();
  I.dt = lm.compute_dtype();
  if (I.dev.is_cpu()) fail(op, "the model is on the CPU: move it with MambaLM::to(Device::cuda(i), dtype) first");
  if (batch < 1) fail(op, "batch must be >= 1, got " + std::to_string(batch));
  cuda::require_device(I.dev, op);
  I.stream = cuda::Stream::create(I.dev, /*non_blocking=*/false);  // readers on the default stream wait for it
  cuda::StreamGuard guard(I.stream);
  for (const auto& mx : lm.mixers_) {
    const auto* m1 = dynamic_cast<const Mamba1*>(mx.get());
    if (!m1) fail(op, "the graph captures Mamba-1 layers only (Mamba-2 models decode with MambaLM::step)");
    I.layers.push_back(m1);
    I.bufs.push_back(m1->make_step_buffers(batch));
  }
  I.cache = lm.new_cache(batch);
  const int64_t d = lm.cfg_.d_model;
  const Tensor& head = lm.lm_head_.defined() ? lm.lm_head_ : lm.embedding_;
  I.ids_dev = Tensor::zeros({batch}, DType::i64, I.dev);
  I.ids_host = cuda::pinned_empty({batch}, DType::i64);
  I.hidden = Tensor::empty({batch, d}, I.dt, I.dev);
  I.residual = Tensor::empty({batch, d}, DType::f32, I.dev);
  I.residual2 = Tensor::empty({batch, d}, DType::f32, I.dev);
  I.fused = fused && kernels::cuda::norm_in_proj_conv_supported(batch, d, lm.mixers_.empty() ? 4 : I.layers[0]->cfg_.d_conv);
  I.normed = Tensor::empty({batch, d}, I.dt, I.dev);
  I.logits = Tensor::empty({batch, head.size(0)}, DType::f32, I.dev);
  const char* env_persistent = std::getenv("MAMBA_DECODE_PERSISTENT");
  const bool want_persistent = persistent && !(env_persistent && std::string(env_persistent) == "0");
  const char* env_version = std::getenv("MAMBA_DECODE_VERSION");
  // Version 3 is the default; MAMBA_DECODE_VERSION=2 selects version 2.
  const std::string ev = env_version ? env_version : "";
  I.version = ev == "2" ? 2 : 3;
  // Batch > 8: the unfused graph is faster than version 3 (673 vs 1378 us at batch 16, H200, NOTES.md);
  // MAMBA_DECODE_PERSISTENT=1 takes the persistent step up to batch 16 all the same.
  const bool force_persistent = env_persistent && std::string(env_persistent) == "1";
  if (want_persistent && !I.layers.empty() && batch <= (force_persistent ? 16 : 8)) {
    const Mamba1Config& c = I.layers[0]->cfg_;
    bool same = true;  // one shape for every layer (the kernel reads the first layer's)
    for (const Mamba1* L : I.layers)
      same = same && L->cfg_.d_inner() == c.d_inner() && L->cfg_.d_state == c.d_state && L->cfg_.rank() == c.rank() &&
             L->cfg_.d_conv == c.d_conv && L->cfg_.d_model == c.d_model;
    auto grid_for = [&](int version) -> int {
      if (!same || (version == 2 && !I.fused)) return 0;
      if (I.dt == DType::bf16) {
        kernels::cuda::PersistentDecodeParams<__nv_bfloat16> q;
        q.batch = batch; q.d_model = d; q.d_inner = c.d_inner(); q.d_conv = c.d_conv; q.dstate = c.d_state;
        q.dt_rank = c.rank(); q.version = version;
        return kernels::cuda::persistent_decode_grid_for<__nv_bfloat16>(q);
      }
      kernels::cuda::PersistentDecodeParams<float> q;
      q.batch = batch; q.d_model = d; q.d_inner = c.d_inner(); q.d_conv = c.d_conv; q.dstate = c.d_state;
      q.dt_rank = c.rank(); q.version = version;
      return kernels::cuda::persistent_decode_grid_for<float>(q);
    };
    I.grid_blocks = grid_for(I.version);
    if (I.grid_blocks == 0 && I.version >= 3) {  // e.g. f32 at batch 16: no stage fits; version 2 where it applies
      I.version = 2;
      I.grid_blocks = grid_for(2);
    }
    if (I.grid_blocks > 0) {
      I.persistent = true;
      if (I.dt == DType::bf16)
        I.build_layer_table<__nv_bfloat16>();
      else
        I.build_layer_table<float>();
    }
  }
  I.stream.synchronize();
}

CudaDecodeGraph::~CudaDecodeGraph() {
  if (!impl_) return;
  cudaStreamSynchronize(impl_->s());
  if (impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_->graph) cudaGraphDestroy(impl_->graph);
  if (impl_->layer_table) cudaFree(impl_->layer_table);
  if (impl_->barrier) cudaFree(impl_->barrier);
}

Tensor CudaDecodeGraph::prefill(const Tensor& prompt) {
  cuda::StreamGuard guard(impl_->stream);
  return impl_->lm->forward(prompt, &impl_->cache);
}

const Tensor& CudaDecodeGraph::step(const Tensor& ids) {
  Impl& I = *impl_;
  cuda::StreamGuard guard(I.stream);
  I.load_ids(ids);
  if (I.steps == 0) {
    I.enqueue_step();  // eager: builds the GEMM plans outside the capture
  } else {
    if (!I.exec) I.capture();
    MAMBA_CUDA_CHECK("CudaDecodeGraph::step (cudaGraphLaunch)", cudaGraphLaunch(I.exec, I.s()));
  }
  ++I.steps;
  I.cache.seqlen_offset += 1;
  return I.logits;
}

const Tensor& CudaDecodeGraph::step_eager(const Tensor& ids) {
  Impl& I = *impl_;
  cuda::StreamGuard guard(I.stream);
  I.load_ids(ids);
  I.enqueue_step();
  ++I.steps;
  I.cache.seqlen_offset += 1;
  return I.logits;
}

void CudaDecodeGraph::replay() {
  Impl& I = *impl_;
  if (!I.exec) fail("CudaDecodeGraph::replay", "no graph captured yet (call step() twice first)");
  MAMBA_CUDA_CHECK("CudaDecodeGraph::replay (cudaGraphLaunch)", cudaGraphLaunch(I.exec, I.s()));
  I.cache.seqlen_offset += 1;
}

bool CudaDecodeGraph::captured() const { return impl_->exec != nullptr; }

void CudaDecodeGraph::reset() {
  Impl& I = *impl_;
  cuda::StreamGuard guard(I.stream);
  for (auto& l : I.cache.layers) {
    l.conv_state.fill(0.0);
    l.ssm_state.fill(0.0);
  }
  I.cache.seqlen_offset = 0;
}

void CudaDecodeGraph::synchronize() const { impl_->stream.synchronize(); }
InferenceCache& CudaDecodeGraph::cache() { return impl_->cache; }
const Tensor& CudaDecodeGraph::logits() const { return impl_->logits; }
int64_t CudaDecodeGraph::batch() const { return impl_->batch; }
void* CudaDecodeGraph::stream() const { return impl_->stream.native(); }
bool CudaDecodeGraph::fused() const { return impl_->fused; }
bool CudaDecodeGraph::persistent() const { return impl_->persistent; }
int CudaDecodeGraph::persistent_version() const { return impl_->persistent ? impl_->version : 0; }
int64_t CudaDecodeGraph::kernels_per_step() const {
  if (impl_->persistent) return 1;  // plus one memset node (the barrier counter)
  return static_cast<int64_t>(impl_->layers.size()) * (impl_->fused ? 4 : 7) + 3;
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn
