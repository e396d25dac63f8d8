#include "mamba/nn/mamba_lm.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <filesystem>

#include "mamba/io/json_config.h"
#include "mamba/io/safetensors.h"
#include "layer_util.h"
#include "mamba/kernels/cross_entropy.h"
#include "mamba/kernels/rms_norm.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"

namespace mamba::nn {

int64_t MambaLMConfig::padded_vocab() const {
  const int64_t m = std::max<int64_t>(pad_vocab_size_multiple, 1);
  return (vocab_size + m - 1) / m * m;
}

MambaLMConfig MambaLMConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("MambaLMConfig", "config must be a JSON object");
  const io::JsonConfig cfg(j, "config");
  MambaLMConfig c;
  c.d_model = cfg.get_int("d_model");
  c.n_layer = cfg.get_int("n_layer");
  c.vocab_size = cfg.get_int("vocab_size");
  c.pad_vocab_size_multiple = cfg.get_int("pad_vocab_size_multiple", c.pad_vocab_size_multiple);
  c.rms_norm = cfg.get_bool("rms_norm", c.rms_norm);
  c.tie_embeddings = cfg.get_bool("tie_embeddings", c.tie_embeddings);
  c.norm_eps = cfg.get_double("norm_eps", c.norm_eps);
  if (cfg.get_int("d_intermediate", 0) != 0) fail("MambaLMConfig", "d_intermediate > 0 (MLP blocks) is not supported");
  if (cfg.has("attn_layer_idx") && j["attn_layer_idx"].is_array() && !j["attn_layer_idx"].empty())
    fail("MambaLMConfig", "attn_layer_idx (hybrid attention layers) is not supported");
  if (cfg.has("ssm_cfg")) c.ssm_cfg = cfg.get_object("ssm_cfg").json();
  if (c.ssm_cfg.contains("layer")) c.layer = io::JsonConfig(c.ssm_cfg, "config: ssm_cfg").get_string("layer");
  if (c.layer != "Mamba1" && c.layer != "Mamba2")
    fail("MambaLMConfig", "ssm_cfg.layer '" + c.layer + "' is not supported (Mamba1 or Mamba2)");
  if (c.d_model <= 0 || c.n_layer <= 0 || c.vocab_size <= 0 || c.pad_vocab_size_multiple <= 0)
    fail("MambaLMConfig", "d_model, n_layer, vocab_size and pad_vocab_size_multiple must be positive");
  if (c.n_layer > 4096 || c.d_model > (1 << 20) || c.vocab_size > (1LL << 31))
    fail("MambaLMConfig", "d_model, n_layer or vocab_size is implausibly large");
  return c;
}

nlohmann::json MambaLMConfig::to_json() const {
  nlohmann::json s = ssm_cfg;
  s["layer"] = layer;
  return {{"d_model", d_model},         {"n_layer", n_layer},
          {"vocab_size", vocab_size},   {"ssm_cfg", s},
          {"rms_norm", rms_norm},       {"residual_in_fp32", true},
          {"fused_add_norm", true},     {"pad_vocab_size_multiple", pad_vocab_size_multiple},
          {"tie_embeddings", tie_embeddings}, {"d_intermediate", 0},
          {"norm_eps", norm_eps}};
}

MambaLM::MambaLM(const MambaLMConfig& cfg) : cfg_(cfg) {
  const int64_t V = cfg.padded_vocab(), d = cfg.d_model;
  embedding_ = Tensor::zeros({V, d});
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    if (cfg.layer == "Mamba1")
      mixers_.push_back(std::make_unique<Mamba1>(Mamba1Config::from_json(cfg.ssm_cfg, d)));
    else
      mixers_.push_back(std::make_unique<Mamba2>(Mamba2Config::from_json(cfg.ssm_cfg, d)));
    norm_w_.push_back(Tensor::full({d}, 1.0));
    norm_b_.push_back(cfg.rms_norm ? Tensor() : Tensor::zeros({d}));
  }
  norm_f_w_ = Tensor::full({d}, 1.0);
  if (!cfg.rms_norm) norm_f_b_ = Tensor::zeros({d});
  if (!cfg.tie_embeddings) lm_head_ = Tensor::zeros({V, d});
}

