#include "mamba/ops/conv.h"

#include "conv_internal.h"
#include "mamba/kernels/conv.h"
#include "op_util.h"

namespace mamba::ops {

namespace {

const char* op_name(int spatial, bool transpose) {
  static const char* names[2][3] = {{"ops::conv1d", "ops::conv2d", "ops::conv3d"},
                                    {"ops::conv_transpose1d", "ops::conv_transpose2d", "ops::conv_transpose3d"}};
  return names[transpose ? 1 : 0][spatial - 1];
}

// One value per spatial dim from a list of 1 or `spatial` values.
int64_t arg_at(const char* op, const char* name, const std::vector<int64_t>& v, int spatial, int d) {
  if (v.size() == 1) return v[0];
  if (static_cast<int>(v.size()) != spatial)
    fail(op, std::string(name) + " must have 1 or " + std::to_string(spatial) + " values, got " +
                 std::to_string(v.size()));
  return v[static_cast<size_t>(d)];
}

}  // namespace

namespace detail {

// The geometry of one (transposed) convolution from the tensors' shapes and the options,
// checked; `unbatched` is set when x has no batch dim. Devices and dtypes are the caller's.
kernels::ConvParams conv_geometry(int spatial, const Tensor& x0, const Tensor& w, const Tensor& bias,
                                  const ConvOptions& opt, bool transpose, bool& unbatched) {
  const char* op = op_name(spatial, transpose);
  unbatched = x0.dim() == spatial + 1;
  if (!unbatched && x0.dim() != spatial + 2)
    fail(op, "input must be [N, C, " + std::to_string(spatial) + " spatial dims] or unbatched, got " + x0.str());
  const Tensor x = unbatched ? x0.unsqueeze(0) : x0;
  if (w.dim() != spatial + 2) fail(op, "weight must have " + std::to_string(spatial + 2) + " dims, got " + w.str());
  const int64_t groups = opt.groups;
  const int64_t C_in = x.size(1);
  if (groups < 1) fail(op, "groups must be >= 1, got " + std::to_string(groups));
  kernels::ConvParams p;
  p.N = x.size(0);
  p.C_in = C_in;
  p.groups = groups;
  if (!transpose) {
    p.C_out = w.size(0);
    if (C_in % groups != 0 || p.C_out % groups != 0 || w.size(1) * groups != C_in)
      fail(op, "weight " + w.str() + " with groups=" + std::to_string(groups) + " does not fit input " + x0.str() +
                   " (need [C_out, C_in/groups, k...], C_in and C_out divisible by groups)");
  } else {
    p.C_out = w.size(1) * groups;
    if (C_in % groups != 0 || w.size(0) != C_in)
      fail(op, "weight " + w.str() + " with groups=" + std::to_string(groups) + " does not fit input " + x0.str() +
                   " (need [C_in, C_out/groups, k...], C_in divisible by groups)");
  }
  const int off = 3 - spatial;  // kernels see 3 spatial dims; leading ones are size 1
  for (int d = 0; d < spatial; ++d) {
    const int64_t s = arg_at(op, "stride", opt.stride, spatial, d);
    const int64_t pd = arg_at(op, "padding", opt.padding, spatial, d);
    const int64_t dl = arg_at(op, "dilation", opt.dilation, spatial, d);
    const int64_t op_ = transpose ? arg_at(op, "output_padding", opt.output_padding, spatial, d) : 0;
    if (s < 1) fail(op, "stride must be >= 1, got " + std::to_string(s));
    if (dl < 1) fail(op, "dilation must be >= 1, got " + std::to_string(dl));
    if (pd < 0) fail(op, "padding must be >= 0, got " + std::to_string(pd));
    if (op_ < 0 || (transpose && op_ >= std::max(s, dl)))
      fail(op, "output_padding " + std::to_string(op_) + " must be >= 0 and smaller than stride or dilation");
    const int64_t in = x.size(2 + d), k = w.size(2 + d);
    const int64_t out = transpose ? (in - 1) * s - 2 * pd + dl * (k - 1) + op_ + 1
                                  : (in + 2 * pd - dl * (k - 1) - 1) / s + 1;
    if (k < 1 || out < 1 || (!transpose && in + 2 * pd - dl * (k - 1) - 1 < 0))
      fail(op, "input " + x0.str() + " with weight " + w.str() + " gives an empty output (spatial dim " +
                   std::to_string(d) + ": size " + std::to_string(in) + ", kernel " + std::to_string(k) +
                   ", padding " + std::to_string(pd) + ")");
    p.in[off + d] = in;
    p.out[off + d] = out;
    p.k[off + d] = k;
    p.stride[off + d] = s;
    p.pad[off + d] = pd;
    p.dilation[off + d] = dl;
  }
  if (bias.defined()) {
    if (bias.dtype() != x0.dtype()) fail(op, "dtypes differ: input " + x0.str() + ", bias " + bias.str());
    if (bias.dim() != 1 || bias.size(0) != p.C_out)
      fail(op, "bias " + bias.str() + " must be [" + std::to_string(p.C_out) + "]");
  }
  return p;
}

Shape conv_out_shape(int spatial, const kernels::ConvParams& p) {
  Shape ys{p.N, p.C_out};
  for (int d = 0; d < spatial; ++d) ys.push_back(p.out[3 - spatial + d]);
  return ys;
}

}  // namespace detail

namespace {

Tensor conv_impl(int spatial, const Tensor& x0, const Tensor& w, const Tensor& bias, const ConvOptions& opt,
                 bool transpose, bool ref) {
  if (spatial < 1 || spatial > 3) fail("ops::conv", "spatial must be 1, 2 or 3, got " + std::to_string(spatial));
  const char* op = op_name(spatial, transpose);
  if (!ref && x0.defined() && x0.is_cuda()) return detail::conv_cuda(spatial, x0, w, bias, opt, transpose);
  detail::check_float(op, x0, "input");
  detail::check_float(op, w, "weight");
  if (w.dtype() != x0.dtype()) fail(op, "dtypes differ: input " + x0.str() + ", weight " + w.str());
  if (bias.defined()) detail::check_float(op, bias, "bias");
  bool unbatched = false;
  const kernels::ConvParams p = detail::conv_geometry(spatial, x0, w, bias, opt, transpose, unbatched);
  const Tensor x = unbatched ? x0.unsqueeze(0) : x0;
  Tensor bc;
  if (bias.defined()) bc = bias.contiguous();
  Shape ys = detail::conv_out_shape(spatial, p);
  Tensor y = Tensor::empty(ys, x0.dtype());
  const Tensor xc = x.contiguous(), wc = w.contiguous();
  if (x0.dtype() == DType::f64) {  // f64 (gradient checks): the plain loops
    const double* b = bc.defined() ? bc.data<double>() : nullptr;
    (transpose ? kernels::conv_transpose_f64_ref : kernels::conv_f64_ref)(p, xc.data<double>(), wc.data<double>(), b,
                                                                          y.data<double>());
    return unbatched ? y.squeeze(0) : y;
  }
  const float* b = bc.defined() ? bc.data<float>() : nullptr;
  if (transpose)
    (ref ? kernels::conv_transpose_f32_ref : kernels::conv_transpose_f32)(p, xc.data<float>(), wc.data<float>(), b,
                                                                          y.data<float>());
  else
    (ref ? kernels::conv_f32_ref : kernels::conv_f32)(p, xc.data<float>(), wc.data<float>(), b, y.data<float>());
  return unbatched ? y.squeeze(0) : y;
}

}  // namespace

Tensor conv(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, false, false);
}
Tensor conv_ref(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, false, true);
}
Tensor conv_transpose(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, true, false);
}
Tensor conv_transpose_ref(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, true, true);
}

Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) { return conv(1, x, w, b, o); }
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) { return conv(2, x, w, b, o); }
Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) { return conv(3, x, w, b, o); }
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) {
  return conv_transpose(1, x, w, b, o);
}
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) {
  return conv_transpose(2, x, w, b, o);
}
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& b, const ConvOptions& o) {
  return conv_transpose(3, x, w, b, o);
}

}  // namespace mamba::ops
