// MambaLMTrainerCuda (mamba/nn/mamba_lm_train_cuda.h): forward keeping the activations the
// backward needs, the backward in reverse layer order through cuBLASLt (train_gemm_cuda with
// transposes; weight gradients in f32), the scan backward kernel and this branch's plain
// backward kernels (train_glue_cuda.h), then clipping + AdamW on one f32 arena of masters.
#include "mamba/nn/mamba_lm_train_cuda.h"

#include <cmath>
#include <cstdlib>
#include <map>

#include "mamba/nn/mamba1.h"
#include "mamba/tensor/cuda.h"
#include "mamba/train/optimizer.h"

#ifdef MAMBA_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/causal_conv1d_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/rms_norm_cuda.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#include "mamba/kernels/cuda/tensor_ops_cuda.h"
#include "mamba/kernels/cuda/train_glue_cuda.h"
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#endif

namespace mamba::nn {

namespace {
constexpr int64_t kAlign = 64;  // elements (256 bytes of f32) between parameters in the arenas
struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0, n = 0;
  bool decay = true;
  bool bf16_copy = false;  // a GEMM weight: gets a bf16 copy in autocast mode
};
}  // namespace

struct MambaLMTrainerCuda::Impl {
  Mamba1Config m1;
  std::vector<ParamInfo> params;
  int64_t total = 0;
  Tensor master, grad, exp_avg, exp_avg_sq, bf16, A, scalars, gemm_ws, sumsq_ws;
  struct LayerIdx {
    int64_t in = -1, convw = -1, convb = -1, xproj = -1, dtw = -1, dtb = -1, alog = -1, D = -1, out = -1, norm = -1;
  };
  std::vector<LayerIdx> layers;  // indices into params
  int64_t emb = -1, norm_f = -1, lm_head = -1;
  int64_t counted = 0;
  int64_t ckpt_bytes = 0;  // the forward-written scan checkpoint arena of the last forward_backward
  // Optimiser descriptors (train_kernels_cuda.h): the grad arena cut into equal pieces for the
  // sum of squares (the alignment gaps are zero), and AdamW over runs of consecutive parameters
  // with the same weight decay and bf16-copy flag (a run covers its gaps: zero gradients and
  // zero moments keep zero weights zero).
  size_t sumsq_ws_bytes = 0;
#ifdef MAMBA_HAVE_CUDA
  std::vector<kernels::cuda::AdamWTensorCuda> sumsq_pieces, adam_runs;
  // Phase timing (set_profile): CUDA events recorded at phase ends; a null name starts a region.
  bool profile = false;
  std::vector<std::pair<const char*, cudaEvent_t>> marks;
  std::vector<cudaEvent_t> pool;
  void mark(const char* name, cudaStream_t s) {
    if (!profile) return;
    if (marks.size() == pool.size()) {
      cudaEvent_t e;
      MAMBA_CUDA_CHECK("MambaLMTrainerCuda (profile)", cudaEventCreate(&e));
      pool.push_back(e);
    }
    cudaEvent_t e = pool[marks.size()];
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda (profile)", cudaEventRecord(e, s));
    marks.emplace_back(name, e);
  }
  // MAMBA_GT_OVERLAP=1: weight-gradient GEMMs of the backward on a second stream (with their
  // own GEMM workspace), so they can run beside the scan backward, which leaves most of each SM
  // idle at this width; events order them, and the tensors they read stay alive (per layer)
  // until the main stream has waited for them.
  cudaStream_t side = nullptr;
  Tensor gemm_ws2;
  std::vector<cudaEvent_t> sync_pool;
  size_t sync_used = 0;
  cudaEvent_t sync_event() {
    if (sync_used == sync_pool.size()) {
      cudaEvent_t e;
      MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      sync_pool.push_back(e);
    }
    return sync_pool[sync_used++];
  }
  ~Impl() {
    for (cudaEvent_t e : pool) cudaEventDestroy(e);
    for (cudaEvent_t e : sync_pool) cudaEventDestroy(e);
    if (side) cudaStreamDestroy(side);
  }
#endif
};

#ifndef MAMBA_HAVE_CUDA

MambaLMTrainerCuda::MambaLMTrainerCuda(MambaLM&, const CudaTrainOptions&, Device) {
  fail("MambaLMTrainerCuda", "built without CUDA (configure with -DMAMBA_CUDA=ON)");
}
MambaLMTrainerCuda::~MambaLMTrainerCuda() = default;
void MambaLMTrainerCuda::forward_backward(const Tensor&, const Tensor&) { fail("MambaLMTrainerCuda", "built without CUDA"); }
void MambaLMTrainerCuda::optimizer_step(double) { fail("MambaLMTrainerCuda", "built without CUDA"); }
double MambaLMTrainerCuda::last_loss() const { fail("MambaLMTrainerCuda", "built without CUDA"); }
double MambaLMTrainerCuda::last_grad_norm() const { fail("MambaLMTrainerCuda", "built without CUDA"); }
std::vector<std::string> MambaLMTrainerCuda::parameter_names() const { return {}; }
std::vector<Tensor> MambaLMTrainerCuda::parameters_cpu() const { return {}; }
std::vector<Tensor> MambaLMTrainerCuda::gradients_cpu() const { return {}; }
int64_t MambaLMTrainerCuda::parameter_count() const { return 0; }
int64_t MambaLMTrainerCuda::scan_checkpoint_bytes() const { return 0; }
void MambaLMTrainerCuda::set_profile(bool) {}
std::vector<std::pair<std::string, double>> MambaLMTrainerCuda::profile_ms() { return {}; }

#else

namespace kc = kernels::cuda;

namespace {

float* f32p(const Tensor& t, int64_t off = 0) { return static_cast<float*>(t.raw_data()) + off; }
__nv_bfloat16* bfp(const Tensor& t, int64_t off = 0) { return static_cast<__nv_bfloat16*>(t.raw_data()) + off; }

template <class T>
constexpr kc::GemmType gemm_t() {
  return std::is_same_v<T, float> ? kc::GemmType::f32 : kc::GemmType::bf16;
}
template <class T>
constexpr kc::ElemType elem_t() {
  return std::is_same_v<T, float> ? kc::ElemType::f32 : kc::ElemType::bf16;
}
template <class T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::f32 : DType::bf16;
}

// The A/B switches below are read once per process.
bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::string(e) == value;
}

// MAMBA_GT_TRANSPOSE=strided: the generic strided-copy kernel instead of the tiled transpose
// (kept for A/B checks).
bool tiled_transpose() {
  static const bool v = !env_is("MAMBA_GT_TRANSPOSE", "strided");
  return v;
}

