// Mamba4Rec (Liu et al. 2024) on the autograd tape (train/modules.h).
//
//   h = LayerNorm(dropout(E[ids]))                     E: (num_items + 1, d_model), row 0 = padding
//   n_layers x:  h = LayerNorm(h + dropout(Mamba1(h)))              (train::MixerLayer)
//                h = LayerNorm(h + dropout(W2 dropout(GELU(W1 h))))  (d_model -> 4 d_model -> d_model)
//   r = h at the LAST REAL position of each sequence (ag::gather_rows)
//   logits = r E[1..num_items]^T                       (tied embedding; padding never scored)
// No position embedding: the causal scan carries the order. Batches are RIGHT-padded with 0,
// so the causal conv and scan never see padding before a real item and the representation
// at the last real position does not depend on the padding.
// Loss: full softmax cross-entropy over all items (target ids 1..num_items).
// Parameter names: "item_embedding.weight", "emb_norm.{weight,bias}",
// "layers.<i>.mixer.*", "layers.<i>.norm1.*", "layers.<i>.ffn.fc1.*", "layers.<i>.ffn.fc2.*",
// "layers.<i>.norm2.*".
//
// Thread-safety: inference (grad mode off) may run concurrently; training is single-threaded.
// Errors: mamba::Error naming the field or the shape.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/recommendation/metrics.h"
#include "mamba/train/modules.h"

namespace mamba::recommendation {

struct Mamba4RecConfig {
  int64_t num_items = 0;  // real items; the table has num_items + 1 rows
  int64_t d_model = 64;
  int64_t n_layers = 1;
  int64_t d_state = 32;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t d_ff = 0;         // 0: 4 * d_model
  double dropout = 0.2;
  int64_t max_seq_len = 50;

  int64_t ffn_dim() const { return d_ff > 0 ? d_ff : 4 * d_model; }
  nlohmann::json to_json() const;
  // Absent fields keep their defaults; throws mamba::Error naming a bad field.
  static Mamba4RecConfig from_json(const nlohmann::json& j);
  void validate() const;
};

// Right-padded batch: ids (B, Lmax) i64 of each history's last max_len items, lengths >= 1.
// An empty history becomes one padding token (length 1).
struct PaddedBatch {
  Tensor ids;
  std::vector<int64_t> lengths;
};
PaddedBatch pad_right(const std::vector<const std::vector<int32_t>*>& histories, int64_t max_len, int64_t extra_padding = 0);

// The recurrent state of one history on the serving path (Mamba4Rec::advance).
//   layers:   per Mamba layer, the mixer's conv + SSM state after the consumed events
//   hidden:   (d_model) the representation after the last consumed event (what logits
//             scores); for consumed == 0, the representation of the empty history (one
//             padding token, as pad_right() gives it)
//   consumed: events run through the state
// Copies share tensor storage: clone() before advancing a copy independently.
struct Mamba4RecState {
  std::vector<nn::LayerState> layers;
  Tensor hidden;
  int64_t consumed = 0;
  Mamba4RecState clone() const;
};

class Mamba4Rec final : public Scorer {
 public:
  Mamba4Rec(const Mamba4RecConfig& cfg, uint64_t seed);
  ~Mamba4Rec() override;
  Mamba4Rec(const Mamba4Rec&) = delete;
  Mamba4Rec& operator=(const Mamba4Rec&) = delete;

  const Mamba4RecConfig& config() const { return cfg_; }
  train::ParameterStore& store() { return store_; }
  const train::ParameterStore& store() const { return store_; }

  // ids (B, L) right-padded, lengths[b] real items of row b (1..L) -> (B, d_model).
  ag::Var represent(const Tensor& ids, const std::vector<int64_t>& lengths, bool training, std::mt19937_64& rng) const;
  // The whole sequence output (B, L, d_model) (for tests).
  ag::Var encode(const Tensor& ids, bool training, std::mt19937_64& rng) const;
  // r (B, d_model) -> (B, num_items): column j scores item j + 1.
  ag::Var logits(const ag::Var& r) const;
  // Mean cross-entropy of a batch (targets 1..num_items).
  ag::Var loss(const PaddedBatch& batch, const std::vector<int32_t>& targets, bool training, std::mt19937_64& rng) const;

  // Scorer: inference, no dropout.
  std::string name() const override { return "mamba4rec"; }
  int64_t num_items() const override { return cfg_.num_items; }
  void score(const std::vector<const std::vector<int32_t>*>& histories, std::vector<double>& out) const override;

  // ---- serving: the recurrent path (inference, dropout off; const, thread-safe for
  // distinct states) ----
  // The state of the empty history.
  Mamba4RecState init_state() const;
  // Runs `items` (dense ids 1..num_items, oldest first; ALL of them, no truncation) through
  // the parallel path from a zero state: one pass, the layers' final states kept.
  Mamba4RecState prefill(const std::vector<int32_t>& items) const;
  // prefill() of several histories (out[i] for items[i]): histories of equal length share
  // one parallel pass (a (b, L) batch; the per-row states split off afterwards), so b cold
  // users cost one forward instead of b. Equal to prefill() of each (the same arithmetic
  // per row, up to the GEMMs' blocking: tested to 1e-5). Distinct lengths take one pass
  // each (right padding would run the padding through the recurrent state).
  std::vector<Mamba4RecState> prefill_batch(const std::vector<const std::vector<int32_t>*>& items) const;
  // One more event: embedding -> per layer LayerNorm(h + mixer.step(h)), then
  // LayerNorm(h + FFN(h)), exactly the parallel path's computation for the new position;
  // O(1) in the number of events consumed. Throws mamba::Error for an id outside 1..N.
  void advance(Mamba4RecState& state, int32_t item) const;
  // Scores of every item for a representation: out[j] scores item j + 1 (N values,
  // one row; nothing larger is materialised).
  void score_representation(const Tensor& hidden, std::vector<float>& out) const;
  // The same for B representations at once (one GEMM against the item table, read in
  // place): hidden[b] (d_model) -> out row b, B x num_items row-major.
  void score_representations(const std::vector<Tensor>& hidden, std::vector<float>& out) const;
  // The item table (num_items + 1, d_model) row-major f32, row 0 the padding; row j scores
  // item j (what the serving path's blocked top-k reads in place).
  const Tensor& item_table() const;

  void refresh();  // after an optimiser step or a load
  void save_weights(const std::string& path) const;
  void load_weights(const std::string& path);

 private:
  struct Layer {
    train::MixerLayer mixer;
    train::LayerNorm norm1, norm2;
    train::Linear fc1, fc2;
  };
  Mamba4RecConfig cfg_;
  train::ParameterStore store_;
  train::Embedding emb_;
  train::LayerNorm emb_norm_;
  std::vector<Layer> layers_;
};

}  // namespace mamba::recommendation
