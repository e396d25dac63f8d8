#include "mamba/ops/softmax.h"

#include "mamba/kernels/softmax.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log, bool ref) {
  const char* name = log ? "ops::log_softmax" : "ops::softmax";
  detail::check_float(name, x, "x");
  if (x.dim() == 0) {  // a scalar: softmax 1, log_softmax 0
    return Tensor::full({}, log ? 0.0 : 1.0, x.dtype());
  }
  const int64_t d = detail::wrap_dim(name, x, dim);
  const auto s = detail::split3(x.shape(), d);
  const Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  if (x.dtype() == DType::f32)
    (ref ? kernels::softmax_f32_ref : kernels::softmax_f32)(s.outer, s.n, s.inner, log, xc.data<float>(),
                                                            y.data<float>());
  else
    (ref ? kernels::softmax_f64_ref : kernels::softmax_f64)(s.outer, s.n, s.inner, log, xc.data<double>(),
                                                            y.data<double>());
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true, false); }
Tensor softmax_ref(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false, true); }
Tensor log_softmax_ref(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true, true); }

}  // namespace mamba::ops
