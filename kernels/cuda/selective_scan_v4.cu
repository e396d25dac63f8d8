// Mamba-1 selective scan forward, v4 (see NOTES.md "Scan forward v4").
//   v3's layout: a block of 128 lanes = 128 / kS channels of one group of one batch row; lane s
//   of a channel owns kNS = kN / kS states in registers and walks the whole sequence in tiles of
//   kT = 32 / sizeof(T) steps (B, C tile [t][n] in shared memory, double-buffered; the next
//   tile's loads issued before the current one is computed; per-step scalars computed once per
//   (channel, step) and shared through a per-channel shared-memory row).
//   New in v4:
//   - kP / 16 of the (step, state) exponentials go to dev::ex2_poly_fma (FMA pipe: floor split,
//     degree-5 minimax on [0, 1), exponent by integer add), the rest to MUFU ex2; the choice is
//     per element m = jj * kNS + i of a rolled block of kU steps: poly iff (m * kP) % 16 < kP,
//     a compile-time pattern spread evenly over the block (no divergence).
//   - kU (steps per rolled block) is a template parameter (4 or 8).
//   - Variable-length packed batches (p.cu_seqlens): blockIdx.y is the sequence; the block walks
//     [cu_seqlens[s], cu_seqlens[s + 1]) of the packed rows with the state reset at its start.
#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/scan_cuda.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>

#include "device_common.cuh"
#include "scan_fwd_v4.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kV4Threads = 128;
constexpr int kDefaultP = 2;  // sixteenths on the polynomial (set from the measurements in NOTES.md)
constexpr int kDefaultU = 4;

template <int kS> struct V4MinBlocks { static constexpr int value = kS == 4 ? 6 : kS == 2 ? 3 : 1; };

template <class T, int kE>
union Piece4 {
  static constexpr int kBytes = kE * int(sizeof(T));
  static_assert(kBytes % 8 == 0, "a piece is a whole number of 8-byte words");
  using V = typename std::conditional<kBytes % 16 == 0, uint4, uint2>::type;
  V v[kBytes / int(sizeof(V))];
  T e[kE];
};

template <class T, int kE>
__device__ __forceinline__ void load_piece4(const T* __restrict__ row, int64_t t, int64_t len, bool vec, Piece4<T, kE>& r) {
  using V = typename Piece4<T, kE>::V;
  if (vec && t + kE <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / sizeof(V)); ++i) r.v[i] = __ldg(reinterpret_cast<const V*>(row + t) + i);
  } else {
#pragma unroll
    for (int j = 0; j < kE; ++j) r.e[j] = t + j < len ? row[t + j] : dev::from_f32<T>(0.f);
  }
}
template <class T, int kE>
__device__ __forceinline__ void store_piece4(T* __restrict__ row, int64_t t, int64_t len, bool vec, const Piece4<T, kE>& r) {
  using V = typename Piece4<T, kE>::V;
  if (vec && t + kE <= len) {
#pragma unroll
    for (int i = 0; i < int(sizeof(r.v) / sizeof(V)); ++i) reinterpret_cast<V*>(row + t)[i] = r.v[i];
  } else {
#pragma unroll
    for (int j = 0; j < kE; ++j)
      if (t + j < len) row[t + j] = r.e[j];
  }
}

template <int kM>
__device__ __forceinline__ void lds4(const float* src, float (&out)[kM]) {
  if constexpr (kM % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kM; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      out[i] = v.x; out[i + 1] = v.y; out[i + 2] = v.z; out[i + 3] = v.w;
    }
  } else {
    static_assert(kM % 2 == 0, "even runs only");
#pragma unroll
    for (int i = 0; i < kM; i += 2) {
      const float2 v = *reinterpret_cast<const float2*>(src + i);
      out[i] = v.x; out[i + 1] = v.y;
    }
  }
}
template <int kM>
__device__ __forceinline__ void sts4(float* dst, const float (&in)[kM]) {
  if constexpr (kM % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kM; i += 4) *reinterpret_cast<float4*>(dst + i) = make_float4(in[i], in[i + 1], in[i + 2], in[i + 3]);
  } else {
    static_assert(kM % 2 == 0, "even runs only");
#pragma unroll
    for (int i = 0; i < kM; i += 2) *reinterpret_cast<float2*>(dst + i) = make_float2(in[i], in[i + 1]);
  }
}

