#include "mamba/train/autograd.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "mamba/kernels/cross_entropy.h"
#include "mamba/kernels/gemm.h"
#include "mamba/nn/mixer.h"
#include "mamba/ops/activation.h"
#include "mamba/ops/elementwise.h"
#include "mamba/ops/embedding.h"
#include "mamba/ops/reduce.h"
#include "mamba/ops/shape_ops.h"
#include "mamba/ops/softmax.h"
#include "mamba/ops/ssm.h"

namespace mamba::ag {

namespace {
thread_local bool t_grad_enabled = true;

Tensor contig(const Tensor& t) { return t.contiguous(); }

void check_f32(const Var& v, const char* op, const char* name) {
  if (!v.defined()) fail(op, std::string(name) + " is undefined");
  check_dtype(v.value(), DType::f32, op);
}

// Accumulates g into slot (defines it on first use).
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g.is_contiguous() && g.storage().use_count() == 1 ? g : g.clone();
    return;
  }
  ops::add_(slot, g);
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

Var::Var(Tensor value, bool requires_grad) : data_(std::make_shared<VarData>()) {
  data_->value = std::move(value);
  data_->requires_grad = requires_grad;
}

Var Var::parameter(const Tensor& value, Tensor& grad) {
  if (!grad.defined() || grad.shape() != value.shape())
    fail("ag::Var::parameter", "gradient " + (grad.defined() ? shape_str(grad.shape()) : std::string("undefined")) +
                                   " does not match the value " + shape_str(value.shape()));
  Var v(value, true);
  v.data_->sink = &grad;
  return v;
}

const Tensor& Var::value() const {
  if (!data_) fail("ag::Var", "undefined variable");
  return data_->value;
}

const Tensor& Var::grad() const {
  if (!data_) fail("ag::Var", "undefined variable");
  return data_->grad;
}

Var Var::make(Tensor value, const char* op, const std::vector<Var>& inputs, BackwardFn backward) {
  Var out(std::move(value), false);
  if (!t_grad_enabled) return out;
  bool any = false;
  for (const Var& in : inputs) any = any || in.requires_grad();
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs.reserve(inputs.size());
  for (const Var& in : inputs) node->inputs.push_back(in.data_);
  node->backward = std::move(backward);
  out.data_->requires_grad = true;
  out.data_->node = std::move(node);
  return out;
}

void backward(const Var& root, const Tensor& seed) {
  if (!root.defined()) fail("ag::backward", "undefined root");
  if (!root.requires_grad()) fail("ag::backward", "the root does not depend on anything that requires a gradient");
  Tensor g0 = seed;
  if (!g0.defined()) {
    if (root.numel() != 1) fail("ag::backward", "root " + shape_str(root.shape()) + " is not a scalar: give a seed");
    g0 = Tensor::full(root.shape(), 1.0);
  } else {
    check_shape(g0, root.shape(), "ag::backward", "seed");
  }
  // Topological order of the interior nodes (post-order DFS, iterative).
  std::vector<VarData*> order;
  std::unordered_set<VarData*> seen;
  std::vector<std::pair<VarData*, size_t>> stack{{root.data().get(), 0}};
  seen.insert(root.data().get());
  while (!stack.empty()) {
    auto& [v, next] = stack.back();
    if (v->node && next < v->node->inputs.size()) {
      VarData* in = v->node->inputs[next++].get();
      if (in && in->requires_grad && !seen.count(in)) {
        seen.insert(in);
        stack.push_back({in, 0});
      }
      continue;
    }
    order.push_back(v);
    stack.pop_back();
  }
  std::unordered_map<VarData*, Tensor> grads;
  grads[root.data().get()] = g0;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    VarData* v = *it;
    auto found = grads.find(v);
    if (found == grads.end()) continue;
    Tensor g = std::move(found->second);
    grads.erase(found);
    if (!v->node) {  // a leaf
      if (v->sink) {
        check_shape(g, v->sink->shape(), "ag::backward", "parameter gradient");
        ops::add_(*v->sink, g);
      } else {
        accumulate(v->grad, g);
      }
      continue;
    }
    std::vector<Tensor> in_grads = v->node->backward(g);
    if (in_grads.size() != v->node->inputs.size())
      fail("ag::backward", std::string(v->node->op) + ": backward returned the wrong number of gradients");
    for (size_t i = 0; i < in_grads.size(); ++i) {
      VarData* in = v->node->inputs[i].get();
      if (!in || !in->requires_grad || !in_grads[i].defined()) continue;
      if (in_grads[i].shape() != in->value.shape())
        fail("ag::backward", std::string(v->node->op) + ": gradient " + shape_str(in_grads[i].shape()) +
                                 " for an input of shape " + shape_str(in->value.shape()));
      accumulate(grads[in], in_grads[i]);
    }
  }
}

