#include "mamba/train/grad_utils.h"

#include <cmath>

#include "blocks.h"

namespace mamba::train {
namespace {

// Sum of squares of one gradient: per-block double sums, added in block order.
double sum_squares(const Tensor& g) {
  const float* x = g.data<float>();
  const int64_t n = g.numel();
  std::vector<double> partial(static_cast<size_t>(detail::num_blocks(n)), 0.0);
  detail::for_each_block(n, [&](int64_t b, int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    partial[static_cast<size_t>(b)] = s;
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

// Index of the first non-finite element, or -1.
int64_t first_nonfinite(const Tensor& g) {
  const float* x = g.data<float>();
  const int64_t n = g.numel();
  std::vector<int64_t> first(static_cast<size_t>(detail::num_blocks(n)), -1);
  detail::for_each_block(n, [&](int64_t b, int64_t begin, int64_t end) {
    // x - x is 0 for finite x and NaN for NaN or Inf: a branch-free scan of the block.
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = begin; i < end; ++i) acc += x[i] - x[i];
    if (acc == 0.0f) return;
    for (int64_t i = begin; i < end; ++i)
      if (!std::isfinite(x[i])) {
        first[static_cast<size_t>(b)] = i;
        return;
      }
  });
  for (int64_t i : first)
    if (i >= 0) return i;
  return -1;
}

}  // namespace

double grad_global_norm(const std::vector<Param>& params) {
  double total = 0.0;
  for (const Param& p : params) total += sum_squares(*p.grad);
  return std::sqrt(total);
}

void scale_grads(const std::vector<Param>& params, double factor) {
  const float f = static_cast<float>(factor);
  for (const Param& p : params) {
    float* x = p.grad->data<float>();
    detail::for_each_block(p.grad->numel(), [&](int64_t, int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) x[i] *= f;
    });
  }
}

double clip_grad_norm(const std::vector<Param>& params, double max_norm) {
  if (!(max_norm > 0.0)) fail("clip_grad_norm", "max_norm must be > 0, got " + std::to_string(max_norm));
  const double norm = grad_global_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(params, coef);
  return norm;
}

GradAccumulator::GradAccumulator(int64_t k) : k_(k) {
  if (k < 1) fail("GradAccumulator", "k must be >= 1, got " + std::to_string(k));
}

void GradAccumulator::add(const std::vector<Param>& params, const std::vector<Tensor>& micro_grads) {
  if (micro_grads.size() != params.size())
    fail("GradAccumulator", std::to_string(params.size()) + " params but " + std::to_string(micro_grads.size()) +
                                " micro-batch gradients");
  for (size_t k = 0; k < params.size(); ++k) {
    const Param& p = params[k];
    if (micro_grads[k].shape() != p.grad->shape())
      fail("GradAccumulator", "'" + p.name + "': micro-batch gradient " + micro_grads[k].str() +
                                  " does not match " + p.grad->str());
    const Tensor src = micro_grads[k].dtype() == DType::f32 ? micro_grads[k].contiguous()
                                                            : micro_grads[k].to(DType::f32).contiguous();
    const float* s = src.data<float>();
    float* x = p.grad->data<float>();
    detail::for_each_block(p.grad->numel(), [&](int64_t, int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) x[i] += s[i];
    });
  }
  ++count_;
}

void GradAccumulator::finish(const std::vector<Param>& params) {
  scale_grads(params, 1.0 / static_cast<double>(k_));
  count_ = 0;
}

std::optional<std::string> find_nonfinite_grad(const std::vector<Param>& params) {
  for (const Param& p : params)
    if (first_nonfinite(*p.grad) >= 0) return p.name;
  return std::nullopt;
}

void check_finite_grads(const std::vector<Param>& params) {
  for (const Param& p : params) {
    const int64_t i = first_nonfinite(*p.grad);
    if (i < 0) continue;
    const float v = p.grad->data<float>()[i];
    fail("non-finite gradient", "'" + p.name + "' element " + std::to_string(i) + " is " +
                                    (std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"));
  }
}

}  // namespace mamba::train
