#include "mamba/recommendation/mamba4rec.h"

#include <algorithm>
#include <map>

#include "mamba/io/json_config.h"
#include "mamba/kernels/gemm.h"
#include "mamba/io/safetensors.h"

namespace mamba::recommendation {

nlohmann::json Mamba4RecConfig::to_json() const {
  return {{"arch", "mamba4rec"}, {"num_items", num_items}, {"d_model", d_model}, {"n_layers", n_layers},
          {"d_state", d_state},  {"d_conv", d_conv},       {"expand", expand},   {"d_ff", d_ff},
          {"dropout", dropout},  {"max_seq_len", max_seq_len}};
}

Mamba4RecConfig Mamba4RecConfig::from_json(const nlohmann::json& j) {
  const io::JsonConfig c(j, "mamba4rec config");
  Mamba4RecConfig f;
  f.num_items = c.get_int("num_items", f.num_items);
  f.d_model = c.get_int("d_model", f.d_model);
  f.n_layers = c.get_int("n_layers", f.n_layers);
  f.d_state = c.get_int("d_state", f.d_state);
  f.d_conv = c.get_int("d_conv", f.d_conv);
  f.expand = c.get_int("expand", f.expand);
  f.d_ff = c.get_int("d_ff", f.d_ff);
  f.dropout = c.get_double("dropout", f.dropout);
  f.max_seq_len = c.get_int("max_seq_len", f.max_seq_len);
  f.validate();
  return f;
}

void Mamba4RecConfig::validate() const {
  auto bad = [](const std::string& m) { fail("mamba4rec config", m); };
  if (num_items < 1) bad("num_items must be >= 1, got " + std::to_string(num_items));
  if (num_items >= (int64_t{1} << 31) - 1) bad("num_items too large");
  if (d_model < 1 || n_layers < 0 || d_state < 1 || expand < 1 || d_ff < 0)
    bad("d_model, d_state, expand must be positive, n_layers and d_ff >= 0");
  if (d_conv < 1 || d_conv > 4) bad("d_conv must be in 1..4, got " + std::to_string(d_conv));
  if (!(dropout >= 0 && dropout < 1)) bad("dropout must be in [0, 1)");
  if (max_seq_len < 1) bad("max_seq_len must be >= 1");
}

PaddedBatch pad_right(const std::vector<const std::vector<int32_t>*>& histories, int64_t max_len, int64_t extra_padding) {
  PaddedBatch b;
  const int64_t B = static_cast<int64_t>(histories.size());
  int64_t L = 1;
  for (const auto* h : histories) L = std::max<int64_t>(L, std::min<int64_t>(max_len, static_cast<int64_t>(h->size())));
  L += extra_padding;
  b.ids = Tensor::zeros({B, L}, DType::i64);
  int64_t* p = b.ids.data<int64_t>();
  b.lengths.resize(static_cast<size_t>(B));
  for (int64_t r = 0; r < B; ++r) {
    const auto& h = *histories[r];
    const int64_t n = std::min<int64_t>(max_len, static_cast<int64_t>(h.size()));
    const int64_t first = static_cast<int64_t>(h.size()) - n;
    for (int64_t t = 0; t < n; ++t) p[r * L + t] = h[first + t];
    b.lengths[r] = std::max<int64_t>(1, n);
  }
  return b;
}

Mamba4Rec::Mamba4Rec(const Mamba4RecConfig& cfg, uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  const int64_t D = cfg_.d_model;
  const nlohmann::json mcfg = {{"layer", "Mamba1"}, {"d_state", cfg_.d_state}, {"d_conv", cfg_.d_conv}, {"expand", cfg_.expand}};
  emb_ = train::Embedding(store_, "item_embedding", cfg_.num_items + 1, D, 0);
  emb_norm_ = train::LayerNorm(store_, "emb_norm", D, 1e-12);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i);
    layers_.push_back({train::MixerLayer(store_, p + ".mixer", D, mcfg), train::LayerNorm(store_, p + ".norm1", D, 1e-12),
                       train::LayerNorm(store_, p + ".norm2", D, 1e-12),
                       train::Linear(store_, p + ".ffn.fc1", D, cfg_.ffn_dim()),
                       train::Linear(store_, p + ".ffn.fc2", cfg_.ffn_dim(), D)});
  }
  std::mt19937_64 rng(seed);
  for (auto& e : store_.entries()) train::reference_init(e.name, e.value, rng);
  // The padding row stays zero (it gets no gradient either).
  float* t = emb_.table()->value.data<float>();
  std::fill(t, t + D, 0.f);
  refresh();
}

Mamba4Rec::~Mamba4Rec() = default;

void Mamba4Rec::refresh() {
  for (auto& l : layers_) l.mixer.refresh();
}

