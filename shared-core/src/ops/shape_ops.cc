#include "mamba/ops/shape_ops.h"

#include "mamba/kernels/shape_ops.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

using CopyFn = void (*)(const kernels::CopyParams&, const void*, void*);

char* byte_ptr(const Tensor& t) { return static_cast<char*>(t.raw_data()); }

Tensor concat_impl(const std::vector<Tensor>& xs, int64_t dim, bool ref) {
  const char* op = "ops::concat";
  if (xs.empty()) fail(op, "needs at least one tensor");
  for (const auto& t : xs) {
    detail::check_defined(op, t, "input");
    detail::check_cpu(op, t, "input");
  }
  const Tensor& first = xs[0];
  if (first.dim() == 0) fail(op, "cannot concatenate 0-d tensors, got " + first.str());
  const int64_t d = detail::wrap_dim(op, first, dim);
  Shape out_shape = first.shape();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    bool ok = t.dim() == first.dim() && t.dtype() == first.dtype();
    for (int64_t j = 0; ok && j < t.dim(); ++j)
      if (j != d && t.size(j) != first.size(j)) ok = false;
    if (!ok)
      fail(op, "tensor " + std::to_string(i) + " " + t.str() + " does not match tensor 0 " + first.str() +
                   " outside dim " + std::to_string(d));
    total += t.size(d);
  }
  out_shape[static_cast<size_t>(d)] = total;
  Tensor out = Tensor::empty(out_shape, first.dtype());
  const int64_t es = static_cast<int64_t>(dtype_size(first.dtype()));
  int64_t offset = 0;
  for (const auto& t : xs) {
    if (t.numel() > 0) {
      kernels::CopyParams p{t.shape(), t.strides(), out.strides(), static_cast<size_t>(es)};
      (ref ? kernels::copy_strided_ref : kernels::copy_strided)(p, t.raw_data(),
                                                                byte_ptr(out) + offset * out.stride(d) * es);
    }
    offset += t.size(d);
  }
  return out;
}

