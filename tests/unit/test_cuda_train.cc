// MambaLMTrainerCuda (GPU training of a Mamba-1 MambaLM) against the CPU MambaLM autograd and
// optimiser: cuda_train_check builds a tiny model (2 layers, d_model 64, vocab 97, length 37,
// batch 3) with identical weights on both, compares the loss and every parameter gradient,
// then 20 AdamW steps (f32). GPU tests skip without a usable GPU; the error paths run everywhere.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "mamba/nn/mamba_lm.h"
#include "mamba/nn/mamba_lm_train_cuda.h"
#include "mamba/tensor/cuda.h"

namespace {

#define REQUIRE_GPU() \
  if (!mamba::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or built without CUDA)"

mamba::nn::MambaLM tiny(const std::string& layer = "Mamba1") {
  nlohmann::json cfg = {{"d_model", 16}, {"n_layer", 1}, {"vocab_size", 11}, {"ssm_cfg", {{"layer", layer}}}};
  if (layer == "Mamba2") cfg["ssm_cfg"]["headdim"] = 8;
  return mamba::nn::MambaLM(mamba::nn::MambaLMConfig::from_json(cfg));
}

TEST(CudaTrain, ClearErrorWithoutDevice) {
  if (mamba::cuda::is_available()) GTEST_SKIP() << "a GPU is present";
  auto lm = tiny();
  try {
    mamba::nn::MambaLMTrainerCuda tr(lm, {});
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("no CUDA device") != std::string::npos || m.find("built without CUDA") != std::string::npos) << m;
  }
}

void expect_check(const mamba::nn::CudaTrainCheckResult& r, double tol, bool steps) {
  EXPECT_LT(std::abs(r.loss_gpu - r.loss_cpu) / std::abs(r.loss_cpu), tol) << r.loss_gpu << " vs " << r.loss_cpu;
  for (const auto& [name, e] : r.grad_rel) EXPECT_LT(e, tol) << name;
  EXPECT_FALSE(r.grad_rel.empty());
  if (steps) {
    EXPECT_LT(r.worst_step_loss_rel, tol);
    EXPECT_LT(r.worst_param_rel, tol) << r.worst_param_name;
  }
}

TEST(CudaTrain, F32MatchesCpuGradientsAndAdamW) {
  REQUIRE_GPU();
  mamba::nn::CudaTrainCheckOptions o;
  o.compute = mamba::DType::f32;
  expect_check(mamba::nn::cuda_train_check(o), 1e-4, true);
}

TEST(CudaTrain, F32UntiedHeadMatchesCpu) {
  REQUIRE_GPU();
  mamba::nn::CudaTrainCheckOptions o;
  o.compute = mamba::DType::f32;
  o.tie_embeddings = false;
  o.steps = 5;
  expect_check(mamba::nn::cuda_train_check(o), 1e-4, true);
}

TEST(CudaTrain, Bf16AutocastWithinTolerance) {
  REQUIRE_GPU();
  mamba::nn::CudaTrainCheckOptions o;
  o.compute = mamba::DType::bf16;
  o.steps = 0;
  expect_check(mamba::nn::cuda_train_check(o), 3e-2, false);
}

TEST(CudaTrain, BadInputNamesTheField) {
  REQUIRE_GPU();
  auto lm = tiny();
  mamba::nn::MambaLMTrainerCuda tr(lm, {});
  mamba::Tensor ids = mamba::Tensor::zeros({2, 5}, mamba::DType::i64), tg = mamba::Tensor::zeros({2, 5}, mamba::DType::i64);
  ids.data<int64_t>()[3] = 11;
  try {
    tr.forward_backward(ids, tg);
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 11 at position 3"), std::string::npos) << e.what();
  }
  ids.data<int64_t>()[3] = 0;
  tg.data<int64_t>()[4] = -2;
  EXPECT_THROW(tr.forward_backward(ids, tg), mamba::Error);
  auto m2 = tiny("Mamba2");
  try {
    mamba::nn::MambaLMTrainerCuda t2(m2, {});
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Mamba1"), std::string::npos) << e.what();
  }
}

}  // namespace