Tensor sum_to_shape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor r = g;
  while (r.dim() > static_cast<int64_t>(shape.size())) r = ops::sum(r, 0);
  for (int64_t d = 0; d < r.dim(); ++d)
    if (shape[d] == 1 && r.size(d) != 1) r = ops::sum(r, d, true);
  if (r.shape() != shape) fail("ag::sum_to_shape", "cannot reduce " + shape_str(g.shape()) + " to " + shape_str(shape));
  return r;
}

// ---- arithmetic -------------------------------------------------------------------------

Var add(const Var& a, const Var& b) {
  const Shape sa = a.shape(), sb = b.shape();
  return Var::make(ops::add(a.value(), b.value()), "add", {a, b},
                   [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)}; });
}

Var sub(const Var& a, const Var& b) {
  const Shape sa = a.shape(), sb = b.shape();
  return Var::make(ops::sub(a.value(), b.value()), "sub", {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(ops::mul(g, -1.0), sb)};
  });
}

Var mul(const Var& a, const Var& b) {
  Tensor av = a.value(), bv = b.value();
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return Var::make(ops::mul(av, bv), "mul", {a, b}, [av, bv, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to_shape(ops::mul(g, bv), av.shape()) : Tensor(),
                               gb ? sum_to_shape(ops::mul(g, av), bv.shape()) : Tensor()};
  });
}

Var div(const Var& a, const Var& b) {
  Tensor av = a.value(), bv = b.value();
  Tensor y = ops::div(av, bv);
  const bool gb = b.requires_grad();
  return Var::make(y, "div", {a, b}, [av, bv, y, gb](const Tensor& g) {
    Tensor ga = ops::div(g, bv);
    Tensor gbt = gb ? sum_to_shape(ops::mul(ops::mul(ga, y), -1.0), bv.shape()) : Tensor();
    return std::vector<Tensor>{sum_to_shape(ga, av.shape()), gbt};
  });
}

