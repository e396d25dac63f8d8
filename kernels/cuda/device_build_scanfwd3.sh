#!/usr/bin/env bash
# Builds mamba-cuda-check with nvcc only (no CMake, no OpenBLAS), for the scan forward rounds of
# branch scanfwd (device_run_scanfwd3.sh): from the repository root,
#   bash kernels/cuda/device_build_scanfwd3.sh OUTDIR [JOBS]
# -> OUTDIR/mamba-cuda-check (sm_90). Used here to prebuild the binary the device round carries.
set -u
OUTDIR="$1"; JOBS="${2:-16}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$OUTDIR/obj"
SRC=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_v6.cu kernels/cuda/selective_scan_v6_opt.cu
     kernels/cuda/selective_scan_bwd.cu kernels/cuda/causal_conv1d.cu kernels/cuda/selective_state_update.cu
     kernels/cuda/ssd_state_update.cu kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu
     kernels/cuda/mamba_cuda_check.cu kernels/cuda/check_ssd.cu kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu
     kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
     kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
OBJ=()
for s in "${SRC[@]}"; do OBJ+=("$OUTDIR/obj/$(basename "$s").o"); done
for s in "${SRC[@]}"; do
  o="$OUTDIR/obj/$(basename "$s").o"
  echo "nvcc ${NVFLAGS[*]} -c $s -o $o > $o.log 2>&1 || { cat $o.log; exit 1; }"
done | xargs -P "$JOBS" -I{} bash -c "{}" || { echo "build failed"; exit 1; }
nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$OUTDIR/mamba-cuda-check" -Xlinker --gc-sections -lgomp || exit 1
echo "built $OUTDIR/mamba-cuda-check"
