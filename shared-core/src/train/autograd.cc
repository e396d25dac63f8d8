#include "mamba/train/autograd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "mamba/kernels/activation.h"
#include "mamba/kernels/cross_entropy.h"
#include "mamba/kernels/gemm.h"
#include "mamba/kernels/norm.h"
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

// One named input of an op, for dtype checks.
struct Named {
  const char* name;
  const Var& var;
};

// The dtype every op computes in: each defined input must be f32 or f64, and all of them
// the same (the error names the op and every input's dtype). `required` inputs must be
// defined.
DType common_dtype(const char* op, std::initializer_list<Named> inputs, size_t required = 1) {
  DType dt = DType::f32;
  bool have = false, mixed = false;
  std::string list;
  size_t i = 0;
  for (const Named& in : inputs) {
    const bool must = i++ < required;
    if (!in.var.defined()) {
      if (must) fail(op, std::string(in.name) + " is undefined");
      continue;
    }
    const DType d = in.var.value().dtype();
    if (d != DType::f32 && d != DType::f64)
      fail(op, std::string(in.name) + " must be f32 or f64, got " + in.var.value().str());
    list += (list.empty() ? "" : ", ") + std::string(in.name) + " " + dtype_name(d);
    if (!have) {
      dt = d;
      have = true;
    } else if (d != dt) {
      mixed = true;
    }
  }
  if (mixed) fail(op, "inputs must share one dtype (f32 or f64), got " + list);
  return dt;
}

// Calls f(T{}) with T = double for f64 and float for f32.
template <class F>
auto by_dtype(DType dt, F&& f) {
  return dt == DType::f64 ? f(double{}) : f(float{});
}

// C = op(A) op(B) in T (OpenBLAS sgemm for f32, the double GEMM for f64).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc) {
  kernels::sgemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double* C, int64_t ldc) {
  kernels::dgemm(ta, tb, M, N, K, 1.0, A, lda, B, ldb, 0.0, C, ldc);
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
  if (grad.dtype() != value.dtype())
    fail("ag::Var::parameter", "gradient " + grad.str() + " does not have the dtype of the value " + value.str());
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
    g0 = Tensor::full(root.shape(), 1.0, root.value().dtype());
  } else {
    check_shape(g0, root.shape(), "ag::backward", "seed");
    if (g0.dtype() != root.value().dtype())
      fail("ag::backward", "seed " + g0.str() + " does not have the root's dtype " + root.value().str());
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
  common_dtype("ag::add", {{"a", a}, {"b", b}}, 2);
  const Shape sa = a.shape(), sb = b.shape();
  return Var::make(ops::add(a.value(), b.value()), "add", {a, b},
                   [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(g, sb)}; });
}

Var sub(const Var& a, const Var& b) {
  common_dtype("ag::sub", {{"a", a}, {"b", b}}, 2);
  const Shape sa = a.shape(), sb = b.shape();
  return Var::make(ops::sub(a.value(), b.value()), "sub", {a, b}, [sa, sb](const Tensor& g) {
    return std::vector<Tensor>{sum_to_shape(g, sa), sum_to_shape(ops::mul(g, -1.0), sb)};
  });
}

Var mul(const Var& a, const Var& b) {
  common_dtype("ag::mul", {{"a", a}, {"b", b}}, 2);
  Tensor av = a.value(), bv = b.value();
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return Var::make(ops::mul(av, bv), "mul", {a, b}, [av, bv, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to_shape(ops::mul(g, bv), av.shape()) : Tensor(),
                               gb ? sum_to_shape(ops::mul(g, av), bv.shape()) : Tensor()};
  });
}

