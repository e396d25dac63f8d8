// cuda_train_check (mamba/nn/mamba_lm_train_cuda.h): the GPU trainer against the CPU
// MambaLM::forward_backward + clip_grad_norm + AdamW with the same weights and batches.
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "mamba/nn/mamba_lm_train_cuda.h"
#include "mamba/train/grad_utils.h"
#include "mamba/train/modules.h"
#include "mamba/train/optimizer.h"

namespace mamba::nn {

namespace {
double rel(const Tensor& got, const Tensor& ref) {
  const Tensor g = got.contiguous(), r = ref.contiguous();
  if (g.numel() != r.numel()) return INFINITY;
  double num = 0, den = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double a = g.data<float>()[i], b = r.data<float>()[i];
    if (!std::isfinite(a)) return INFINITY;
    num += (a - b) * (a - b);
    den += b * b;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Tokens with structure: next = perm[current] with probability 0.85, else uniform; targets are
// the next tokens, the last position of each row and every 7th position not counted (-1).
std::pair<Tensor, Tensor> batch_of(int64_t b, int64_t l, int64_t vocab, std::mt19937_64& rng,
                                   const std::vector<int64_t>& perm) {
  Tensor ids = Tensor::empty({b, l}, DType::i64), tg = Tensor::empty({b, l}, DType::i64);
  std::uniform_int_distribution<int64_t> tok(0, vocab - 1);
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t i = 0; i < b; ++i) {
    int64_t cur = tok(rng);
    for (int64_t t = 0; t <= l; ++t) {
      if (t < l) ids.data<int64_t>()[i * l + t] = cur;
      const int64_t next = u(rng) < 0.85 ? perm[static_cast<size_t>(cur)] : tok(rng);
      if (t < l) tg.data<int64_t>()[i * l + t] = (t == l - 1 || t % 7 == 3) ? -1 : next;
      cur = next;
    }
  }
  return {ids, tg};
}
}  // namespace

CudaTrainCheckResult cuda_train_check(const CudaTrainCheckOptions& o) {
  nlohmann::json cfg = {{"d_model", o.d_model},
                        {"n_layer", o.layers},
                        {"vocab_size", o.vocab},
                        {"pad_vocab_size_multiple", 8},
                        {"tie_embeddings", o.tie_embeddings},
                        {"ssm_cfg", {{"layer", "Mamba1"}, {"d_state", o.d_state}}}};
  MambaLM lm(MambaLMConfig::from_json(cfg));
  std::mt19937_64 rng(o.seed);
  for (auto& [name, t] : lm.parameters()) {
    train::reference_init(name, *t, rng);
    // Norm weights and D away from their constant init, so their gradients are exercised.
    if (name.find("norm") != std::string::npos || (name.size() >= 2 && name.compare(name.size() - 2, 2, ".D") == 0)) {
      std::uniform_real_distribution<float> u(0.7f, 1.3f);
      for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = u(rng);
    }
  }
  lm.refresh_derived();
  std::vector<int64_t> perm(static_cast<size_t>(o.vocab));
  for (int64_t i = 0; i < o.vocab; ++i) perm[static_cast<size_t>(i)] = i;
  std::shuffle(perm.begin(), perm.end(), rng);

  CudaTrainOptions topt;
  topt.compute = o.compute;
  topt.max_grad_norm = 1.0;
  topt.weight_decay = 0.01;
  topt.forward_checkpoints = o.forward_checkpoints;
  MambaLMTrainerCuda tr(lm, topt);

  CudaTrainCheckResult res;
  auto [ids, tg] = batch_of(o.batch, o.seqlen, o.vocab, rng, perm);
  std::vector<Tensor> ref;
  res.loss_cpu = lm.forward_backward(ids, tg, ref).loss;
  tr.forward_backward(ids, tg);
  res.loss_gpu = tr.last_loss();
  res.scan_checkpoint_bytes = tr.scan_checkpoint_bytes();
  const auto got = tr.gradients_cpu();
  const auto names = tr.parameter_names();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = rel(got[i], ref[i]);
    res.grad_rel.emplace_back(names[i], e);
    if (!(e <= res.worst_grad_rel)) {
      res.worst_grad_rel = e;
      res.worst_grad_name = names[i];
    }
  }
  if (o.steps <= 0) return res;

  // AdamW steps: the CPU optimiser on the CPU model, the GPU trainer on the same batches.
  std::vector<Tensor> grads;
  auto params = train::make_params(lm.parameters(), grads);
  train::AdamWOptions aw;
  aw.beta1 = topt.beta1; aw.beta2 = topt.beta2; aw.eps = topt.eps; aw.weight_decay = topt.weight_decay;
  train::AdamW opt(params, aw);
  MambaLMTrainerCuda tr2(lm, topt);  // fresh state, the same initial weights
  for (int64_t s = 0; s < o.steps; ++s) {
    auto [bi, bt] = batch_of(o.batch, o.seqlen, o.vocab, rng, perm);
    std::vector<Tensor> g;
    const double lc = lm.forward_backward(bi, bt, g).loss;
    for (size_t k = 0; k < g.size(); ++k) grads[k].copy_from(g[k]);
    train::clip_grad_norm(params, topt.max_grad_norm);
    opt.step(o.lr);
    lm.refresh_derived();
    tr2.step(bi, bt, o.lr);
    const double lg = tr2.last_loss();
    res.worst_step_loss_rel = std::max(res.worst_step_loss_rel, std::abs(lg - lc) / std::max(std::abs(lc), 1e-30));
  }
  const auto pg = tr2.parameters_cpu();
  auto pc = lm.parameters();
  for (size_t i = 0; i < pc.size(); ++i) {
    const double e = rel(pg[i], *pc[i].second);
    if (!(e <= res.worst_param_rel)) {
      res.worst_param_rel = e;
      res.worst_param_name = pc[i].first;
    }
  }
  return res;
}

}  // namespace mamba::nn
