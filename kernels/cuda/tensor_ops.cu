// Strided copy / convert, fill, embedding gather, conv-state shift (tensor_ops_cuda.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/tensor_ops_cuda.h"

namespace mamba::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Element load/store through double for floats (exact for every f32/bf16/f16 value) and
// int64 for integers, so any pair of types converts with one code path.
__device__ __forceinline__ double load_f(const void* p, int64_t i, ElemType t) {
  switch (t) {
    case ElemType::f32: return static_cast<const float*>(p)[i];
    case ElemType::f64: return static_cast<const double*>(p)[i];
    case ElemType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ElemType::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case ElemType::i32: return static_cast<const int32_t*>(p)[i];
    case ElemType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case ElemType::u8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

__device__ __forceinline__ void store_f(void* p, int64_t i, ElemType t, double v) {
  switch (t) {
    case ElemType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case ElemType::f64: static_cast<double*>(p)[i] = v; break;
    case ElemType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case ElemType::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
    case ElemType::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case ElemType::i64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case ElemType::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
  }
}

__host__ __device__ __forceinline__ int elem_bytes(ElemType t) {
  switch (t) {
    case ElemType::f32: case ElemType::i32: return 4;
    case ElemType::f64: case ElemType::i64: return 8;
    case ElemType::bf16: case ElemType::f16: return 2;
    case ElemType::u8: return 1;
  }
  return 1;
}

// One thread per element; the flat index is decomposed over the shape (row-major).
__global__ void strided_copy_kernel(StridedCopyParams p, int64_t n) {
  const bool same = p.src_type == p.dst_type;
  const int bytes = elem_bytes(p.src_type);
  for (int64_t flat = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; flat < n;
       flat += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = flat, so = 0, dof = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t i = rem % p.shape[d];
      rem /= p.shape[d];
      so += i * p.src_stride[d];
      dof += i * p.dst_stride[d];
    }
    if (same) {
      const char* s = static_cast<const char*>(p.src) + so * bytes;
      char* d = static_cast<char*>(p.dst) + dof * bytes;
      switch (bytes) {
        case 1: *d = *s; break;
        case 2: *reinterpret_cast<uint16_t*>(d) = *reinterpret_cast<const uint16_t*>(s); break;
        case 4: *reinterpret_cast<uint32_t*>(d) = *reinterpret_cast<const uint32_t*>(s); break;
        default: *reinterpret_cast<uint64_t*>(d) = *reinterpret_cast<const uint64_t*>(s); break;
      }
    } else {
      const bool si = p.src_type == ElemType::i64, di = p.dst_type == ElemType::i64;
      if (si && di) {
        static_cast<int64_t*>(p.dst)[dof] = static_cast<const int64_t*>(p.src)[so];
      } else if (p.src_type == ElemType::i32 && di) {
        static_cast<int64_t*>(p.dst)[dof] = static_cast<const int32_t*>(p.src)[so];
      } else {
        store_f(p.dst, dof, p.dst_type, load_f(p.src, so, p.src_type));
      }
    }
  }
}

__global__ void fill_kernel(void* dst, ElemType t, int64_t n, int64_t stride, double v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_f(dst, i * stride, t, v);
}

// One block per row; 16-byte pieces when the row is 16-byte aligned, elements otherwise.
__global__ void embedding_kernel(int64_t dim, int64_t vocab, const int64_t* __restrict__ ids,
                                 const char* __restrict__ table, int ebytes, char* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int64_t id = ids[r];
  const int64_t row_bytes = dim * ebytes;
  char* o = out + r * row_bytes;
  const bool ok = id >= 0 && id < vocab;
  const char* s = table + (ok ? id : 0) * row_bytes;
  if ((row_bytes & 15) == 0 && (reinterpret_cast<uintptr_t>(s) & 15) == 0 && (reinterpret_cast<uintptr_t>(o) & 15) == 0) {
    for (int64_t i = threadIdx.x; i < row_bytes / 16; i += blockDim.x)
      reinterpret_cast<uint4*>(o)[i] = ok ? reinterpret_cast<const uint4*>(s)[i] : make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) o[i] = ok ? s[i] : 0;
  }
}

template <class T>
__device__ __forceinline__ float as_f32(T v);
template <> __device__ __forceinline__ float as_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float as_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__global__ void conv_state_advance_kernel(int64_t batch, int64_t channels, int width, float* __restrict__ state,
                                          const T* __restrict__ x, int64_t x_sb, int64_t x_st, int64_t seqlen) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= batch * channels) return;
  const int64_t b = idx / channels, c = idx % channels;
  float* s = state + idx * width;
  float old[8], nw[8];
  for (int j = 0; j < width; ++j) old[j] = s[j];
  for (int j = 0; j < width; ++j) {
    const int64_t t = seqlen - width + j;  // time of slot j relative to the new inputs
    nw[j] = t >= 0 ? as_f32(x[b * x_sb + t * x_st + c]) : old[width + t];
  }
  for (int j = 0; j < width; ++j) s[j] = nw[j];
}

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 4 ? (b < 1 ? 1 : b) : 65535 * 4);
}

}  // namespace

void strided_copy_cuda(const StridedCopyParams& p, cudaStream_t stream) {
  if (p.rank < 0 || p.rank > kMaxCopyRank)
    throw std::runtime_error("strided_copy_cuda: rank " + std::to_string(p.rank) + " exceeds " +
                             std::to_string(kMaxCopyRank));
  int64_t n = 1;
  for (int d = 0; d < p.rank; ++d) n *= p.shape[d];
  if (n == 0) return;
  strided_copy_kernel<<<blocks_for(n), kThreads, 0, stream>>>(p, n);
  MAMBA_CUDA_CHECK_LAUNCH("strided_copy_cuda");
}

void fill_cuda(void* dst, ElemType type, int64_t n, int64_t stride, double value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, type, n, stride, value);
  MAMBA_CUDA_CHECK_LAUNCH("fill_cuda");
}

void embedding_gather_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const void* table,
                           ElemType type, void* out, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  if (rows > 2147483647) throw std::runtime_error("embedding_gather_cuda: too many rows");
  embedding_kernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(dim, vocab, ids, static_cast<const char*>(table),
                                                                     elem_bytes(type), static_cast<char*>(out));
  MAMBA_CUDA_CHECK_LAUNCH("embedding_gather_cuda");
}

void conv_state_advance_cuda(int64_t batch, int64_t channels, int64_t width, float* conv_state, const void* x,
                             ElemType x_type, int64_t x_sb, int64_t x_st, int64_t seqlen, cudaStream_t stream) {
  if (width < 1 || width > 8)
    throw std::runtime_error("conv_state_advance_cuda: width " + std::to_string(width) + " outside [1, 8]");
  const int64_t n = batch * channels;
  if (n == 0) return;
  const unsigned grid = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (x_type == ElemType::f32)
    conv_state_advance_kernel<float><<<grid, kThreads, 0, stream>>>(batch, channels, static_cast<int>(width), conv_state,
                                                                    static_cast<const float*>(x), x_sb, x_st, seqlen);
  else if (x_type == ElemType::bf16)
    conv_state_advance_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
        batch, channels, static_cast<int>(width), conv_state, static_cast<const __nv_bfloat16*>(x), x_sb, x_st, seqlen);
  else
    throw std::runtime_error("conv_state_advance_cuda: x must be f32 or bf16");
  MAMBA_CUDA_CHECK_LAUNCH("conv_state_advance_cuda");
}

}  // namespace mamba::kernels::cuda