Var div(const Var& a, const Var& b) {
  common_dtype("ag::div", {{"a", a}, {"b", b}}, 2);
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
  const DType dt = common_dtype("ag::sqrt", {{"x", a}});
  return by_dtype(dt, [&](auto zero) {
    using T = decltype(zero);
    Tensor x = contig(a.value());
    Tensor y = Tensor::empty(x.shape(), dt);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) yp[i] = std::sqrt(xp[i]);
    return Var::make(y, "sqrt", {a}, [y, dt](const Tensor& g) {
      Tensor gc = contig(g), r = Tensor::empty(y.shape(), dt);
      const T *gp = gc.data<T>(), *yv = y.data<T>();
      T* rp = r.data<T>();
      for (int64_t i = 0; i < r.numel(); ++i) rp[i] = yv[i] > 0 ? gp[i] * T(0.5) / yv[i] : T(0);
      return std::vector<Tensor>{r};
    });
  });
}

Var square(const Var& a) {
  Tensor av = a.value();
  return Var::make(ops::mul(av, av), "square", {a},
                   [av](const Tensor& g) { return std::vector<Tensor>{ops::mul(ops::mul(g, av), 2.0)}; });
}

// ---- layers -------------------------------------------------------------------------------

Var linear(const Var& x, const Var& weight, const Var& bias) {
  const DType dt = common_dtype("ag::linear", {{"x", x}, {"weight", weight}, {"bias", bias}}, 2);
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
  return by_dtype(dt, [&](auto zero) {
    using T = decltype(zero);
    Tensor Y = Tensor::empty(yshape, dt);
    if (rows > 0) {
      gemm(false, true, rows, out, in, X.data<T>(), in, W.data<T>(), in, Y.data<T>(), out);
      if (bias.defined()) {
        const Tensor bv = contig(bias.value());
        const T* bp = bv.data<T>();
        T* yp = Y.data<T>();
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < out; ++o) yp[r * out + o] += bp[o];
      }
    }
    const bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    std::vector<Var> inputs{x, weight};
    if (bias.defined()) inputs.push_back(bias);
    return Var::make(Y, "linear", inputs,
                     [X, W, rows, in, out, gx, gw, gb, dt, has_b = bias.defined()](const Tensor& g) {
                       const Tensor G = contig(g);
                       std::vector<Tensor> r(has_b ? 3 : 2);
                       if (gx) {
                         r[0] = Tensor::empty(X.shape(), dt);
                         if (rows > 0) gemm(false, false, rows, in, out, G.data<T>(), out, W.data<T>(), in,
                                            r[0].data<T>(), in);
                       }
                       if (gw) {
                         r[1] = Tensor::zeros(W.shape(), dt);
                         if (rows > 0) gemm(true, false, out, in, rows, G.data<T>(), out, X.data<T>(), in,
                                            r[1].data<T>(), in);
                       }
                       if (gb) {
                         r[2] = Tensor::zeros({out}, dt);
                         std::vector<double> acc(out, 0.0);
                         const T* gp = G.data<T>();
                         for (int64_t row = 0; row < rows; ++row)
                           for (int64_t o = 0; o < out; ++o) acc[o] += gp[row * out + o];
                         T* bp = r[2].data<T>();
                         for (int64_t o = 0; o < out; ++o) bp[o] = static_cast<T>(acc[o]);
                       }
                       return r;
                     });
  });
}

