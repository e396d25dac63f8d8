// Gradient utilities: global-norm clipping, accumulation over micro-batches, and a check
// for NaN/Inf that names the parameter.
//
// All functions act on Param::grad (f32, contiguous, CPU; see optimizer.h) in place and
// never on values. Norms are summed in double over fixed-size blocks combined in a fixed
// order, so they are bitwise identical for any number of OpenMP threads.
// Errors: mamba::Error naming the parameter (and the first bad index for NaN/Inf).
// Thread-safety: none of these may run while another thread writes the same gradients.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mamba/train/optimizer.h"

namespace mamba::train {

// sqrt(sum over all params and elements of grad^2), in double. Inf/NaN propagate.
double grad_global_norm(const std::vector<Param>& params);

// Scales every gradient by max_norm / (norm + 1e-6) when the global norm exceeds
// max_norm (PyTorch's clip_grad_norm_). Returns the norm before clipping. A non-finite
// norm leaves the gradients untouched and is returned as is, so the caller can skip the
// step (check_finite_grads names the culprit). max_norm must be > 0.
double clip_grad_norm(const std::vector<Param>& params, double max_norm);

// grad *= factor for every param.
void scale_grads(const std::vector<Param>& params, double factor);

// Gradient accumulation over k micro-batches: the effective gradient is the mean of the
// micro-batch gradients. Usage per optimizer step:
//   zero_grad(); for each of k micro-batches: backward into fresh tensors, add(params, g);
//   finish(params); clip; step.
// (Or have backward accumulate into Param::grad directly and call only finish: it
// scales by 1/k whatever count() is.)
class GradAccumulator {
 public:
  explicit GradAccumulator(int64_t k);  // k >= 1
  // grad += micro_grads[i] for params[i]; shapes must match (throws naming the param).
  void add(const std::vector<Param>& params, const std::vector<Tensor>& micro_grads);
  int64_t count() const { return count_; }
  int64_t k() const { return k_; }
  bool ready() const { return count_ >= k_; }
  // Scales the gradients by 1/k (not 1/count()) and resets the count.
  void finish(const std::vector<Param>& params);

 private:
  int64_t k_;
  int64_t count_ = 0;
};

// The name of the first param (in order) whose gradient holds a NaN or Inf, if any.
std::optional<std::string> find_nonfinite_grad(const std::vector<Param>& params);
// Throws mamba::Error "non-finite gradient: '<name>' element <i> is nan" when any
// gradient holds a NaN or Inf.
void check_finite_grads(const std::vector<Param>& params);

}  // namespace mamba::train
