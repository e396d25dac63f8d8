#include "mamba/forecasting/mamba_forecaster.h"

#include <cmath>

#include "mamba/io/json_config.h"
#include "mamba/io/safetensors.h"

namespace mamba::forecasting {

namespace {
constexpr double kInstanceEps = 1e-5;

nlohmann::json mixer_cfg(const ForecasterConfig& c) {
  return {{"layer", "Mamba1"}, {"d_state", c.d_state}, {"d_conv", c.d_conv}, {"expand", c.expand}};
}

int64_t patch_count(int64_t seq_len, int64_t patch, int64_t stride) { return (seq_len - patch) / stride + 1; }
}  // namespace

nlohmann::json ForecasterConfig::to_json() const {
  return {{"arch", arch},       {"seq_len", seq_len},   {"horizon", horizon},
          {"n_vars", n_vars},   {"n_time_features", n_time_features},
          {"d_model", d_model}, {"d_ff", d_ff},         {"n_layers", n_layers},
          {"d_state", d_state}, {"d_conv", d_conv},     {"expand", expand},
          {"patch_len", patch_len}, {"dropout", dropout}, {"linear_skip", linear_skip},
          {"instance_norm", instance_norm}};
}

ForecasterConfig ForecasterConfig::from_json(const nlohmann::json& j) {
  const io::JsonConfig c(j, "forecaster config");
  ForecasterConfig f;
  f.arch = c.get_string("arch", f.arch);
  f.seq_len = c.get_int("seq_len", f.seq_len);
  f.horizon = c.get_int("horizon", f.horizon);
  f.n_vars = c.get_int("n_vars", f.n_vars);
  f.n_time_features = c.get_int("n_time_features", f.n_time_features);
  f.d_model = c.get_int("d_model", f.d_model);
  f.d_ff = c.get_int("d_ff", f.d_ff);
  f.n_layers = c.get_int("n_layers", f.n_layers);
  f.d_state = c.get_int("d_state", f.d_state);
  f.d_conv = c.get_int("d_conv", f.d_conv);
  f.expand = c.get_int("expand", f.expand);
  f.patch_len = c.get_int("patch_len", f.patch_len);
  f.dropout = c.get_double("dropout", f.dropout);
  f.linear_skip = c.get_bool("linear_skip", f.linear_skip);
  f.instance_norm = c.get_bool("instance_norm", f.instance_norm);
  f.validate();
  return f;
}

void ForecasterConfig::validate() const {
  auto bad = [](const std::string& m) { fail("forecaster config", m); };
  if (arch != "s_mamba" && arch != "multiscale") bad("arch '" + arch + "' is not s_mamba or multiscale");
  if (seq_len < 2) bad("seq_len must be >= 2, got " + std::to_string(seq_len));
  if (horizon < 1) bad("horizon must be >= 1, got " + std::to_string(horizon));
  if (n_vars < 1) bad("n_vars must be >= 1, got " + std::to_string(n_vars));
  if (n_time_features < 0) bad("n_time_features must be >= 0");
  if (d_model < 1 || d_ff < 1 || n_layers < 0 || d_state < 1 || expand < 1) bad("d_model, d_ff, d_state, expand must be positive");
  if (d_conv < 1 || d_conv > 4) bad("d_conv must be in 1..4, got " + std::to_string(d_conv));
  if (dropout < 0 || dropout >= 1) bad("dropout must be in [0, 1)");
  if (arch == "multiscale") {
    if (patch_len < 2 || 2 * patch_len > seq_len)
      bad("patch_len " + std::to_string(patch_len) + " needs 2 <= patch_len and 2 * patch_len <= seq_len " +
          std::to_string(seq_len));
    if (n_time_features != 0) bad("multiscale does not take time features");
  }
}

struct MambaForecaster::Encoder {
  struct Layer {
    train::MixerLayer fwd, bwd;
    train::LayerNorm norm1, norm2;
    train::Linear fc1, fc2;
  };
  std::vector<Layer> layers;
  train::LayerNorm norm;
};

MambaForecaster::MambaForecaster(const ForecasterConfig& cfg, uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  const int64_t D = cfg_.d_model;
  auto make_encoder = [&](const std::string& prefix) {
    auto enc = std::make_unique<Encoder>();
    for (int64_t i = 0; i < cfg_.n_layers; ++i) {
      const std::string p = prefix + ".layers." + std::to_string(i);
      enc->layers.push_back({train::MixerLayer(store_, p + ".mixer_fwd", D, mixer_cfg(cfg_)),
                             train::MixerLayer(store_, p + ".mixer_bwd", D, mixer_cfg(cfg_)),
                             train::LayerNorm(store_, p + ".norm1", D), train::LayerNorm(store_, p + ".norm2", D),
                             train::Linear(store_, p + ".ffn.fc1", D, cfg_.d_ff),
                             train::Linear(store_, p + ".ffn.fc2", cfg_.d_ff, D)});
    }
    enc->norm = train::LayerNorm(store_, prefix + ".norm", D);
    return enc;
  };
  if (cfg_.arch == "s_mamba") {
    embed_.emplace_back(store_, "embed", cfg_.seq_len, D);
    encoders_.push_back(make_encoder("encoder"));
    head_.emplace_back(store_, "head", D, cfg_.horizon);
  } else {
    for (int s = 0; s < 2; ++s) {
      const int64_t p = cfg_.patch_len << s, stride = std::max<int64_t>(1, p / 2);
      const std::string prefix = "scale" + std::to_string(s);
      embed_.emplace_back(store_, prefix + ".embed", p, D);
      encoders_.push_back(make_encoder(prefix + ".encoder"));
      head_.emplace_back(store_, prefix + ".head", patch_count(cfg_.seq_len, p, stride) * D, cfg_.horizon);
    }
  }
  if (cfg_.linear_skip) skip_ = train::Linear(store_, "linear_skip", cfg_.seq_len, cfg_.horizon);
  std::mt19937_64 rng(seed);
  for (auto& e : store_.entries()) train::reference_init(e.name, e.value, rng);
  refresh();
}

MambaForecaster::~MambaForecaster() = default;

void MambaForecaster::refresh() {
  for (auto& enc : encoders_)
    for (auto& l : enc->layers) {
      l.fwd.refresh();
      l.bwd.refresh();
    }
}

ag::Var MambaForecaster::encode(const Encoder& enc, ag::Var h, bool training, std::mt19937_64& rng) const {
  const double p = training ? cfg_.dropout : 0.0;
  for (const auto& l : enc.layers) {
    ag::Var y = ag::add(l.fwd(h), ag::flip(l.bwd(ag::flip(h, {1})), {1}));
    h = l.norm1(ag::add(h, ag::dropout(y, p, rng)));
    ag::Var f = l.fc2(ag::dropout(ag::gelu(l.fc1(h)), p, rng));
    h = l.norm2(ag::add(h, ag::dropout(f, p, rng)));
  }
  return enc.norm(h);
}

ag::Var MambaForecaster::forward_s_mamba(const ag::Var& xn, const Tensor& marks, bool training, std::mt19937_64& rng) const {
  const int64_t V = cfg_.n_vars;
  ag::Var tokens = ag::permute(xn, {0, 2, 1});  // (B, V, L)
  if (cfg_.n_time_features > 0) tokens = ag::concat({tokens, ag::permute(ag::Var(marks), {0, 2, 1})}, 1);
  ag::Var h = ag::dropout(embed_[0](tokens), training ? cfg_.dropout : 0.0, rng);  // (B, T, D)
  h = encode(*encoders_[0], h, training, rng);
  ag::Var out = head_[0](h);  // (B, T, H)
  if (cfg_.n_time_features > 0) out = ag::slice(out, 1, 0, V);
  return out;  // (B, V, H)
}

ag::Var MambaForecaster::forward_multiscale(const ag::Var& xn, bool training, std::mt19937_64& rng) const {
  const int64_t B = xn.size(0), L = cfg_.seq_len, V = cfg_.n_vars;
  ag::Var series = ag::reshape(ag::permute(xn, {0, 2, 1}), {B * V, L});
  ag::Var total;
  for (size_t s = 0; s < encoders_.size(); ++s) {
    const int64_t p = cfg_.patch_len << s, stride = std::max<int64_t>(1, p / 2);
    const int64_t n = patch_count(L, p, stride);
    // Patches end at the last step: the most recent data is never dropped.
    const int64_t first = L - ((n - 1) * stride + p);
    std::vector<ag::Var> patches;
    for (int64_t i = 0; i < n; ++i)
      patches.push_back(ag::reshape(ag::slice(series, 1, first + i * stride, first + i * stride + p), {B * V, 1, p}));
    ag::Var h = ag::dropout(embed_[s](ag::concat(patches, 1)), training ? cfg_.dropout : 0.0, rng);  // (BV, n, D)
    h = encode(*encoders_[s], h, training, rng);
    ag::Var out = head_[s](ag::reshape(h, {B * V, n * cfg_.d_model}));  // (BV, H)
    total = total.defined() ? ag::add(total, out) : out;
  }
  return ag::reshape(total, {B, V, cfg_.horizon});
}

ag::Var MambaForecaster::forward(const Tensor& x, const Tensor& marks, bool training, std::mt19937_64& rng) const {
  check_dtype(x, DType::f32, "MambaForecaster::forward");
  if (x.dim() != 3 || x.size(1) != cfg_.seq_len || x.size(2) != cfg_.n_vars)
    fail("MambaForecaster::forward", "x " + shape_str(x.shape()) + " is not (batch, seq_len " + std::to_string(cfg_.seq_len) +
                                    ", n_vars " + std::to_string(cfg_.n_vars) + ")");
  if (cfg_.n_time_features > 0) {
    if (!marks.defined() || marks.dim() != 3 || marks.size(0) != x.size(0) || marks.size(1) != cfg_.seq_len ||
        marks.size(2) != cfg_.n_time_features)
      fail("MambaForecaster::forward", "time features must be (batch, seq_len, " + std::to_string(cfg_.n_time_features) + ")");
  }
  // Instance normalisation statistics are constants of the input (no gradient needed).
  Tensor mu, sd;
  ag::Var xn(x);
  if (cfg_.instance_norm) {
    ag::NoGradGuard ng;
    ag::Var xv(x);
    ag::Var m = ag::mean(xv, 1, true);
    ag::Var c = ag::sub(xv, m);
    mu = m.value();
    sd = ag::sqrt(ag::add(ag::mean(ag::square(c), 1, true), kInstanceEps)).value();
    xn = ag::Var(ag::div(c, ag::Var(sd)).value());
  }
  ag::Var out = cfg_.arch == "s_mamba" ? forward_s_mamba(xn, marks, training, rng) : forward_multiscale(xn, training, rng);
  if (cfg_.linear_skip) out = ag::add(out, skip_(ag::permute(xn, {0, 2, 1})));  // (B, V, H)
  out = ag::permute(out, {0, 2, 1});  // (B, H, V)
  if (cfg_.instance_norm) out = ag::add(ag::mul(out, ag::Var(sd)), ag::Var(mu));
  return out;
}

std::string MambaForecaster::name() const { return "mamba-" + cfg_.arch; }

Tensor MambaForecaster::forecast(const Tensor& window) const {
  if (cfg_.n_time_features > 0) fail("MambaForecaster::forecast", "this model needs time features: call predict");
  if (window.dim() == 2) return predict(window.to(DType::f32).contiguous().unsqueeze(0)).squeeze(0);
  return predict(window.to(DType::f32).contiguous());
}

Tensor MambaForecaster::predict(const Tensor& x, const Tensor& marks) const {
  ag::NoGradGuard ng;
  std::mt19937_64 unused(0);
  return forward(x, marks, false, unused).value();
}

void MambaForecaster::save_weights(const std::string& path) const {
  io::save_safetensors(path, store_.named_values(), {{"config", cfg_.to_json().dump()}});
}

void MambaForecaster::load_weights(const std::string& path) {
  io::SafeTensorsFile f(path);
  store_.load([&](const std::string& n) { return f.has(n) ? f.tensor(n) : Tensor(); });
  refresh();
}

MambaEnsemble::MambaEnsemble(std::vector<std::shared_ptr<MambaForecaster>> members) : members_(std::move(members)) {
  if (members_.empty()) fail("MambaEnsemble", "no members");
  const ForecasterConfig& c = members_.front()->config();
  for (const auto& m : members_) {
    const ForecasterConfig& o = m->config();
    if (o.seq_len != c.seq_len || o.horizon != c.horizon || o.n_vars != c.n_vars || o.n_time_features != c.n_time_features)
      fail("MambaEnsemble", "members differ in seq_len, horizon, n_vars or time features");
  }
}

int64_t MambaEnsemble::parameter_count() const {
  int64_t n = 0;
  for (const auto& m : members_) n += m->store().count();
  return n;
}

std::string MambaEnsemble::name() const {
  const std::string base = members_.front()->name();
  return members_.size() == 1 ? base : base + " x" + std::to_string(members_.size());
}

Tensor MambaEnsemble::forecast(const Tensor& window) const {
  if (config().n_time_features > 0) fail("MambaEnsemble::forecast", "this model needs time features: call predict");
  if (window.dim() == 2) return predict(window.to(DType::f32).contiguous().unsqueeze(0)).squeeze(0);
  return predict(window.to(DType::f32).contiguous());
}

Tensor MambaEnsemble::predict(const Tensor& x, const Tensor& marks) const {
  Tensor sum = members_.front()->predict(x, marks).contiguous();
  if (members_.size() == 1) return sum;
  float* s = sum.data<float>();
  for (size_t k = 1; k < members_.size(); ++k) {
    const Tensor p = members_[k]->predict(x, marks).contiguous();
    const float* pp = p.data<float>();
    for (int64_t i = 0; i < sum.numel(); ++i) s[i] += pp[i];
  }
  const float inv = 1.f / static_cast<float>(members_.size());
  for (int64_t i = 0; i < sum.numel(); ++i) s[i] *= inv;
  return sum;
}

}  // namespace mamba::forecasting
