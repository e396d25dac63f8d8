// Mamba1 / Mamba2 / MambaLM on random weights: the recurrent path, prefill-then-decode and
// chunked prefill all equal the parallel forward; results do not depend on the SSD chunk
// size or the thread count; bad input is refused with a message naming the problem.
#include <gtest/gtest.h>

#include "mamba/kernels/parallel.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"
#include "mamba/nn/mamba_lm.h"
#include "util/compare.h"

using mamba::Tensor;
using namespace mamba::nn;

namespace {

// Plausible random weights: A_log = log(uniform[1, 16]), dt biases around softplus^-1(0.01..0.1).
void randomize(std::vector<std::pair<std::string, Tensor*>> params, uint32_t seed) {
  for (auto& [name, t] : params) {
    std::vector<float> v;
    const size_t n = static_cast<size_t>(t->numel());
    if (name.find("A_log") != std::string::npos) {
      v = mamba::testing::uniform(n, seed, 1.f, 16.f);
      for (auto& x : v) x = std::log(x);
    } else if (name.find("dt_proj.bias") != std::string::npos || name.find("dt_bias") != std::string::npos) {
      v = mamba::testing::uniform(n, seed, -4.5f, -2.3f);
    } else if (name.find("norm") != std::string::npos) {
      v = mamba::testing::uniform(n, seed, 0.5f, 1.5f);
    } else {
      v = mamba::testing::randn(n, seed, 0.3f);
    }
    t->copy_from(Tensor::from_vector(v, t->shape()));
    ++seed;
  }
}

Tensor random_input(int64_t b, int64_t l, int64_t d, uint32_t seed) {
  return Tensor::from_vector(mamba::testing::randn(static_cast<size_t>(b * l * d), seed), {b, l, d});
}

void expect_close(const Tensor& got, const Tensor& ref, double tol) {
  ASSERT_EQ(got.shape(), ref.shape());
  EXPECT_CLOSE(got.to_vector_f32(), ref.to_vector_f32(), tol);
}

// Parallel forward == token-by-token == prefill(split) + decode == two chunked prefills.
void check_paths(Mixer& layer, int64_t b, int64_t l, int64_t split) {
  const int64_t d = layer.d_model();
  const Tensor x = random_input(b, l, d, 99);
  auto s_full = layer.init_state(b);
  const Tensor y = layer.forward(x, &s_full);

  auto s_step = layer.init_state(b);
  Tensor y_step = Tensor::empty({b, l, d});
  for (int64_t t = 0; t < l; ++t) y_step.select(1, t).copy_from(layer.step(x.select(1, t), s_step));
  expect_close(y_step, y, 1e-4);
  expect_close(s_step.ssm_state, s_full.ssm_state, 1e-4);
  expect_close(s_step.conv_state, s_full.conv_state, 1e-6);

  auto s_pre = layer.init_state(b);
  Tensor y_pre = Tensor::empty({b, l, d});
  y_pre.slice(1, 0, split).copy_from(layer.forward(x.slice(1, 0, split), &s_pre));
  for (int64_t t = split; t < l; ++t) y_pre.select(1, t).copy_from(layer.step(x.select(1, t), s_pre));
  expect_close(y_pre, y, 1e-4);

  auto s_chunk = layer.init_state(b);
  Tensor y_chunk = Tensor::empty({b, l, d});
  y_chunk.slice(1, 0, split).copy_from(layer.forward(x.slice(1, 0, split), &s_chunk));
  y_chunk.slice(1, split, l).copy_from(layer.forward(x.slice(1, split, l), &s_chunk));
  expect_close(y_chunk, y, 1e-4);
  expect_close(s_chunk.ssm_state, s_full.ssm_state, 1e-4);
  expect_close(s_chunk.conv_state, s_full.conv_state, 1e-6);
}

TEST(Mamba1, AllPathsAgree) {
  for (int threads : {1, 2}) {
    mamba::kernels::set_num_threads(threads);
    Mamba1Config c;
    c.d_model = 24; c.d_state = 7; c.d_conv = 4; c.expand = 2;  // dt_rank auto = 2
    Mamba1 layer(c);
    randomize(layer.parameters(), 1);
    layer.refresh_derived();
    check_paths(layer, 2, 45, 2);   // split shorter than d_conv
    check_paths(layer, 1, 1, 1);    // a single token
    check_paths(layer, 3, 130, 67);
  }
  mamba::kernels::set_num_threads(0);
}

TEST(Mamba2, AllPathsAgreeAndChunkSizeDoesNotMatter) {
  for (int threads : {1, 2}) {
    mamba::kernels::set_num_threads(threads);
    Mamba2Config c;
    c.d_model = 32; c.d_state = 16; c.headdim = 8; c.ngroups = 2; c.chunk_size = 16;
    Mamba2 layer(c);
    randomize(layer.parameters(), 7);
    layer.refresh_derived();
    check_paths(layer, 2, 45, 3);
    check_paths(layer, 1, 1, 1);
    check_paths(layer, 2, 100, 33);

    const Tensor x = random_input(2, 77, 32, 5);
    const Tensor y16 = layer.forward(x);
    for (int64_t chunk : {1, 5, 64, 256}) {
      Mamba2Config c2 = c;
      c2.chunk_size = chunk;
      Mamba2 other(c2);
      auto src = layer.parameters();
      auto dst = other.parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].second->copy_from(*src[i].second);
      other.refresh_derived();
      expect_close(other.forward(x), y16, 1e-4);
    }
  }
  mamba::kernels::set_num_threads(0);
}

