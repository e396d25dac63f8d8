// Mamba-1 selective scan forward, v4 (see NOTES.md "Scan forward v4"): the v3 kernel template of
// scan_fwd_v3.cuh with kP16 >= 0, i.e. kP16 / 16 of the (step, state) exponentials on
// dev::ex2_poly_fma (FMA pipe) and the rest on MUFU ex2, and kU steps per rolled block. This file
// holds only v4's choice of variant (its measurement knobs poly / unroll): layout, loads, varlen
// and the split heuristic are v3's.
#include "mamba/kernels/cuda/scan_cuda.h"

#include "scan_fwd_v3.cuh"
#include "scan_fwd_v4.cuh"

namespace mamba::kernels::cuda {

namespace {

constexpr int kDefaultP = 2;  // sixteenths on the polynomial (NOTES.md: no variant beat v3)
constexpr int kDefaultU = 4;

template <class T, int kN, bool kExact>
struct V4 {
  using Base = V3<T, kN, kExact>;
  // Tuning variants (poly sixteenths, unroll) compiled for dstate 16 only; others run the default.
  template <int kS>
  static void launch_tuned(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
    const int P = p.poly == 0 ? kDefaultP : p.poly < 0 ? 16 : p.poly;
    const int U = p.unroll == 0 ? kDefaultU : p.unroll;
    if constexpr (kN == 16 && kExact) {
      if constexpr (kS == 2) {
        if (U == 8) {
          if (P == 2) return Base::template launch<kS, 2, 8>(p, stream);
          if (P == 3) return Base::template launch<kS, 3, 8>(p, stream);
          if (P == 4) return Base::template launch<kS, 4, 8>(p, stream);
        } else {
          if (P == 16) return Base::template launch<kS, 0, 4>(p, stream);
          if (P == 3) return Base::template launch<kS, 3, 4>(p, stream);
          if (P == 4) return Base::template launch<kS, 4, 4>(p, stream);
          if (P == 6) return Base::template launch<kS, 6, 4>(p, stream);
        }
      } else {
        if (P == 16) return Base::template launch<kS, 0, 4>(p, stream);
        if (P == 4) return Base::template launch<kS, 4, 4>(p, stream);
      }
    }
    Base::template launch<kS, kDefaultP, kDefaultU>(p, stream);
  }
  static void run(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced) {
    const int S = Base::choose(p, forced);
    if constexpr (Base::template kOk<4>) if (S == 4) return launch_tuned<4>(p, stream);
    if constexpr (Base::template kOk<2>) if (S == 2) return launch_tuned<2>(p, stream);
    if constexpr (Base::template kOk<1>) if (S == 1) return launch_tuned<1>(p, stream);
    launch_tuned<Base::kMinS>(p, stream);
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