// MAMBA_GT_LAYOUT=transpose: the GEMMs write and read the (b, l, d) row layout and tiled
// transposes convert to and from the scan's (b, d, l) layout (the layout of the first version,
// kept for A/B checks); default "direct": strided-batched GEMMs write delta, z and dout in the
// scan layout and read y, ddelta and dz from it, so only u, B, C, du, dB and dC are transposed.
bool direct_layout() {
  static const bool v = !env_is("MAMBA_GT_LAYOUT", "transpose");
  return v;
}

// The scan forward writes the backward's chunk checkpoints (SelectiveScanCudaParams::
// bwd_workspace; the backward then skips its pass A) when d_state <= 16 and the scan versions
// are the defaults (v6 forward; v2 or v4 backward); MAMBA_GT_FWD_CKPT=0 keeps pass A (A/B runs).
bool fwd_ckpt_enabled(int64_t dstate) {
  static const bool on = [] {
    if (env_is("MAMBA_GT_FWD_CKPT", "0")) return false;
    const char* fv = std::getenv("MAMBA_SCAN_VERSION");
    const char* bv = std::getenv("MAMBA_SCAN_BWD_VERSION");
    const bool fwd_ok = !fv || !*fv || std::string(fv) == "0" || std::string(fv) == "6";
    const bool bwd_ok = !bv || !*bv || std::string(bv) == "0" || std::string(bv) == "2" ||
                        std::string(bv) == "4";
    return fwd_ok && bwd_ok;
  }();
  return on && dstate <= 16;
}

bool overlap_enabled() {
  static const bool v = env_is("MAMBA_GT_OVERLAP", "1");
  return v;
}

bool wsum_loop() {
  static const bool v = env_is("MAMBA_GT_WSUM", "loop");
  return v;
}

// (b, l, c) rows of stride src_ld -> (b, c, l) contiguous (types may differ).
void to_bcl(cudaStream_t s, const void* src, kc::ElemType st, int64_t src_ld, void* dst, kc::ElemType dt, int64_t b,
            int64_t l, int64_t c) {
  if (tiled_transpose()) {
    kc::gt_transpose_cuda(b, l, c, src, st == kc::ElemType::bf16, src_ld, l * src_ld, dst, dt == kc::ElemType::bf16, l,
                          c * l, s);
    return;
  }
  kc::StridedCopyParams p;
  p.rank = 3;
  p.shape[0] = b; p.shape[1] = l; p.shape[2] = c;
  p.src_stride[0] = l * src_ld; p.src_stride[1] = src_ld; p.src_stride[2] = 1;
  p.dst_stride[0] = c * l; p.dst_stride[1] = 1; p.dst_stride[2] = l;
  p.src = src; p.dst = dst; p.src_type = st; p.dst_type = dt;
  kc::strided_copy_cuda(p, s);
}
// (b, c, l) contiguous -> (b, l, c) rows of stride dst_ld.
void to_blc(cudaStream_t s, const void* src, kc::ElemType st, void* dst, kc::ElemType dt, int64_t dst_ld, int64_t b,
            int64_t l, int64_t c) {
  if (tiled_transpose()) {
    kc::gt_transpose_cuda(b, c, l, src, st == kc::ElemType::bf16, l, c * l, dst, dt == kc::ElemType::bf16, dst_ld,
                          l * dst_ld, s);
    return;
  }
  kc::StridedCopyParams p;
  p.rank = 3;
  p.shape[0] = b; p.shape[1] = c; p.shape[2] = l;
  p.src_stride[0] = c * l; p.src_stride[1] = l; p.src_stride[2] = 1;
  p.dst_stride[0] = l * dst_ld; p.dst_stride[1] = 1; p.dst_stride[2] = dst_ld;
  p.src = src; p.dst = dst; p.src_type = st; p.dst_type = dt;
  kc::strided_copy_cuda(p, s);
}

}  // namespace

