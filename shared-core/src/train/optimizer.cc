#include "mamba/train/optimizer.h"

#include <cmath>
#include <set>
#include <string_view>
#include <unordered_map>

#include "blocks.h"

namespace mamba::train {
namespace {

std::string_view last_component(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

void check_lr(double lr, const char* kind) {
  if (!(lr >= 0.0) || !std::isfinite(lr)) fail(kind, "learning rate must be finite and >= 0, got " + std::to_string(lr));
}

void check_f32_contiguous_cpu(const Tensor& t, const char* kind, const std::string& what) {
  if (!t.defined()) fail(kind, what + ": undefined tensor");
  if (t.dtype() != DType::f32) fail(kind, what + ": expected f32, got " + t.str());
  if (!t.device().is_cpu()) fail(kind, what + ": expected a CPU tensor");
  if (!t.is_contiguous()) fail(kind, what + ": expected a contiguous tensor, got " + t.str());
}

}  // namespace

bool default_decay_rule(const std::string& name) {
  if (name.find("norm") != std::string::npos) return false;
  const std::string_view last = last_component(name);
  return !(last == "A_log" || last == "D" || last == "dt_bias" || last == "bias");
}

std::vector<Param> make_params(std::vector<std::pair<std::string, Tensor*>> values, std::vector<Tensor>& grads,
                               const DecayRule& decay) {
  constexpr const char* kOp = "make_params";
  if (grads.empty()) {
    grads.reserve(values.size());
    for (const auto& [name, v] : values) {
      if (v == nullptr || !v->defined()) fail(kOp, "'" + name + "': no value tensor");
      grads.push_back(Tensor::zeros(v->shape(), DType::f32));
    }
  } else if (grads.size() != values.size()) {
    fail(kOp, std::to_string(values.size()) + " values but " + std::to_string(grads.size()) + " gradients");
  }
  std::vector<Param> params;
  params.reserve(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    auto& [name, v] = values[i];
    if (v == nullptr || !v->defined()) fail(kOp, "'" + name + "': no value tensor");
    if (grads[i].shape() != v->shape())
      fail(kOp, "'" + name + "': gradient " + grads[i].str() + " does not match value " + v->str());
    const bool d = decay ? decay(name) : true;
    params.push_back(Param{std::move(name), v, &grads[i], d});
  }
  return params;
}

// ---- Optimizer -------------------------------------------------------------------------

Optimizer::Optimizer(std::vector<Param> params, const char* kind) : params_(std::move(params)) {
  std::set<std::string> seen;
  for (const Param& p : params_) {
    if (p.name.empty()) fail(kind, "a parameter has an empty name");
    if (!seen.insert(p.name).second) fail(kind, "duplicate parameter name '" + p.name + "'");
    if (p.value == nullptr || p.grad == nullptr) fail(kind, "'" + p.name + "': null value or gradient pointer");
    check_f32_contiguous_cpu(*p.value, kind, "'" + p.name + "' value");
    check_f32_contiguous_cpu(*p.grad, kind, "'" + p.name + "' gradient");
    if (p.grad->shape() != p.value->shape())
      fail(kind, "'" + p.name + "': gradient " + p.grad->str() + " does not match value " + p.value->str());
  }
}

void Optimizer::zero_grad() {
  for (Param& p : params_) p.grad->fill(0.0);
}

NamedTensors Optimizer::state_with_step(
    const std::vector<std::pair<const char*, const std::vector<Tensor>*>>& slots) const {
  NamedTensors out;
  out.emplace_back(std::string(kind()) + ".step", Tensor::from_vector_i64({step_}, {1}));
  for (const auto& [slot, tensors] : slots)
    for (size_t i = 0; i < params_.size(); ++i)
      out.emplace_back(std::string(kind()) + "." + slot + "." + params_[i].name, (*tensors)[i]);
  return out;
}

void Optimizer::load_state_with_step(const NamedTensors& tensors, const std::string& source,
                                     const std::vector<std::pair<const char*, std::vector<Tensor>*>>& slots) {
  const std::string op = std::string(kind()) + " state: '" + source + "'";
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : tensors)
    if (!by_name.emplace(name, &t).second) fail(op, "duplicate tensor '" + name + "'");