Var layer_norm(const Var& x, const Var& weight, const Var& bias, double eps) {
  const DType dt = common_dtype("ag::layer_norm", {{"x", x}, {"weight", weight}, {"bias", bias}});
  const Tensor X = contig(x.value());
  const int64_t D = X.size(-1), rows = X.numel() / std::max<int64_t>(D, 1);
  if (weight.defined()) check_shape(weight.value(), {D}, "ag::layer_norm", "weight");
  if (bias.defined()) check_shape(bias.value(), {D}, "ag::layer_norm", "bias");
  Tensor Wt = weight.defined() ? contig(weight.value()) : Tensor();
  Tensor Bt = bias.defined() ? contig(bias.value()) : Tensor();
  return by_dtype(dt, [&](auto zero) {
    using T = decltype(zero);
    Tensor Y = Tensor::empty(X.shape(), dt), xhat, rstd;
    const bool record = t_grad_enabled && (x.requires_grad() || (weight.defined() && weight.requires_grad()) ||
                                            (bias.defined() && bias.requires_grad()));
    if (record || dt == DType::f64) xhat = Tensor::empty(X.shape(), dt), rstd = Tensor::empty({rows}, dt);
    if constexpr (std::is_same_v<T, float>) {  // the kernels' vectorised f32 layer norm
      const float* wp = Wt.defined() ? Wt.data<float>() : nullptr;
      const float* bp = Bt.defined() ? Bt.data<float>() : nullptr;
      if (record)
        kernels::layer_norm_f32_saving(rows, D, X.data<float>(), wp, bp, static_cast<float>(eps), Y.data<float>(),
                                       xhat.data<float>(), rstd.data<float>());
      else
        kernels::layer_norm_f32(rows, D, X.data<float>(), wp, bp, static_cast<float>(eps), Y.data<float>());
    } else {  // f64: the plain loops (gradient checks)
      const T* xp = X.data<T>();
      T *yp = Y.data<T>(), *hp = xhat.data<T>(), *rp = rstd.data<T>();
      const T* wp = Wt.defined() ? Wt.data<T>() : nullptr;
      const T* bp = Bt.defined() ? Bt.data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (rows > 64)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = xp + r * D;
        double m = 0, v = 0;
        for (int64_t i = 0; i < D; ++i) m += xr[i];
        m /= static_cast<double>(D);
        for (int64_t i = 0; i < D; ++i) v += (xr[i] - m) * (xr[i] - m);
        v /= static_cast<double>(D);
        const double rs = 1.0 / std::sqrt(v + eps);
        rp[r] = static_cast<T>(rs);
        for (int64_t i = 0; i < D; ++i) {
          const T h = static_cast<T>((xr[i] - m) * rs);
          hp[r * D + i] = h;
          yp[r * D + i] = h * (wp ? wp[i] : T(1)) + (bp ? bp[i] : T(0));
        }
      }
    }
    std::vector<Var> inputs{x};
    if (weight.defined()) inputs.push_back(weight);
    if (bias.defined()) inputs.push_back(bias);
    const bool has_w = weight.defined(), has_b = bias.defined();
    return Var::make(Y, "layer_norm", inputs, [xhat, rstd, Wt, rows, D, has_w, has_b, dt](const Tensor& g) {
      const Tensor G = contig(g);
      std::vector<Tensor> r;
      Tensor dx = Tensor::empty(xhat.shape(), dt);
      const T *gp = G.data<T>(), *hp = xhat.data<T>(), *rp = rstd.data<T>();
      const T* wp = has_w ? Wt.data<T>() : nullptr;
      T* dxp = dx.data<T>();
#pragma omp parallel for schedule(static) if (rows > 64)
      for (int64_t row = 0; row < rows; ++row) {
        double s1 = 0, s2 = 0;  // mean(gw), mean(gw * xhat)
        for (int64_t i = 0; i < D; ++i) {
          const double gw = gp[row * D + i] * (wp ? wp[i] : T(1));
          s1 += gw;
          s2 += gw * hp[row * D + i];
        }
        s1 /= static_cast<double>(D);
        s2 /= static_cast<double>(D);
        for (int64_t i = 0; i < D; ++i) {
          const double gw = gp[row * D + i] * (wp ? wp[i] : T(1));
          dxp[row * D + i] = static_cast<T>(rp[row] * (gw - s1 - hp[row * D + i] * s2));
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
        auto to_t = [D, dt](const std::vector<double>& v) {
          Tensor t = Tensor::empty({D}, dt);
          T* p = t.data<T>();
          for (int64_t i = 0; i < D; ++i) p[i] = static_cast<T>(v[i]);
          return t;
        };
        if (has_w) r.push_back(to_t(dw));
        if (has_b) r.push_back(to_t(db));
      }
      return r;
    });
  });
}

