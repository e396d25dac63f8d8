#!/usr/bin/env bash
# Builds mamba-ssd-check (check_ssd_main.cpp + the SSD kernels and their CPU references) for sm_90 with nvcc only (no CMake, no OpenBLAS), one nvcc per source,
# into $BUILD (default build-ssd2). Rebuilds an object only when its source is newer, or when
# FORCE=1. Used on this machine to prebuild the device snapshot, and by run.sh as a fallback.
#   J=2 bash kernels/cuda/ssd2_build.sh
set -u
cd "$(dirname "$0")/../.."
BUILD="${BUILD:-build-ssd2}"
J="${J:-16}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu kernels/cuda/check_ssd.cu kernels/cuda/check_ssd_main.cpp
     kernels/cpu/parallel.cc kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-march=x86-64-v3,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
t0=$(date +%s)
OBJ=(); ok=1; running=0
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
  if [ -z "${FORCE:-}" ] && [ "$o" -nt "$s" ]; then continue; fi
  extra=(); case "$s" in *ssd*.cu) extra=(-Xptxas -v);; esac
  nice nvcc "${NVFLAGS[@]}" "${extra[@]}" -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 || { echo "FAILED $s"; rm -f "$o"; } &
  running=$((running + 1))
  if [ "$running" -ge "$J" ]; then wait -n; running=$((running - 1)); fi
done
wait
for o in "${OBJ[@]}"; do [ -f "$o" ] || ok=0; done
[ "$ok" = 1 ] && { nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-ssd-check" -Xlinker --gc-sections -lgomp > "$BUILD/buildlogs/link.log" 2>&1 || ok=0; }
echo "== build ok=$ok in $(( $(date +%s) - t0 )) s"
[ "$ok" = 1 ]