MambaLMTrainerCuda::MambaLMTrainerCuda(MambaLM& model, const CudaTrainOptions& options, Device device)
    : impl_(std::make_unique<Impl>()), cfg_(model.config()), opt_(options), device_(device) {
  const char* op = "MambaLMTrainerCuda";
  cuda::require_device(device, op);
  if (!model.device().is_cpu()) fail(op, "the model must be on the CPU (its parameters are copied from there)");
  if (cfg_.layer != "Mamba1") fail(op, "layer '" + cfg_.layer + "': only Mamba1 models train on CUDA");
  if (!cfg_.rms_norm) fail(op, "rms_norm = false (LayerNorm) is not supported; only RMSNorm");
  if (opt_.compute != DType::f32 && opt_.compute != DType::bf16)
    fail(op, std::string("compute must be f32 or bf16, got ") + dtype_name(opt_.compute));
  Impl& m = *impl_;
  m.m1 = Mamba1Config::from_json(cfg_.ssm_cfg, cfg_.d_model);
  if (!m.m1.selective) fail(op, "ssm_cfg.selective = false (the LTI ablation) has no CUDA path");
  if (m.m1.d_conv > 4) fail(op, "ssm_cfg.d_conv " + std::to_string(m.m1.d_conv) + " exceeds the CUDA limit 4");
  if (m.m1.d_state > 256) fail(op, "ssm_cfg.d_state " + std::to_string(m.m1.d_state) + " exceeds the CUDA limit 256");
  if (!(opt_.beta1 >= 0 && opt_.beta1 < 1 && opt_.beta2 >= 0 && opt_.beta2 < 1))
    fail(op, "beta1 and beta2 must be in [0, 1)");
  if (!(opt_.eps > 0) || !(opt_.weight_decay >= 0)) fail(op, "eps must be > 0 and weight_decay >= 0");

  auto named = model.parameters();
  m.layers.assign(static_cast<size_t>(cfg_.n_layer), {});
  for (auto& [name, t] : named) {
    ParamInfo p;
    p.name = name;
    p.shape = t->shape();
    p.n = t->numel();
    p.offset = m.total;
    p.decay = train::default_decay_rule(name);
    m.total += (p.n + kAlign - 1) / kAlign * kAlign;
    const int64_t idx = static_cast<int64_t>(m.params.size());
    if (name == "backbone.embedding.weight") {
      m.emb = idx;
      p.bf16_copy = cfg_.tie_embeddings;
    } else if (name == "backbone.norm_f.weight") {
      m.norm_f = idx;
    } else if (name == "lm_head.weight") {
      m.lm_head = idx;
      p.bf16_copy = true;
    } else if (name.rfind("backbone.layers.", 0) == 0) {
      const size_t dot = name.find('.', 16);
      const int64_t li = std::stoll(name.substr(16, dot - 16));
      auto& L = m.layers[static_cast<size_t>(li)];
      const std::string rest = name.substr(dot + 1);
      if (rest == "mixer.in_proj.weight") L.in = idx, p.bf16_copy = true;
      else if (rest == "mixer.conv1d.weight") L.convw = idx;
      else if (rest == "mixer.conv1d.bias") L.convb = idx;
      else if (rest == "mixer.x_proj.weight") L.xproj = idx, p.bf16_copy = true;
      else if (rest == "mixer.dt_proj.weight") L.dtw = idx, p.bf16_copy = true;
      else if (rest == "mixer.dt_proj.bias") L.dtb = idx;
      else if (rest == "mixer.A_log") L.alog = idx;
      else if (rest == "mixer.D") L.D = idx;
      else if (rest == "mixer.out_proj.weight") L.out = idx, p.bf16_copy = true;
      else if (rest == "norm.weight") L.norm = idx;
      else fail(op, "unexpected parameter '" + name + "'");
    } else {
      fail(op, "unexpected parameter '" + name + "'");
    }
    m.params.push_back(p);
  }
  if (m.lm_head >= 0 && cfg_.tie_embeddings) fail(op, "tie_embeddings with an lm_head.weight");
  for (const auto& L : m.layers)
    if (L.in < 0 || L.convw < 0 || L.convb < 0 || L.xproj < 0 || L.dtw < 0 || L.dtb < 0 || L.alog < 0 || L.D < 0 ||
        L.out < 0 || L.norm < 0)
      fail(op, "a layer misses one of its parameters");

  // Arenas: masters (from the CPU values), grads and the Adam moments (zeros; the alignment
  // gaps stay zero so the global sum of squares can run over the whole grad arena).
  Tensor host = Tensor::zeros({m.total});
  for (size_t i = 0; i < named.size(); ++i) {
    const Tensor v = named[i].second->contiguous();
    std::copy(v.data<float>(), v.data<float>() + v.numel(), host.data<float>() + m.params[i].offset);
  }
  m.master = host.to(device);
  m.grad = Tensor::zeros({m.total}, DType::f32, device);
  m.exp_avg = Tensor::zeros({m.total}, DType::f32, device);
  m.exp_avg_sq = Tensor::zeros({m.total}, DType::f32, device);
  if (opt_.compute == DType::bf16) m.bf16 = host.to(DType::bf16).to(device);
  const int64_t di = m.m1.d_inner(), N = m.m1.d_state;
  m.A = Tensor::empty({cfg_.n_layer, di * N}, DType::f32, device);
  m.scalars = Tensor::zeros({8}, DType::f32, device);  // [0] loss sum, [1] grad sum of squares
  m.gemm_ws = Tensor::empty({static_cast<int64_t>(kc::train_gemm_cuda_workspace_bytes() / 4)}, DType::f32, device);
  {
    // Sum of squares: the whole grad arena (gaps zero) in 64 equal pieces (multiples of 64 elements).
    constexpr int64_t kPieces = 64;
    const int64_t piece = (m.total / kPieces + kAlign) / kAlign * kAlign;
    for (int64_t o = 0; o < m.total; o += piece) {
      kc::AdamWTensorCuda t;
      t.grad = f32p(m.grad, o);
      t.n = std::min(piece, m.total - o);
      m.sumsq_pieces.push_back(t);
    }
    m.sumsq_ws_bytes = kc::grad_sumsq_cuda_workspace_bytes(static_cast<int64_t>(m.sumsq_pieces.size()));
    m.sumsq_ws = Tensor::empty({static_cast<int64_t>(m.sumsq_ws_bytes / 4 + 64)}, DType::f32, device);
    // AdamW: runs of consecutive parameters with the same decay and bf16-copy flag.
    const bool bfm = opt_.compute == DType::bf16;
    for (size_t i = 0; i < m.params.size();) {
      const ParamInfo& p0 = m.params[i];
      const bool copy = bfm && p0.bf16_copy;
      size_t j = i + 1;
      while (j < m.params.size() && m.params[j].decay == p0.decay && (bfm && m.params[j].bf16_copy) == copy) ++j;
      const int64_t end = j < m.params.size() ? m.params[j].offset : m.total;
      kc::AdamWTensorCuda t;
      t.param = f32p(m.master, p0.offset);
      t.grad = f32p(m.grad, p0.offset);
      t.exp_avg = f32p(m.exp_avg, p0.offset);
      t.exp_avg_sq = f32p(m.exp_avg_sq, p0.offset);
      t.param_bf16 = copy ? bfp(m.bf16, p0.offset) : nullptr;
      t.n = end - p0.offset;
      t.weight_decay = p0.decay ? static_cast<float>(opt_.weight_decay) : 0.f;
      m.adam_runs.push_back(t);
      i = j;
    }
  }
  const cudaStream_t s = cuda_glue::stream(device);
  for (int64_t i = 0; i < cfg_.n_layer; ++i)
    kc::gt_neg_exp_cuda(di * N, f32p(m.master, m.params[m.layers[i].alog].offset), f32p(m.A, i * di * N), s);
}

MambaLMTrainerCuda::~MambaLMTrainerCuda() = default;

int64_t MambaLMTrainerCuda::scan_checkpoint_bytes() const { return impl_->ckpt_bytes; }

int64_t MambaLMTrainerCuda::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : impl_->params) n += p.n;
  return n;
}
std::vector<std::string> MambaLMTrainerCuda::parameter_names() const {
  std::vector<std::string> out;
  for (const auto& p : impl_->params) out.push_back(p.name);
  return out;
}
static std::vector<Tensor> split_arena(const Tensor& arena, const std::vector<ParamInfo>& params) {
  const Tensor h = arena.to(Device::cpu());
  std::vector<Tensor> out;
  for (const auto& p : params) {
    Tensor t = Tensor::empty(p.shape);
    std::copy(h.data<float>() + p.offset, h.data<float>() + p.offset + p.n, t.data<float>());
    out.push_back(t);
  }
  return out;
}
std::vector<Tensor> MambaLMTrainerCuda::parameters_cpu() const { return split_arena(impl_->master, impl_->params); }
std::vector<Tensor> MambaLMTrainerCuda::gradients_cpu() const { return split_arena(impl_->grad, impl_->params); }

double MambaLMTrainerCuda::last_loss() const {
  const Tensor s = impl_->scalars.to(Device::cpu());
  return impl_->counted ? static_cast<double>(s.data<float>()[0]) / static_cast<double>(impl_->counted) : 0.0;
}
double MambaLMTrainerCuda::last_grad_norm() const {
  const Tensor s = impl_->scalars.to(Device::cpu());
  return std::sqrt(static_cast<double>(s.data<float>()[1]));
}