Var rms_norm(const Var& x, const Var& weight, double eps) {
  common_dtype("ag::rms_norm", {{"x", x}, {"weight", weight}}, 2);
  const Tensor X = contig(x.value()), W = contig(weight.value());
  return Var::make(ops::rms_norm(X, W, eps), "rms_norm", {x, weight}, [X, W, eps](const Tensor& g) {
    ops::NormGrads ng = ops::rms_norm_backward(X, W, eps, contig(g));
    return std::vector<Tensor>{ng.dx, ng.dweight};
  });
}

Var dropout(const Var& x, double p, std::mt19937_64& rng) {
  if (p < 0 || p >= 1) fail("ag::dropout", "p " + std::to_string(p) + " is outside [0, 1)");
  if (p == 0 || !t_grad_enabled) return x;
  const DType dt = common_dtype("ag::dropout", {{"x", x}});
  const Tensor X = contig(x.value());
  Tensor mask = Tensor::empty(X.shape(), dt);
  // One draw from the caller's generator per call keys a counter-based stream: element pair
  // k takes the two 32-bit halves of splitmix64(key + k), an element drops when its half is
  // below p 2^32. The same seed gives the same masks at any thread count, and the mask costs
  // a few integer operations per element instead of a Mersenne Twister step.
  const uint64_t key = rng();
  const uint64_t cut = static_cast<uint64_t>(std::ldexp(p, 32));
  by_dtype(dt, [&](auto zero) {
    using T = decltype(zero);
    T* mp = mask.data<T>();
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const int64_t n = X.numel(), pairs = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (pairs > (1 << 16))
    for (int64_t k = 0; k < pairs; ++k) {
      uint64_t z = key + static_cast<uint64_t>(k + 1) * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      mp[2 * k] = (z & 0xFFFFFFFFull) < cut ? T(0) : scale;
      if (2 * k + 1 < n) mp[2 * k + 1] = (z >> 32) < cut ? T(0) : scale;
    }
    return 0;
  });
  return Var::make(ops::mul(X, mask), "dropout", {x},
                   [mask](const Tensor& g) { return std::vector<Tensor>{ops::mul(g, mask)}; });
}

Var embedding(const Tensor& ids, const Var& table, int64_t padding_idx) {
  const DType dt = common_dtype("ag::embedding", {{"table", table}});
  const Tensor Tb = table.value();
  const Tensor I = ids.to(DType::i64).contiguous();
  Tensor Y = ops::embedding(I, Tb);
  const int64_t V = Tb.size(0), D = Tb.size(1);
  return Var::make(Y, "embedding", {table}, [I, V, D, padding_idx, dt](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dtable = Tensor::zeros({V, D}, dt);
    by_dtype(dt, [&](auto zero) {
      using T = decltype(zero);
      const int64_t* ip = I.data<int64_t>();
      const T* gp = G.data<T>();
      T* dp = dtable.data<T>();
      for (int64_t r = 0; r < I.numel(); ++r) {
        if (ip[r] == padding_idx) continue;
        T* row = dp + ip[r] * D;
        for (int64_t i = 0; i < D; ++i) row[i] += gp[r * D + i];
      }
      return 0;
    });
    return std::vector<Tensor>{dtable};
  });
}

namespace {
// Keeps the mixer's saved activations alive until the backward runs (once or more).
struct MixerSaved {
  std::unique_ptr<nn::SavedActivations> saved;
};
}  // namespace