Tensor flip_impl(const Tensor& x, const std::vector<int64_t>& dims, bool ref) {
  const char* op = "ops::flip";
  detail::check_defined(op, x, "x");
  detail::check_cpu(op, x, "x");
  std::vector<bool> seen(static_cast<size_t>(x.dim()), false);
  Shape src_strides = x.strides();
  int64_t start = 0;  // element offset of the first element read
  for (int64_t dim : dims) {
    const int64_t d = detail::wrap_dim(op, x, dim);
    if (seen[static_cast<size_t>(d)]) fail(op, "dim " + std::to_string(d) + " appears twice for " + x.str());
    seen[static_cast<size_t>(d)] = true;
    if (x.size(d) > 0) start += (x.size(d) - 1) * x.stride(d);
    src_strides[static_cast<size_t>(d)] = -x.stride(d);
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  if (x.numel() == 0) return out;
  const size_t es = dtype_size(x.dtype());
  kernels::CopyParams p{x.shape(), src_strides, out.strides(), es};
  (ref ? kernels::copy_strided_ref : kernels::copy_strided)(p, byte_ptr(x) + start * static_cast<int64_t>(es),
                                                            out.raw_data());
  return out;
}

Tensor permute_impl(const Tensor& x, const std::vector<int64_t>& dims, bool ref) {
  const char* op = "ops::permute_copy";
  detail::check_defined(op, x, "x");
  detail::check_cpu(op, x, "x");
  if (static_cast<int64_t>(dims.size()) != x.dim())
    fail(op, "dims has " + std::to_string(dims.size()) + " entries for " + x.str());
  const Tensor v = x.permute(dims);  // validates the permutation
  Tensor out = Tensor::empty(v.shape(), x.dtype());
  if (x.numel() == 0) return out;
  kernels::CopyParams p{v.shape(), v.strides(), out.strides(), dtype_size(x.dtype())};
  (ref ? kernels::copy_strided_ref : kernels::copy_strided)(p, v.raw_data(), out.raw_data());
  return out;
}

Tensor pad_impl(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value,
                bool ref) {
  const char* op = "ops::pad";
  detail::check_defined(op, x, "x");
  detail::check_cpu(op, x, "x");
  const int64_t np = static_cast<int64_t>(pads.size());
  if (np > x.dim()) fail(op, std::to_string(np) + " pad pairs for " + x.str());
  if (mode != PadMode::constant && np > 3)
    fail(op, "reflect/replicate pad at most 3 trailing dims, got " + std::to_string(np) + " for " + x.str());
  kernels::GatherParams p;
  p.shape = x.shape();
  p.src_strides = x.strides();
  p.elem_size = dtype_size(x.dtype());
  p.maps.resize(static_cast<size_t>(x.dim()));
  for (int64_t d = 0; d < x.dim(); ++d) {
    const int64_t n = x.size(d);
    int64_t before = 0, after = 0;
    if (d >= x.dim() - np) std::tie(before, after) = pads[static_cast<size_t>(d - (x.dim() - np))];
    if (before < 0 || after < 0)
      fail(op, "padding must be >= 0, got {" + std::to_string(before) + ", " + std::to_string(after) + "} for dim " +
                   std::to_string(d) + " of " + x.str());
    if (mode == PadMode::reflect && (before > 0 || after > 0) && (before >= n || after >= n))
      fail(op, "reflect padding {" + std::to_string(before) + ", " + std::to_string(after) +
                   "} must be smaller than size " + std::to_string(n) + " of dim " + std::to_string(d) + " of " +
                   x.str());
    if (mode == PadMode::replicate && n == 0 && (before > 0 || after > 0))
      fail(op, "replicate padding of the empty dim " + std::to_string(d) + " of " + x.str());
    const int64_t m = n + before + after;
    p.shape[static_cast<size_t>(d)] = m;
    auto& map = p.maps[static_cast<size_t>(d)];
    map.resize(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
      int64_t j = i - before;
      if (j < 0 || j >= n) {
        if (mode == PadMode::constant) j = -1;
        else if (mode == PadMode::replicate) j = j < 0 ? 0 : n - 1;
        else j = j < 0 ? -j : 2 * (n - 1) - j;
      }
      map[static_cast<size_t>(i)] = j;
    }
  }
  const Tensor fill = Tensor::full({1}, value, x.dtype());
  p.fill = fill.raw_data();
  Tensor out = Tensor::empty(p.shape, x.dtype());
  (ref ? kernels::gather_ref : kernels::gather)(p, x.numel() > 0 ? x.raw_data() : nullptr, out.raw_data());
  return out;
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) { return concat_impl(xs, dim, false); }
Tensor concat_ref(const std::vector<Tensor>& xs, int64_t dim) { return concat_impl(xs, dim, true); }

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const char* op = "ops::split";
  detail::check_defined(op, x, "x");
  const int64_t d = detail::wrap_dim(op, x, dim);
  int64_t total = 0;
  bool ok = true;
  for (int64_t s : sizes) {
    if (s < 0) ok = false;
    total += s;
  }
  if (!ok || total != x.size(d))
    fail(op, "sizes " + shape_str(sizes) + " must be >= 0 and sum to " + std::to_string(x.size(d)) + " (dim " +
                 std::to_string(d) + " of " + x.str() + ")");
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(x.slice(d, start, start + s));
    start += s;
  }
  return out;
}

Tensor flip(const Tensor& x, const std::vector<int64_t>& dims) { return flip_impl(x, dims, false); }
Tensor flip_ref(const Tensor& x, const std::vector<int64_t>& dims) { return flip_impl(x, dims, true); }
Tensor permute_copy(const Tensor& x, const std::vector<int64_t>& dims) { return permute_impl(x, dims, false); }
Tensor permute_copy_ref(const Tensor& x, const std::vector<int64_t>& dims) { return permute_impl(x, dims, true); }
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value) {
  return pad_impl(x, pads, mode, value, false);
}
Tensor pad_ref(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value) {
  return pad_impl(x, pads, mode, value, true);
}

}  // namespace mamba::ops
