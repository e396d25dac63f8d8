// Reverse-mode automatic differentiation over the core's ops: a Var pairs a value tensor
// with the node that produced it; calling backward() on a scalar walks the recorded graph
// in reverse topological order and accumulates gradients into the leaves.
//
// Recording: every op below records a node when gradients are enabled on this thread
// (the default; NoGradGuard turns it off for inference) and at least one input requires
// a gradient. Otherwise it only computes the value, so inference through the same model
// code costs no graph.
//
// Leaves:
//   Var(t)                     a constant (no gradient)
//   Var(t, true)               a leaf whose gradient backward() accumulates in grad()
//   Var::parameter(v, g)       a model parameter: backward() adds its gradient into the
//                              caller-owned tensor g (same shape and dtype as v), which is what
//                              the optimiser reads (train::Param::grad).
// Fused layers (Mamba mixers) enter the graph through mixer(): their hand-written
// backward runs inside the graph and adds their parameter gradients into the tensors the
// caller names.
//
// Values are f32 or f64, CPU: every op computes in the dtype of its inputs, which must all
// be the same (a mix is a mamba::Error naming the op and each input's dtype; constant
// targets of the losses are converted). f64 is for gradient checks (the fused kernels run
// their plain f64 reference loops); the Mamba mixers (mixer()) are f32 only. Ops return
// new contiguous values. Shapes follow PyTorch; each op's comment gives them. Errors:
// mamba::Error naming the op and the shapes.
// Ownership: a Var is a shared handle; the graph stays alive while the result Var does
// (each node holds its inputs) and is freed when the last handle goes.
// Thread-safety: grad mode is per thread. Distinct graphs may be built and differentiated
// on different threads, but they must not share a parameter's gradient tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "mamba/ops/conv.h"
#include "mamba/tensor/tensor.h"

namespace mamba::nn {
class Mixer;
}

namespace mamba::ag {

bool grad_enabled();

// Disables recording on this thread for its lifetime (restores the previous mode).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

struct Node;

struct VarData {
  Tensor value;
  Tensor grad;             // leaves with requires_grad: accumulated by backward()
  Tensor* sink = nullptr;  // parameters: backward() adds the gradient into *sink
  bool requires_grad = false;
  std::shared_ptr<Node> node;  // the op that produced the value; null for leaves
};

// Maps the gradient of a node's output to the gradients of its inputs (one per input,
// in order; an undefined Tensor for an input that needs none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Node {
  const char* op = "";
  std::vector<std::shared_ptr<VarData>> inputs;
  BackwardFn backward;
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false);
  // A leaf bound to a parameter: backward() adds d(root)/d(value) into `grad`.
  static Var parameter(const Tensor& value, Tensor& grad);

  bool defined() const { return data_ != nullptr; }
  const Tensor& value() const;
  // The accumulated gradient of a requires_grad leaf (undefined before any backward).
  const Tensor& grad() const;
  bool requires_grad() const { return data_ && data_->requires_grad; }
  const Shape& shape() const { return value().shape(); }
  int64_t size(int64_t d) const { return value().size(d); }
  int64_t dim() const { return value().dim(); }
  int64_t numel() const { return value().numel(); }
  const std::shared_ptr<VarData>& data() const { return data_; }

  // Builds a result: records a node when grad mode is on and an input requires grad.
  static Var make(Tensor value, const char* op, const std::vector<Var>& inputs, BackwardFn backward);

 private:
  std::shared_ptr<VarData> data_;
};

// Differentiates `root` (a single element unless `seed`, of root's shape, is given; the
// default seed is 1) and accumulates into every reachable leaf. The graph may be walked
// again (gradients add up), e.g. for several losses.
void backward(const Var& root, const Tensor& seed = {});

// ---- arithmetic (NumPy broadcasting; gradients summed back to each input's shape) ----
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var add(const Var& a, double s);
Var mul(const Var& a, double s);
Var neg(const Var& a);
Var sqrt(const Var& a);
Var square(const Var& a);