void MambaLMTrainerCuda::forward_backward(const Tensor& ids_in, const Tensor& targets_in) {
  const char* op = "MambaLMTrainerCuda::forward_backward";
  if (!ids_in.defined() || ids_in.dim() != 2) fail(op, "ids must be (batch, seqlen)");
  if (ids_in.dtype() != DType::i64 && ids_in.dtype() != DType::i32) fail(op, "ids must be i64 or i32");
  if (!ids_in.device().is_cpu() || !targets_in.defined() || !targets_in.device().is_cpu())
    fail(op, "ids and targets must be CPU tensors");
  if (targets_in.dtype() != DType::i64 || targets_in.shape() != ids_in.shape())
    fail(op, "targets must be i64 of the shape of ids " + shape_str(ids_in.shape()) + ", got " + targets_in.str());
  const int64_t b = ids_in.size(0), l = ids_in.size(1);
  if (b < 1 || l < 1) fail(op, "batch and seqlen must be >= 1, got " + shape_str(ids_in.shape()));
  if (b > 65535) fail(op, "batch " + std::to_string(b) + " exceeds 65535");
  if (b * l > 65535LL * 256) fail(op, "batch * seqlen " + std::to_string(b * l) + " exceeds 16776960");
  const Tensor ids = ids_in.to(DType::i64).contiguous(), tg = targets_in.contiguous();
  // One buffer [ids | targets] goes to the device in one copy.
  Tensor both = Tensor::empty({2, b * l}, DType::i64);
  int64_t counted = 0;
  for (int64_t i = 0; i < b * l; ++i) {
    const int64_t v = ids.data<int64_t>()[i], t = tg.data<int64_t>()[i];
    if (v < 0 || v >= cfg_.vocab_size)
      fail(op, "token id " + std::to_string(v) + " at position " + std::to_string(i) + " is out of range [0, " +
                   std::to_string(cfg_.vocab_size) + ")");
    if (t < -1 || t >= cfg_.vocab_size)
      fail(op, "target " + std::to_string(t) + " at position " + std::to_string(i) + " is out of range [-1, " +
                   std::to_string(cfg_.vocab_size) + ")");
    both.data<int64_t>()[i] = v;
    both.data<int64_t>()[b * l + i] = t;
    counted += t >= 0;
  }
  Tensor dev = Tensor::empty({2, b * l}, DType::i64, device_);
  cuda::copy_async(dev, both, cuda::current_stream(device_));
  impl_->counted = counted;
  if (opt_.compute == DType::bf16)
    forward_backward_impl<__nv_bfloat16>(dev, b, l, counted);
  else
    forward_backward_impl<float>(dev, b, l, counted);
}