  auto find = [&](const std::string& name) -> const Tensor& {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail(op, "missing tensor '" + name + "'");
    return *it->second;
  };
  // Check everything before changing anything.
  const std::string step_name = std::string(kind()) + ".step";
  const Tensor& step_t = find(step_name);
  if (step_t.numel() != 1 || (step_t.dtype() != DType::i64 && step_t.dtype() != DType::i32))
    fail(op, "tensor '" + step_name + "': expected one integer, got " + step_t.str());
  const int64_t step = static_cast<int64_t>(step_t.item());
  if (step < 0) fail(op, "tensor '" + step_name + "': negative step " + std::to_string(step));
  size_t expected = 1;
  std::vector<std::pair<std::vector<Tensor>*, std::vector<const Tensor*>>> plan;
  for (const auto& [slot, dst] : slots) {
    std::vector<const Tensor*> src;
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string name = std::string(kind()) + "." + slot + "." + params_[i].name;
      const Tensor& t = find(name);
      if (t.shape() != params_[i].value->shape())
        fail(op, "tensor '" + name + "': shape " + shape_str(t.shape()) + ", expected " +
                     shape_str(params_[i].value->shape()));
      if (!dtype_is_float(t.dtype())) fail(op, "tensor '" + name + "': expected a float tensor, got " + t.str());
      src.push_back(&t);
    }
    expected += params_.size();
    plan.emplace_back(dst, std::move(src));
  }
  if (by_name.size() != expected) {
    std::set<std::string> known{step_name};
    for (const auto& [slot, dst] : slots)
      for (const Param& p : params_) known.insert(std::string(kind()) + "." + slot + "." + p.name);
    for (const auto& [name, t] : tensors)
      if (!known.count(name)) fail(op, "unexpected tensor '" + name + "' (not state of these parameters)");
  }
  for (auto& [dst, src] : plan)
    for (size_t i = 0; i < src.size(); ++i) (*dst)[i].copy_from(*src[i]);
  step_ = step;
}

// ---- AdamW -----------------------------------------------------------------------------

AdamW::AdamW(std::vector<Param> params, const AdamWOptions& options)
    : Optimizer(std::move(params), "adamw"), opt_(options) {
  if (!(opt_.beta1 >= 0.0 && opt_.beta1 < 1.0)) fail("adamw", "beta1 must be in [0, 1), got " + std::to_string(opt_.beta1));
  if (!(opt_.beta2 >= 0.0 && opt_.beta2 < 1.0)) fail("adamw", "beta2 must be in [0, 1), got " + std::to_string(opt_.beta2));
  if (!(opt_.eps > 0.0)) fail("adamw", "eps must be > 0, got " + std::to_string(opt_.eps));
  if (!(opt_.weight_decay >= 0.0)) fail("adamw", "weight_decay must be >= 0, got " + std::to_string(opt_.weight_decay));
  for (const Param& p : params_) {
    exp_avg_.push_back(Tensor::zeros(p.value->shape()));
    exp_avg_sq_.push_back(Tensor::zeros(p.value->shape()));
  }
}

void AdamW::step(double lr) {
  check_lr(lr, "adamw");
  const int64_t t = step_ + 1;
  // Scalars in double, then rounded once to f32 for the element loop.
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t));
  const float b1 = static_cast<float>(opt_.beta1), one_minus_b1 = static_cast<float>(1.0 - opt_.beta1);
  const float b2 = static_cast<float>(opt_.beta2), one_minus_b2 = static_cast<float>(1.0 - opt_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(opt_.eps);
  for (size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    const float keep = p.decay ? static_cast<float>(1.0 - lr * opt_.weight_decay) : 1.0f;
    float* __restrict w = p.value->data<float>();
    const float* __restrict g = p.grad->data<float>();
    float* __restrict m = exp_avg_[k].data<float>();
    float* __restrict v = exp_avg_sq_[k].data<float>();
    detail::for_each_block(p.value->numel(), [&](int64_t, int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const float gi = g[i];
        const float mi = b1 * m[i] + one_minus_b1 * gi;
        const float vi = b2 * v[i] + one_minus_b2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * keep - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
      }
    });
  }
  step_ = t;
}

