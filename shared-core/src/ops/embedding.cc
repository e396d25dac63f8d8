#include "mamba/ops/embedding.h"

#include "mamba/kernels/embedding.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

template <class I> void check_ids(const I* ids, int64_t n, int64_t V, const Tensor& table) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail("ops::embedding", "id " + std::to_string(static_cast<int64_t>(ids[i])) + " at position " +
                                 std::to_string(i) + " is out of range [0, V) with V = " + std::to_string(V) +
                                 " (table " + table.str() + ")");
}

Tensor embedding_impl(const Tensor& ids, const Tensor& table, bool ref) {
  const char* op = "ops::embedding";
  detail::check_defined(op, ids, "ids");
  detail::check_defined(op, table, "table");
  detail::check_cpu(op, ids, "ids");
  detail::check_cpu(op, table, "table");
  if (ids.dtype() != DType::i64 && ids.dtype() != DType::i32) fail(op, "ids must be i32 or i64, got " + ids.str());
  if (table.dim() != 2) fail(op, "table must be [V, D], got " + table.str());
  const int64_t V = table.size(0), D = table.size(1), n = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, table.dtype());
  if (n == 0) return out;
  const Tensor ic = ids.contiguous(), tc = table.contiguous();
  const size_t es = dtype_size(table.dtype());
  if (ids.dtype() == DType::i64) {
    check_ids(ic.data<int64_t>(), n, V, table);
    if (D > 0)
      (ref ? kernels::embedding_i64_ref : kernels::embedding_i64)(n, ic.data<int64_t>(), D, tc.raw_data(), es,
                                                                  out.raw_data());
  } else {
    check_ids(ic.data<int32_t>(), n, V, table);
    if (D > 0)
      (ref ? kernels::embedding_i32_ref : kernels::embedding_i32)(n, ic.data<int32_t>(), D, tc.raw_data(), es,
                                                                  out.raw_data());
  }
  return out;
}

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& table) { return embedding_impl(ids, table, false); }
Tensor embedding_ref(const Tensor& ids, const Tensor& table) { return embedding_impl(ids, table, true); }

}  // namespace mamba::ops