ag::Var Mamba4Rec::encode(const Tensor& ids, bool training, std::mt19937_64& rng) const {
  if (ids.dim() != 2) fail("Mamba4Rec", "ids " + shape_str(ids.shape()) + " is not (batch, length)");
  const double p = training ? cfg_.dropout : 0.0;
  ag::Var h = emb_norm_(ag::dropout(emb_(ids), p, rng));
  for (const auto& l : layers_) {
    h = l.norm1(ag::add(h, ag::dropout(l.mixer(h), p, rng)));
    ag::Var f = l.fc2(ag::dropout(ag::gelu(l.fc1(h)), p, rng));
    h = l.norm2(ag::add(h, ag::dropout(f, p, rng)));
  }
  return h;
}

ag::Var Mamba4Rec::represent(const Tensor& ids, const std::vector<int64_t>& lengths, bool training,
                             std::mt19937_64& rng) const {
  if (ids.dim() != 2 || static_cast<int64_t>(lengths.size()) != ids.size(0))
    fail("Mamba4Rec", "ids " + shape_str(ids.shape()) + " and " + std::to_string(lengths.size()) + " lengths");
  std::vector<int64_t> last(lengths.size());
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 1 || lengths[b] > ids.size(1)) fail("Mamba4Rec", "length " + std::to_string(lengths[b]) + " outside 1..L");
    last[b] = lengths[b] - 1;
  }
  return ag::gather_rows(encode(ids, training, rng), last);
}

ag::Var Mamba4Rec::logits(const ag::Var& r) const {
  ag::Var table = train::ParameterStore::var(*emb_.table());
  return ag::linear(r, ag::slice(table, 0, 1, cfg_.num_items + 1), ag::Var());
}

ag::Var Mamba4Rec::loss(const PaddedBatch& batch, const std::vector<int32_t>& targets, bool training,
                        std::mt19937_64& rng) const {
  const int64_t B = static_cast<int64_t>(targets.size());
  Tensor t = Tensor::empty({B}, DType::i64);
  for (int64_t b = 0; b < B; ++b) {
    if (targets[b] < 1 || targets[b] > cfg_.num_items) fail("Mamba4Rec::loss", "target " + std::to_string(targets[b]) + " outside 1..num_items");
    t.data<int64_t>()[b] = targets[b] - 1;
  }
  return ag::cross_entropy(logits(represent(batch.ids, batch.lengths, training, rng)), t);
}

void Mamba4Rec::score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const {
  ag::NoGradGuard ng;
  std::mt19937_64 unused(0);
  const PaddedBatch b = pad_right(histories, cfg_.max_seq_len);
  const Tensor lg = logits(represent(b.ids, b.lengths, false, unused)).value().contiguous();
  const int64_t B = lg.size(0), N = cfg_.num_items;
  out.assign(static_cast<size_t>(B * (N + 1)), 0.0);
  const float* p = lg.data<float>();
  for (int64_t r = 0; r < B; ++r) {
    out[r * (N + 1)] = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < N; ++i) out[r * (N + 1) + 1 + i] = p[r * N + i];
  }
}

Mamba4RecState Mamba4RecState::clone() const {
  Mamba4RecState c;
  c.consumed = consumed;
  c.hidden = hidden.defined() ? hidden.clone() : Tensor();
  for (const auto& l : layers) c.layers.push_back({l.conv_state.clone(), l.ssm_state.clone()});
  return c;
}

Mamba4RecState Mamba4Rec::init_state() const {
  ag::NoGradGuard ng;
  std::mt19937_64 unused(0);
  Mamba4RecState s;
  for (const auto& l : layers_) s.layers.push_back(l.mixer.mixer().init_state(1));
  // The empty history scores like pad_right's single padding token.
  const Tensor ids = Tensor::zeros({1, 1}, DType::i64);
  s.hidden = encode(ids, false, unused).value().contiguous().reshape({cfg_.d_model}).clone();
  return s;
}

Mamba4RecState Mamba4Rec::prefill(const std::vector<int32_t>& items) const {
  if (items.empty()) return init_state();
  ag::NoGradGuard ng;
  const int64_t L = static_cast<int64_t>(items.size()), D = cfg_.d_model;
  Tensor ids = Tensor::empty({1, L}, DType::i64);
  for (int64_t t = 0; t < L; ++t) {
    if (items[t] < 1 || items[t] > cfg_.num_items) fail("Mamba4Rec::prefill", "item id " + std::to_string(items[t]) + " outside 1..num_items");
    ids.data<int64_t>()[t] = items[t];
  }
  Mamba4RecState s;
  s.consumed = L;
  ag::Var h = emb_norm_(emb_(ids));
  for (const auto& l : layers_) {
    nn::LayerState st = l.mixer.mixer().init_state(1);
    const Tensor m = l.mixer.mixer().forward(h.value().contiguous(), &st);
    h = l.norm1(ag::add(h, ag::Var(m)));
    h = l.norm2(ag::add(h, l.fc2(ag::gelu(l.fc1(h)))));
    s.layers.push_back(std::move(st));
  }
  s.hidden = h.value().contiguous().select(1, L - 1).reshape({D}).clone();
  return s;
}

