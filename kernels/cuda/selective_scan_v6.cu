// Mamba-1 selective scan forward, v6 (see NOTES.md "Scan forward v6"): the kernel and its
// variants are in scan_fwd_v6.cuh; this file holds the dstate dispatch.
#include "mamba/kernels/cuda/scan_cuda.h"

#include "scan_fwd_v6.cuh"
#include "scan_fwd_v6_launch.cuh"

namespace mamba::kernels::cuda {

// f(V6<T, kN, kExact>{}) for p's dstate.
template <class T, class F>
auto with_v6(const SelectiveScanCudaParams<T>& p, F&& f) {
  switch (p.dstate) {
    case 16: return f(V6<T, 16, true>{});
    case 8: return f(V6<T, 8, true>{});
    case 32: return f(V6<T, 32, true>{});
    case 64: return f(V6<T, 64, true>{});
    case 4: return f(V6<T, 4, true>{});
    default: break;
  }
  if (p.dstate <= 4) return f(V6<T, 4, false>{});
  if (p.dstate <= 8) return f(V6<T, 8, false>{});
  if (p.dstate <= 16) return f(V6<T, 16, false>{});
  if (p.dstate <= 32) return f(V6<T, 32, false>{});
  return f(V6<T, 64, false>{});
}

template <class T>
void selective_scan_fwd_v6(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int split) {
  with_v6(p, [&](auto v) { decltype(v)::run(p, stream, split); });
}
template <class T>
size_t selective_scan_fwd_v6_seg_bytes(const SelectiveScanCudaParams<T>& p, int split) {
  return with_v6(p, [&](auto v) { return decltype(v)::seg_bytes(p, split); });
}

template void selective_scan_fwd_v6<float>(const SelectiveScanCudaParams<float>&, cudaStream_t, int);
template void selective_scan_fwd_v6<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, cudaStream_t, int);
template size_t selective_scan_fwd_v6_seg_bytes<float>(const SelectiveScanCudaParams<float>&, int);
template size_t selective_scan_fwd_v6_seg_bytes<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, int);

}  // namespace mamba::kernels::cuda
