// Embedding backward (atomic scatter-add) and the AdamW step with global-norm clipping.
// grad_sumsq: a fixed kSumSlots blocks per tensor, block j of tensor i sums squares of
// elements j * 256 * 4 + ... (grid-stride, float4 loads when aligned) into slot i * kSumSlots + j;
// a one-block kernel adds the slots in order (deterministic for any sizes).
// adamw_step: tensors go in chunks of kChunk per launch (descriptors passed by value); every
// tensor gets ceil(n / 1024) blocks, each block finds its tensor by a scan of the chunk's
// prefix block counts; a thread updates 4 consecutive elements (16-byte accesses when aligned).
#include "mamba/kernels/cuda/train_kernels_cuda.h"
#include "mamba/kernels/cuda/cuda_check.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "device_common.cuh"
#include "train_common.cuh"

namespace mamba::kernels::cuda {

namespace {

// ---- embedding backward ----------------------------------------------------------------------
__device__ unsigned long long g_emb_bad_row = ~0ull;  // first (lowest) row with an id outside [0, vocab)
__device__ long long g_emb_bad_id = 0;

template <class T>
__global__ void embedding_bwd_kernel(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const T* dy,
                                     float* dtable, bool vec) {
  const int64_t row = blockIdx.x;
  const int64_t id = ids[row];
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) {
      const unsigned long long prev = atomicMin(&g_emb_bad_row, static_cast<unsigned long long>(row));
      if (prev > static_cast<unsigned long long>(row)) g_emb_bad_id = id;  // best effort for the message
    }
    return;
  }
  const T* src = dy + row * dim;
  float* dst = dtable + id * dim;
  if (vec) {
    for (int64_t c = int64_t(threadIdx.x) * 4; c < dim; c += int64_t(blockDim.x) * 4) {
      float v[4];
      dev::load_run<4>(src, c, dim, v, 0.f);
      atomicAdd(reinterpret_cast<float4*>(dst + c), make_float4(v[0], v[1], v[2], v[3]));
    }
  } else {
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) atomicAdd(dst + c, dev::to_f32(src[c]));
  }
}

// ---- AdamW -------------------------------------------------------------------------------------
constexpr int kChunk = 48;
constexpr int kSumSlots = 128;
constexpr int kSumThreads = 256;
constexpr int kElemsPerThread = 4;
constexpr int kStepThreads = 256;

struct TensorDesc {
  float* param;
  const float* grad;
  float* m;
  float* v;
  __nv_bfloat16* pb;
  long long n;
  long long block_start;  // prefix count of blocks (adamw)
  float keep;             // 1 - lr * weight_decay
  int vec;
};
struct Chunk {
  TensorDesc t[kChunk];
  int count;
  long long total_blocks;
};

__global__ void __launch_bounds__(kSumThreads) sumsq_kernel(Chunk ch, int slot_base, float* slots) {
  const TensorDesc& d = ch.t[blockIdx.y];
  const int64_t j = blockIdx.x;
  float s = 0.f;
  const int64_t stride = int64_t(kSumSlots) * kSumThreads * 4;
  if (d.vec) {
    const int64_t n4 = d.n / 4 * 4;
    for (int64_t i = (j * kSumThreads + threadIdx.x) * 4; i < n4; i += stride) {
      const float4 g = __ldg(reinterpret_cast<const float4*>(d.grad + i));
      s = fmaf(g.x, g.x, s); s = fmaf(g.y, g.y, s); s = fmaf(g.z, g.z, s); s = fmaf(g.w, g.w, s);
    }
    if (j == 0)
      for (int64_t i = n4 + threadIdx.x; i < d.n; i += kSumThreads) s = fmaf(d.grad[i], d.grad[i], s);
  } else {
    for (int64_t i = j * kSumThreads + threadIdx.x; i < d.n; i += int64_t(kSumSlots) * kSumThreads)
      s = fmaf(d.grad[i], d.grad[i], s);
  }
  __shared__ float sh[128];
  const float2 tot = train_dev::block_sum2(s, 0.f, sh, 0);
  if (threadIdx.x == 0) slots[(int64_t(slot_base) + blockIdx.y) * kSumSlots + j] = tot.x;
}

