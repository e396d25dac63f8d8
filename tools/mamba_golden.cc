// mamba-golden: runs this project's implementation on the inputs stored in a golden file
// (the format of ../shared/golden) and compares with the stored outputs.
//
//   mamba-golden [--device cpu|cuda] [--threads N] [--tol X] FILE...
//
// The kind of file is recognised from its tensor names and metadata: selective-scan cases,
// a Mamba-1 or Mamba-2 block, a Mamba-1 or Mamba-2 language model. One line per compared
// tensor (max abs error, relative error, tolerance), then `golden: N passed, M failed`.
// Exit status: 0 when everything passed, 1 on a mismatch, 2 on a usage or file error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mamba/io/safetensors.h"
#include "mamba/kernels/cuda_runtime_info.h"
#include "mamba/kernels/parallel.h"
#include "mamba/nn/mamba1.h"
#include "mamba/nn/mamba2.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/ops/ssm.h"
#include "mamba/tensor/cuda.h"

using mamba::Tensor;

namespace {

struct Tally {
  int passed = 0, failed = 0, skipped = 0;
  mamba::Device device;  // where the implementation runs (cpu, or cuda:N: f32 on the GPU)
  double tol = 1e-5;       // max abs error allowed, as a fraction of max |reference|
  double grad_tol = 1e-4;  // the same for gradients
};

void compare(Tally& tally, const std::string& label, const Tensor& got_in, const Tensor& ref_in, double tol = -1) {
  if (got_in.shape() != ref_in.shape()) {
    std::printf("  %-44s FAIL shape %s, expected %s\n", label.c_str(), mamba::shape_str(got_in.shape()).c_str(),
                mamba::shape_str(ref_in.shape()).c_str());
    ++tally.failed;
    return;
  }
  const std::vector<float> got = got_in.to_vector_f32(), ref = ref_in.to_vector_f32();
  double max_abs = 0, max_ref = 0;
  bool nan = false;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isinf(got[i])) nan = true;
    max_abs = std::max(max_abs, static_cast<double>(std::fabs(got[i] - ref[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
  }
  const double limit = (tol > 0 ? tol : tally.tol) * std::max(max_ref, 1e-3);
  const bool ok = !nan && max_abs <= limit;
  std::printf("  %-44s %s max_abs %.3e  rel %.3e  (tol %.1e, max|ref| %.3g)\n", label.c_str(), ok ? "ok  " : "FAIL",
              max_abs, max_ref > 0 ? max_abs / max_ref : max_abs, limit, max_ref);
  ++(ok ? tally.passed : tally.failed);
}

void skip_gradients(Tally& tally, const mamba::io::SafeTensorsFile& f, const std::string& prefix,
                    const char* why = "compared once training lands") {
  int n = 0;
  for (const auto& name : f.names())
    if (name.rfind(prefix + "grad.", 0) == 0) ++n;
  if (n) {
    std::printf("  %-44s skipped %d gradient tensors (%s)\n", (prefix + "grad.*").c_str(), n, why);
    tally.skipped += n;
  }
}

Tensor req(const mamba::io::SafeTensorsFile& f, const std::string& name) {
  if (!f.has(name)) mamba::fail("mamba-golden", "file " + f.path() + " has no tensor '" + name + "'");
  return f.tensor(name);
}

Tensor opt(const mamba::io::SafeTensorsFile& f, const std::string& name) { return f.has(name) ? f.tensor(name) : Tensor(); }

// A tensor on the device under test (f32 there; undefined stays undefined).
Tensor on(const Tally& tally, const Tensor& t) {
  if (!t.defined() || tally.device.is_cpu()) return t;
  return t.to(mamba::DType::f32).to(tally.device);
}
bool on_gpu(const Tally& tally) { return !tally.device.is_cpu(); }
constexpr const char* kGpuGradSkip = "gradients are not run on CUDA";

nlohmann::json meta_json(const mamba::io::SafeTensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) mamba::fail("mamba-golden", "file " + f.path() + " has no __metadata__." + key);
  try {
    return nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    mamba::fail("mamba-golden", "__metadata__." + key + " is not valid JSON: " + e.what());
  }
}

// ---- selective scan cases ---------------------------------------------------------

void check_scan_file(const mamba::io::SafeTensorsFile& f, Tally& tally) {
  const nlohmann::json cases = meta_json(f, "cases");
  if (!cases.is_array()) mamba::fail("mamba-golden", "__metadata__.cases must be a JSON array");
  for (const auto& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    const std::string p = name + ".";
    const bool softplus = c.value("delta_softplus", false);
    std::printf(" %s: batch %lld dim %lld seqlen %lld dstate %lld groups %lld z %s softplus %s\n", name.c_str(),
                static_cast<long long>(c.value("batch", 0)), static_cast<long long>(c.value("dim", 0)),
                static_cast<long long>(c.value("seqlen", 0)), static_cast<long long>(c.value("dstate", 0)),
                static_cast<long long>(c.value("groups", 0)), f.has(p + "z") ? "yes" : "no", softplus ? "yes" : "no");
    if (on_gpu(tally)) {  // the CUDA kernel (the reference path is the CPU's)
      const auto r = mamba::ops::selective_scan(on(tally, req(f, p + "u")), on(tally, req(f, p + "delta")),
                                                on(tally, req(f, p + "A")), on(tally, req(f, p + "B")),
                                                on(tally, req(f, p + "C")), on(tally, opt(f, p + "D")),
                                                on(tally, opt(f, p + "z")), on(tally, opt(f, p + "delta_bias")), softplus,
                                                on(tally, opt(f, p + "initial_state")));
      compare(tally, p + "y (cuda)", r.y, req(f, p + "y"));
      if (f.has(p + "last_state")) compare(tally, p + "last_state (cuda)", r.last_state, f.tensor(p + "last_state"));
      skip_gradients(tally, f, p, kGpuGradSkip);
      continue;
    }
    for (auto impl : {mamba::ops::Impl::fast, mamba::ops::Impl::reference}) {
      const std::string tag = impl == mamba::ops::Impl::fast ? "" : " (reference path)";
      const auto r = mamba::ops::selective_scan(req(f, p + "u"), req(f, p + "delta"), req(f, p + "A"), req(f, p + "B"),
                                                req(f, p + "C"), opt(f, p + "D"), opt(f, p + "z"),
                                                opt(f, p + "delta_bias"), softplus, opt(f, p + "initial_state"), impl);
      compare(tally, p + "y" + tag, r.y, req(f, p + "y"));
      if (f.has(p + "last_state")) compare(tally, p + "last_state" + tag, r.last_state, f.tensor(p + "last_state"));
      if (!f.has(p + "dy")) continue;
      const auto g = mamba::ops::selective_scan_backward(
          req(f, p + "u"), req(f, p + "delta"), req(f, p + "A"), req(f, p + "B"), req(f, p + "C"), opt(f, p + "D"),
          opt(f, p + "z"), opt(f, p + "delta_bias"), softplus, opt(f, p + "initial_state"), f.tensor(p + "dy"), {}, impl);
      const std::pair<const char*, const Tensor*> grads[] = {{"u", &g.du}, {"delta", &g.ddelta}, {"A", &g.dA},
                                                             {"B", &g.dB}, {"C", &g.dC},          {"D", &g.dD},
                                                             {"z", &g.dz}, {"delta_bias", &g.ddelta_bias}};
      for (const auto& [gname, t] : grads) {
        const std::string key = p + "grad." + gname;
        if (f.has(key)) compare(tally, key + tag, *t, f.tensor(key), tally.grad_tol);
      }
    }
  }
}

// ---- one mixer layer ----------------------------------------------------------------

Tensor stack_steps(const std::vector<Tensor>& steps, int64_t b, int64_t d) {
  Tensor y = Tensor::empty({b, static_cast<int64_t>(steps.size()), d});
  for (size_t t = 0; t < steps.size(); ++t) y.select(1, static_cast<int64_t>(t)).copy_from(steps[t]);
  return y;
}

void check_block_file(const mamba::io::SafeTensorsFile& f, Tally& tally, bool mamba2) {
  const nlohmann::json cfg = meta_json(f, "config");
  const Tensor x = on(tally, req(f, "x").to(mamba::DType::f32).contiguous()), y_ref = req(f, "y");
  if (x.dim() != 3) mamba::fail("mamba-golden", "x must be (batch, seqlen, d_model), got " + x.str());
  const int64_t d_model = cfg.at("d_model").get<int64_t>();
  std::unique_ptr<mamba::nn::Mixer> layer;
  if (mamba2)
    layer = std::make_unique<mamba::nn::Mamba2>(mamba::nn::Mamba2Config::from_json(cfg, d_model));
  else
    layer = std::make_unique<mamba::nn::Mamba1>(mamba::nn::Mamba1Config::from_json(cfg, d_model));
  layer->load([&](const std::string& n) { return opt(f, n); }, "weights.");
  if (on_gpu(tally)) layer->to(tally.device, mamba::DType::f32);
  std::printf(" %s block: x %s, config %s\n", mamba2 ? "Mamba-2" : "Mamba-1", x.str().c_str(), cfg.dump().c_str());
  const int64_t b = x.size(0), l = x.size(1);
  const Tensor conv_ref = opt(f, "conv_state"), ssm_ref = opt(f, "ssm_state");
  auto compare_states = [&](const mamba::nn::LayerState& s, const std::string& tag) {
    if (conv_ref.defined()) compare(tally, "conv_state" + tag, s.conv_state, conv_ref);
    if (ssm_ref.defined()) compare(tally, "ssm_state" + tag, s.ssm_state, ssm_ref);
  };

  compare(tally, "y (parallel)", layer->forward(x), y_ref);
  {
    auto s = layer->init_state(b);
    layer->forward(x, &s);
    compare_states(s, " (parallel)");
  }
  {
    auto s = layer->init_state(b);
    std::vector<Tensor> ys;
    for (int64_t t = 0; t < l; ++t) ys.push_back(layer->step(x.select(1, t), s));
    compare(tally, "y (token-by-token decode)", stack_steps(ys, b, d_model), y_ref);
    compare_states(s, " (token-by-token decode)");
  }
  int64_t split = l / 2;
  if (auto it = f.metadata().find("prefill_split"); it != f.metadata().end()) split = std::stoll(it->second);
  split = std::clamp<int64_t>(split, 0, l);
  {
    auto s = layer->init_state(b);
    const Tensor y_pre = layer->forward(x.slice(1, 0, split), &s);
    std::vector<Tensor> ys;
    for (int64_t t = 0; t < split; ++t) ys.push_back(y_pre.select(1, t));
    for (int64_t t = split; t < l; ++t) ys.push_back(layer->step(x.select(1, t), s));
    const std::string tag = " (prefill " + std::to_string(split) + " + decode)";
    compare(tally, "y" + tag, stack_steps(ys, b, d_model), y_ref);
    compare_states(s, tag);
  }
  if (!f.has("dy")) return;
  if (on_gpu(tally)) return skip_gradients(tally, f, "", kGpuGradSkip);
  if (!layer->has_backward()) return skip_gradients(tally, f, "");
  std::unique_ptr<mamba::nn::SavedActivations> saved;
  compare(tally, "y (training forward)", layer->forward_train(x, saved), y_ref);
  std::vector<Tensor> grads;
  const Tensor dx = layer->backward(*saved, req(f, "dy").to(mamba::DType::f32), grads);
  if (f.has("grad.x")) compare(tally, "grad.x", dx, f.tensor("grad.x"), tally.grad_tol);
  const auto params = layer->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string key = "grad." + params[i].first;
    if (f.has(key)) compare(tally, key, grads[i], f.tensor(key), tally.grad_tol);
  }
}

// ---- a whole language model ---------------------------------------------------------

void check_lm_file(const mamba::io::SafeTensorsFile& f, Tally& tally) {
  const auto cfg = mamba::nn::MambaLMConfig::from_json(meta_json(f, "config"));
  auto lm = mamba::nn::MambaLM::load(cfg, [&](const std::string& n) { return opt(f, n); });
  if (on_gpu(tally)) lm.to(tally.device, mamba::DType::f32);
  const Tensor ids = req(f, "input_ids"), logits_ref = req(f, "logits");
  std::printf(" MambaLM (%s, %lld layers, d_model %lld, vocab %lld): input_ids %s\n", cfg.layer.c_str(),
              static_cast<long long>(cfg.n_layer), static_cast<long long>(cfg.d_model),
              static_cast<long long>(cfg.vocab_size), ids.str().c_str());
  const int64_t V = logits_ref.size(-1), b = ids.size(0), l = ids.size(1);
  auto cut = [&](const Tensor& t) { return t.slice(-1, 0, V); };  // the file may store unpadded logits
  compare(tally, "logits (parallel)", cut(lm.forward(ids)), logits_ref);
  // The recurrent path: prefill half, then one token at a time.
  auto cache = lm.new_cache(b);
  const int64_t split = l / 2;
  const Tensor pre = split ? lm.forward(ids.slice(1, 0, split).contiguous(), &cache) : Tensor();
  Tensor all = Tensor::empty({b, l, V});
  if (split) all.slice(1, 0, split).copy_from(cut(pre));
  for (int64_t t = split; t < l; ++t) all.select(1, t).copy_from(cut(lm.step(ids.select(1, t).contiguous(), cache)));
  compare(tally, "logits (prefill " + std::to_string(split) + " + decode)", all, logits_ref);
}

int usage() {
  std::fprintf(stderr, "usage: mamba-golden [--device cpu|cuda] [--threads N] [--tol X] FILE...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  std::string device = "cpu";
  Tally tally;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--device" || a == "--threads" || a == "--tol") && i + 1 >= argc) return usage();
    if (a == "--device") device = argv[++i];
    else if (a == "--threads") mamba::kernels::set_num_threads(std::atoi(argv[++i]));
    else if (a == "--tol") tally.tol = std::atof(argv[++i]);
    else if (a == "-h" || a == "--help") return usage(), 0;
    else if (a.rfind("--", 0) == 0) return usage();
    else files.push_back(a);
  }
  if (files.empty()) return usage();
  try {
    tally.device = mamba::Device::parse(device);
    if (!tally.device.is_cpu()) {
      mamba::cuda::require_device(tally.device, "mamba-golden --device");
      std::printf("device %s: %s (f32 on the GPU)\n", tally.device.str().c_str(),
                  mamba::cuda::device_name(tally.device).c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-golden: %s\n", e.what());
    return 2;
  }
  int errors = 0;
  for (const auto& path : files) {
    std::printf("%s\n", path.c_str());
    try {
      mamba::io::SafeTensorsFile f(path);
      if (f.metadata().count("cases"))
        check_scan_file(f, tally);
      else if (f.has("backbone.embedding.weight"))
        check_lm_file(f, tally);
      else if (f.has("weights.in_proj.weight") && f.has("weights.dt_bias"))
        check_block_file(f, tally, true);
      else if (f.has("weights.in_proj.weight") && f.has("weights.x_proj.weight"))
        check_block_file(f, tally, false);
      else
        mamba::fail("mamba-golden", "cannot tell what kind of golden file this is (no scan cases, block weights or LM)");
    } catch (const std::exception& e) {
      std::printf("  ERROR %s\n", e.what());
      ++tally.failed;
      ++errors;
    }
  }
  if (tally.skipped) std::printf("skipped %d gradient tensors\n", tally.skipped);
  std::printf("golden: %d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed ? 1 : 0;
}