Var add(const Var& a, double s) {
  return Var::make(ops::add(a.value(), s), "add_scalar", {a}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Var mul(const Var& a, double s) {
  return Var::make(ops::mul(a.value(), s), "mul_scalar", {a},
                   [s](const Tensor& g) { return std::vector<Tensor>{ops::mul(g, s)}; });
}

Var neg(const Var& a) { return mul(a, -1.0); }

Var sqrt(const Var& a) {
  check_f32(a, "ag::sqrt", "x");
  Tensor x = contig(a.value());
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) yp[i] = std::sqrt(xp[i]);
  return Var::make(y, "sqrt", {a}, [y](const Tensor& g) {
    Tensor gc = contig(g), r = Tensor::empty(y.shape());
    const float *gp = gc.data<float>(), *yv = y.data<float>();
    float* rp = r.data<float>();
    for (int64_t i = 0; i < r.numel(); ++i) rp[i] = yv[i] > 0 ? gp[i] * 0.5f / yv[i] : 0.f;
    return std::vector<Tensor>{r};
  });
}

Var square(const Var& a) {
  Tensor av = a.value();
  return Var::make(ops::mul(av, av), "square", {a},
                   [av](const Tensor& g) { return std::vector<Tensor>{ops::mul(ops::mul(g, av), 2.0)}; });
}

// ---- layers -------------------------------------------------------------------------------

Var linear(const Var& x, const Var& weight, const Var& bias) {
  check_f32(x, "ag::linear", "x");
  check_f32(weight, "ag::linear", "weight");
  const Tensor W = contig(weight.value());
  if (W.dim() != 2) fail("ag::linear", "weight " + shape_str(W.shape()) + " is not (out, in)");
  const int64_t out = W.size(0), in = W.size(1);
  const Tensor X = contig(x.value());
  if (X.dim() < 1 || X.size(-1) != in)
    fail("ag::linear", "x " + shape_str(X.shape()) + " does not end in in_features " + std::to_string(in));
  if (bias.defined()) check_shape(bias.value(), {out}, "ag::linear", "bias");
  const int64_t rows = X.numel() / in;
  Shape yshape = X.shape();
  yshape.back() = out;
  Tensor Y = Tensor::empty(yshape);
  if (rows > 0) {
    kernels::sgemm(false, true, rows, out, in, 1.f, X.data<float>(), in, W.data<float>(), in, 0.f, Y.data<float>(),
                   out);
    if (bias.defined()) {
      const Tensor bv = contig(bias.value());
      const float* bp = bv.data<float>();
      float* yp = Y.data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out; ++o) yp[r * out + o] += bp[o];
    }
  }
  const bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  std::vector<Var> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return Var::make(Y, "linear", inputs, [X, W, rows, in, out, gx, gw, gb, has_b = bias.defined()](const Tensor& g) {
    const Tensor G = contig(g);
    std::vector<Tensor> r(has_b ? 3 : 2);
    if (gx) {
      r[0] = Tensor::empty(X.shape());
      if (rows > 0)
        kernels::sgemm(false, false, rows, in, out, 1.f, G.data<float>(), out, W.data<float>(), in, 0.f,
                       r[0].data<float>(), in);
    }
    if (gw) {
      r[1] = Tensor::zeros(W.shape());
      if (rows > 0)
        kernels::sgemm(true, false, out, in, rows, 1.f, G.data<float>(), out, X.data<float>(), in, 0.f,
                       r[1].data<float>(), in);
    }
    if (gb) {
      r[2] = Tensor::zeros({out});
      std::vector<double> acc(out, 0.0);
      const float* gp = G.data<float>();
      for (int64_t row = 0; row < rows; ++row)
        for (int64_t o = 0; o < out; ++o) acc[o] += gp[row * out + o];
      float* bp = r[2].data<float>();
      for (int64_t o = 0; o < out; ++o) bp[o] = static_cast<float>(acc[o]);
    }
    return r;
  });
}

