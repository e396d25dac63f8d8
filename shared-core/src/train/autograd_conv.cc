// Convolutions on the autograd tape (see autograd.h).
//
// For y = conv(x, w) with stride s, padding p, dilation d (per spatial dim):
//   dx = conv_transpose(dy, w, s, p, d, output_padding chosen so dx has x's size)
//   dw[o, i, k] = sum_{n, t} dy[n, o, t] x[n, i, t s - p + k d]
// The weight gradient is itself a convolution: with x's batch and channel dims swapped
// (batch = input channel, channels = N) and dy as the weight (out = o, in = N), a
// convolution with stride d, padding p and dilation s gives [C_in, C_out, K'...]; its first
// K per dim are dw^T. For y = conv_transpose(x, w) the roles of x and dy swap:
//   dx = conv(dy, w, s, p, d), dw[i, o, k] = sum_{n, t} x[n, i, t] dy[n, o, t s - p + k d].
// Groups: the weight gradient is computed group by group and concatenated.
#include <algorithm>

#include "mamba/ops/reduce.h"
#include "mamba/ops/shape_ops.h"
#include "mamba/train/autograd.h"

namespace mamba::ag {

namespace {

std::vector<int64_t> per_dim(const std::vector<int64_t>& v, int spatial, const char* what) {
  if (v.size() == 1) return std::vector<int64_t>(spatial, v[0]);
  if (static_cast<int>(v.size()) != spatial) fail("ag::conv", std::string(what) + " needs 1 or " + std::to_string(spatial) + " values");
  return v;
}

// G[a, b, k...] = sum_{n, t} out[n, a, t] in[n, b, t s - p + k d] for one group: out
// [N, A, Y...], in [N, Bc, X...] -> [A, Bc, K...].
Tensor correlate_weight_grad(int spatial, const Tensor& in, const Tensor& out, const std::vector<int64_t>& ksize,
                             const std::vector<int64_t>& s, const std::vector<int64_t>& p,
                             const std::vector<int64_t>& d) {
  std::vector<int64_t> swap{1, 0};
  for (int i = 0; i < spatial; ++i) swap.push_back(2 + i);
  const Tensor in_t = ops::permute_copy(in, swap);    // [Bc, N, X...]: batch Bc, channels N
  const Tensor out_t = ops::permute_copy(out, swap);  // [A, N, Y...]: the "weight"
  ops::ConvOptions o;
  o.stride = d;
  o.padding = p;
  o.dilation = s;
  Tensor g = ops::conv(spatial, in_t, out_t, Tensor(), o);  // [Bc, A, K'...]
  for (int i = 0; i < spatial; ++i) {
    if (g.size(2 + i) < ksize[i]) fail("ag::conv", "weight gradient is smaller than the kernel (internal)");
    g = g.slice(2 + i, 0, ksize[i]);
  }
  return ops::permute_copy(g, swap);  // [A, Bc, K...]
}

// Per group: G_g = correlate(in[:, group g's b channels], out[:, group g's a channels]),
// concatenated along a.
Tensor weight_grad(int spatial, const Tensor& in, const Tensor& out, const Shape& wshape, int64_t groups,
                   const std::vector<int64_t>& s, const std::vector<int64_t>& p, const std::vector<int64_t>& d) {
  std::vector<int64_t> ksize(wshape.begin() + 2, wshape.end());
  const int64_t a_per = out.size(1) / groups, b_per = in.size(1) / groups;
  if (groups == 1) return correlate_weight_grad(spatial, in, out, ksize, s, p, d);
  std::vector<Tensor> parts;
  for (int64_t g = 0; g < groups; ++g)
    parts.push_back(correlate_weight_grad(spatial, in.slice(1, g * b_per, (g + 1) * b_per).contiguous(),
                                          out.slice(1, g * a_per, (g + 1) * a_per).contiguous(), ksize, s, p, d));
  return ops::concat(parts, 0);
}

Tensor bias_grad(const Tensor& dy) {
  Tensor g = dy;
  while (g.dim() > 2) g = ops::sum(g, -1);
  return ops::sum(g, 0);
}

Var conv_impl(int spatial, const Var& x, const Var& w, const Var& bias, const ops::ConvOptions& opt, bool transpose) {
  if (!x.defined() || !w.defined()) fail("ag::conv", "x and w are required");
  const auto dtype_of_var = [](const Var& v) { return v.defined() ? dtype_name(v.value().dtype()) : "none"; };
  if (w.value().dtype() != x.value().dtype() || (bias.defined() && bias.value().dtype() != x.value().dtype()))
    fail(transpose ? "ag::conv_transpose" : "ag::conv", std::string("inputs must share one dtype (f32 or f64), got x ") +
                                                            dtype_of_var(x) + ", w " + dtype_of_var(w) + ", bias " +
                                                            dtype_of_var(bias));
  const Tensor X = x.value().contiguous(), W = w.value().contiguous();
  const Tensor B = bias.defined() ? bias.value() : Tensor();
  Tensor Y = transpose ? ops::conv_transpose(spatial, X, W, B, opt) : ops::conv(spatial, X, W, B, opt);
  const auto s = per_dim(opt.stride, spatial, "stride"), p = per_dim(opt.padding, spatial, "padding"),
             d = per_dim(opt.dilation, spatial, "dilation");
  const int64_t groups = opt.groups;
  std::vector<Var> inputs{x, w};
  if (bias.defined()) inputs.push_back(bias);
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
  const bool unbatched = X.dim() == spatial + 1;
  return Var::make(Y, transpose ? "conv_transpose" : "conv", inputs,
                   [=](const Tensor& g_in) {
                     Tensor G = g_in.contiguous();
                     Tensor Xb = X;
                     if (unbatched) {
                       G = G.unsqueeze(0);
                       Xb = X.unsqueeze(0);
                     }
                     std::vector<Tensor> r(inputs.size());
                     ops::ConvOptions o;
                     o.stride = s;
                     o.padding = p;
                     o.dilation = d;
                     o.groups = groups;
                     if (gx) {
                       if (!transpose) {
                         std::vector<int64_t> op(spatial);
                         for (int i = 0; i < spatial; ++i) {
                           const int64_t k = W.size(2 + i);
                           op[i] = Xb.size(2 + i) - ((G.size(2 + i) - 1) * s[i] - 2 * p[i] + d[i] * (k - 1) + 1);
                         }
                         o.output_padding = op;
                         r[0] = ops::conv_transpose(spatial, G, W, Tensor(), o);
                       } else {
                         r[0] = ops::conv(spatial, G, W, Tensor(), o);
                       }
                       if (unbatched) r[0] = r[0].squeeze(0);
                     }
                     if (gw) r[1] = transpose ? weight_grad(spatial, G, Xb, W.shape(), groups, s, p, d)
                                              : weight_grad(spatial, Xb, G, W.shape(), groups, s, p, d);
                     if (gb) r[2] = bias_grad(G);
                     return r;
                   });
}

}  // namespace

Var conv(int spatial, const Var& x, const Var& w, const Var& bias, const ops::ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, false);
}

Var conv_transpose(int spatial, const Var& x, const Var& w, const Var& bias, const ops::ConvOptions& opt) {
  return conv_impl(spatial, x, w, bias, opt, true);
}

}  // namespace mamba::ag