Var mixer(const nn::Mixer& m, const Var& x, const std::vector<Tensor*>& param_grads) {
  // The mixers (nn::Mamba1, nn::Mamba2) hold f32 weights and run their f32 kernels.
  if (common_dtype("ag::mixer", {{"x", x}}) != DType::f32)
    fail("ag::mixer", "x must be f32 (the Mamba mixers hold f32 weights and run in f32), got " + x.value().str());
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
// y = f(x) elementwise with dy/dx = df(x, y); f and df are called with T (float or double).
template <class T, class F, class DF>
Var pointwise_t(const Var& x, const char* op, F f, DF df) {
  const DType dt = dtype_of<T>();
  const Tensor X = contig(x.value());
  Tensor Y = Tensor::empty(X.shape(), dt);
  const T* xp = X.data<T>();
  T* yp = Y.data<T>();
  const int64_t n = X.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) yp[i] = f(xp[i]);
  return Var::make(Y, op, {x}, [X, Y, df, dt](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dx = Tensor::empty(X.shape(), dt);
    const T *gp = G.data<T>(), *xv = X.data<T>(), *yv = Y.data<T>();
    T* dp = dx.data<T>();
    const int64_t count = X.numel();
#pragma omp parallel for schedule(static) if (count > (1 << 15))
    for (int64_t i = 0; i < count; ++i) dp[i] = gp[i] * df(xv[i], yv[i]);
    return std::vector<Tensor>{dx};
  });
}

template <class F, class DF>
Var pointwise(const Var& x, const char* op, F f, DF df) {
  const DType dt = common_dtype((std::string("ag::") + op).c_str(), {{"x", x}});
  return dt == DType::f64 ? pointwise_t<double>(x, op, f, df) : pointwise_t<float>(x, op, f, df);
}
}  // namespace

Var relu(const Var& x) {
  return pointwise(
      x, "relu", [](auto v) { return v > 0 ? v : decltype(v)(0); },
      [](auto v, auto) { return v > 0 ? decltype(v)(1) : decltype(v)(0); });
}

// f32: the kernels' vectorised GELU forward and backward (one Phi for both, so the two
// stay consistent); f64 (gradient checks): libm's erf and exp, exact to double rounding.
Var gelu(const Var& x) {
  if (common_dtype("ag::gelu", {{"x", x}}) == DType::f32) {
    const Tensor X = contig(x.value());
    return Var::make(ops::gelu(X), "gelu", {x}, [X](const Tensor& g) {
      const Tensor G = contig(g);
      Tensor dx = Tensor::empty(X.shape(), DType::f32);
      kernels::gelu_erf_backward_f32(X.numel(), X.data<float>(), G.data<float>(), dx.data<float>());
      return std::vector<Tensor>{dx};
    });
  }
  static constexpr double kInvSqrt2 = 0.70710678118654752440;
  static constexpr double kInvSqrt2Pi = 0.39894228040143267794;
  return pointwise(
      x, "gelu", [](auto v) { return static_cast<decltype(v)>(0.5 * v * (1.0 + std::erf(v * kInvSqrt2))); },
      [](auto v, auto) {
        const double cdf = 0.5 * (1.0 + std::erf(v * kInvSqrt2));
        return static_cast<decltype(v)>(cdf + v * kInvSqrt2Pi * std::exp(-0.5 * double(v) * v));
      });
}

Var silu(const Var& x) {
  return pointwise(
      x, "silu", [](auto v) { return v / (decltype(v)(1) + std::exp(-v)); },
      [](auto v, auto) {
        using T = decltype(v);
        const T s = T(1) / (T(1) + std::exp(-v));
        return s * (T(1) + v * (T(1) - s));
      });
}

Var sigmoid(const Var& x) {
  return pointwise(
      x, "sigmoid", [](auto v) { return decltype(v)(1) / (decltype(v)(1) + std::exp(-v)); },
      [](auto, auto y) { return y * (decltype(y)(1) - y); });
}

Var tanh(const Var& x) {
  return pointwise(
      x, "tanh", [](auto v) { return std::tanh(v); }, [](auto, auto y) { return decltype(y)(1) - y * y; });
}

Var leaky_relu(const Var& x, double slope) {
  return pointwise(
      x, "leaky_relu", [slope](auto v) { return v > 0 ? v : static_cast<decltype(v)>(slope) * v; },
      [slope](auto v, auto) { return v > 0 ? decltype(v)(1) : static_cast<decltype(v)>(slope); });
}