std::vector<std::pair<std::string, Tensor*>> MambaLM::parameters() {
  std::vector<std::pair<std::string, Tensor*>> out{{"backbone.embedding.weight", &embedding_}};
  for (size_t i = 0; i < mixers_.size(); ++i) {
    const std::string pre = "backbone.layers." + std::to_string(i) + ".";
    for (auto& [n, t] : mixers_[i]->parameters()) out.emplace_back(pre + "mixer." + n, t);
    out.emplace_back(pre + "norm.weight", &norm_w_[i]);
    if (norm_b_[i].defined()) out.emplace_back(pre + "norm.bias", &norm_b_[i]);
  }
  out.emplace_back("backbone.norm_f.weight", &norm_f_w_);
  if (norm_f_b_.defined()) out.emplace_back("backbone.norm_f.bias", &norm_f_b_);
  if (lm_head_.defined()) out.emplace_back("lm_head.weight", &lm_head_);
  return out;
}

void MambaLM::refresh_derived() {
  for (auto& m : mixers_) m->refresh_derived();
}

MambaLM MambaLM::load(const MambaLMConfig& cfg_in, const ParamSource& src) {
  MambaLMConfig cfg = cfg_in;
  // An explicit lm_head.weight means an untied head whatever the config says.
  if (src("lm_head.weight").defined()) cfg.tie_embeddings = false;
  const Tensor emb = src("backbone.embedding.weight");
  if (!emb.defined()) fail("MambaLM::load", "missing tensor 'backbone.embedding.weight'");
  if (emb.dim() != 2 || emb.size(1) != cfg.d_model || emb.size(0) < cfg.vocab_size)
    fail("MambaLM::load", "tensor 'backbone.embedding.weight' has shape " + shape_str(emb.shape()) +
                              ", the config needs (>= vocab_size " + std::to_string(cfg.vocab_size) + ", d_model " +
                              std::to_string(cfg.d_model) + ")");
  // Checkpoints may pad the vocabulary differently: follow the file's row count
  // (vocab_size <= rows, so a multiple of `rows` pads to exactly `rows`).
  if (emb.size(0) != cfg.padded_vocab()) cfg.pad_vocab_size_multiple = emb.size(0);
  MambaLM m(cfg);
  for (auto& [name, param] : m.parameters()) {
    if (name.find(".mixer.") != std::string::npos) continue;  // mixers load themselves below
    Tensor t = src(name);
    if (!t.defined()) fail("MambaLM::load", "missing tensor '" + name + "'");
    if (t.shape() != param->shape())
      fail("MambaLM::load", "tensor '" + name + "' has shape " + shape_str(t.shape()) + ", the config needs " +
                                shape_str(param->shape()));
    param->copy_from(t);
  }
  for (size_t i = 0; i < m.mixers_.size(); ++i)
    m.mixers_[i]->load(src, "backbone.layers." + std::to_string(i) + ".mixer.");
  return m;
}

MambaLM MambaLM::load_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::string weights = path;
  nlohmann::json cfg_json;
  if (fs::is_directory(path)) {
    weights = (fs::path(path) / "model.safetensors").string();
    cfg_json = io::load_json_file((fs::path(path) / "config.json").string());
  }
  io::SafeTensorsFile f(weights);
  if (cfg_json.is_null()) {
    auto it = f.metadata().find("config");
    if (it == f.metadata().end())
      fail("MambaLM::load_path", path + " is neither a model directory nor a .safetensors file with __metadata__.config");
    try {
      cfg_json = nlohmann::json::parse(it->second);
    } catch (const std::exception& e) {
      fail("MambaLM::load_path", path + ": __metadata__.config is not valid JSON: " + e.what());
    }
  }
  return load(MambaLMConfig::from_json(cfg_json),
              [&](const std::string& n) { return f.has(n) ? f.tensor(n) : Tensor(); });
}

InferenceCache MambaLM::new_cache(int64_t batch) const {
  InferenceCache c;
  c.batch = batch;
  for (const auto& mx : mixers_) c.layers.push_back(mx->init_state(batch));
  return c;
}