TEST(MambaLayers, BadInputIsRefusedWithAClearMessage) {
  Mamba1Config c;
  c.d_model = 8;
  Mamba1 layer(c);
  try {
    layer.forward(Tensor::zeros({2, 5, 9}));
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 5, 9]"), std::string::npos) << e.what();
  }
  auto s = layer.init_state(3);
  EXPECT_THROW(layer.step(Tensor::zeros({2, 8}), s), mamba::Error);  // state is for batch 3
  // Loading: a weight with the wrong shape names the tensor.
  try {
    layer.load([](const std::string& n) { return n == "w.in_proj.weight" ? Tensor::zeros({3, 3}) : Tensor(); }, "w.");
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("w.in_proj.weight"), std::string::npos) << e.what();
  }
  Mamba2Config bad;
  bad.d_model = 10; bad.headdim = 3;
  EXPECT_THROW(Mamba2 m(bad), mamba::Error);
}

MambaLMConfig small_lm(const std::string& layer, bool tie) {
  nlohmann::json j = {{"d_model", 16}, {"n_layer", 2}, {"vocab_size", 21}, {"pad_vocab_size_multiple", 8},
                      {"tie_embeddings", tie}};
  if (layer == "Mamba1-lti")
    j["ssm_cfg"] = nlohmann::json{{"layer", "Mamba1"}, {"d_state", 8}, {"selective", false}};
  else if (layer == "Mamba1")
    j["ssm_cfg"] = nlohmann::json{{"layer", "Mamba1"}, {"d_state", 8}};
  else
    j["ssm_cfg"] = nlohmann::json{{"layer", "Mamba2"}, {"d_state", 8}, {"headdim", 8}, {"chunk_size", 8}};
  return MambaLMConfig::from_json(j);
}

TEST(MambaLM, PaddedVocabUntiedHeadAndRecurrentPath) {
  for (const char* kind : {"Mamba1", "Mamba2"})
    for (bool tie : {true, false}) {
      MambaLM lm(small_lm(kind, tie));
      EXPECT_EQ(lm.config().padded_vocab(), 24);
      randomize(lm.parameters(), 3);
      // Rebuild through load() so the derived A is refreshed, as a checkpoint would be.
      std::map<std::string, Tensor> store;
      for (auto& [n, t] : lm.parameters()) store[n] = *t;
      const MambaLM loaded = MambaLM::load(lm.config(), [&](const std::string& n) {
        auto it = store.find(n);
        return it == store.end() ? Tensor() : it->second;
      });
      EXPECT_EQ(store.count("lm_head.weight"), tie ? 0u : 1u);
      const Tensor ids = Tensor::from_vector_i64({1, 5, 20, 0, 7, 7, 3, 11, 2, 19, 4, 9}, {2, 6});
      const Tensor logits = loaded.forward(ids);
      ASSERT_EQ(logits.shape(), (mamba::Shape{2, 6, 24}));
      auto cache = loaded.new_cache(2);
      loaded.forward(ids.slice(1, 0, 2).contiguous(), &cache);
      for (int64_t t = 2; t < 6; ++t) {
        const Tensor step = loaded.step(ids.select(1, t).contiguous(), cache);
        expect_close(step, logits.select(1, t), 1e-4);
      }
      EXPECT_EQ(cache.seqlen_offset, 6);
    }
}

