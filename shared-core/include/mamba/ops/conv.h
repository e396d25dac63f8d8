// Convolutions and transposed convolutions over 1, 2 or 3 spatial dims, f32 (or f64, all
// arguments the same dtype, through the plain reference loops), PyTorch semantics
// (cross-correlation, zero padding).
//
//   convNd:            x [N, C_in, in...]  w [C_out, C_in/groups, k...]  -> [N, C_out, out...]
//                      out = (in + 2*padding - dilation*(k-1) - 1) / stride + 1
//   conv_transposeNd:  x [N, C_in, in...]  w [C_in, C_out/groups, k...]  -> [N, C_out, out...]
//                      out = (in-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1
// bias [C_out] is optional (pass {}). An unbatched x [C_in, in...] gives [C_out, out...].
// stride/padding/dilation/output_padding hold one value for every spatial dim or one per
// dim. Requires stride >= 1, dilation >= 1, padding >= 0, groups dividing C_in and C_out,
// output_padding < max(stride, dilation), and out >= 1; otherwise mamba::Error naming the
// op, the argument and the shapes.
// cuda tensors (f32, bf16 or f16, all on one GPU) run through cuDNN (ops/conv_cuda.h) and
// return a cuda tensor of x's dtype, computed asynchronously on the current stream.
#pragma once
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::ops {

struct ConvOptions {
  std::vector<int64_t> stride{1};
  std::vector<int64_t> padding{0};
  std::vector<int64_t> dilation{1};
  std::vector<int64_t> output_padding{0};  // transposed convolutions only
  int64_t groups = 1;
  // CUDA tensors only (cuDNN; see ops/conv_cuda.h): f32 on TF32 tensor cores (opt-in, like
  // LinearCudaOptions::tf32), and the algorithm timed once per shape (cudnnFind) instead of
  // taken from the heuristics.
  bool tf32 = false;
  bool cudnn_find = false;
};

Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});
Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, const ConvOptions& opt = {});

// General entry points (spatial = 1, 2 or 3) and their direct-loop references.
Tensor conv(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt);
Tensor conv_ref(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt);
Tensor conv_transpose(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt);
Tensor conv_transpose_ref(int spatial, const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt);

}  // namespace mamba::ops
