#include "mamba/ops/matmul.h"

#include "mamba/kernels/matmul.h"
#include "mamba/ops/elementwise.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

Tensor linear_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, bool ref) {
  const char* op = "ops::linear";
  detail::check_float(op, x, "x");
  detail::check_float(op, weight, "weight");
  if (x.dim() < 1) fail(op, "x must have at least 1 dim, got " + x.str());
  if (weight.dim() != 2 || weight.size(1) != x.size(-1) || weight.dtype() != x.dtype())
    fail(op, "weight " + weight.str() + " must be [out, " + std::to_string(x.size(-1)) + "] of x's dtype for x " +
                 x.str());
  const int64_t in = weight.size(1), out = weight.size(0);
  Tensor bc;
  if (bias.defined()) {
    detail::check_float(op, bias, "bias");
    if (bias.dim() != 1 || bias.size(0) != out || bias.dtype() != x.dtype())
      fail(op, "bias " + bias.str() + " must be [" + std::to_string(out) + "] for weight " + weight.str());
    bc = bias.contiguous();
  }
  Shape ys = x.shape();
  ys.back() = out;
  const Tensor xc = x.contiguous(), wc = weight.contiguous();
  Tensor y = Tensor::empty(ys, x.dtype());
  const int64_t M = in == 0 ? shape_numel(ys) / std::max<int64_t>(out, 1) : x.numel() / in;
  if (x.dtype() == DType::f32)
    (ref ? kernels::linear_f32_ref : kernels::linear_f32)(M, in, out, xc.data<float>(), wc.data<float>(),
                                                          bc.defined() ? bc.data<float>() : nullptr, y.data<float>());
  else
    (ref ? kernels::linear_f64_ref : kernels::linear_f64)(M, in, out, xc.data<double>(), wc.data<double>(),
                                                          bc.defined() ? bc.data<double>() : nullptr,
                                                          y.data<double>());
  return y;
}

Tensor matmul_impl(const Tensor& a0, const Tensor& b0, bool ref) {
  const char* op = "ops::matmul";
  detail::check_float(op, a0, "a");
  detail::check_float(op, b0, "b");
  if (a0.dtype() != b0.dtype()) fail(op, "dtypes differ: a " + a0.str() + ", b " + b0.str());
  if (a0.dim() < 1 || b0.dim() < 1) fail(op, "operands must have at least 1 dim, got " + a0.str() + " and " + b0.str());
  const bool a_vec = a0.dim() == 1, b_vec = b0.dim() == 1;
  const Tensor a = a_vec ? a0.unsqueeze(0) : a0;
  const Tensor b = b_vec ? b0.unsqueeze(1) : b0;
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (b.size(-2) != K) fail(op, "inner dims differ: a " + a0.str() + " @ b " + b0.str());
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(a_batch, b_batch, op);
  const int64_t nb = shape_numel(batch);
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  // Element offset of each batch's matrix in a and b (0 stride along broadcast dims).
  std::vector<int64_t> a_off(static_cast<size_t>(nb)), b_off(static_cast<size_t>(nb));
  for (int64_t i = 0; i < nb; ++i) {
    int64_t rem = i, ao = 0, bo = 0, astr = M * K, bstr = K * N;
    for (size_t d = batch.size(); d-- > 0;) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      const size_t ka = d + a_batch.size() - batch.size(), kb = d + b_batch.size() - batch.size();
      if (d + a_batch.size() >= batch.size()) {
        if (a_batch[ka] != 1) ao += idx * astr;
        astr *= a_batch[ka];
      }
      if (d + b_batch.size() >= batch.size()) {
        if (b_batch[kb] != 1) bo += idx * bstr;
        bstr *= b_batch[kb];
      }
    }
    a_off[static_cast<size_t>(i)] = ao;
    b_off[static_cast<size_t>(i)] = bo;
  }
  Shape ys = batch;
  if (!a_vec) ys.push_back(M);
  if (!b_vec) ys.push_back(N);
  Tensor y = Tensor::empty(ys, a.dtype());
  if (a.dtype() == DType::f32)
    (ref ? kernels::matmul_f32_ref : kernels::matmul_f32)(nb, M, N, K, ac.data<float>(), a_off.data(),
                                                          bc.data<float>(), b_off.data(), y.data<float>());
  else
    (ref ? kernels::matmul_f64_ref : kernels::matmul_f64)(nb, M, N, K, ac.data<double>(), a_off.data(),
                                                          bc.data<double>(), b_off.data(), y.data<double>());
  return y;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) { return linear_impl(x, weight, bias, false); }
Tensor linear_ref(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return linear_impl(x, weight, bias, true);
}
Tensor matmul(const Tensor& a, const Tensor& b) { return matmul_impl(a, b, false); }
Tensor matmul_ref(const Tensor& a, const Tensor& b) { return matmul_impl(a, b, true); }

}  // namespace mamba::ops