__global__ void __launch_bounds__(1024) sumsq_finish_kernel(int64_t nslots, const float* slots, float* out) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < nslots; i += blockDim.x) s += slots[i];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int i = 0; i < int(blockDim.x >> 5); ++i) t += sh[i];
    *out = static_cast<float>(t);
  }
}

struct StepScalars {
  float b1, omb1, b2, omb2, step_size, bc2_sqrt, eps, max_norm;
};

__device__ __forceinline__ void adam_elem(float& w, float g, float& m, float& v, float keep, const StepScalars& s) {
  const float mi = s.b1 * m + s.omb1 * g;
  const float vi = s.b2 * v + s.omb2 * (g * g);
  m = mi;
  v = vi;
  w = w * keep - s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
}

__global__ void __launch_bounds__(kStepThreads) adamw_kernel(Chunk ch, StepScalars s, const float* sumsq) {
  const long long blk = blockIdx.x;
  int ti = 0;
  while (ti + 1 < ch.count && ch.t[ti + 1].block_start <= blk) ++ti;
  const TensorDesc& d = ch.t[ti];
  float clip = 1.f;
  if (s.max_norm > 0.f) clip = fminf(1.f, s.max_norm / (sqrtf(*sumsq) + 1e-6f));
  const int64_t i0 = ((blk - d.block_start) * kStepThreads + threadIdx.x) * kElemsPerThread;
  if (i0 >= d.n) return;
  if (d.vec && i0 + 4 <= d.n) {
    float4 w = *reinterpret_cast<float4*>(d.param + i0);
    float4 g = __ldg(reinterpret_cast<const float4*>(d.grad + i0));
    float4 m = *reinterpret_cast<float4*>(d.m + i0);
    float4 v = *reinterpret_cast<float4*>(d.v + i0);
    adam_elem(w.x, g.x * clip, m.x, v.x, d.keep, s);
    adam_elem(w.y, g.y * clip, m.y, v.y, d.keep, s);
    adam_elem(w.z, g.z * clip, m.z, v.z, d.keep, s);
    adam_elem(w.w, g.w * clip, m.w, v.w, d.keep, s);
    *reinterpret_cast<float4*>(d.param + i0) = w;
    *reinterpret_cast<float4*>(d.m + i0) = m;
    *reinterpret_cast<float4*>(d.v + i0) = v;
    if (d.pb) {
      union { uint2 u; __nv_bfloat16 e[4]; } q;
      q.e[0] = __float2bfloat16_rn(w.x); q.e[1] = __float2bfloat16_rn(w.y);
      q.e[2] = __float2bfloat16_rn(w.z); q.e[3] = __float2bfloat16_rn(w.w);
      if ((reinterpret_cast<uintptr_t>(d.pb + i0) & 7) == 0) *reinterpret_cast<uint2*>(d.pb + i0) = q.u;
      else for (int j = 0; j < 4; ++j) d.pb[i0 + j] = q.e[j];
    }
  } else {
    for (int64_t i = i0; i < i0 + kElemsPerThread && i < d.n; ++i) {
      float w = d.param[i], m = d.m[i], v = d.v[i];
      adam_elem(w, d.grad[i] * clip, m, v, d.keep, s);
      d.param[i] = w; d.m[i] = m; d.v[i] = v;
      if (d.pb) d.pb[i] = __float2bfloat16_rn(w);
    }
  }
}

bool al16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

void check_tensor(const char* fn, const AdamWTensorCuda& t, int64_t i, bool need_state) {
  auto bad = [&](const std::string& m) {
    throw std::invalid_argument(std::string(fn) + ": tensors[" + std::to_string(i) + "]." + m);
  };
  if (t.n < 0) bad("n must be >= 0, got " + std::to_string(t.n));
  if (t.n == 0) return;
  if (!t.grad) bad("grad must not be null");
  if (need_state && (!t.param || !t.exp_avg || !t.exp_avg_sq)) bad("param, exp_avg and exp_avg_sq must not be null");
  if (need_state && !(t.weight_decay >= 0.f)) bad("weight_decay must be >= 0, got " + std::to_string(t.weight_decay));
}

}  // namespace