Var layer_norm(const Var& x, const Var& weight, const Var& bias, double eps) {
  check_f32(x, "ag::layer_norm", "x");
  const Tensor X = contig(x.value());
  const int64_t D = X.size(-1), rows = X.numel() / std::max<int64_t>(D, 1);
  if (weight.defined()) check_shape(weight.value(), {D}, "ag::layer_norm", "weight");
  if (bias.defined()) check_shape(bias.value(), {D}, "ag::layer_norm", "bias");
  Tensor Wt = weight.defined() ? contig(weight.value()) : Tensor();
  Tensor Bt = bias.defined() ? contig(bias.value()) : Tensor();
  Tensor Y = Tensor::empty(X.shape()), xhat = Tensor::empty(X.shape()), rstd = Tensor::empty({rows});
  {
    const float* xp = X.data<float>();
    float *yp = Y.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
    const float* wp = Wt.defined() ? Wt.data<float>() : nullptr;
    const float* bp = Bt.defined() ? Bt.data<float>() : nullptr;
#pragma omp parallel for schedule(static) if (rows > 64)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * D;
      double m = 0, v = 0;
      for (int64_t i = 0; i < D; ++i) m += xr[i];
      m /= static_cast<double>(D);
      for (int64_t i = 0; i < D; ++i) v += (xr[i] - m) * (xr[i] - m);
      v /= static_cast<double>(D);
      const double rs = 1.0 / std::sqrt(v + eps);
      rp[r] = static_cast<float>(rs);
      for (int64_t i = 0; i < D; ++i) {
        const float h = static_cast<float>((xr[i] - m) * rs);
        hp[r * D + i] = h;
        yp[r * D + i] = h * (wp ? wp[i] : 1.f) + (bp ? bp[i] : 0.f);
      }
    }
  }
  std::vector<Var> inputs{x};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  const bool has_w = weight.defined(), has_b = bias.defined();
  return Var::make(Y, "layer_norm", inputs, [xhat, rstd, Wt, rows, D, has_w, has_b](const Tensor& g) {
    const Tensor G = contig(g);
    std::vector<Tensor> r;
    Tensor dx = Tensor::empty(xhat.shape());
    const float *gp = G.data<float>(), *hp = xhat.data<float>(), *rp = rstd.data<float>();
    const float* wp = has_w ? Wt.data<float>() : nullptr;
    float* dxp = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows > 64)
    for (int64_t row = 0; row < rows; ++row) {
      double s1 = 0, s2 = 0;  // mean(gw), mean(gw * xhat)
      for (int64_t i = 0; i < D; ++i) {
        const double gw = gp[row * D + i] * (wp ? wp[i] : 1.f);
        s1 += gw;
        s2 += gw * hp[row * D + i];
      }
      s1 /= static_cast<double>(D);
      s2 /= static_cast<double>(D);
      for (int64_t i = 0; i < D; ++i) {
        const double gw = gp[row * D + i] * (wp ? wp[i] : 1.f);
        dxp[row * D + i] = static_cast<float>(rp[row] * (gw - s1 - hp[row * D + i] * s2));
      }
    }
    r.push_back(dx);
    if (has_w || has_b) {
      std::vector<double> dw(D, 0.0), db(D, 0.0);
      for (int64_t row = 0; row < rows; ++row)
        for (int64_t i = 0; i < D; ++i) {
          dw[i] += static_cast<double>(gp[row * D + i]) * hp[row * D + i];
          db[i] += gp[row * D + i];
        }
      auto to_t = [D](const std::vector<double>& v) {
        Tensor t = Tensor::empty({D});
        float* p = t.data<float>();
        for (int64_t i = 0; i < D; ++i) p[i] = static_cast<float>(v[i]);
        return t;
      };
      if (has_w) r.push_back(to_t(dw));
      if (has_b) r.push_back(to_t(db));
    }
    return r;
  });
}

Var rms_norm(const Var& x, const Var& weight, double eps) {
  check_f32(x, "ag::rms_norm", "x");
  check_f32(weight, "ag::rms_norm", "weight");
  const Tensor X = contig(x.value()), W = contig(weight.value());
  return Var::make(ops::rms_norm(X, W, eps), "rms_norm", {x, weight}, [X, W, eps](const Tensor& g) {
    ops::NormGrads ng = ops::rms_norm_backward(X, W, eps, contig(g));
    return std::vector<Tensor>{ng.dx, ng.dweight};
  });
}

Var dropout(const Var& x, double p, std::mt19937_64& rng) {
  if (p < 0 || p >= 1) fail("ag::dropout", "p " + std::to_string(p) + " is outside [0, 1)");
  if (p == 0 || !t_grad_enabled) return x;
  check_f32(x, "ag::dropout", "x");
  const Tensor X = contig(x.value());
  Tensor mask = Tensor::empty(X.shape());
  float* mp = mask.data<float>();
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t i = 0; i < X.numel(); ++i) mp[i] = u(rng) < p ? 0.f : scale;
  return Var::make(ops::mul(X, mask), "dropout", {x},
                   [mask](const Tensor& g) { return std::vector<Tensor>{ops::mul(g, mask)}; });
}

