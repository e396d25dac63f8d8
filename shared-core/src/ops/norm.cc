#include "mamba/ops/norm.h"

#include "mamba/kernels/norm.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

// Checks an optional per-feature parameter and returns its data pointer (or null).
const float* param(const char* op, const Tensor& t, const char* name, int64_t n, const Tensor& x, Tensor& keep) {
  if (!t.defined()) return nullptr;
  detail::check_float(op, t, name, false);
  if (t.dim() != 1 || t.size(0) != n)
    fail(op, std::string(name) + " " + t.str() + " must be [" + std::to_string(n) + "] for x " + x.str());
  keep = t.contiguous();
  return keep.data<float>();
}

Tensor layer_norm_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool ref) {
  const char* op = "ops::layer_norm";
  detail::check_float(op, x, "x", false);
  if (x.dim() < 1) fail(op, "x must have at least 1 dim, got " + x.str());
  const int64_t D = x.size(-1);
  Tensor wk, bk;
  const float* w = param(op, weight, "weight", D, x, wk);
  const float* b = param(op, bias, "bias", D, x, bk);
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape());
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  (ref ? kernels::layer_norm_f32_ref : kernels::layer_norm_f32)(rows, D, xc.data<float>(), w, b,
                                                                static_cast<float>(eps), y.data<float>());
  return y;
}

Tensor group_norm_impl(const char* op, const Tensor& x, int64_t G, const Tensor& weight, const Tensor& bias,
                       double eps, bool ref) {
  detail::check_float(op, x, "x", false);
  if (x.dim() < 2) fail(op, "x must be [N, C, ...], got " + x.str());
  const int64_t N = x.size(0), C = x.size(1);
  if (G <= 0 || C % G != 0)
    fail(op, "num_groups " + std::to_string(G) + " must be positive and divide C = " + std::to_string(C) + " of x " +
                 x.str());
  Tensor wk, bk;
  const float* w = param(op, weight, "weight", C, x, wk);
  const float* b = param(op, bias, "bias", C, x, bk);
  const int64_t S = N * C == 0 ? 0 : x.numel() / (N * C);
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape());
  (ref ? kernels::group_norm_f32_ref : kernels::group_norm_f32)(N, C, S, G, xc.data<float>(), w, b,
                                                                static_cast<float>(eps), y.data<float>());
  return y;
}

Tensor instance_norm_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool ref) {
  if (x.defined() && x.dim() < 3) fail("ops::instance_norm", "x must be [N, C, spatial...], got " + x.str());
  return group_norm_impl("ops::instance_norm", x, x.size(1), weight, bias, eps, ref);
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm_impl(x, weight, bias, eps, false);
}
Tensor layer_norm_ref(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm_impl(x, weight, bias, eps, true);
}
Tensor instance_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return instance_norm_impl(x, weight, bias, eps, false);
}
Tensor instance_norm_ref(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return instance_norm_impl(x, weight, bias, eps, true);
}
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  return group_norm_impl("ops::group_norm", x, num_groups, weight, bias, eps, false);
}
Tensor group_norm_ref(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  return group_norm_impl("ops::group_norm", x, num_groups, weight, bias, eps, true);
}

}  // namespace mamba::ops
