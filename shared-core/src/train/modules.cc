#include "mamba/train/modules.h"

#include <cmath>

#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"

namespace mamba::train {

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
}  // namespace

StoredParameter& ParameterStore::create(const std::string& name, const Shape& shape) {
  if (by_name_.count(name)) fail("ParameterStore::create", "duplicate parameter '" + name + "'");
  entries_.push_back({name, Tensor::zeros(shape), Tensor::zeros(shape)});
  by_name_[name] = &entries_.back();
  return entries_.back();
}

StoredParameter& ParameterStore::add_external(const std::string& name, Tensor* value) {
  if (by_name_.count(name)) fail("ParameterStore::add_external", "duplicate parameter '" + name + "'");
  if (!value || !value->defined()) fail("ParameterStore::add_external", "'" + name + "' is undefined");
  check_dtype(*value, DType::f32, "ParameterStore::add_external");
  if (!value->is_contiguous()) fail("ParameterStore::add_external", "'" + name + "' is not contiguous");
  entries_.push_back({name, *value, Tensor::zeros(value->shape())});
  by_name_[name] = &entries_.back();
  return entries_.back();
}

StoredParameter* ParameterStore::find(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

int64_t ParameterStore::count() const {
  int64_t n = 0;
  for (const auto& e : entries_) n += e.value.numel();
  return n;
}

std::vector<Param> ParameterStore::params(const DecayRule& decay) {
  std::vector<Param> out;
  out.reserve(entries_.size());
  for (auto& e : entries_) out.push_back({e.name, &e.value, &e.grad, decay(e.name)});
  return out;
}

void ParameterStore::zero_grad() {
  for (auto& e : entries_) e.grad.fill(0.0);
}

std::vector<std::pair<std::string, Tensor>> ParameterStore::named_values() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& e : entries_) out.emplace_back(e.name, e.value);
  return out;
}

void ParameterStore::load(const nn::ParamSource& src) {
  // Check everything before writing anything, so a bad file leaves the model unchanged.
  std::vector<Tensor> found;
  for (const auto& e : entries_) {
    Tensor t = src(e.name);
    if (!t.defined()) fail("ParameterStore::load", "missing tensor '" + e.name + "' (expected shape " + shape_str(e.value.shape()) + ")");
    if (t.shape() != e.value.shape())
      fail("ParameterStore::load", "tensor '" + e.name + "' has shape " + shape_str(t.shape()) + ", the model needs " +
                                       shape_str(e.value.shape()));
    if (!dtype_is_float(t.dtype())) fail("ParameterStore::load", "tensor '" + e.name + "' has dtype " + dtype_name(t.dtype()));
    found.push_back(t);
  }
  size_t i = 0;
  for (auto& e : entries_) e.value.copy_from(found[i++]);
}

void reference_init(const std::string& name, Tensor& value, std::mt19937_64& rng) {
  float* p = value.data<float>();
  const int64_t n = value.numel();
  if (ends_with(name, "A_log")) {
    if (value.dim() == 2) {  // Mamba-1 (d_inner, N): S4D-real log(1..N)
      const int64_t N = value.size(1);
      for (int64_t i = 0; i < n; ++i) p[i] = std::log(static_cast<float>(i % N + 1));
    } else {  // Mamba-2 (nheads): A ~ U[1, 16]
      std::uniform_real_distribution<double> u(1.0, 16.0);
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(std::log(u(rng)));
    }
  } else if (ends_with(name, "dt_proj.bias") || ends_with(name, "dt_bias")) {
    std::uniform_real_distribution<double> u(std::log(1e-3), std::log(1e-1));
    for (int64_t i = 0; i < n; ++i) {
      const double dt = std::max(std::exp(u(rng)), 1e-4);
      p[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
    }
  } else if (ends_with(name, ".D") || name == "D") {
    for (int64_t i = 0; i < n; ++i) p[i] = 1.f;
  } else if (name.find("norm") != std::string::npos) {
    const float v = ends_with(name, "bias") ? 0.f : 1.f;
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  } else if (name.find("embedding") != std::string::npos) {
    std::normal_distribution<float> g(0.f, 0.02f);
    for (int64_t i = 0; i < n; ++i) p[i] = g(rng);
  } else if (ends_with(name, "bias")) {
    for (int64_t i = 0; i < n; ++i) p[i] = 0.f;
  } else {  // weights (out, in[, k]) and the LTI B, C
    const int64_t fan_in = value.dim() >= 2 ? n / value.size(0) : n;
    const float bound = 1.f / std::sqrt(static_cast<float>(std::max<int64_t>(fan_in, 1)));
    std::uniform_real_distribution<float> u(-bound, bound);
    for (int64_t i = 0; i < n; ++i) p[i] = u(rng);
  }
}

Linear::Linear(ParameterStore& store, const std::string& prefix, int64_t in, int64_t out, bool bias)
    : in_(in), out_(out) {
  w_ = &store.create(prefix + ".weight", {out, in});
  if (bias) b_ = &store.create(prefix + ".bias", {out});
}

ag::Var Linear::operator()(const ag::Var& x) const {
  return ag::linear(x, ParameterStore::var(*w_), b_ ? ParameterStore::var(*b_) : ag::Var());
}

LayerNorm::LayerNorm(ParameterStore& store, const std::string& prefix, int64_t dim, double eps) : eps_(eps) {
  w_ = &store.create(prefix + ".weight", {dim});
  b_ = &store.create(prefix + ".bias", {dim});
  w_->value.fill(1.0);
}

ag::Var LayerNorm::operator()(const ag::Var& x) const {
  return ag::layer_norm(x, ParameterStore::var(*w_), ParameterStore::var(*b_), eps_);
}

Embedding::Embedding(ParameterStore& store, const std::string& prefix, int64_t num, int64_t dim, int64_t padding_idx)
    : padding_idx_(padding_idx) {
  table_ = &store.create(prefix + ".weight", {num, dim});
}

ag::Var Embedding::operator()(const Tensor& ids) const {
  return ag::embedding(ids, ParameterStore::var(*table_), padding_idx_);
}

MixerLayer::MixerLayer(ParameterStore& store, const std::string& prefix, int64_t d_model, const nlohmann::json& cfg) {
  const std::string layer = cfg.value("layer", std::string("Mamba1"));
  if (layer == "Mamba1")
    mixer_ = std::make_shared<nn::Mamba1>(nn::Mamba1Config::from_json(cfg, d_model));
  else if (layer == "Mamba2")
    mixer_ = std::make_shared<nn::Mamba2>(nn::Mamba2Config::from_json(cfg, d_model));
  else
    fail("MixerLayer", "layer '" + layer + "' is not supported (Mamba1 or Mamba2)");
  for (auto& [name, t] : mixer_->parameters()) grads_.push_back(&store.add_external(prefix + "." + name, t).grad);
}

ag::Var MixerLayer::operator()(const ag::Var& x) const { return ag::mixer(*mixer_, x, grads_); }

}  // namespace mamba::train