// ---- layers ----
// x [..., in], weight [out, in], bias [out] (may be undefined) -> [..., out].
Var linear(const Var& x, const Var& weight, const Var& bias);
// Over the last dim; weight, bias [D] (either may be undefined).
Var layer_norm(const Var& x, const Var& weight, const Var& bias, double eps = 1e-5);
Var rms_norm(const Var& x, const Var& weight, double eps = 1e-5);
// x [N, C, spatial...]: statistics per (n, c) over the spatial dims (instance_norm) or per
// (n, group) over the group's channels and the spatial dims (group_norm); weight, bias [C]
// (either may be undefined). Composed from layer_norm, so their gradients follow.
Var instance_norm(const Var& x, const Var& weight, const Var& bias, double eps = 1e-5);
Var group_norm(const Var& x, int64_t groups, const Var& weight, const Var& bias, double eps = 1e-5);
// Inverted dropout: zeroes with probability p and scales the rest by 1 / (1 - p).
// Identity when p == 0 or grad mode is off (inference).
Var dropout(const Var& x, double p, std::mt19937_64& rng);
// ids (i32/i64, any shape [...]) rows of table [V, D] -> [..., D]. Rows equal to
// padding_idx (when >= 0) get no gradient.
Var embedding(const Tensor& ids, const Var& table, int64_t padding_idx = -1);
// A Mamba mixer's parallel path through its hand-written backward. x (b, l, d_model).
// param_grads: one tensor per m.parameters() entry (same order, shapes) into which the
// backward adds the parameter gradients; m and the tensors must outlive the graph.
Var mixer(const nn::Mixer& m, const Var& x, const std::vector<Tensor*>& param_grads);

// Convolutions over `spatial` = 1, 2 or 3 dims (ops/conv.h: shapes, options, groups).
// x [N, C_in, in...], w [C_out, C_in/groups, k...] (conv) or [C_in, C_out/groups, k...]
// (conv_transpose), bias [C_out] or undefined. Backward: dx by the transposed operation,
// dw as a convolution of x with dy (stride and dilation swapped), per group.
Var conv(int spatial, const Var& x, const Var& w, const Var& bias, const ops::ConvOptions& opt = {});
Var conv_transpose(int spatial, const Var& x, const Var& w, const Var& bias, const ops::ConvOptions& opt = {});

// ---- activations ----
Var relu(const Var& x);
Var gelu(const Var& x);  // exact (erf)
Var silu(const Var& x);
Var sigmoid(const Var& x);
Var tanh(const Var& x);
Var leaky_relu(const Var& x, double slope = 0.01);
// Along `dim` (negative counts from the end).
Var softmax(const Var& x, int64_t dim);
Var log_softmax(const Var& x, int64_t dim);

// ---- shapes ----
Var reshape(const Var& x, const Shape& shape);
Var permute(const Var& x, const std::vector<int64_t>& dims);
Var transpose(const Var& x, int64_t d0, int64_t d1);
Var slice(const Var& x, int64_t dim, int64_t start, int64_t end);
Var concat(const std::vector<Var>& xs, int64_t dim);
Var flip(const Var& x, const std::vector<int64_t>& dims);
// Gathers rows along dim 1 of x (B, L, D) at index[b] per batch row -> (B, D).
Var gather_rows(const Var& x, const std::vector<int64_t>& index);

// ---- reductions and losses ----
Var sum(const Var& x);                                    // -> [1]
Var mean(const Var& x);                                   // -> [1]
Var mean(const Var& x, int64_t dim, bool keepdim = false);
Var mse_loss(const Var& pred, const Tensor& target);      // mean squared error -> [1]
Var l1_loss(const Var& pred, const Tensor& target);       // mean absolute error -> [1]
// Mean softmax cross-entropy over rows of logits (rows, V) with targets (rows) i64;
// targets < 0 are ignored. -> [1] (0 when no row counts).
Var cross_entropy(const Var& logits, const Tensor& targets);

// Sums g over the dims that broadcasting expanded, giving a tensor of `shape`.
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace mamba::ag