Tensor MambaLM::embed(const Tensor& ids_in) const {
  if (!ids_in.defined() || (ids_in.dtype() != DType::i64 && ids_in.dtype() != DType::i32))
    fail("MambaLM", "input_ids must be i64 or i32, got " + ids_in.str());
  const Tensor ids = ids_in.to(DType::i64).contiguous();
  const int64_t n = ids.numel(), d = cfg_.d_model;
  Shape shape = ids.shape();
  shape.push_back(d);
  Tensor out = Tensor::empty(shape);
  const int64_t* p = ids.data<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (p[i] < 0 || p[i] >= cfg_.vocab_size)
      fail("MambaLM", "token id " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                          " is out of range [0, " + std::to_string(cfg_.vocab_size) + ")");
  const float* e = embedding_.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < n; ++i) std::copy(e + p[i] * d, e + (p[i] + 1) * d, o + i * d);
  return out;
}

// residual = x (+ residual unless first); out = norm(residual). Rows are the leading dims.
void MambaLM::add_norm(const Tensor& x, Tensor& residual, bool first, const Tensor& w, const Tensor& b,
                       Tensor& out) const {
  const int64_t d = cfg_.d_model, rows = x.numel() / d;
  const float eps = static_cast<float>(cfg_.norm_eps);
  if (first) residual = Tensor::empty(x.shape());
  kernels::add_rms_norm(rows, d, x.data<float>(), first ? nullptr : residual.data<float>(), residual.data<float>(),
                        w.data<float>(), eps, out.data<float>());
  if (cfg_.rms_norm) return;
  // LayerNorm: recompute from the residual with mean removal and bias.
  const float* r = residual.data<float>();
  float* o = out.data<float>();
  const float* wp = w.data<float>();
  const float* bp = b.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    double mean = 0, var = 0;
    for (int64_t k = 0; k < d; ++k) mean += r[i * d + k];
    mean /= static_cast<double>(d);
    for (int64_t k = 0; k < d; ++k) var += (r[i * d + k] - mean) * (r[i * d + k] - mean);
    const double inv = 1.0 / std::sqrt(var / static_cast<double>(d) + eps);
    for (int64_t k = 0; k < d; ++k) o[i * d + k] = static_cast<float>((r[i * d + k] - mean) * inv * wp[k] + bp[k]);
  }
}

Tensor MambaLM::head(const Tensor& hidden) const {
  const int64_t d = cfg_.d_model, rows = hidden.numel() / d, V = cfg_.padded_vocab();
  Shape shape = hidden.shape();
  shape.back() = V;
  Tensor logits = Tensor::empty(shape);
  detail::linear_rows(hidden.data<float>(), rows, d, lm_head_.defined() ? lm_head_ : embedding_, logits.data<float>(), V);
  return logits;
}

Tensor MambaLM::forward(const Tensor& input_ids, InferenceCache* cache) const {
  if (input_ids.dim() != 2) fail("MambaLM::forward", "input_ids must be (batch, seqlen), got " + input_ids.str());
  if (cache && cache->batch != input_ids.size(0))
    fail("MambaLM::forward", "cache is for batch " + std::to_string(cache->batch) + ", input_ids has " +
                                 std::to_string(input_ids.size(0)));
  if (!device_.is_cpu()) return forward_cuda(input_ids, cache);
  Tensor hidden = embed(input_ids), residual;
  Tensor normed = Tensor::empty(hidden.shape());
  for (size_t i = 0; i < mixers_.size(); ++i) {
    add_norm(hidden, residual, i == 0, norm_w_[i], norm_b_[i], normed);
    hidden = mixers_[i]->forward(normed, cache ? &cache->layers[i] : nullptr);
  }
  add_norm(hidden, residual, mixers_.empty(), norm_f_w_, norm_f_b_, normed);
  if (cache) cache->seqlen_offset += input_ids.size(1);
  return head(normed);
}

Tensor MambaLM::step(const Tensor& ids, InferenceCache& cache) const {
  if (ids.dim() != 1 || ids.size(0) != cache.batch)
    fail("MambaLM::step", "ids must be (batch=" + std::to_string(cache.batch) + "), got " + ids.str());
  if (!device_.is_cpu()) return step_cuda(ids, cache);
  Tensor hidden = embed(ids), residual;
  Tensor normed = Tensor::empty(hidden.shape());
  for (size_t i = 0; i < mixers_.size(); ++i) {
    add_norm(hidden, residual, i == 0, norm_w_[i], norm_b_[i], normed);
    hidden = mixers_[i]->step(normed, cache.layers[i]);
  }
  add_norm(hidden, residual, mixers_.empty(), norm_f_w_, norm_f_b_, normed);
  cache.seqlen_offset += 1;
  return head(normed);
}

