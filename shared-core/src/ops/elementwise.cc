#include "mamba/ops/elementwise.h"

#include "mamba/kernels/elementwise.h"
#include "op_util.h"

namespace mamba::ops {

static_assert(static_cast<int>(BinaryOp::add) == static_cast<int>(kernels::BinaryOp::add));
static_assert(static_cast<int>(BinaryOp::div) == static_cast<int>(kernels::BinaryOp::div));

namespace {

constexpr const char* kOpNames[] = {"ops::add", "ops::sub", "ops::mul", "ops::div"};

// Strides of t seen through the broadcast output shape `out` (0 where t is broadcast).
std::vector<int64_t> broadcast_strides(const Tensor& t, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  const size_t off = out.size() - static_cast<size_t>(t.dim());
  for (size_t d = 0; d < static_cast<size_t>(t.dim()); ++d)
    s[off + d] = t.shape()[d] == 1 ? 0 : t.strides()[d];
  return s;
}

void run(kernels::BinaryParams& p, const Tensor& a, const Tensor& b, Tensor& out, bool ref) {
  p.a_strides = broadcast_strides(a, p.shape);
  p.b_strides = broadcast_strides(b, p.shape);
  p.out_strides = out.strides();
  if (a.dtype() == DType::f32) {
    (ref ? kernels::binary_f32_ref : kernels::binary_f32)(p, a.data<float>(), b.data<float>(), out.data<float>());
  } else {
    (ref ? kernels::binary_f64_ref : kernels::binary_f64)(p, a.data<double>(), b.data<double>(), out.data<double>());
  }
}

Tensor binary_impl(BinaryOp op, const Tensor& a, const Tensor& b, bool ref) {
  const char* name = kOpNames[static_cast<int>(op)];
  detail::check_float(name, a, "a");
  detail::check_float(name, b, "b");
  if (a.dtype() != b.dtype()) fail(name, "dtypes differ: a " + a.str() + ", b " + b.str());
  kernels::BinaryParams p;
  p.op = static_cast<kernels::BinaryOp>(op);
  p.shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(p.shape, a.dtype());
  run(p, a, b, out, ref);
  return out;
}

Tensor scalar_op(BinaryOp op, const Tensor& a, double s) {
  detail::check_float(kOpNames[static_cast<int>(op)], a, "a");
  return binary_impl(op, a, Tensor::full({}, s, a.dtype()), false);
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(op, "shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast (dim " + std::to_string(i) +
                   ": " + std::to_string(da) + " vs " + std::to_string(db) + ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) { return binary_impl(op, a, b, false); }
Tensor binary_ref(BinaryOp op, const Tensor& a, const Tensor& b) { return binary_impl(op, a, b, true); }

Tensor add(const Tensor& a, const Tensor& b) { return binary_impl(BinaryOp::add, a, b, false); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_impl(BinaryOp::sub, a, b, false); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_impl(BinaryOp::mul, a, b, false); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_impl(BinaryOp::div, a, b, false); }
Tensor add(const Tensor& a, double s) { return scalar_op(BinaryOp::add, a, s); }
Tensor sub(const Tensor& a, double s) { return scalar_op(BinaryOp::sub, a, s); }
Tensor mul(const Tensor& a, double s) { return scalar_op(BinaryOp::mul, a, s); }
Tensor div(const Tensor& a, double s) { return scalar_op(BinaryOp::div, a, s); }

Tensor& add_(Tensor& a, const Tensor& b) {
  detail::check_float("ops::add_", a, "a");
  detail::check_float("ops::add_", b, "b");
  if (a.dtype() != b.dtype()) fail("ops::add_", "dtypes differ: a " + a.str() + ", b " + b.str());
  kernels::BinaryParams p;
  p.op = kernels::BinaryOp::add;
  p.shape = broadcast_shapes(a.shape(), b.shape(), "ops::add_");
  if (p.shape != a.shape())
    fail("ops::add_", "b " + b.str() + " does not broadcast to the shape of a " + a.str());
  run(p, a, b, a, false);
  return a;
}

}  // namespace mamba::ops