// Exponential of element m of a block: polynomial for kP / 16 of the elements, spread evenly.
template <int kP>
__device__ __forceinline__ float ex2_mixed(float x, int m) {
  return (kP > 0 && (m * kP) % 16 < kP) ? dev::ex2_poly_fma(x) : dev::ex2_mufu(x);
}

template <class T, int kN, int kS, bool kExact, int kP, int kU>
__global__ void __launch_bounds__(kV4Threads, V4MinBlocks<kS>::value)
selective_scan_fwd_v4_kernel(SelectiveScanCudaParams<T> p, int blocks_per_group) {
  constexpr int kT = 32 / int(sizeof(T));   // steps per tile
  constexpr int kNS = kN / kS;              // states per lane
  constexpr int kE = kT / kS;               // steps whose scalars this lane loads / stores
  constexpr int kCh = kV4Threads / kS;      // channels per block
  constexpr int kBC = (kN * kT + kV4Threads - 1) / kV4Threads;
  constexpr int kStride = kN + 4;
  constexpr int kDtRow = 2 * kT + 4;        // per channel: (dt, du) pairs of kT steps, pad
  constexpr int kYRow = kS * kT + 4;        // per channel: kS partial y rows, pad
  constexpr int kUB = kU < kT ? kU : kT;    // steps per rolled block
  static_assert(kNS >= 2 && kNS <= 16 && kN % kS == 0, "2..16 states per lane");
  static_assert(kE >= 2 && kT % kS == 0 && kT % kUB == 0, "a lane owns at least two steps");
  __shared__ __align__(16) float sB[2][kT * kStride];
  __shared__ __align__(16) float sC[2][kT * kStride];
  __shared__ __align__(16) float sDt[kS > 1 ? kCh * kDtRow : 4];
  __shared__ __align__(16) float sY[kS > 1 ? kCh * kYRow : 4];

  const int tid = threadIdx.x;
  const int ch = tid / kS, s = tid % kS;
  const int nN = kExact ? kN : static_cast<int>(p.dstate);
  const int myN = kExact ? kNS : min(max(nN - s * kNS, 0), kNS);  // states of this lane that exist
  const int64_t dpg = p.dim / p.n_groups;
  const int64_t g = blockIdx.x / blocks_per_group;
  const int64_t cl = int64_t{blockIdx.x % blocks_per_group} * kCh + ch;
  const bool active = cl < dpg;
  const int64_t d = g * dpg + (active ? cl : 0);  // inactive channels mirror channel 0, write nothing
  // Batch row b, or sequence b of a packed batch (row 0, steps [start, start + L)).
  const int64_t b = blockIdx.y;
  const int64_t ld = p.seqlen;  // row length in memory
  int64_t start = 0, L = p.seqlen, brow = b;
  if (p.cu_seqlens) {
    const int64_t s0 = min(max(int64_t{p.cu_seqlens[b]}, int64_t{0}), ld);
    const int64_t s1 = min(max(int64_t{p.cu_seqlens[b + 1]}, s0), ld);
    start = s0;
    L = s1 - s0;
    brow = 0;
  }
  const int64_t row = (brow * p.dim + d) * ld + start;
  const T* u_row = p.u + row;
  const T* dt_row = p.delta + row;
  const T* z_row = p.z ? p.z + row : nullptr;
  T* y_row = p.y + row;
  const T* Bg = p.B + (brow * p.n_groups + g) * nN * ld + start;
  const T* Cg = p.C + (brow * p.n_groups + g) * nN * ld + start;
  const bool vec = dev::aligned16(u_row) && dev::aligned16(dt_row) && dev::aligned16(y_row) &&
                   (!z_row || dev::aligned16(z_row));
  const float D = p.D ? p.D[d] : 0.f;
  const float bias = p.delta_bias ? p.delta_bias[d] : 0.f;
  const int64_t state_off = (b * p.dim + d) * nN + s * kNS;
  float* dtrow = sDt + (kS > 1 ? ch * kDtRow : 0);
  float* yrow = sY + (kS > 1 ? ch * kYRow : 0);

  float A2[kNS], h[kNS];
#pragma unroll
  for (int i = 0; i < kNS; ++i) {
    const bool on = kExact || i < myN;
    A2[i] = on ? p.A[d * nN + s * kNS + i] * dev::kLog2e : 0.f;
    h[i] = on && p.initial_state ? p.initial_state[state_off + i] : 0.f;
  }

  using P = Piece4<T, kE>;
  P cu, cdt, cz;
  T cB[kBC], cC[kBC];
  auto load_bc = [&](int64_t t0, T (&rb)[kBC], T (&rc)[kBC]) {
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      const int e = tid + i * kV4Threads;
      const int n = e / kT, j = e % kT;
      const bool in = (kN * kT % kV4Threads == 0 || e < kN * kT) && n < nN && t0 + j < L;
      rb[i] = in ? Bg[n * ld + t0 + j] : dev::from_f32<T>(0.f);
      rc[i] = in ? Cg[n * ld + t0 + j] : dev::from_f32<T>(0.f);
    }
  };
  const int64_t own = int64_t{s} * kE;  // offset of this lane's steps within a tile
  if (L > 0) {
    load_piece4<T, kE>(u_row, own, L, vec, cu);
    load_piece4<T, kE>(dt_row, own, L, vec, cdt);
    if (z_row) load_piece4<T, kE>(z_row, own, L, vec, cz);
    load_bc(0, cB, cC);
  }

  int buf = 0;
  for (int64_t t0 = 0; t0 < L; t0 += kT, buf ^= 1) {
    float* sb = sB[buf];
    float* sc = sC[buf];
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      const int e = tid + i * kV4Threads;
      if (kN * kT % kV4Threads == 0 || e < kN * kT) {
        const int n = e / kT, j = e % kT;
        sb[j * kStride + n] = dev::to_f32(cB[i]);
        sc[j * kStride + n] = dev::to_f32(cC[i]);
      }
    }
    __syncthreads();  // B / C of tile t0 visible; also orders last tile's sDt / sY reads before this tile's writes

    const int64_t t1 = t0 + kT;
    P nu, ndt, nz;
    T nB[kBC], nC[kBC];
    if (t1 < L) {
      load_piece4<T, kE>(u_row, t1 + own, L, vec, nu);
      load_piece4<T, kE>(dt_row, t1 + own, L, vec, ndt);
      if (z_row) load_piece4<T, kE>(z_row, t1 + own, L, vec, nz);
      load_bc(t1, nB, nC);
    }

    float odt[kE], odu[kE];
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      float v = dev::to_f32(cdt.e[e]) + bias;
      if (p.delta_softplus) v = dev::softplus_fast(v);
      if (t0 + own + e >= L) v = 0.f;  // identity map past the end: the final state stays exact
      odt[e] = v;
      odu[e] = v * dev::to_f32(cu.e[e]);
    }
    float dt[kS > 1 ? 1 : kT], du[kS > 1 ? 1 : kT];
    if constexpr (kS > 1) {
      float pairs[2 * kE];
#pragma unroll
      for (int e = 0; e < kE; ++e) { pairs[2 * e] = odt[e]; pairs[2 * e + 1] = odu[e]; }
      sts4<2 * kE>(dtrow + 2 * own, pairs);
      __syncwarp();
    } else {
#pragma unroll
      for (int j = 0; j < kT; ++j) { dt[j] = odt[j]; du[j] = odu[j]; }
    }

    auto step = [&](int j, int jp, float dtj, float duj) -> float {
      float bv[kNS], cv[kNS];
      lds4<kNS>(sb + j * kStride + s * kNS, bv);
      lds4<kNS>(sc + j * kStride + s * kNS, cv);
      float y0 = 0.f, y1 = 0.f;
#pragma unroll
      for (int i = 0; i < kNS; ++i) {
        if (kExact || i < myN) {
          const float a = ex2_mixed<kP>(dtj * A2[i], jp * kNS + i);
          h[i] = fmaf(a, h[i], duj * bv[i]);
          if (i & 1) y1 = fmaf(h[i], cv[i], y1);
          else y0 = fmaf(h[i], cv[i], y0);
        }
      }
      return y0 + y1;
    };

    float oy[kE];
    if constexpr (kS > 1) {
#pragma unroll 1
      for (int j0 = 0; j0 < kT; j0 += kUB) {
        float yv[kUB];
#pragma unroll
        for (int jj = 0; jj < kUB; ++jj) {
          const float2 v = *reinterpret_cast<const float2*>(dtrow + 2 * (j0 + jj));
          yv[jj] = step(j0 + jj, jj, v.x, v.y);
        }
        sts4<kUB>(yrow + s * kT + j0, yv);
      }
      __syncwarp();
      lds4<kE>(yrow + own, oy);
#pragma unroll
      for (int r = 1; r < kS; ++r) {
        float part[kE];
        lds4<kE>(yrow + r * kT + own, part);
#pragma unroll
        for (int e = 0; e < kE; ++e) oy[e] += part[e];
      }
    } else {
#pragma unroll
      for (int j = 0; j < kT; ++j) oy[j] = step(j, j, dt[j], du[j]);
    }

    P out;
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      float v = fmaf(D, dev::to_f32(cu.e[e]), oy[e]);
      if (z_row) v *= dev::silu_fast(dev::to_f32(cz.e[e]));
      out.e[e] = dev::from_f32<T>(v);
    }
    if (active) store_piece4<T, kE>(y_row, t0 + own, L, vec, out);

    cu = nu;
    cdt = ndt;
    if (z_row) cz = nz;
