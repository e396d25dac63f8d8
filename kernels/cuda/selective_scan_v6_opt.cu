// Mamba-1 selective scan forward: the v6 measurement variants of branch scanfwd (NOTES.md "Scan
// forward v7"), dstate 16, two lanes per channel, 64-byte tiles, selected by
// SelectiveScanCudaParams::opt. Their own file so that they compile beside selective_scan_v6.cu.
#include <stdexcept>
#include <string>

#include "mamba/kernels/cuda/scan_cuda.h"

#include "scan_fwd_v6.cuh"
#include "scan_fwd_v6_launch.cuh"

namespace mamba::kernels::cuda {
namespace {

// {unroll, poly (on_poly's code), kOpt bits, name, softplus (0: two MUFU, 1: one MUFU)}
struct OptVariant {
  int unroll, poly, bits;
  const char* name;
  int sp = 0;
};
constexpr OptVariant kOptVariants[] = {
    {8, 8, 1, "U8 P1/8 imad"},
    {8, 8, 1 | 4, "U8 P1/8 imad pair4"},
    {8, 8, 1 | 2, "U8 P1/8 imad ahead"},
    {4, 8, 1 | 2, "U4 P1/8 imad ahead"},
    {8, 103, 1 | 2, "U8 P3/32 imad ahead"},
    {8, 106, 1 | 2, "U8 P3/16 imad ahead"},
    {8, 0, 2, "U8 P0 ahead"},
    {8, 106, 1 | 4, "U8 P3/16 imad pair4"},
    {8, 102, 1 | 2, "U8 P1/16 imad ahead"},
    {8, 8, 1 | 8, "U8 P1/8 imad lean"},
    {8, 8, 1 | 2 | 8, "U8 P1/8 imad ahead lean"},
    {8, 106, 1 | 2 | 8, "U8 P3/16 imad ahead lean"},
    {8, 106, 1 | 4 | 8, "U8 P3/16 imad pair4 lean"},
    {8, 8, 1 | 4 | 8, "U8 P1/8 imad pair4 lean"},
    {8, 8, 1 | 8, "U8 P1/8 imad lean sp1", 1},
    {8, 106, 1 | 4 | 8, "U8 P3/16 imad pair4 lean sp1", 1},
};
constexpr int kOptCount = int(sizeof(kOptVariants) / sizeof(kOptVariants[0]));

template <class T, int kI>
void launch_opt(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  constexpr OptVariant v = kOptVariants[kI];
  V6<T, 16, true>::template launch<2, 64, v.poly, v.unroll, v.sp, kV6Threads, v.bits>(p, stream);
}

template <class T, int kI = 0>
void dispatch_opt(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  if constexpr (kI < kOptCount) {
    if (p.opt == kI + 1) return launch_opt<T, kI>(p, stream);
    return dispatch_opt<T, kI + 1>(p, stream);
  } else {
    throw std::invalid_argument("selective_scan_fwd_cuda: opt must be in [0, " + std::to_string(kOptCount) + "], got " +
                                std::to_string(p.opt));
  }
}

}  // namespace

template <class T>
void selective_scan_fwd_v6_opt(const SelectiveScanCudaParams<T>& p, cudaStream_t stream) {
  dispatch_opt<T>(p, stream);
}
int selective_scan_fwd_v6_opt_count() { return kOptCount; }
const char* selective_scan_fwd_v6_opt_name(int opt) { return opt >= 1 && opt <= kOptCount ? kOptVariants[opt - 1].name : "?"; }

template void selective_scan_fwd_v6_opt<float>(const SelectiveScanCudaParams<float>&, cudaStream_t);
template void selective_scan_fwd_v6_opt<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, cudaStream_t);

}  // namespace mamba::kernels::cuda
