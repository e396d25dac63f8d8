#include "mamba/ops/reduce.h"

#include "mamba/kernels/reduce.h"
#include "op_util.h"

namespace mamba::ops {

static_assert(static_cast<int>(Reduce::sum) == static_cast<int>(kernels::ReduceOp::sum));
static_assert(static_cast<int>(Reduce::max) == static_cast<int>(kernels::ReduceOp::max));
static_assert(static_cast<int>(Reduce::var) == static_cast<int>(kernels::ReduceOp::var));

namespace {

constexpr const char* kNames[] = {"ops::sum", "ops::mean", "ops::max", "ops::min", "ops::var"};

Shape reduced_shape(const Shape& s, int64_t d, bool keepdim) {
  Shape out = s;
  if (keepdim)
    out[static_cast<size_t>(d)] = 1;
  else
    out.erase(out.begin() + d);
  return out;
}

Tensor reduce_impl(Reduce op, const Tensor& x, int64_t dim, bool keepdim, int64_t correction, bool ref) {
  const char* name = kNames[static_cast<int>(op)];
  detail::check_float(name, x, "x");
  // A 0-d tensor reduces over its single element (dim 0 or -1 accepted, as PyTorch).
  const Tensor xv = x.dim() == 0 ? x.reshape({1}) : x;
  const int64_t d = detail::wrap_dim(name, xv, dim);
  const auto s = detail::split3(xv.shape(), d);
  if ((op == Reduce::max || op == Reduce::min) && s.n == 0)
    fail(name, "cannot reduce an empty dim " + std::to_string(dim) + " of " + x.str());
  Shape out_shape = x.dim() == 0 ? Shape{} : reduced_shape(xv.shape(), d, keepdim);
  const Tensor xc = xv.contiguous();
  Tensor y = Tensor::empty(out_shape, x.dtype());
  kernels::ReduceParams p{static_cast<kernels::ReduceOp>(op), s.outer, s.n, s.inner, correction};
  if (x.dtype() == DType::f32)
    (ref ? kernels::reduce_f32_ref : kernels::reduce_f32)(p, xc.data<float>(), y.data<float>());
  else
    (ref ? kernels::reduce_f64_ref : kernels::reduce_f64)(p, xc.data<double>(), y.data<double>());
  return y;
}

Tensor arg_impl(const Tensor& x, int64_t dim, bool largest, bool keepdim, bool ref) {
  const char* name = largest ? "ops::argmax" : "ops::argmin";
  detail::check_float(name, x, "x");
  const Tensor xv = x.dim() == 0 ? x.reshape({1}) : x;
  const int64_t d = detail::wrap_dim(name, xv, dim);
  const auto s = detail::split3(xv.shape(), d);
  if (s.n == 0) fail(name, "cannot reduce an empty dim " + std::to_string(dim) + " of " + x.str());
  Shape out_shape = x.dim() == 0 ? Shape{} : reduced_shape(xv.shape(), d, keepdim);
  const Tensor xc = xv.contiguous();
  Tensor y = Tensor::empty(out_shape, DType::i64);
  if (x.dtype() == DType::f32)
    (ref ? kernels::arg_reduce_f32_ref : kernels::arg_reduce_f32)(s.outer, s.n, s.inner, largest, xc.data<float>(),
                                                                  y.data<int64_t>());
  else
    (ref ? kernels::arg_reduce_f64_ref : kernels::arg_reduce_f64)(s.outer, s.n, s.inner, largest, xc.data<double>(),
                                                                  y.data<int64_t>());
  return y;
}

// Over all elements: flatten (a copy only when x is not contiguous) and reduce dim 0.
Tensor reduce_all(Reduce op, const Tensor& x, int64_t correction) {
  detail::check_float(kNames[static_cast<int>(op)], x, "x");
  return reduce_impl(op, x.reshape({x.numel()}), 0, false, correction, false);
}

}  // namespace

Tensor reduce(Reduce op, const Tensor& x, int64_t dim, bool keepdim, int64_t correction) {
  return reduce_impl(op, x, dim, keepdim, correction, false);
}
Tensor reduce_ref(Reduce op, const Tensor& x, int64_t dim, bool keepdim, int64_t correction) {
  return reduce_impl(op, x, dim, keepdim, correction, true);
}
Tensor arg_reduce(const Tensor& x, int64_t dim, bool largest, bool keepdim) {
  return arg_impl(x, dim, largest, keepdim, false);
}
Tensor arg_reduce_ref(const Tensor& x, int64_t dim, bool largest, bool keepdim) {
  return arg_impl(x, dim, largest, keepdim, true);
}

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return reduce_impl(Reduce::sum, x, dim, keepdim, 1, false); }
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) {
  return reduce_impl(Reduce::mean, x, dim, keepdim, 1, false);
}
Tensor max(const Tensor& x, int64_t dim, bool keepdim) { return reduce_impl(Reduce::max, x, dim, keepdim, 1, false); }
Tensor min(const Tensor& x, int64_t dim, bool keepdim) { return reduce_impl(Reduce::min, x, dim, keepdim, 1, false); }
Tensor var(const Tensor& x, int64_t dim, int64_t correction, bool keepdim) {
  return reduce_impl(Reduce::var, x, dim, keepdim, correction, false);
}
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return arg_impl(x, dim, true, keepdim, false); }
Tensor argmin(const Tensor& x, int64_t dim, bool keepdim) { return arg_impl(x, dim, false, keepdim, false); }

Tensor sum(const Tensor& x) { return reduce_all(Reduce::sum, x, 1); }
Tensor mean(const Tensor& x) { return reduce_all(Reduce::mean, x, 1); }
Tensor max(const Tensor& x) { return reduce_all(Reduce::max, x, 1); }
Tensor min(const Tensor& x) { return reduce_all(Reduce::min, x, 1); }
Tensor var(const Tensor& x) { return reduce_all(Reduce::var, x, 1); }
Tensor argmax(const Tensor& x) {
  detail::check_float("ops::argmax", x, "x");
  return arg_impl(x.reshape({x.numel()}), 0, true, false, false);
}
Tensor argmin(const Tensor& x) {
  detail::check_float("ops::argmin", x, "x");
  return arg_impl(x.reshape({x.numel()}), 0, false, false, false);
}

}  // namespace mamba::ops