template <class T>
void MambaLMTrainerCuda::forward_backward_impl(const Tensor& io, int64_t b, int64_t l, int64_t counted) {
  Impl& m = *impl_;
  const cudaStream_t s = cuda_glue::stream(device_);
  const DType TD = dtype_of<T>();
  const kc::GemmType GT = gemm_t<T>();
  const kc::ElemType ET = elem_t<T>();
  const bool bf = std::is_same_v<T, __nv_bfloat16>;
  const bool direct = direct_layout();
  const int64_t rows = b * l, d = cfg_.d_model, V = cfg_.vocab_size, Vp = cfg_.padded_vocab(), L = cfg_.n_layer;
  const int64_t di = m.m1.d_inner(), N = m.m1.d_state, R = m.m1.rank(), K = m.m1.d_conv, xd = R + 2 * N;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const int64_t* ids = static_cast<const int64_t*>(io.raw_data());
  const int64_t* targets = ids + rows;
  void* gws = m.gemm_ws.raw_data();
  const size_t gws_bytes = kc::train_gemm_cuda_workspace_bytes();
  const bool overlap = overlap_enabled();
  if (overlap && !m.side) {
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaStreamCreateWithFlags(&m.side, cudaStreamNonBlocking));
    m.gemm_ws2 = Tensor::empty({static_cast<int64_t>(gws_bytes / 4)}, DType::f32, device_);
  }
  m.sync_used = 0;
  cudaStream_t cur_st = s;  // where the GEMM helpers below launch: s, or m.side inside side()
  void* cur_ws = gws;
  std::vector<Tensor> keep_cur;  // what this layer's side-stream work reads
  std::vector<std::pair<cudaEvent_t, std::vector<Tensor>>> pending;
  auto mark = [&](const char* name) { m.mark(name, s); };
  mark(nullptr);

  auto P = [&](int64_t idx) { return f32p(m.master, m.params[idx].offset); };
  auto G = [&](int64_t idx) { return f32p(m.grad, m.params[idx].offset); };
  // The weight a GEMM reads (from element `off` on): the bf16 copy in autocast mode, the master otherwise.
  auto W = [&](int64_t idx, int64_t off = 0) -> const void* {
    return bf ? static_cast<const void*>(bfp(m.bf16, m.params[idx].offset + off))
              : static_cast<const void*>(P(idx) + off);
  };
  auto buf = [&](int64_t n, DType t) { return Tensor::empty({n}, t, device_); };
  auto ptr = [](const Tensor& t) { return static_cast<T*>(t.raw_data()); };
  // C = op(A) op(B) (+ beta C), `batch` strided batches (strides in elements; 0 = shared).
  auto gemmb = [&](int64_t batch, int64_t sa, int64_t sb, int64_t sc, int64_t M, int64_t Nn, int64_t Kk,
                   const void* a, int64_t lda, bool ta, const void* bb, int64_t ldb, bool tb, void* c, int64_t ldc,
                   kc::GemmType ct, float beta) {
    kc::TrainGemmParams p;
    p.m = M; p.n = Nn; p.k = Kk;
    p.a = a; p.lda = lda; p.trans_a = ta;
    p.b = bb; p.ldb = ldb; p.trans_b = tb;
    p.c = c; p.ldc = ldc; p.beta = beta;
    p.ab_type = GT; p.c_type = ct;
    p.batch = batch; p.stride_a = sa; p.stride_b = sb; p.stride_c = sc;
    kc::train_gemm_cuda(p, cur_ws, gws_bytes, cur_st);
  };
  auto gemm = [&](int64_t M, int64_t Nn, int64_t Kk, const void* a, int64_t lda, bool ta, const void* bb, int64_t ldb,
                  bool tb, void* c, int64_t ldc, kc::GemmType ct, float beta = 0.f) {
    gemmb(1, 0, 0, 0, M, Nn, Kk, a, lda, ta, bb, ldb, tb, c, ldc, ct, beta);
  };
  const size_t es = bf ? 2 : 4;  // bytes of a T
  auto off = [&](const void* p, int64_t elems) { return static_cast<const char*>(p) + elems * static_cast<int64_t>(es); };
  auto offm = [&](void* p, int64_t elems) { return static_cast<char*>(p) + elems * static_cast<int64_t>(es); };
  // A weight gradient (M, Nn) f32, contiguous, summed over the batch rows of (b, d, l)-layout
  // operands: one batched GEMM into b partials, then their sum in batch order (one GEMM per
  // batch row fills only M * Nn / tile of the SMs); MAMBA_GT_WSUM=loop: one GEMM per batch row
  // accumulating into C.
  auto gemm_sum = [&](int64_t M, int64_t Nn, const void* a, int64_t lda, bool ta, int64_t sa, const void* bb,
                      int64_t ldb, bool tb, int64_t sb, float* c, int64_t ldc) {
    if (wsum_loop() || b == 1 || ldc != Nn) {
      for (int64_t i = 0; i < b; ++i)
        gemm(M, Nn, l, off(a, i * sa), lda, ta, off(bb, i * sb), ldb, tb, c, ldc, kc::GemmType::f32, i ? 1.f : 0.f);
      return;
    }
    Tensor part = buf(b * M * Nn, DType::f32);
    if (cur_st != s) keep_cur.push_back(part);
    gemmb(b, sa, sb, M * Nn, M, Nn, l, a, lda, ta, bb, ldb, tb, part.raw_data(), Nn, kc::GemmType::f32, 0.f);
    kc::gt_sum_batches_cuda(M * Nn, b, f32p(part), c, cur_st);
  };
  // Weight-gradient work: on the side stream (after what s has issued so far) when overlapping.
  auto side = [&](std::initializer_list<Tensor> reads, auto&& fn) {
    if (!overlap) {
      fn();
      return;
    }
    cudaEvent_t e = m.sync_event();
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaEventRecord(e, s));
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaStreamWaitEvent(m.side, e, 0));
    for (const Tensor& t : reads) keep_cur.push_back(t);
    cur_st = m.side;
    cur_ws = m.gemm_ws2.raw_data();
    fn();
    cur_st = s;
    cur_ws = gws;
  };
  // End of a layer's side work: an event on the side stream and the tensors it reads.
  auto side_close = [&]() {
    if (!overlap) return;
    cudaEvent_t e = m.sync_event();
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaEventRecord(e, m.side));
    pending.emplace_back(e, std::move(keep_cur));
    keep_cur.clear();
  };
  // s waits for the side work of all closed layers but the newest `keep` ones; their tensors go.
  auto side_join = [&](size_t keep) {
    while (pending.size() > keep) {
      MAMBA_CUDA_CHECK("MambaLMTrainerCuda (overlap)", cudaStreamWaitEvent(s, pending.front().first, 0));
      pending.erase(pending.begin());
    }
  };

  // Forward-written scan checkpoints: layer i's backward workspace starts at ckpt_off * i of
  // one arena. The forward of layer i writes only the first region of that workspace (the
  // chunk checkpoints, f32 (batch, ceil(l / 8), 16, d_inner); kernels/cuda/NOTES.md "Scan forward
  // v6 and forward-written backward checkpoints"), and the backward of layer i runs after those
  // of layers > i, so the rest of its workspace may overlay their (spent) checkpoints: the arena
  // holds L checkpoint regions + one workspace's remainder instead of L whole workspaces.
  const bool fwd_ckpt = opt_.forward_checkpoints && fwd_ckpt_enabled(N);
  size_t scan_ws_bytes = 0, ckpt_off = 0;
  Tensor ckpt_arena;
  {
    kc::SelectiveScanBwdCudaParams<T> shape;
    shape.batch = b; shape.dim = di; shape.seqlen = l; shape.dstate = N; shape.n_groups = 1;
    scan_ws_bytes = kc::selective_scan_bwd_cuda_workspace_bytes<T>(shape);
    if (fwd_ckpt) {
      const size_t region = static_cast<size_t>(b * ((l + 7) / 8) * 16 * di) * 4;
      ckpt_off = std::min(scan_ws_bytes, (region + 255) / 256 * 256);
      const size_t arena = ckpt_off * static_cast<size_t>(L - 1) + scan_ws_bytes;
      ckpt_arena = buf(static_cast<int64_t>(arena / 4 + 64), DType::f32);
      m.ckpt_bytes = static_cast<int64_t>(arena);
    } else {
      m.ckpt_bytes = 0;
    }
  }
  auto scan_ws = [&](int64_t layer) -> float* {
    return reinterpret_cast<float*>(static_cast<char*>(ckpt_arena.raw_data()) + ckpt_off * static_cast<size_t>(layer));
  };

  struct Saved {
    Tensor r, n, xz, xc, xdbl, u, delta, z, Bm, Cm, y;  // direct: xz = the x half only, y in (b, d, l)
  };
  std::vector<Saved> sv(static_cast<size_t>(L));

  // ---- forward ----
  const int64_t emb = m.emb, head = m.lm_head >= 0 ? m.lm_head : m.emb;
  Tensor r = buf(rows * d, DType::f32);
  kc::embedding_gather_cuda(rows, d, Vp, ids, P(emb), kc::ElemType::f32, r.raw_data(), s);
  Tensor nrm = buf(rows * d, TD);
  kc::add_rms_norm_cuda<T>(rows, d, nullptr, f32p(r), f32p(r), P(m.layers[0].norm), eps, ptr(nrm), s);
  mark("fwd embedding + norm");
  const int64_t xw = direct ? di : 2 * di;  // row width of the saved xz
  for (int64_t i = 0; i < L; ++i) {
    const auto& Li = m.layers[static_cast<size_t>(i)];
    Saved& S = sv[static_cast<size_t>(i)];
    S.r = r;
    S.n = nrm;
    S.xz = buf(rows * xw, TD);
    S.z = buf(rows * di, TD);
    if (direct) {
      // x half (rows, di) for the conv; z half straight into the scan's (b, d, l) layout:
      // z[b] (di, l) = W_in[di:] n[b]^T.
      gemm(rows, di, d, nrm.raw_data(), d, false, W(Li.in), d, true, S.xz.raw_data(), di, GT);
      gemmb(b, 0, l * d, di * l, di, l, d, W(Li.in, di * d), d, false, nrm.raw_data(), d, true, S.z.raw_data(), l,
            GT, 0.f);
    } else {
      gemm(rows, 2 * di, d, nrm.raw_data(), d, false, W(Li.in), d, true, S.xz.raw_data(), 2 * di, GT);
    }
    mark("fwd in_proj");
    S.u = buf(rows * di, TD);
    S.xdbl = buf(rows * xd, TD);
    S.xc = buf(rows * di, TD);
    {
      kc::CausalConv1dCudaParams<T> cp;
      cp.batch = b; cp.seqlen = l; cp.channels = di; cp.width = K;
      cp.x = ptr(S.xz); cp.x_sb = l * xw; cp.x_st = xw;
      cp.weight = P(Li.convw); cp.bias = P(Li.convb); cp.silu = true;
      cp.out = ptr(S.xc);
      kc::causal_conv1d_fwd_cuda<T>(cp, s);
    }
    mark("fwd conv1d");
    gemm(rows, xd, di, S.xc.raw_data(), di, false, W(Li.xproj), di, true, S.xdbl.raw_data(), xd, GT);
    mark("fwd x_proj");
    S.delta = buf(rows * di, TD);
    S.Bm = buf(rows * N, TD);
    S.Cm = buf(rows * N, TD);
    if (direct) {
      // delta[b] (di, l) = W_dt xdbl[b][:, :R]^T
      gemmb(b, 0, l * xd, di * l, di, l, R, W(Li.dtw), R, false, S.xdbl.raw_data(), xd, true, S.delta.raw_data(), l,
            GT, 0.f);
      mark("fwd dt_proj");
      to_bcl(s, S.xc.raw_data(), ET, di, S.u.raw_data(), ET, b, l, di);
    } else {
      Tensor dt = buf(rows * di, TD);
      gemm(rows, di, R, S.xdbl.raw_data(), xd, false, W(Li.dtw), R, true, dt.raw_data(), di, GT);
      mark("fwd dt_proj");
      to_bcl(s, S.xc.raw_data(), ET, di, S.u.raw_data(), ET, b, l, di);
      to_bcl(s, dt.raw_data(), ET, di, S.delta.raw_data(), ET, b, l, di);
      to_bcl(s, ptr(S.xz) + di, ET, 2 * di, S.z.raw_data(), ET, b, l, di);
    }
    to_bcl(s, ptr(S.xdbl) + R, ET, xd, S.Bm.raw_data(), ET, b, l, N);
    to_bcl(s, ptr(S.xdbl) + R + N, ET, xd, S.Cm.raw_data(), ET, b, l, N);
    mark("fwd transposes");
    Tensor ybcl = buf(rows * di, TD);
    kc::SelectiveScanCudaParams<T> sp;
    sp.batch = b; sp.dim = di; sp.seqlen = l; sp.dstate = N; sp.n_groups = 1;
    sp.u = ptr(S.u); sp.delta = ptr(S.delta); sp.z = ptr(S.z); sp.B = ptr(S.Bm); sp.C = ptr(S.Cm);
    sp.A = f32p(m.A, i * di * N); sp.D = P(Li.D); sp.delta_bias = P(Li.dtb); sp.delta_softplus = true;
    sp.y = ptr(ybcl);
    if (fwd_ckpt) sp.bwd_workspace = scan_ws(i);
    const Tensor seg = cuda_glue::scan_seg_workspace(sp, device_);  // small grids: the sequence split
    kc::selective_scan_fwd_cuda<T>(sp, s);
    mark("fwd scan");
    Tensor hidden = buf(rows * d, TD);
    if (direct) {
      S.y = ybcl;
      // hidden[b] (l, d) = y[b]^T W_out^T
      gemmb(b, di * l, 0, l * d, l, d, di, ybcl.raw_data(), l, true, W(Li.out), di, true, hidden.raw_data(), d, GT,
            0.f);
    } else {
      S.y = buf(rows * di, TD);
      to_blc(s, ybcl.raw_data(), ET, S.y.raw_data(), ET, di, b, l, di);
      mark("fwd transposes");
      gemm(rows, d, di, S.y.raw_data(), di, false, W(Li.out), di, true, hidden.raw_data(), d, GT);
    }
    mark("fwd out_proj");
    Tensor r_next = buf(rows * d, DType::f32);
    nrm = buf(rows * d, TD);
    const float* wn = i + 1 < L ? P(m.layers[static_cast<size_t>(i + 1)].norm) : P(m.norm_f);
    kc::add_rms_norm_cuda<T>(rows, d, ptr(hidden), f32p(r), f32p(r_next), wn, eps, ptr(nrm), s);
    r = r_next;
    mark("fwd add + norm");
  }
  // r = r_L, nrm = norm_f(r_L)
  Tensor logits = buf(rows * Vp, TD);
  gemm(rows, Vp, d, nrm.raw_data(), d, false, W(head), d, true, logits.raw_data(), Vp, GT);
  mark("fwd head");
  {
    const size_t ce_bytes = kc::cross_entropy_cuda_workspace_bytes(rows);
    Tensor ce_ws = buf(static_cast<int64_t>(ce_bytes / 4 + 1), DType::f32);
    Tensor loss_rows = buf(rows, DType::f32);
    const float scale = counted ? 1.f / static_cast<float>(counted) : 0.f;
    // In place: the logits buffer becomes dlogits.
    kc::cross_entropy_fwd_bwd_cuda<T>(rows, V, Vp, ptr(logits), targets, scale, ptr(logits), f32p(loss_rows),
                                      f32p(m.scalars), nullptr, ce_ws.raw_data(), ce_bytes, s);
  }
  mark("cross-entropy");
  // ---- backward ----
  // logits = nf W^T: dnf = dlogits W; dW = dlogits^T nf (overwrites: a tied table's embedding
  // part is added below).
  Tensor dnf = buf(rows * d, TD);
  gemm(rows, d, Vp, logits.raw_data(), Vp, false, W(head), d, false, dnf.raw_data(), d, GT);
  side({logits, nrm}, [&] {
    gemm(Vp, d, rows, logits.raw_data(), Vp, true, nrm.raw_data(), d, false, G(head), d, kc::GemmType::f32);
  });
  logits = Tensor();
  mark("bwd head");
  const size_t rn_bytes = kc::rms_norm_bwd_cuda_workspace_bytes(rows, d);
  Tensor rn_ws = buf(static_cast<int64_t>(rn_bytes / 4 + 1), DType::f32);
  Tensor dres = buf(rows * d, DType::f32);
  kc::rms_norm_bwd_cuda<T>(rows, d, f32p(r), P(m.norm_f), eps, ptr(dnf), nullptr, f32p(dres), G(m.norm_f),
                           rn_ws.raw_data(), rn_bytes, s);
  dnf = Tensor();
  mark("bwd norm");
  kc::CausalConv1dCudaParams<float> cshape;
  cshape.batch = b; cshape.seqlen = l; cshape.channels = di; cshape.width = K;
  const size_t cv_bytes = kc::causal_conv1d_bwd_cuda_workspace_bytes(cshape);
  for (int64_t i = L - 1; i >= 0; --i) {
    const auto& Li = m.layers[static_cast<size_t>(i)];
    Saved& S = sv[static_cast<size_t>(i)];
    // dy of the mixer = dres, in T for the GEMMs.
    Tensor dyT;
    if (bf) {
      dyT = buf(rows * d, TD);
      kc::gt_cast_f32_to_bf16_cuda(rows * d, f32p(dres), bfp(dyT), s);
      mark("bwd cast");
    } else if (overlap) {
      // The side stream reads dy after the norm backward below has updated dres in place.
      dyT = buf(rows * d, TD);
      MAMBA_CUDA_CHECK("MambaLMTrainerCuda", cudaMemcpyAsync(dyT.raw_data(), dres.raw_data(),
                                                             static_cast<size_t>(rows * d) * 4,
                                                             cudaMemcpyDeviceToDevice, s));
    } else {
      dyT = dres;
    }
    // out = y W_out^T: dY = dy W_out; dW_out = dy^T y.
    Tensor dout = buf(rows * di, TD);
    if (direct) {
      // dout[b] (di, l) = W_out^T dy[b]^T; dW_out (d, di) = sum_b dy[b]^T y[b]^T
      gemmb(b, 0, l * d, di * l, di, l, d, W(Li.out), di, true, dyT.raw_data(), d, true, dout.raw_data(), l, GT, 0.f);
      side({dyT, S.y}, [&] {
        gemm_sum(d, di, dyT.raw_data(), d, true, l * d, S.y.raw_data(), l, true, di * l, G(Li.out), di);
      });
      mark("bwd out_proj");
    } else {
      Tensor dY = buf(rows * di, TD);
      gemm(rows, di, d, dyT.raw_data(), d, false, W(Li.out), di, false, dY.raw_data(), di, GT);
      side({dyT, S.y}, [&] {
        gemm(d, di, rows, dyT.raw_data(), d, true, S.y.raw_data(), di, false, G(Li.out), di, kc::GemmType::f32);
      });
      mark("bwd out_proj");
      to_bcl(s, dY.raw_data(), ET, di, dout.raw_data(), ET, b, l, di);
      mark("bwd transposes");
    }
    S.y = Tensor();
    // scan backward
    Tensor du = buf(rows * di, TD), ddelta = buf(rows * di, TD), dz = buf(rows * di, TD);
    Tensor dA = buf(di * N, DType::f32), dB = buf(rows * N, DType::f32), dC = buf(rows * N, DType::f32);
    kc::SelectiveScanBwdCudaParams<T> bp;
    bp.batch = b; bp.dim = di; bp.seqlen = l; bp.dstate = N; bp.n_groups = 1;
    bp.u = ptr(S.u); bp.delta = ptr(S.delta); bp.z = ptr(S.z); bp.B = ptr(S.Bm); bp.C = ptr(S.Cm);
    bp.A = f32p(m.A, i * di * N); bp.D = P(Li.D); bp.delta_bias = P(Li.dtb); bp.delta_softplus = true;
    bp.dout = ptr(dout);
    bp.du = ptr(du); bp.ddelta = ptr(ddelta); bp.dz = ptr(dz);
    bp.dA = f32p(dA); bp.dB = f32p(dB); bp.dC = f32p(dC); bp.dD = G(Li.D); bp.ddelta_bias = G(Li.dtb);
    Tensor sws;
    if (fwd_ckpt) {
      bp.workspace = scan_ws(i);
      bp.checkpoints_from_forward = true;
    } else {
      sws = buf(static_cast<int64_t>(scan_ws_bytes / 4 + 64), DType::f32);
      bp.workspace = sws.raw_data();
    }
    bp.workspace_bytes = scan_ws_bytes;
    kc::selective_scan_bwd_cuda<T>(bp, s);
    sws = Tensor();
    dout = Tensor();
    S.delta = S.z = S.Bm = S.Cm = Tensor();
    S.u = Tensor();
    mark("bwd scan");
    side_join(0);  // the side work of layer i + 1 ran beside this layer's out_proj GEMM and scan
    if (overlap) mark("bwd side join");
    // A = -exp(A_log): dA_log = dA * A.
    kc::gt_mul_cuda(di * N, f32p(dA), f32p(m.A, i * di * N), G(Li.alog), s);
    // dxdbl = [ddt W_dt | dB | dC]; dt = xdbl[:, :R] W_dt^T: dW_dt = ddt^T xdbl[:, :R].
    Tensor dxdbl = buf(rows * xd, TD);
    if (direct) {
      // dxdbl[b][:, :R] (l, R) = ddelta[b]^T W_dt; dW_dt (di, R) = sum_b ddelta[b] xdbl[b][:, :R]
      gemmb(b, di * l, 0, l * xd, l, R, di, ddelta.raw_data(), l, true, W(Li.dtw), R, false, dxdbl.raw_data(), xd, GT,
            0.f);
      side({ddelta, S.xdbl}, [&] {
        gemm_sum(di, R, ddelta.raw_data(), l, false, di * l, S.xdbl.raw_data(), xd, false, l * xd, G(Li.dtw), R);
      });
      ddelta = Tensor();
      mark("bwd dt_proj");
    } else {
      Tensor ddt = buf(rows * di, TD);
      to_blc(s, ddelta.raw_data(), ET, ddt.raw_data(), ET, di, b, l, di);
      ddelta = Tensor();
      mark("bwd transposes");
      gemm(rows, R, di, ddt.raw_data(), di, false, W(Li.dtw), R, false, dxdbl.raw_data(), xd, GT);
      side({ddt, S.xdbl}, [&] {
        gemm(di, R, rows, ddt.raw_data(), di, true, S.xdbl.raw_data(), xd, false, G(Li.dtw), R, kc::GemmType::f32);
      });
      mark("bwd dt_proj");
    }
    to_blc(s, dB.raw_data(), kc::ElemType::f32, ptr(dxdbl) + R, ET, xd, b, l, N);
    to_blc(s, dC.raw_data(), kc::ElemType::f32, ptr(dxdbl) + R + N, ET, xd, b, l, N);
    // xdbl = xc W_x^T: dxc = du + dxdbl W_x; dW_x = dxdbl^T xc.
    Tensor dxc = buf(rows * di, TD);
    to_blc(s, du.raw_data(), ET, dxc.raw_data(), ET, di, b, l, di);
    du = Tensor();
    mark("bwd transposes");
    gemm(rows, di, xd, dxdbl.raw_data(), xd, false, W(Li.xproj), di, false, dxc.raw_data(), di, GT, 1.f);
    side({dxdbl, S.xc}, [&] {
      gemm(xd, di, rows, dxdbl.raw_data(), xd, true, S.xc.raw_data(), di, false, G(Li.xproj), di, kc::GemmType::f32);
    });
    dxdbl = Tensor();
    mark("bwd x_proj");
    // conv + SiLU backward into the x part of dxz (direct: dxz is the x half only; the z half
    // stays in dz's (b, d, l) layout).
    Tensor dxz = buf(rows * xw, TD);
    {
      Tensor cws = buf(static_cast<int64_t>(cv_bytes / 4 + 1), DType::f32);
      kc::CausalConv1dCudaParams<T> cp;
      cp.batch = b; cp.seqlen = l; cp.channels = di; cp.width = K;
      cp.x = ptr(S.xz); cp.x_sb = l * xw; cp.x_st = xw;
      cp.weight = P(Li.convw); cp.bias = P(Li.convb); cp.silu = true;
      kc::causal_conv1d_bwd_cuda<T>(cp, ptr(dxc), ptr(dxz), l * xw, xw, G(Li.convw), G(Li.convb), nullptr,
                                    cws.raw_data(), cv_bytes, s);
    }
    dxc = Tensor();
    mark("bwd conv1d");
    // xz = n W_in^T: dn = dxz W_in; dW_in = dxz^T n. dn in f32 (the norm backward reads it).
    Tensor dn = buf(rows * d, DType::f32);
    if (direct) {
      // dn = dx W_in[:di] + sum over the z half: dn[b] += dz[b]^T W_in[di:]
      gemm(rows, d, di, dxz.raw_data(), di, false, W(Li.in), d, false, dn.raw_data(), d, kc::GemmType::f32);
      gemmb(b, di * l, 0, l * d, l, d, di, dz.raw_data(), l, true, W(Li.in, di * d), d, false, dn.raw_data(), d,
            kc::GemmType::f32, 1.f);
      side({dxz, dz, S.n}, [&] {
        gemm(di, d, rows, dxz.raw_data(), di, true, S.n.raw_data(), d, false, G(Li.in), d, kc::GemmType::f32);
        gemm_sum(di, d, dz.raw_data(), l, false, di * l, S.n.raw_data(), d, false, l * d, G(Li.in) + di * d, d);
      });
    } else {
      to_blc(s, dz.raw_data(), ET, offm(dxz.raw_data(), di), ET, 2 * di, b, l, di);
      mark("bwd transposes");
      gemm(rows, d, 2 * di, dxz.raw_data(), 2 * di, false, W(Li.in), d, false, dn.raw_data(), d, kc::GemmType::f32);
      side({dxz, S.n}, [&] {
        gemm(2 * di, d, rows, dxz.raw_data(), 2 * di, true, S.n.raw_data(), d, false, G(Li.in), d, kc::GemmType::f32);
      });
    }
    dz = Tensor();
    dxz = Tensor();
    mark("bwd in_proj");
    // n = RMSNorm(r_i): dres += norm backward (the skip path plus the norm path).
    kc::rms_norm_bwd_cuda<float>(rows, d, f32p(S.r), P(Li.norm), eps, f32p(dn), f32p(dres), f32p(dres), G(Li.norm),
                                 rn_ws.raw_data(), rn_bytes, s);
    S = Saved();  // this layer's activations are no longer needed
    mark("bwd norm");
    side_close();
  }
  side_join(0);  // every weight gradient is in the arena before the optimiser reads it
  if (overlap) mark("bwd side join");
  // r_0 = embedding[ids]
  if (m.lm_head >= 0)
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda", cudaMemsetAsync(G(emb), 0, static_cast<size_t>(m.params[emb].n) * 4, s));
  kc::embedding_bwd_accumulate_cuda<float>(rows, d, Vp, ids, f32p(dres), G(emb), s);
  mark("bwd embedding");
}

