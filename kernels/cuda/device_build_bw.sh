#!/usr/bin/env bash
# Builds mamba-cuda-check and mamba-cuda-train-check for sm_90 with nvcc only (no CMake, no
# Debian packages), for the memory-bound kernel rounds (device_run_bw.sh):
#   BUILD=<dir> JOBS=<n> [ONLY=check] bash kernels/cuda/device_build_bw.sh      (from the repository root)
# Objects and logs under $BUILD; binaries $BUILD/mamba-cuda-check, $BUILD/mamba-cuda-train-check
# (ONLY=check: mamba-cuda-check alone).
set -u
BUILD="${BUILD:-build-device-bw}"
JOBS="${JOBS:-16}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD/obj" "$BUILD/logs"
CHECK=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_v6.cu kernels/cuda/selective_scan_bwd.cu
       kernels/cuda/causal_conv1d.cu kernels/cuda/selective_state_update.cu kernels/cuda/ssd_state_update.cu
       kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu kernels/cuda/mamba_cuda_check.cu
       kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu kernels/cuda/check_ssd.cu
       kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
       kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
TRAIN=(kernels/cuda/train_norm.cu kernels/cuda/cross_entropy.cu kernels/cuda/conv1d_bwd.cu kernels/cuda/optim.cu
       kernels/cuda/check_train_kernels.cu
       kernels/cpu/rms_norm.cc kernels/cpu/cross_entropy.cc kernels/cpu/causal_conv1d.cc kernels/cpu/norm.cc
       kernels/cpu/parallel.cc)
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
[ "${ONLY:-}" = check ] && TRAIN=()
ALL=($(printf '%s\n' "${CHECK[@]}" "${TRAIN[@]}" | sort -u))
printf '%s\n' "${ALL[@]}" | xargs -P "$JOBS" -I{} sh -c \
  'o="'"$BUILD"'/obj/$(basename {}).o"; if [ ! -f "$o" ] || [ {} -nt "$o" ] || [ "${FORCE:-0}" = 1 ]; then timeout 300 nvcc '"${NVFLAGS[*]}"' -Xptxas -v -c {} -o "$o" > "'"$BUILD"'/logs/$(basename {}).log" 2>&1 || { echo "FAILED {}"; rm -f "$o"; }; fi'
ok=1
objs() { for s in "$@"; do echo "$BUILD/obj/$(basename "$s").o"; done; }
for o in $(objs "${ALL[@]}"); do [ -f "$o" ] || { echo "missing $o"; ok=0; }; done
[ "$ok" = 1 ] || exit 4
nvcc -gencode arch=compute_90,code=sm_90 $(objs "${CHECK[@]}") -o "$BUILD/mamba-cuda-check" -Xlinker --gc-sections -lgomp > "$BUILD/logs/link-check.log" 2>&1 || { cat "$BUILD/logs/link-check.log" | head -30; exit 4; }
[ ${#TRAIN[@]} = 0 ] || nvcc -gencode arch=compute_90,code=sm_90 $(objs "${TRAIN[@]}") -o "$BUILD/mamba-cuda-train-check" -Xlinker --gc-sections -lgomp > "$BUILD/logs/link-train.log" 2>&1 || { cat "$BUILD/logs/link-train.log" | head -30; exit 4; }
echo "build ok: $BUILD/mamba-cuda-check$([ ${#TRAIN[@]} = 0 ] || echo " $BUILD/mamba-cuda-train-check")"
