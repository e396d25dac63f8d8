// Convolutions on the GPU through cuDNN (the kernels: mamba/kernels/cuda/conv_cudnn.h).
//
// ops::conv / conv_transpose (ops/conv.h) dispatch here for cuda tensors: same shapes, weight
// layouts, stride / padding / dilation / groups / output_padding and bias as the CPU path;
// f32, bf16 or f16 (x, w, bias one dtype), f32 accumulation; ConvOptions::tf32 opts f32 into
// TF32 tensor cores and ConvOptions::cudnn_find times the algorithms once per shape.
// conv_backward_cuda gives the gradients of either op on the GPU (cuDNN backward-data /
// backward-filter; the bias gradient is a per-channel f32 sum). Workspaces come from the caching
// allocator (tensor/cuda.h) on the current stream. Without CUDA or cuDNN every call throws
// mamba::Error ("built without CUDA" / "built without cuDNN").
#pragma once
#include "mamba/ops/conv.h"

namespace mamba::ops {

struct ConvGrads {
  Tensor dx, dw, db;  // db undefined unless asked for
};

// Gradients of y = conv(x, w, b) (transpose false) or conv_transpose(x, w, b) for the output
// gradient dy (y's shape). x, w, dy on one GPU, one dtype. Unbatched x / dy are accepted.
ConvGrads conv_backward_cuda(int spatial, bool transpose, const Tensor& x, const Tensor& w, const Tensor& dy,
                             const ConvOptions& opt = {}, bool bias_grad = true);

// True when this build has the cuDNN path (MAMBA_HAVE_CUDNN) and a GPU is visible.
bool conv_cuda_available();
// The algorithms cuDNN uses for this problem (what the benchmark prints), e.g.
// "fwd IMPLICIT_PRECOMP_GEMM (tensor-op, ws 0 KiB), bwd-data ALGO_1 (...), bwd-filter ...".
std::string conv_cuda_plan_info(int spatial, bool transpose, const Tensor& x, const Tensor& w,
                                const ConvOptions& opt = {});

}  // namespace mamba::ops