namespace {
void check_targets(const Tensor& ids, const Tensor& targets, int64_t V, const char* op) {
  if (ids.dim() != 2) fail(op, "input_ids must be (batch, seqlen), got " + ids.str());
  check_dtype(targets, DType::i64, op);
  check_shape(targets, ids.shape(), op, "targets");
  const Tensor t = targets.contiguous();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t v = t.data<int64_t>()[i];
    if (v < -1 || v >= V)
      fail(op, "target " + std::to_string(v) + " at position " + std::to_string(i) + " is out of range [-1, " +
                   std::to_string(V) + ")");
  }
}
}  // namespace

MambaLM::LossStats MambaLM::evaluate(const Tensor& input_ids, const Tensor& targets) const {
  check_targets(input_ids, targets, cfg_.vocab_size, "MambaLM::evaluate");
  const Tensor logits = forward(input_ids).to(Device::cpu());
  const int64_t rows = input_ids.numel(), V = cfg_.padded_vocab();
  const Tensor t = targets.contiguous();
  const auto r = kernels::softmax_cross_entropy(rows, cfg_.vocab_size, V, logits.data<float>(), t.data<int64_t>(),
                                                1.f, nullptr);
  return {r.counted ? r.loss_sum / static_cast<double>(r.counted) : 0.0, r.counted, r.correct};
}

MambaLM::LossStats MambaLM::forward_backward(const Tensor& input_ids, const Tensor& targets,
                                             std::vector<Tensor>& grads) const {
  const char* op = "MambaLM::forward_backward";
  if (!device_.is_cpu()) fail(op, "training on CUDA is not implemented (keep the model on the CPU)");
  if (!cfg_.rms_norm) fail(op, "training supports RMSNorm models only");
  check_targets(input_ids, targets, cfg_.vocab_size, op);
  const int64_t d = cfg_.d_model, rows = input_ids.numel(), V = cfg_.padded_vocab(), L = cfg_.n_layer;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const Tensor ids = input_ids.to(DType::i64).contiguous(), tg = targets.contiguous();

  // Forward, keeping each block's residual input and the mixers' activations.
  std::vector<Tensor> residuals(static_cast<size_t>(L + 1));
  std::vector<std::unique_ptr<SavedActivations>> saved(static_cast<size_t>(L));
  Tensor hidden = embed(ids), residual;
  for (int64_t i = 0; i < L; ++i) {
    Tensor normed = Tensor::empty(hidden.shape());  // a fresh one per layer: the mixer keeps it
    add_norm(hidden, residual, i == 0, norm_w_[i], norm_b_[i], normed);
    residuals[i] = residual.clone();
    hidden = mixers_[i]->forward_train(normed, saved[i]);
  }
  Tensor nf = Tensor::empty(hidden.shape());
  add_norm(hidden, residual, L == 0, norm_f_w_, norm_f_b_, nf);
  residuals[L] = residual;
  const Tensor logits = head(nf);

  // Loss and dlogits for the mean over counted positions.
  int64_t counted = 0;
  for (int64_t i = 0; i < rows; ++i) counted += tg.data<int64_t>()[i] >= 0;
  const float scale = counted ? 1.f / static_cast<float>(counted) : 0.f;
  Tensor dlogits = Tensor::empty(logits.shape());
  const auto ce = kernels::softmax_cross_entropy(rows, cfg_.vocab_size, V, logits.data<float>(), tg.data<int64_t>(),
                                                 scale, dlogits.data<float>());

  // Gradients, in the order of parameters().
  auto params = const_cast<MambaLM*>(this)->parameters();
  std::map<std::string, Tensor> g;
  for (auto& [name, t] : params) g[name] = Tensor::zeros(t->shape());
  const Tensor& head_w = lm_head_.defined() ? lm_head_ : embedding_;
  Tensor& g_head = g[lm_head_.defined() ? "lm_head.weight" : "backbone.embedding.weight"];
  // logits = nf W^T:  dnf = dlogits W;  dW += dlogits^T nf.
  Tensor dnf = Tensor::empty(nf.shape());
  kernels::sgemm(false, false, rows, d, V, 1.f, dlogits.data<float>(), V, head_w.data<float>(), d, 0.f,
                 dnf.data<float>(), d);
  kernels::sgemm(true, false, V, d, rows, 1.f, dlogits.data<float>(), V, nf.data<float>(), d, 1.f,
                 g_head.data<float>(), d);
  // Final norm, then the blocks in reverse; dres carries dL/d(residual stream).
  Tensor dres = Tensor::empty(nf.shape());
  kernels::rms_norm_bwd(rows, d, residuals[L].data<float>(), d, norm_f_w_.data<float>(), eps, dnf.data<float>(), d,
                        dres.data<float>(), d, g["backbone.norm_f.weight"].data<float>());
  Tensor dnorm_in = Tensor::empty(nf.shape()), dw = Tensor::empty({d});
  for (int64_t i = L - 1; i >= 0; --i) {
    const std::string pre = "backbone.layers." + std::to_string(i) + ".";
    // residual_{i+1} = hidden_{i+1} + residual_i, hidden_{i+1} = mixer(norm(residual_i)).
    std::vector<Tensor> mg;
    const Tensor dn = mixers_[i]->backward(*saved[i], dres, mg);
    auto mp = mixers_[i]->parameters();
    for (size_t k = 0; k < mp.size(); ++k) g[pre + "mixer." + mp[k].first] = mg[k];
    kernels::rms_norm_bwd(rows, d, residuals[i].data<float>(), d, norm_w_[i].data<float>(), eps, dn.data<float>(), d,
                          dnorm_in.data<float>(), d, g[pre + "norm.weight"].data<float>());
    float* dr = dres.data<float>();
    const float* dni = dnorm_in.data<float>();
    for (int64_t k = 0; k < rows * d; ++k) dr[k] += dni[k];  // the skip path plus the norm path
  }
  // residual_0 = embedding[ids]: scatter-add into the embedding rows.
  float* ge = g["backbone.embedding.weight"].data<float>();
  const float* dr = dres.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t id = ids.data<int64_t>()[r];
    for (int64_t k = 0; k < d; ++k) ge[id * d + k] += dr[r * d + k];
  }
  grads.clear();
  for (auto& [name, t] : params) grads.push_back(g[name]);
  return {counted ? ce.loss_sum / static_cast<double>(counted) : 0.0, counted, ce.correct};
}

