// Normalisation layers (functional form, PyTorch semantics, biased variance). f32 only.
// weight and bias are optional: pass an undefined Tensor ({}) to skip them.
// Results are new contiguous tensors of x's shape.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

// x [..., D]; weight, bias [D]. Normalises over the last dimension.
Tensor layer_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);
Tensor layer_norm_ref(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);

// x [N, C, spatial...] (at least one spatial dim); weight, bias [C] (the affine part).
// Statistics per (n, c) over the spatial dims.
Tensor instance_norm(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);
Tensor instance_norm_ref(const Tensor& x, const Tensor& weight = {}, const Tensor& bias = {}, double eps = 1e-5);

// x [N, C, spatial...] (spatial may be empty); C % num_groups == 0; weight, bias [C].
// Statistics per (n, group) over the group's C/num_groups channels and the spatial dims.
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);
Tensor group_norm_ref(const Tensor& x, int64_t num_groups, const Tensor& weight = {}, const Tensor& bias = {},
                      double eps = 1e-5);

}  // namespace mamba::ops