Var embedding(const Tensor& ids, const Var& table, int64_t padding_idx) {
  check_f32(table, "ag::embedding", "table");
  const Tensor T = table.value();
  const Tensor I = ids.to(DType::i64).contiguous();
  Tensor Y = ops::embedding(I, T);
  const int64_t V = T.size(0), D = T.size(1);
  return Var::make(Y, "embedding", {table}, [I, V, D, padding_idx](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dt = Tensor::zeros({V, D});
    const int64_t* ip = I.data<int64_t>();
    const float* gp = G.data<float>();
    float* dp = dt.data<float>();
    for (int64_t r = 0; r < I.numel(); ++r) {
      if (ip[r] == padding_idx) continue;
      float* row = dp + ip[r] * D;
      for (int64_t i = 0; i < D; ++i) row[i] += gp[r * D + i];
    }
    return std::vector<Tensor>{dt};
  });
}

namespace {
// Keeps the mixer's saved activations alive until the backward runs (once or more).
struct MixerSaved {
  std::unique_ptr<nn::SavedActivations> saved;
};
}  // namespace

Var mixer(const nn::Mixer& m, const Var& x, const std::vector<Tensor*>& param_grads) {
  check_f32(x, "ag::mixer", "x");
  if (!t_grad_enabled || (!x.requires_grad() && param_grads.empty())) return Var(m.forward(contig(x.value())));
  if (!m.has_backward()) fail("ag::mixer", "this mixer has no backward");
  auto keep = std::make_shared<MixerSaved>();
  Tensor y = m.forward_train(contig(x.value()), keep->saved);
  // The node must exist even when x is a constant, since the parameters need gradients:
  // an internal leaf stands for them.
  Var params_leaf(Tensor::zeros({1}), !param_grads.empty());
  return Var::make(y, "mixer", {x, params_leaf}, [&m, keep, param_grads](const Tensor& g) {
    std::vector<Tensor> pg;
    Tensor dx = m.backward(*keep->saved, contig(g), pg);
    if (!param_grads.empty()) {
      if (pg.size() != param_grads.size()) fail("ag::mixer", "parameter gradient count mismatch");
      for (size_t i = 0; i < pg.size(); ++i) ops::add_(*param_grads[i], pg[i]);
    }
    return std::vector<Tensor>{dx, Tensor()};
  });
}

// ---- activations ------------------------------------------------------------------------

namespace {
// y = f(x) elementwise with dy/dx = df(x, y).
template <class F, class DF>
Var pointwise(const Var& x, const char* op, F f, DF df) {
  check_f32(x, op, "x");
  const Tensor X = contig(x.value());
  Tensor Y = Tensor::empty(X.shape());
  const float* xp = X.data<float>();
  float* yp = Y.data<float>();
  const int64_t n = X.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) yp[i] = f(xp[i]);
  return Var::make(Y, op, {x}, [X, Y, df](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dx = Tensor::empty(X.shape());
    const float *gp = G.data<float>(), *xv = X.data<float>(), *yv = Y.data<float>();
    float* dp = dx.data<float>();
    const int64_t count = X.numel();
#pragma omp parallel for schedule(static) if (count > (1 << 15))
    for (int64_t i = 0; i < count; ++i) dp[i] = gp[i] * df(xv[i], yv[i]);
    return std::vector<Tensor>{dx};
  });
}
}  // namespace

Var relu(const Var& x) {
  return pointwise(
      x, "relu", [](float v) { return v > 0 ? v : 0.f; }, [](float v, float) { return v > 0 ? 1.f : 0.f; });
}

