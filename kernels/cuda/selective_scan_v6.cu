// Mamba-1 selective scan forward, v6 (see NOTES.md "Scan forward v6"): the kernel and its
// variants are in scan_fwd_v6.cuh; this file holds the dstate dispatch.
#include "mamba/kernels/cuda/scan_cuda.h"

#include "scan_fwd_v6.cuh"
#include "scan_fwd_v6_launch.cuh"

namespace mamba::kernels::cuda {

template <class T>
void selective_scan_fwd_v6(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int split) {
  switch (p.dstate) {
    case 16: V6<T, 16, true>::run(p, stream, split); return;
    case 8: V6<T, 8, true>::run(p, stream, split); return;
    case 32: V6<T, 32, true>::run(p, stream, split); return;
    case 64: V6<T, 64, true>::run(p, stream, split); return;
    case 4: V6<T, 4, true>::run(p, stream, split); return;
    default: break;
  }
  if (p.dstate <= 4) V6<T, 4, false>::run(p, stream, split);
  else if (p.dstate <= 8) V6<T, 8, false>::run(p, stream, split);
  else if (p.dstate <= 16) V6<T, 16, false>::run(p, stream, split);
  else if (p.dstate <= 32) V6<T, 32, false>::run(p, stream, split);
  else V6<T, 64, false>::run(p, stream, split);
}

template void selective_scan_fwd_v6<float>(const SelectiveScanCudaParams<float>&, cudaStream_t, int);
template void selective_scan_fwd_v6<__nv_bfloat16>(const SelectiveScanCudaParams<__nv_bfloat16>&, cudaStream_t, int);

}  // namespace mamba::kernels::cuda