#pragma unroll
    for (int i = 0; i < kBC; ++i) {
      cB[i] = nB[i];
      cC[i] = nC[i];
    }
  }

  if (active && p.final_state) {
#pragma unroll
    for (int i = 0; i < kNS; ++i)
      if (kExact || i < myN) p.final_state[state_off + i] = h[i];
  }
}

template <class T, int kN, int kS, bool kExact, int kP, int kU>
void launch_v4(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  constexpr int kCh = kV4Threads / kS;
  const int64_t dpg = p.dim / p.n_groups;
  const int64_t bpg = (dpg + kCh - 1) / kCh;
  if (bpg * p.n_groups > 0x7fffffff) throw std::invalid_argument("selective_scan_fwd_cuda: dim too large");
  const int64_t rows = p.cu_seqlens ? p.n_seqs : p.batch;
  const dim3 grid(static_cast<unsigned>(bpg * p.n_groups), static_cast<unsigned>(rows));
  selective_scan_fwd_v4_kernel<T, kN, kS, kExact, kP, kU><<<grid, kV4Threads, 0, stream>>>(p, static_cast<int>(bpg));
  MAMBA_CUDA_CHECK_LAUNCH("selective_scan_fwd_cuda (v4)");
}

template <class T, int kN, bool kExact>
struct V4 {
  static constexpr int kMinS = kN / 16 > 1 ? kN / 16 : 1;   // at most 16 states per lane
  static constexpr int kMaxS = kN / 2 < 4 ? kN / 2 : 4;     // at least 2 states per lane
  static constexpr int kMaxST = (32 / int(sizeof(T))) / 2;  // at least 2 steps per lane
  template <int S>
  static constexpr bool kOk = S >= kMinS && S <= kMaxS && S <= kMaxST;

