#include "mamba/ops/topk.h"

#include <numeric>

#include "mamba/kernels/topk.h"
#include "mamba/ops/shape_ops.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

TopK topk_impl(const Tensor& x, int64_t k, int64_t dim, bool largest, bool ref) {
  const char* op = "ops::topk";
  detail::check_float(op, x, "x");
  const Tensor xv = x.dim() == 0 ? x.reshape({1}) : x;
  const int64_t d = detail::wrap_dim(op, xv, dim);
  const int64_t n = xv.size(d);
  if (k < 0 || k > n)
    fail(op, "k = " + std::to_string(k) + " must be in [0, " + std::to_string(n) + "] for dim " + std::to_string(d) +
                 " of " + x.str());
  // Move `dim` last, select per row, move it back.
  std::vector<int64_t> perm(static_cast<size_t>(xv.dim()));
  std::iota(perm.begin(), perm.end(), 0);
  perm.erase(perm.begin() + d);
  perm.push_back(d);
  std::vector<int64_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[static_cast<size_t>(perm[i])] = static_cast<int64_t>(i);
  const Tensor xp = permute_copy(xv, perm);
  Shape ps = xp.shape();
  ps.back() = k;
  const int64_t rows = n == 0 ? shape_numel(ps) : xp.numel() / n;
  Tensor vals = Tensor::empty(ps, x.dtype()), idx = Tensor::empty(ps, DType::i64);
  if (rows * k > 0) {
    if (x.dtype() == DType::f32)
      (ref ? kernels::topk_f32_ref : kernels::topk_f32)(rows, n, k, largest, xp.data<float>(), vals.data<float>(),
                                                        idx.data<int64_t>());
    else
      (ref ? kernels::topk_f64_ref : kernels::topk_f64)(rows, n, k, largest, xp.data<double>(), vals.data<double>(),
                                                        idx.data<int64_t>());
  }
  TopK r{permute_copy(vals, inv), permute_copy(idx, inv)};
  if (x.dim() == 0) {
    r.values = r.values.reshape({});
    r.indices = r.indices.reshape({});
  }
  return r;
}

}  // namespace

TopK topk(const Tensor& x, int64_t k, int64_t dim, bool largest) { return topk_impl(x, k, dim, largest, false); }
TopK topk_ref(const Tensor& x, int64_t k, int64_t dim, bool largest) { return topk_impl(x, k, dim, largest, true); }

}  // namespace mamba::ops