int64_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& opt, std::mt19937_64& rng) {
  if (vocab <= 0) fail("sample_token", "empty vocabulary");
  if (opt.temperature <= 0.0 || opt.top_k == 1)
    return std::max_element(logits, logits + vocab) - logits;
  std::vector<int64_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  int64_t keep = opt.top_k > 0 ? std::min(opt.top_k, vocab) : vocab;
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(),
                    [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = logits[idx[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((logits[idx[i]] - mx) / opt.temperature);
  if (opt.top_p < 1.0) {  // smallest prefix whose mass reaches top_p
    double acc = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      acc += p[i] / total;
      if (acc >= opt.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng);
  for (int64_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

Tensor MambaLM::generate(const Tensor& prompt, int64_t max_new_tokens, const SamplingOptions& opt) const {
  if (prompt.dim() != 2 || prompt.size(1) < 1) fail("MambaLM::generate", "prompt must be (batch, seqlen >= 1), got " + prompt.str());
  if (max_new_tokens < 0) fail("MambaLM::generate", "max_new_tokens must be >= 0");
  const int64_t b = prompt.size(0), V = cfg_.padded_vocab();
  Tensor out = Tensor::zeros({b, max_new_tokens}, DType::i64);
  if (max_new_tokens == 0) return out;
  InferenceCache cache = new_cache(b);
  Tensor logits = forward(prompt, &cache).to(Device::cpu());  // (b, l, V)
  std::mt19937_64 rng(opt.seed);
  Tensor next = Tensor::empty({b}, DType::i64);
  const int64_t l = prompt.size(1);
  for (int64_t i = 0; i < b; ++i)
    next.data<int64_t>()[i] = sample_token(logits.data<float>() + (i * l + l - 1) * V, cfg_.vocab_size, opt, rng);
  for (int64_t t = 0; t < max_new_tokens; ++t) {
    for (int64_t i = 0; i < b; ++i) out.data<int64_t>()[i * max_new_tokens + t] = next.data<int64_t>()[i];
    if (t + 1 == max_new_tokens) break;
    Tensor lg = step(next, cache).to(Device::cpu());
    for (int64_t i = 0; i < b; ++i) next.data<int64_t>()[i] = sample_token(lg.data<float>() + i * V, cfg_.vocab_size, opt, rng);
  }
  return out;
}

}  // namespace mamba::nn