namespace {
// Softmax (log = false) or log-softmax along dim, with the gradient
//   softmax:      dx = y * (g - sum(g * y))
//   log-softmax:  dx = g - exp(y) * sum(g)
Var softmax_impl(const Var& x, int64_t dim, bool log) {
  common_dtype(log ? "ag::log_softmax" : "ag::softmax", {{"x", x}});
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
  common_dtype("ag::group_norm", {{"x", x}, {"weight", weight}, {"bias", bias}});
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
  const DType dt = x.value().dtype();
  return Var::make(x.value().slice(dim, start, end).contiguous(), "slice", {x}, [in, dim, start, end, dt](const Tensor& g) {
    Tensor full = Tensor::zeros(in, dt);
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
  for (size_t i = 0; i < xs.size(); ++i) {
    const std::string name = "input " + std::to_string(i);
    common_dtype("ag::concat", {{"input 0", xs[0]}, {name.c_str(), xs[i]}}, 2);
  }
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
  const DType dt = common_dtype("ag::gather_rows", {{"x", x}});
  const Tensor X = contig(x.value());
  if (X.dim() != 3 || static_cast<int64_t>(index.size()) != X.size(0))
    fail("ag::gather_rows", "x " + shape_str(X.shape()) + " is not (B, L, D) with B = " + std::to_string(index.size()));
  const int64_t B = X.size(0), L = X.size(1), D = X.size(2);
  const size_t row_bytes = static_cast<size_t>(D) * dtype_size(dt);
  auto row = [row_bytes](const Tensor& t, int64_t r) { return static_cast<char*>(t.raw_data()) + r * row_bytes; };
  Tensor Y = Tensor::empty({B, D}, dt);
  for (int64_t b = 0; b < B; ++b) {
    if (index[b] < 0 || index[b] >= L) fail("ag::gather_rows", "index " + std::to_string(index[b]) + " outside [0, L)");
    if (row_bytes) std::memcpy(row(Y, b), row(X, b * L + index[b]), row_bytes);
  }
  return Var::make(Y, "gather_rows", {x}, [index, B, L, D, dt, row, row_bytes](const Tensor& g) {
    const Tensor G = contig(g);
    Tensor dx = Tensor::zeros({B, L, D}, dt);
    for (int64_t b = 0; b < B; ++b)
      if (row_bytes) std::memcpy(row(dx, b * L + index[b]), row(G, b), row_bytes);
    return std::vector<Tensor>{dx};
  });
}

// ---- reductions and losses ---------------------------------------------------------------

Var sum(const Var& x) {
  const DType dt = common_dtype("ag::sum", {{"x", x}});
  const Shape in = x.shape();
  return Var::make(ops::sum(x.value()).reshape({1}), "sum", {x},
                   [in, dt](const Tensor& g) { return std::vector<Tensor>{Tensor::full(in, g.item(), dt)}; });
}

Var mean(const Var& x) {
  const DType dt = common_dtype("ag::mean", {{"x", x}});
  const Shape in = x.shape();
  const double n = static_cast<double>(std::max<int64_t>(1, x.numel()));
  return Var::make(ops::mean(x.value()).reshape({1}), "mean", {x},
                   [in, n, dt](const Tensor& g) { return std::vector<Tensor>{Tensor::full(in, g.item() / n, dt)}; });
}

Var mean(const Var& x, int64_t dim, bool keepdim) {
  const DType dt = common_dtype("ag::mean", {{"x", x}});
  const Shape in = x.shape();
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  const double n = static_cast<double>(in.at(d));
  return Var::make(ops::mean(x.value(), d, keepdim), "mean_dim", {x}, [in, d, n, keepdim, dt](const Tensor& g) {
    Tensor gk = keepdim ? g : g.unsqueeze(d);
    Tensor full = Tensor::zeros(in, dt);
    ops::add_(full, ops::mul(gk, 1.0 / n));
    return std::vector<Tensor>{full};
  });
}

namespace {
// Mean of (pred - target)^2 (squared) or |pred - target|; target is converted to pred's dtype.
template <class T>
Var regression_loss_t(const Var& pred, const Tensor& target, bool squared) {
  const DType dt = dtype_of<T>();
  const Tensor P = contig(pred.value()), Tg = target.to(dt).contiguous();
  const int64_t n = P.numel();
  const T *pp = P.data<T>(), *tp = Tg.data<T>();
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = static_cast<double>(pp[i]) - tp[i];
    acc += squared ? e * e : std::fabs(e);
  }
  const double denom = static_cast<double>(std::max<int64_t>(n, 1));
  return Var::make(Tensor::full({1}, acc / denom, dt), squared ? "mse_loss" : "l1_loss", {pred},
                   [P, Tg, n, denom, squared, dt](const Tensor& g) {
                     const double s = g.item() / denom;
                     Tensor dp = Tensor::empty(P.shape(), dt);
                     const T *pp2 = P.data<T>(), *tp2 = Tg.data<T>();
                     T* d = dp.data<T>();
                     for (int64_t i = 0; i < n; ++i) {
                       const double e = static_cast<double>(pp2[i]) - tp2[i];
                       d[i] = static_cast<T>(squared ? 2.0 * s * e : s * (e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0));
                     }
                     return std::vector<Tensor>{dp};
                   });
}

Var regression_loss(const Var& pred, const Tensor& target, bool squared) {
  const char* op = squared ? "ag::mse_loss" : "ag::l1_loss";
  const DType dt = common_dtype(op, {{"pred", pred}});
  check_shape(target, pred.shape(), op, "target");
  return dt == DType::f64 ? regression_loss_t<double>(pred, target, squared)
                          : regression_loss_t<float>(pred, target, squared);
}
}  // namespace

Var mse_loss(const Var& pred, const Tensor& target) { return regression_loss(pred, target, true); }
Var l1_loss(const Var& pred, const Tensor& target) { return regression_loss(pred, target, false); }

Var cross_entropy(const Var& logits, const Tensor& targets) {
  const DType dt = common_dtype("ag::cross_entropy", {{"logits", logits}});
  const Tensor L = contig(logits.value());
  if (L.dim() != 2) fail("ag::cross_entropy", "logits " + shape_str(L.shape()) + " is not (rows, V)");
  const Tensor T = targets.to(DType::i64).contiguous();
  check_shape(T, {L.size(0)}, "ag::cross_entropy", "targets");
  const int64_t rows = L.size(0), V = L.size(1);
  const int64_t* tp = T.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    if (tp[r] >= V) fail("ag::cross_entropy", "target " + std::to_string(tp[r]) + " at row " + std::to_string(r) + " >= V " + std::to_string(V));
  Tensor dlogits = Tensor::empty(L.shape(), dt);
  // The fused kernel gives the loss sum and the gradient of the summed loss; scale later.
  // f64 runs the kernel's plain reference loops.
  const kernels::CrossEntropyResult res =
      dt == DType::f64
          ? kernels::softmax_cross_entropy_ref(rows, V, V, L.data<double>(), tp, 1.0, dlogits.data<double>())
          : kernels::softmax_cross_entropy(rows, V, V, L.data<float>(), tp, 1.f, dlogits.data<float>());
  const double counted = static_cast<double>(res.counted);
  const double loss = res.counted ? res.loss_sum / counted : 0.0;
  return Var::make(Tensor::full({1}, loss, dt), "cross_entropy", {logits}, [dlogits, counted](const Tensor& g) {
    return std::vector<Tensor>{ops::mul(dlogits, counted > 0 ? g.item() / counted : 0.0)};
  });
}

}  // namespace mamba::ag