std::vector<Mamba4RecState> Mamba4Rec::prefill_batch(const std::vector<const std::vector<int32_t>*>& items) const {
  std::vector<Mamba4RecState> out(items.size());
  // Rows by length (0: the empty history's state).
  std::map<size_t, std::vector<size_t>> by_length;
  for (size_t i = 0; i < items.size(); ++i) by_length[items[i]->size()].push_back(i);
  ag::NoGradGuard ng;
  const int64_t D = cfg_.d_model;
  for (const auto& [len, rows] : by_length) {
    if (len == 0) {
      for (size_t i : rows) out[i] = init_state();
      continue;
    }
    if (rows.size() == 1) {
      out[rows[0]] = prefill(*items[rows[0]]);
      continue;
    }
    const auto b = static_cast<int64_t>(rows.size()), L = static_cast<int64_t>(len);
    Tensor ids = Tensor::empty({b, L}, DType::i64);
    int64_t* p = ids.data<int64_t>();
    for (int64_t r = 0; r < b; ++r)
      for (int64_t t = 0; t < L; ++t) {
        const int32_t id = (*items[rows[static_cast<size_t>(r)]])[static_cast<size_t>(t)];
        if (id < 1 || id > cfg_.num_items)
          fail("Mamba4Rec::prefill_batch", "item id " + std::to_string(id) + " outside 1..num_items");
        p[r * L + t] = id;
      }
    std::vector<nn::LayerState> states;
    ag::Var h = emb_norm_(emb_(ids));
    for (const auto& l : layers_) {
      nn::LayerState st = l.mixer.mixer().init_state(b);
      const Tensor m = l.mixer.mixer().forward(h.value().contiguous(), &st);
      h = l.norm1(ag::add(h, ag::Var(m)));
      h = l.norm2(ag::add(h, l.fc2(ag::gelu(l.fc1(h)))));
      states.push_back(std::move(st));
    }
    const Tensor last = h.value().contiguous().select(1, L - 1).contiguous();  // (b, D)
    for (int64_t r = 0; r < b; ++r) {
      Mamba4RecState& s = out[rows[static_cast<size_t>(r)]];
      s.consumed = L;
      s.hidden = last.select(0, r).reshape({D}).clone();
      for (const nn::LayerState& st : states)
        s.layers.push_back({st.conv_state.slice(0, r, r + 1).clone(), st.ssm_state.slice(0, r, r + 1).clone()});
    }
  }
  return out;
}

void Mamba4Rec::advance(Mamba4RecState& s, int32_t item) const {
  if (item < 1 || item > cfg_.num_items) fail("Mamba4Rec::advance", "item id " + std::to_string(item) + " outside 1..num_items");
  if (s.layers.size() != layers_.size()) fail("Mamba4Rec::advance", "the state has " + std::to_string(s.layers.size()) + " layers, the model " + std::to_string(layers_.size()));
  ag::NoGradGuard ng;
  const int64_t D = cfg_.d_model;
  Tensor ids = Tensor::empty({1, 1}, DType::i64);
  ids.data<int64_t>()[0] = item;
  ag::Var h = ag::reshape(emb_norm_(emb_(ids)), {1, D});
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const Tensor m = l.mixer.mixer().step(h.value().contiguous(), s.layers[i]);
    h = l.norm1(ag::add(h, ag::Var(m)));
    h = l.norm2(ag::add(h, l.fc2(ag::gelu(l.fc1(h)))));
  }
  s.hidden = h.value().contiguous().reshape({D}).clone();
  ++s.consumed;
}

const Tensor& Mamba4Rec::item_table() const { return emb_.table()->value; }

void Mamba4Rec::score_representation(const Tensor& hidden, std::vector<float>& out) const {
  score_representations({hidden}, out);
}

void Mamba4Rec::score_representations(const std::vector<Tensor>& hidden, std::vector<float>& out) const {
  const int64_t B = static_cast<int64_t>(hidden.size()), D = cfg_.d_model, N = cfg_.num_items;
  std::vector<float> h(static_cast<size_t>(B * D));
  for (int64_t b = 0; b < B; ++b) {
    if (hidden[b].numel() != D)
      fail("Mamba4Rec::score_representation", "hidden " + shape_str(hidden[b].shape()) + " is not (d_model)");
    const Tensor c = hidden[b].contiguous();
    std::copy_n(c.data<float>(), D, h.data() + b * D);
  }
  // Rows 1..N of the (N + 1, d) table, in place: the padding row 0 is skipped by offsetting
  // the pointer, so no copy of the table is made per request.
  const Tensor& table = emb_.table()->value;
  out.resize(static_cast<size_t>(B * N));
  if (B == 1)
    kernels::sgemv(false, N, D, 1.f, table.data<float>() + D, D, h.data(), 0.f, out.data());
  else
    kernels::sgemm(false, true, B, N, D, 1.f, h.data(), D, table.data<float>() + D, D, 0.f, out.data(), N);
}

void Mamba4Rec::save_weights(const std::string& path) const {
  io::save_safetensors(path, store_.named_values(), {{"config", cfg_.to_json().dump()}});
}

void Mamba4Rec::load_weights(const std::string& path) {
  io::SafeTensorsFile f(path);
  store_.load([&](const std::string& n) { return f.has(n) ? f.tensor(n) : Tensor(); });
  refresh();
}

}  // namespace mamba::recommendation