  template <int kS>
  static int occupancy() {
    static const int v = [] {
      int n = 0;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
              &n, selective_scan_fwd_v4_kernel<T, kN, kS, kExact, kDefaultP, kDefaultU>, kV4Threads, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
      }
      return n;
    }();
    return v;
  }
  static int occupancy_of(int S) {
    if constexpr (kOk<4>) if (S == 4) return occupancy<4>();
    if constexpr (kOk<2>) if (S == 2) return occupancy<2>();
    if constexpr (kOk<1>) if (S == 1) return occupancy<1>();
    return 0;
  }
  static bool allowed(int S) { return (S == 4 && kOk<4>) || (S == 2 && kOk<2>) || (S == 1 && kOk<1>); }
  static int64_t blocks_of(const SelectiveScanCudaParams<T>& p, int S) {
    const int64_t ch = kV4Threads / S;
    const int64_t dpg = p.dim / p.n_groups;
    return ((dpg + ch - 1) / ch) * p.n_groups * (p.cu_seqlens ? p.n_seqs : p.batch);
  }
  // As v3: S2 when its grid is at least half a wave and fits in one; else the most lanes per
  // channel whose grid fits one wave; else 2.
  static int choose(const SelectiveScanCudaParams<T>& p, int forced) {
    if (forced == 1 || forced == 2 || forced == 4) return std::min(std::max(forced, kMinS), std::min(kMaxS, kMaxST));
    int sms = 0, dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        sms <= 0) {
      cudaGetLastError();
      sms = 132;
    }
    if (allowed(2)) {
      const int occ = occupancy_of(2);
      const int64_t blocks = blocks_of(p, 2);
      if (occ > 0 && blocks <= int64_t{occ} * sms && blocks >= sms / 2) return 2;
    }
    for (int S : {4, 2, 1}) {
      if (!allowed(S)) continue;
      const int occ = occupancy_of(S);
      if (occ > 0 && blocks_of(p, S) <= int64_t{occ} * sms) return S;
    }
    return allowed(2) ? 2 : kMinS;
  }

  // Tuning variants (poly sixteenths kP, unroll kU) compiled for dstate 16 only.
  template <int kS>
  static void launch_tuned(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
    const int P = p.poly == 0 ? kDefaultP : p.poly < 0 ? 16 : p.poly;
    const int U = p.unroll == 0 ? kDefaultU : p.unroll;
    if constexpr (kN == 16 && kExact) {
      if constexpr (kS == 2) {
        if (U == 8) {
          if (P == 2) return launch_v4<T, kN, kS, kExact, 2, 8>(p, stream);
          if (P == 3) return launch_v4<T, kN, kS, kExact, 3, 8>(p, stream);
          if (P == 4) return launch_v4<T, kN, kS, kExact, 4, 8>(p, stream);
        } else {
          if (P == 16) return launch_v4<T, kN, kS, kExact, 0, 4>(p, stream);
          if (P == 3) return launch_v4<T, kN, kS, kExact, 3, 4>(p, stream);
          if (P == 4) return launch_v4<T, kN, kS, kExact, 4, 4>(p, stream);
          if (P == 6) return launch_v4<T, kN, kS, kExact, 6, 4>(p, stream);
        }
      } else {
        if (P == 16) return launch_v4<T, kN, kS, kExact, 0, 4>(p, stream);
        if (P == 4) return launch_v4<T, kN, kS, kExact, 4, 4>(p, stream);
      }
    }
    launch_v4<T, kN, kS, kExact, kDefaultP, kDefaultU>(p, stream);
  }

  static void run(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced) {
    const int S = choose(p, forced);
    if constexpr (kOk<4>) if (S == 4) return launch_tuned<4>(p, stream);
    if constexpr (kOk<2>) if (S == 2) return launch_tuned<2>(p, stream);
    if constexpr (kOk<1>) if (S == 1) return launch_tuned<1>(p, stream);
    launch_tuned<kMinS>(p, stream);
  }
};

}  // namespace

template <class T>
void selective_scan_fwd_v4(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int split) {
  switch (p.dstate) {
    case 16: V4<T, 16, true>::run(p, stream, split); return;
    case 8: V4<T, 8, true>::run(p, stream, split); return;
    case 32: V4<T, 32, true>::run(p, stream, split); return;
    case 64: V4<T, 64, true>::run(p, stream, split); return;
    case 4: V4<T, 4, true>::run(p, stream, split); return;
    default: break;
  }
  if (p.dstate <= 4) V4<T, 4, false>::run(p, stream, split);
  else if (p.dstate <= 8) V4<T, 8, false>::run(p, stream, split);
  else if (p.dstate <= 16) V4<T, 16, false>::run(p, stream, split);
  else if (p.dstate <= 32) V4<T, 32, false>::run(p, stream, split);
  else V4<T, 64, false>::run(p, stream, split);
}

template void selective_scan_fwd_v4<float>(const SelectiveScanCudaParams<float>&, cudaStream_t, int);
template void selective_scan_fwd_v4<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, cudaStream_t, int);

}  // namespace mamba::kernels::cuda