Var gelu(const Var& x) {
  constexpr double kInvSqrt2 = 0.70710678118654752440;
  constexpr double kInvSqrt2Pi = 0.39894228040143267794;
  return pointwise(
      x, "gelu", [](float v) { return static_cast<float>(0.5 * v * (1.0 + std::erf(v * kInvSqrt2))); },
      [](float v, float) {
        const double cdf = 0.5 * (1.0 + std::erf(v * kInvSqrt2));
        return static_cast<float>(cdf + v * kInvSqrt2Pi * std::exp(-0.5 * double(v) * v));
      });
}

Var silu(const Var& x) {
  return pointwise(
      x, "silu", [](float v) { return v / (1.f + std::exp(-v)); },
      [](float v, float) {
        const float s = 1.f / (1.f + std::exp(-v));
        return s * (1.f + v * (1.f - s));
      });
}

Var sigmoid(const Var& x) {
  return pointwise(
      x, "sigmoid", [](float v) { return 1.f / (1.f + std::exp(-v)); }, [](float, float y) { return y * (1.f - y); });
}

Var tanh(const Var& x) {
  return pointwise(
      x, "tanh", [](float v) { return std::tanh(v); }, [](float, float y) { return 1.f - y * y; });
}

Var leaky_relu(const Var& x, double slope) {
  const float a = static_cast<float>(slope);
  return pointwise(
      x, "leaky_relu", [a](float v) { return v > 0 ? v : a * v; }, [a](float v, float) { return v > 0 ? 1.f : a; });
}

namespace {
// Softmax (log = false) or log-softmax along dim, with the gradient
//   softmax:      dx = y * (g - sum(g * y))
//   log-softmax:  dx = g - exp(y) * sum(g)
Var softmax_impl(const Var& x, int64_t dim, bool log) {
  check_f32(x, log ? "ag::log_softmax" : "ag::softmax", "x");
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  const Tensor Y = log ? ops::log_softmax(x.value(), d) : ops::softmax(x.value(), d);
  return Var::make(Y, log ? "log_softmax" : "softmax", {x}, [Y, d, log](const Tensor& g) {
    if (log) {
      const Tensor sm = ops::exp(Y);
      return std::vector<Tensor>{ops::sub(g, ops::mul(sm, ops::sum(g, d, true)))};
    }
    const Tensor gy = ops::mul(g, Y);
    return std::vector<Tensor>{ops::mul(Y, ops::sub(g, ops::sum(gy, d, true)))};
  });
}
}  // namespace

Var softmax(const Var& x, int64_t dim) { return softmax_impl(x, dim, false); }
Var log_softmax(const Var& x, int64_t dim) { return softmax_impl(x, dim, true); }

Var group_norm(const Var& x, int64_t groups, const Var& weight, const Var& bias, double eps) {
  check_f32(x, "ag::group_norm", "x");
  if (x.dim() < 2) fail("ag::group_norm", "x " + shape_str(x.shape()) + " is not [N, C, ...]");
  const int64_t N = x.size(0), C = x.size(1);
  if (groups < 1 || C % groups != 0)
    fail("ag::group_norm", std::to_string(groups) + " groups do not divide " + std::to_string(C) + " channels");
  const int64_t per = x.numel() / std::max<int64_t>(1, N * groups);
  Var y = reshape(layer_norm(reshape(x, {N * groups, per}), Var(), Var(), eps), x.shape());
  Shape cshape(x.dim(), 1);
  cshape[1] = C;  // [1, C, 1, ...] broadcasts over N and the spatial dims
  if (weight.defined()) y = mul(y, reshape(weight, cshape));
  if (bias.defined()) y = add(y, reshape(bias, cshape));
  return y;
}

Var instance_norm(const Var& x, const Var& weight, const Var& bias, double eps) {
  if (!x.defined() || x.dim() < 3) fail("ag::instance_norm", "x must be [N, C, spatial...]");
  return group_norm(x, x.size(1), weight, bias, eps);
}

// ---- shapes -------------------------------------------------------------------------------

