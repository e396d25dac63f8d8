// Tensor-core helpers of the SSD kernels (private to kernels/cuda): ldmatrix, mma.sync
// m16n8k16 bf16 -> f32, cp.async.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, q = lane % 4):
//   A (16 x 16, row-major): reg 0 = (g, 2q..2q+1), 1 = (g+8, 2q..), 2 = (g, 2q+8..), 3 = (g+8, 2q+8..)
//   B (16 x 8, k x n):      reg 0 = (k 2q..2q+1, n g), reg 1 = (k 2q+8..2q+9, n g)
//   C/D (16 x 8, f32):      0, 1 = (g, 2q..2q+1), 2, 3 = (g+8, 2q..2q+1)
// so two n8 accumulators side by side, packed to bf16, are the A fragment of a 16 x 16 block.
// ldmatrix.x4 lane offsets (lr = lane % 8, lm = lane / 8), for a 16 x 16 tile at (r0, c0):
//   A stored [m][k]:          row r0 + lr + 8 (lm & 1), col c0 + 8 (lm >> 1)
//   B stored [n][k] (2 n8):   row r0 + lr + 8 (lm >> 1), col c0 + 8 (lm & 1)    -> b(n0), b(n0+8)
//   B stored [k][n], .trans:  row r0 + lr + 8 (lm & 1), col c0 + 8 (lm >> 1)
//   A stored [k][m], .trans:  row r0 + lr + 8 (lm >> 1), col c0 + 8 (lm & 1)
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mamba::kernels::cuda::sm {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a (16 x 16) * b (16 x 8), bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2 (lo in the low half: the smaller column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// (lo * s0, hi * s1) of a bf16x2 register, in f32, rounded back to bf16.
__device__ __forceinline__ uint32_t scale_bf16x2(uint32_t v, float s0, float s1) {
  const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  return pack_bf16(f.x * s0, f.y * s1);
}

// 16-byte global -> shared copy; when !full, the 16 bytes are zero-filled (nothing is read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(full ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
template <int kN>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kN) : "memory"); }

// The rows row0 and row0 + 8 of a 16-row block of f32 mma accumulators (kN / 8 tiles of n8, as
// C/D fragments) into a bf16 [row][kN + 8] shared-memory tile (the SSD chunk state S).
template <int kN>
__device__ __forceinline__ void store_rows_bf16(__nv_bfloat16 (*dst)[kN + 8], const float (&v)[kN / 8][4], int row0, int q) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    const int n = nt * 8 + 2 * q;
    *reinterpret_cast<uint32_t*>(&dst[row0][n]) = pack_bf16(v[nt][0], v[nt][1]);
    *reinterpret_cast<uint32_t*>(&dst[row0 + 8][n]) = pack_bf16(v[nt][2], v[nt][3]);
  }
}

// The cumulative log decay of a 64-step chunk, one warp: lane l holds steps 2l, 2l + 1 with
// l0 = dt'_{2l} A, l1 = dt'_{2l+1} A; returns cs of both (the inclusive prefix sums) and the
// chunk's last cs (all lanes).
__device__ __forceinline__ void chunk_cumsum(float l0, float l1, int lane, float& cs0, float& cs1, float& last) {
  float incl = l0 + l1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  last = __shfl_sync(0xffffffffu, incl, 31);
  cs0 = incl - l1;
  cs1 = incl;
}

}  // namespace mamba::kernels::cuda::sm