TEST(MambaLM, GenerationGreedyTopKAndSeeds) {
  MambaLM lm(small_lm("Mamba1", true));
  randomize(lm.parameters(), 11);
  lm.refresh_derived();
  const Tensor prompt = Tensor::from_vector_i64({3, 1, 4}, {1, 3});
  const Tensor greedy = lm.generate(prompt, 6, {0.0, 0, 1.0, 0});
  // Greedy decoding through the recurrent path equals argmax over the parallel forward
  // of the growing sequence.
  std::vector<int64_t> seq = {3, 1, 4};
  for (int64_t t = 0; t < 6; ++t) {
    const Tensor lg = lm.forward(Tensor::from_vector_i64(seq, {1, static_cast<int64_t>(seq.size())}));
    const float* row = lg.data<float>() + (seq.size() - 1) * 24;
    const int64_t best = std::max_element(row, row + 21) - row;
    EXPECT_EQ(greedy.data<int64_t>()[t], best) << "token " << t;
    seq.push_back(best);
  }
  EXPECT_EQ(lm.generate(prompt, 6, {1.0, 1, 1.0, 5}).to_vector_f32(), greedy.to_vector_f32());  // top-k 1 is greedy
  const Tensor a = lm.generate(prompt, 8, {1.0, 0, 0.9, 42}), b = lm.generate(prompt, 8, {1.0, 0, 0.9, 42});
  EXPECT_EQ(a.to_vector_f32(), b.to_vector_f32());  // same seed, same tokens
  for (float v : a.to_vector_f32()) EXPECT_LT(v, 21.f);  // never a padding row
}

TEST(MambaLM, BadConfigAndTokensAreRefused) {
  EXPECT_THROW(MambaLMConfig::from_json({{"d_model", 16}, {"n_layer", 2}}), mamba::Error);  // no vocab_size
  EXPECT_THROW(MambaLMConfig::from_json({{"d_model", "16"}, {"n_layer", 2}, {"vocab_size", 5}}), mamba::Error);
  EXPECT_THROW(MambaLMConfig::from_json({{"d_model", 16}, {"n_layer", 2}, {"vocab_size", 5},
                                         {"ssm_cfg", {{"layer", "Mamba3"}}}}),
               mamba::Error);
  MambaLM lm(small_lm("Mamba2", true));
  try {
    lm.forward(Tensor::from_vector_i64({1, 21}, {1, 2}));
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 21"), std::string::npos) << e.what();
  }
  EXPECT_THROW(lm.forward(Tensor::from_vector_i64({-1}, {1, 1})), mamba::Error);
  // A checkpoint whose tensors disagree with the config names the tensor.
  try {
    MambaLM::load(lm.config(), [](const std::string& n) {
      return n == "backbone.embedding.weight" ? Tensor::zeros({24, 15}) : Tensor();
    });
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("backbone.embedding.weight"), std::string::npos) << e.what();
  }
}

}  // namespace

namespace {

// The LM's hand-written backward against central differences of its loss, for a few
// elements of every parameter, for both mixer kinds.
TEST(MambaLM, ForwardBackwardMatchesFiniteDifferences) {
  for (const char* kind : {"Mamba1", "Mamba2", "Mamba1-lti"}) {
    MambaLM lm(small_lm(kind, true));
    randomize(lm.parameters(), 21);
    lm.refresh_derived();
    const Tensor ids = Tensor::from_vector_i64({1, 5, 20, 0, 7, 7, 3, 11, 2, 19, 4, 9}, {2, 6});
    const Tensor tg = Tensor::from_vector_i64({5, 20, -1, 7, 7, 3, 2, 19, 4, -1, 9, 1}, {2, 6});
    std::vector<Tensor> grads;
    const auto stats = lm.forward_backward(ids, tg, grads);
    EXPECT_EQ(stats.counted, 10);
    EXPECT_NEAR(stats.loss, lm.evaluate(ids, tg).loss, 1e-5);
    auto params = lm.parameters();
    ASSERT_EQ(grads.size(), params.size());
    for (size_t k = 0; k < params.size(); ++k) {
      Tensor& p = *params[k].second;
      float* v = p.data<float>();
      const int64_t n = p.numel();
      for (int64_t i : {int64_t{0}, n / 2, n - 1}) {
        const float keep = v[i], h = 3e-3f;
        v[i] = keep + h;
        lm.refresh_derived();
        const double up = lm.evaluate(ids, tg).loss;
        v[i] = keep - h;
        lm.refresh_derived();
        const double down = lm.evaluate(ids, tg).loss;
        v[i] = keep;
        lm.refresh_derived();
        const double fd = (up - down) / (2 * h);
        EXPECT_NEAR(grads[k].data<float>()[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << kind << " " << params[k].first << "[" << i << "]";
      }
    }
  }
}

}  // namespace