Var reshape(const Var& x, const Shape& shape) {
  const Shape in = x.shape();
  return Var::make(x.value().reshape(shape), "reshape", {x},
                   [in](const Tensor& g) { return std::vector<Tensor>{g.reshape(in)}; });
}

Var permute(const Var& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = dims[i] < 0 ? dims[i] + x.dim() : dims[i];
    if (d < 0 || d >= x.dim()) fail("ag::permute", "bad dim for " + shape_str(x.shape()));
    inv[d] = static_cast<int64_t>(i);
  }
  return Var::make(ops::permute_copy(x.value(), dims), "permute", {x},
                   [inv](const Tensor& g) { return std::vector<Tensor>{ops::permute_copy(g, inv)}; });
}

Var transpose(const Var& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) dims[i] = i;
  if (d0 < 0) d0 += x.dim();
  if (d1 < 0) d1 += x.dim();
  std::swap(dims.at(d0), dims.at(d1));
  return permute(x, dims);
}

Var slice(const Var& x, int64_t dim, int64_t start, int64_t end) {
  const Shape in = x.shape();
  if (dim < 0) dim += x.dim();
  return Var::make(x.value().slice(dim, start, end).contiguous(), "slice", {x}, [in, dim, start, end](const Tensor& g) {
    Tensor full = Tensor::zeros(in);
    Tensor view = full.slice(dim, start, end);
    view.copy_from(g);
    return std::vector<Tensor>{full};
  });
}

Var concat(const std::vector<Var>& xs, int64_t dim) {
  if (xs.empty()) fail("ag::concat", "no inputs");
  std::vector<Tensor> vals;
  std::vector<int64_t> sizes;
  const int64_t d = dim < 0 ? dim + xs[0].dim() : dim;
  for (const Var& v : xs) {
    vals.push_back(v.value());
    sizes.push_back(v.value().size(d));
  }
  return Var::make(ops::concat(vals, d), "concat", xs, [sizes, d](const Tensor& g) {
    std::vector<Tensor> parts = ops::split(g, sizes, d);
    for (Tensor& p : parts) p = p.contiguous();
    return parts;
  });
}

Var flip(const Var& x, const std::vector<int64_t>& dims) {
  return Var::make(ops::flip(x.value(), dims), "flip", {x},
                   [dims](const Tensor& g) { return std::vector<Tensor>{ops::flip(g, dims)}; });
}

Var gather_rows(const Var& x, const std::vector<int64_t>& index) {
  check_f32(x, "ag::gather_rows", "x");
  const Tensor X = contig(x.value());
  if (X.dim() != 3 || static_cast<int64_t>(index.size()) != X.size(0))
    fail("ag::gather_rows", "x " + shape_str(X.shape()) + " is not (B, L, D) with B = " + std::to_string(index.size()));
  const int64_t B = X.size(0), L = X.size(1), D = X.size(2);
  Tensor Y = Tensor::empty({B, D});
  for (int64_t b = 0; b < B; ++b) {
    if (index[b] < 0 || index[b] >= L) fail("ag::gather_rows", "index " + std::to_string(index[b]) + " outside [0, L)");
    std::copy_n(X.data<float>() + (b * L + index[b]) * D, D, Y.data<float>() + b * D);
  }
  return Var::make(Y, "gather_rows", {x}, [index, B, L, D](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dx = Tensor::zeros({B, L, D});
    for (int64_t b = 0; b < B; ++b) std::copy_n(G.data<float>() + b * D, D, dx.data<float>() + (b * L + index[b]) * D);
    return std::vector<Tensor>{dx};
  });
}

// ---- reductions and losses ---------------------------------------------------------------

Var sum(const Var& x) {
  const Shape in = x.shape();
  return Var::make(ops::sum(x.value()).reshape({1}), "sum", {x},
                   [in](const Tensor& g) { return std::vector<Tensor>{Tensor::full(in, g.item())}; });
}