void MambaLMTrainerCuda::optimizer_step(double lr) {
  const char* op = "MambaLMTrainerCuda::optimizer_step";
  if (!(lr >= 0) || !std::isfinite(lr)) fail(op, "lr must be finite and >= 0, got " + std::to_string(lr));
  Impl& m = *impl_;
  const cudaStream_t s = cuda_glue::stream(device_);
  m.mark(nullptr, s);
  float* sumsq = f32p(m.scalars, 1);
  kc::grad_sumsq_cuda(m.sumsq_pieces.data(), static_cast<int64_t>(m.sumsq_pieces.size()), sumsq, m.sumsq_ws.raw_data(),
                      m.sumsq_ws_bytes, s);
  m.mark("opt grad sum of squares", s);
  ++step_;
  kc::AdamWHyperCuda h;
  h.lr = static_cast<float>(lr);
  h.beta1 = static_cast<float>(opt_.beta1);
  h.beta2 = static_cast<float>(opt_.beta2);
  h.eps = static_cast<float>(opt_.eps);
  h.step = step_;
  h.max_grad_norm = opt_.max_grad_norm > 0 ? static_cast<float>(opt_.max_grad_norm) : 0.f;
  // The runs' weight decay is lr-independent (set at construction); adamw_step_cuda folds lr in.
  kc::adamw_step_cuda(m.adam_runs.data(), static_cast<int64_t>(m.adam_runs.size()), h, sumsq, s);
  m.mark("opt AdamW", s);
  const int64_t di = m.m1.d_inner(), N = m.m1.d_state;
  for (int64_t i = 0; i < cfg_.n_layer; ++i)
    kc::gt_neg_exp_cuda(di * N, f32p(m.master, m.params[m.layers[static_cast<size_t>(i)].alog].offset),
                        f32p(m.A, i * di * N), s);
  m.mark("opt A = -exp(A_log)", s);
}

void MambaLMTrainerCuda::set_profile(bool on) {
  impl_->profile = on;
  impl_->marks.clear();
}

std::vector<std::pair<std::string, double>> MambaLMTrainerCuda::profile_ms() {
  Impl& m = *impl_;
  std::vector<std::pair<std::string, double>> out;
  if (m.marks.empty()) return out;
  MAMBA_CUDA_CHECK("MambaLMTrainerCuda::profile_ms", cudaEventSynchronize(m.marks.back().second));
  std::map<std::string, size_t> at;
  for (size_t i = 1; i < m.marks.size(); ++i) {
    if (!m.marks[i].first) continue;  // a start mark
    float ms = 0;
    MAMBA_CUDA_CHECK("MambaLMTrainerCuda::profile_ms",
                     cudaEventElapsedTime(&ms, m.marks[i - 1].second, m.marks[i].second));
    auto it = at.find(m.marks[i].first);
    if (it == at.end()) {
      it = at.emplace(m.marks[i].first, out.size()).first;
      out.emplace_back(m.marks[i].first, 0.0);
    }
    out[it->second].second += ms;
  }
  m.marks.clear();
  return out;
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::nn