template <class T>
void embedding_bwd_accumulate_cuda(int64_t rows, int64_t dim, int64_t vocab, const int64_t* ids, const T* dy,
                                   float* dtable, cudaStream_t stream) {
  const char* fn = "embedding_bwd_accumulate_cuda";
  auto bad = [&](const std::string& m) { throw std::invalid_argument(std::string(fn) + ": " + m); };
  if (rows < 0 || rows > 0x7fffffff) bad("rows must be in [0, 2^31 - 1], got " + std::to_string(rows));
  if (dim < 1) bad("dim must be >= 1, got " + std::to_string(dim));
  if (vocab < 1) bad("vocab must be >= 1, got " + std::to_string(vocab));
  if (rows == 0) return;
  if (!ids || !dy || !dtable) bad("ids, dy and dtable must not be null");
  const bool vec = dim % 4 == 0 && al16(dtable) && dev::aligned16(dy) && (dim * sizeof(T)) % 16 == 0;
  const int threads = dim >= 1024 ? 256 : 128;
  embedding_bwd_kernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(rows, dim, vocab, ids, dy, dtable, vec);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

void embedding_bwd_check_cuda(cudaStream_t stream) {
  const char* fn = "embedding_bwd_check_cuda";
  MAMBA_CUDA_CHECK(fn, cudaStreamSynchronize(stream));
  unsigned long long row = 0;
  long long id = 0;
  MAMBA_CUDA_CHECK(fn, cudaMemcpyFromSymbol(&row, g_emb_bad_row, sizeof(row)));
  MAMBA_CUDA_CHECK(fn, cudaMemcpyFromSymbol(&id, g_emb_bad_id, sizeof(id)));
  if (row != ~0ull) {
    const unsigned long long reset = ~0ull;
    MAMBA_CUDA_CHECK(fn, cudaMemcpyToSymbol(g_emb_bad_row, &reset, sizeof(reset)));
    throw std::invalid_argument("embedding_bwd_accumulate_cuda: ids[" + std::to_string(row) + "] = " +
                                std::to_string(id) + " is outside [0, vocab)");
  }
}

size_t grad_sumsq_cuda_workspace_bytes(int64_t count) {
  return static_cast<size_t>(std::max<int64_t>(count, 1)) * kSumSlots * sizeof(float);
}

void grad_sumsq_cuda(const AdamWTensorCuda* tensors, int64_t count, float* sumsq, void* workspace,
                     size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "grad_sumsq_cuda";
  if (count < 0) throw std::invalid_argument(std::string(fn) + ": count must be >= 0, got " + std::to_string(count));
  if (count > 0 && !tensors) throw std::invalid_argument(std::string(fn) + ": tensors must not be null");
  if (!sumsq) throw std::invalid_argument(std::string(fn) + ": sumsq must not be null");
  if (!workspace || workspace_bytes < grad_sumsq_cuda_workspace_bytes(count))
    throw std::invalid_argument(std::string(fn) + ": workspace_bytes " + std::to_string(workspace_bytes) +
                                " < required " + std::to_string(grad_sumsq_cuda_workspace_bytes(count)));
  float* slots = static_cast<float*>(workspace);
  for (int64_t i = 0; i < count; ++i) check_tensor(fn, tensors[i], i, false);
  for (int64_t base = 0; base < count; base += kChunk) {
    Chunk ch{};
    ch.count = static_cast<int>(std::min<int64_t>(kChunk, count - base));
    for (int k = 0; k < ch.count; ++k) {
      const AdamWTensorCuda& t = tensors[base + k];
      ch.t[k].grad = t.grad;
      ch.t[k].n = t.n;
      ch.t[k].vec = al16(t.grad);
    }
    sumsq_kernel<<<dim3(kSumSlots, ch.count), kSumThreads, 0, stream>>>(ch, static_cast<int>(base), slots);
    MAMBA_CUDA_CHECK_LAUNCH(fn);
  }
  sumsq_finish_kernel<<<1, 1024, 0, stream>>>(count * kSumSlots, slots, sumsq);
  MAMBA_CUDA_CHECK_LAUNCH(fn);
}

void adamw_step_cuda(const AdamWTensorCuda* tensors, int64_t count, const AdamWHyperCuda& h, const float* grad_sumsq,
                     cudaStream_t stream) {
  const char* fn = "adamw_step_cuda";
  auto bad = [&](const std::string& m) { throw std::invalid_argument(std::string(fn) + ": " + m); };
  if (count < 0) bad("count must be >= 0, got " + std::to_string(count));
  if (count > 0 && !tensors) bad("tensors must not be null");
  if (!(h.lr >= 0.f) || !std::isfinite(h.lr)) bad("h.lr must be finite and >= 0, got " + std::to_string(h.lr));
  if (!(h.beta1 >= 0.f && h.beta1 < 1.f)) bad("h.beta1 must be in [0, 1), got " + std::to_string(h.beta1));
  if (!(h.beta2 >= 0.f && h.beta2 < 1.f)) bad("h.beta2 must be in [0, 1), got " + std::to_string(h.beta2));
  if (!(h.eps > 0.f)) bad("h.eps must be > 0, got " + std::to_string(h.eps));
  if (h.step < 1) bad("h.step must be >= 1, got " + std::to_string(h.step));
  if (!(h.max_grad_norm >= 0.f)) bad("h.max_grad_norm must be >= 0, got " + std::to_string(h.max_grad_norm));
  if (h.max_grad_norm > 0.f && !grad_sumsq) bad("grad_sumsq must not be null when h.max_grad_norm > 0");
  for (int64_t i = 0; i < count; ++i) check_tensor(fn, tensors[i], i, true);
  // As the CPU AdamW: scalars in double, rounded once to f32.
  const double t = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), t);
  StepScalars s;
  s.b1 = h.beta1;
  s.omb1 = static_cast<float>(1.0 - static_cast<double>(h.beta1));
  s.b2 = h.beta2;
  s.omb2 = static_cast<float>(1.0 - static_cast<double>(h.beta2));
  s.step_size = static_cast<float>(static_cast<double>(h.lr) / bc1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.eps = h.eps;
  s.max_norm = h.max_grad_norm;
  constexpr int64_t kPerBlock = int64_t(kStepThreads) * kElemsPerThread;
  for (int64_t base = 0; base < count; base += kChunk) {
    Chunk ch{};
    ch.count = static_cast<int>(std::min<int64_t>(kChunk, count - base));
    long long blocks = 0;
    for (int k = 0; k < ch.count; ++k) {
      const AdamWTensorCuda& a = tensors[base + k];
      TensorDesc& d = ch.t[k];
      d.param = a.param; d.grad = a.grad; d.m = a.exp_avg; d.v = a.exp_avg_sq; d.pb = a.param_bf16;
      d.n = a.n;
      d.block_start = blocks;
      d.keep = static_cast<float>(1.0 - static_cast<double>(h.lr) * static_cast<double>(a.weight_decay));
      d.vec = al16(a.param) && al16(a.grad) && al16(a.exp_avg) && al16(a.exp_avg_sq);
      blocks += (a.n + kPerBlock - 1) / kPerBlock;
    }
    ch.total_blocks = blocks;
    if (blocks == 0) continue;
    if (blocks > 0x7fffffffLL) bad("too many elements in one chunk of tensors");
    adamw_kernel<<<static_cast<unsigned>(blocks), kStepThreads, 0, stream>>>(ch, s, grad_sumsq);
    MAMBA_CUDA_CHECK_LAUNCH(fn);
  }
}

template void embedding_bwd_accumulate_cuda<float>(int64_t, int64_t, int64_t, const int64_t*, const float*, float*,
                                                   cudaStream_t);
template void embedding_bwd_accumulate_cuda<__nv_bfloat16>(int64_t, int64_t, int64_t, const int64_t*,
                                                           const __nv_bfloat16*, float*, cudaStream_t);

}  // namespace mamba::kernels::cuda