Var mean(const Var& x) {
  const Shape in = x.shape();
  const double n = static_cast<double>(std::max<int64_t>(1, x.numel()));
  return Var::make(ops::mean(x.value()).reshape({1}), "mean", {x},
                   [in, n](const Tensor& g) { return std::vector<Tensor>{Tensor::full(in, g.item() / n)}; });
}

Var mean(const Var& x, int64_t dim, bool keepdim) {
  const Shape in = x.shape();
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  const double n = static_cast<double>(in.at(d));
  return Var::make(ops::mean(x.value(), d, keepdim), "mean_dim", {x}, [in, d, n, keepdim](const Tensor& g) {
    Tensor gk = keepdim ? g : g.unsqueeze(d);
    Tensor full = Tensor::zeros(in);
    ops::add_(full, ops::mul(gk, 1.0 / n));
    return std::vector<Tensor>{full};
  });
}

namespace {
Var regression_loss(const Var& pred, const Tensor& target, bool squared) {
  const char* op = squared ? "ag::mse_loss" : "ag::l1_loss";
  check_f32(pred, op, "pred");
  check_shape(target, pred.shape(), op, "target");
  const Tensor P = contig(pred.value()), Tg = target.to(DType::f32).contiguous();
  const int64_t n = P.numel();
  const float *pp = P.data<float>(), *tp = Tg.data<float>();
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = static_cast<double>(pp[i]) - tp[i];
    acc += squared ? e * e : std::fabs(e);
  }
  const double denom = static_cast<double>(std::max<int64_t>(n, 1));
  return Var::make(Tensor::full({1}, acc / denom), squared ? "mse_loss" : "l1_loss", {pred},
                   [P, Tg, n, denom, squared](const Tensor& g) {
                     const double s = g.item() / denom;
                     Tensor dp = Tensor::empty(P.shape());
                     const float *pp2 = P.data<float>(), *tp2 = Tg.data<float>();
                     float* d = dp.data<float>();
                     for (int64_t i = 0; i < n; ++i) {
                       const double e = static_cast<double>(pp2[i]) - tp2[i];
                       d[i] = static_cast<float>(squared ? 2.0 * s * e : s * (e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0));
                     }
                     return std::vector<Tensor>{dp};
                   });
}
}  // namespace

Var mse_loss(const Var& pred, const Tensor& target) { return regression_loss(pred, target, true); }
Var l1_loss(const Var& pred, const Tensor& target) { return regression_loss(pred, target, false); }

Var cross_entropy(const Var& logits, const Tensor& targets) {
  check_f32(logits, "ag::cross_entropy", "logits");
  const Tensor L = contig(logits.value());
  if (L.dim() != 2) fail("ag::cross_entropy", "logits " + shape_str(L.shape()) + " is not (rows, V)");
  const Tensor T = targets.to(DType::i64).contiguous();
  check_shape(T, {L.size(0)}, "ag::cross_entropy", "targets");
  const int64_t rows = L.size(0), V = L.size(1);
  const int64_t* tp = T.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    if (tp[r] >= V) fail("ag::cross_entropy", "target " + std::to_string(tp[r]) + " at row " + std::to_string(r) + " >= V " + std::to_string(V));
  Tensor dlogits = Tensor::empty(L.shape());
  // The fused kernel gives the loss sum and the gradient of the summed loss; scale later.
  const kernels::CrossEntropyResult res =
      kernels::softmax_cross_entropy(rows, V, V, L.data<float>(), tp, 1.f, dlogits.data<float>());
  const double counted = static_cast<double>(res.counted);
  const double loss = res.counted ? res.loss_sum / counted : 0.0;
  return Var::make(Tensor::full({1}, loss), "cross_entropy", {logits}, [dlogits, counted](const Tensor& g) {
    return std::vector<Tensor>{ops::mul(dlogits, counted > 0 ? g.item() / counted : 0.0)};
  });
}

}  // namespace mamba::ag