NamedTensors AdamW::state_tensors() const { return state_with_step({{"exp_avg", &exp_avg_}, {"exp_avg_sq", &exp_avg_sq_}}); }

void AdamW::load_state_tensors(const NamedTensors& tensors, const std::string& source) {
  load_state_with_step(tensors, source, {{"exp_avg", &exp_avg_}, {"exp_avg_sq", &exp_avg_sq_}});
}

// ---- SGD -------------------------------------------------------------------------------

SGD::SGD(std::vector<Param> params, const SGDOptions& options) : Optimizer(std::move(params), "sgd"), opt_(options) {
  if (!(opt_.momentum >= 0.0)) fail("sgd", "momentum must be >= 0, got " + std::to_string(opt_.momentum));
  if (!(opt_.dampening >= 0.0)) fail("sgd", "dampening must be >= 0, got " + std::to_string(opt_.dampening));
  if (!(opt_.weight_decay >= 0.0)) fail("sgd", "weight_decay must be >= 0, got " + std::to_string(opt_.weight_decay));
  if (opt_.nesterov && (opt_.momentum <= 0.0 || opt_.dampening != 0.0))
    fail("sgd", "Nesterov momentum requires momentum > 0 and dampening == 0");
  if (opt_.momentum > 0.0)
    for (const Param& p : params_) momentum_.push_back(Tensor::zeros(p.value->shape()));
}

void SGD::step(double lr) {
  check_lr(lr, "sgd");
  const float lr_f = static_cast<float>(lr);
  const float mu = static_cast<float>(opt_.momentum);
  const float damp = static_cast<float>(1.0 - opt_.dampening);
  const bool first = step_ == 0;
  const bool nesterov = opt_.nesterov;
  for (size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    const float wd = p.decay ? static_cast<float>(opt_.weight_decay) : 0.0f;
    float* __restrict w = p.value->data<float>();
    const float* __restrict g = p.grad->data<float>();
    const int64_t n = p.value->numel();
    if (momentum_.empty()) {
      detail::for_each_block(n, [&](int64_t, int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) w[i] -= lr_f * (g[i] + wd * w[i]);
      });
      continue;
    }
    float* __restrict b = momentum_[k].data<float>();
    detail::for_each_block(n, [&](int64_t, int64_t begin, int64_t end) {
      // Three loop bodies so each is branch-free.
      if (first) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
          const float d = g[i] + wd * w[i];
          b[i] = d;
          w[i] -= lr_f * (nesterov ? d + mu * d : d);
        }
      } else if (nesterov) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
          const float d = g[i] + wd * w[i];
          const float bi = mu * b[i] + damp * d;
          b[i] = bi;
          w[i] -= lr_f * (d + mu * bi);
        }
      } else {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
          const float d = g[i] + wd * w[i];
          const float bi = mu * b[i] + damp * d;
          b[i] = bi;
          w[i] -= lr_f * bi;
        }
      }
    });
  }
  ++step_;
}

NamedTensors SGD::state_tensors() const {
  if (momentum_.empty()) return state_with_step({});
  return state_with_step({{"momentum_buffer", &momentum_}});
}

void SGD::load_state_tensors(const NamedTensors& tensors, const std::string& source) {
  if (momentum_.empty()) return load_state_with_step(tensors, source, {});
  load_state_with_step(tensors, source, {{"momentum_buffer", &momentum_}});
}

}  // namespace mamba::train
