// Internal to shared-core: the geometry of ops::conv / conv_transpose, shared by the CPU path
// (conv.cc) and the cuDNN path (conv_cuda.cc).
#pragma once
#include "mamba/kernels/conv.h"
#include "mamba/ops/conv.h"

namespace mamba::ops::detail {
// Checks the shapes and options (not devices or dtypes beyond bias == x) and returns the
// kernels' view: for a transpose, its own view (C_in = x's channels, in = x's spatial size).
kernels::ConvParams conv_geometry(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias,
                                  const ConvOptions& opt, bool transpose, bool& unbatched);
Shape conv_out_shape(int spatial, const kernels::ConvParams& p);  // [N, C_out, out...]
// The cuDNN path of ops::conv / conv_transpose (x on a GPU).
Tensor conv_cuda(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt,
                 bool transpose);
}  // namespace mamba::ops::detail
