// Small GPU kernels the CUDA tensor backend and the GPU layers are built from: strided copy
// with dtype conversion (contiguous(), to(dtype), transposes), fill, embedding gather, the
// conv-state shift after a parallel prefill. All pointers are DEVICE pointers; launches are
// asynchronous on `stream`; launch errors throw std::runtime_error naming the op
// (cuda_check.h). No allocation, no synchronisation.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

// The element types a device tensor can hold (the same set as mamba::DType).
enum class ElemType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

constexpr int kMaxCopyRank = 8;

// dst[idx] = convert(src[idx]) for every index of `shape` (rank <= kMaxCopyRank); strides in
// elements, non-negative. Float <-> float conversions round to nearest even; float -> int
// truncates toward zero; same-type copies are bit-exact. src and dst must not overlap.
struct StridedCopyParams {
  int rank = 0;
  int64_t shape[kMaxCopyRank] = {};
  int64_t src_stride[kMaxCopyRank] = {};
  int64_t dst_stride[kMaxCopyRank] = {};
  const void* src = nullptr;
  void* dst = nullptr;
  ElemType src_type = ElemType::f32, dst_type = ElemType::f32;
};
void strided_copy_cuda(const StridedCopyParams& p, cudaStream_t stream);

// dst[i * stride] = value for i < n (any element type).
void fill_cuda(void* dst, ElemType type, int64_t n, int64_t stride, double value, cudaStream_t stream);

// Embedding gather: out[r, :] = table[ids[r], :] for r < rows; table (vocab, dim) and out
// (rows, dim) contiguous, element type `type` (f32, bf16 or f16); ids i64 on the device.
// An id outside [0, vocab) writes a zero row (the host checks ids it can see beforehand).
void embedding_gather_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const void* table,
                           ElemType type, void* out, cudaStream_t stream);

// After a parallel causal conv over `seqlen` new inputs x[b, t, c] (batch stride x_sb, time
// stride x_st, c contiguous; element type f32 or bf16), conv_state (batch, channels, width)
// f32 becomes the last `width` inputs of (old state ++ x), oldest first. width <= 8.
void conv_state_advance_cuda(int64_t batch, int64_t channels, int64_t width, float* conv_state, const void* x,
                             ElemType x_type, int64_t x_sb, int64_t x_st, int64_t seqlen, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
