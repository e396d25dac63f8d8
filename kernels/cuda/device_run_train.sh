#!/usr/bin/env bash
# Build (nvcc only, sm_90), check and time the CUDA training kernels on a GPU machine:
#   bash kernels/cuda/device_run_train.sh [--bench]
# Logs go to $OUT when set (else build-device-train/logs). Exit status: that of
# mamba-cuda-train-check (non-zero when a check fails), or 4 when the build fails.
set -u
cd "$(dirname "$0")/../.."
LOG_DIR="${OUT:-build-device-train/logs}"
mkdir -p "$LOG_DIR"
BUILD="${BUILD:-build-device-train}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/train_norm.cu kernels/cuda/cross_entropy.cu kernels/cuda/conv1d_bwd.cu kernels/cuda/optim.cu
     kernels/cuda/check_train_kernels.cu
     kernels/cpu/rms_norm.cc kernels/cpu/cross_entropy.cc kernels/cpu/causal_conv1d.cc kernels/cpu/norm.cc
     kernels/cpu/parallel.cc)
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
OBJ=(); PIDS=()
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
  timeout 100 nvcc "${NVFLAGS[@]}" -Xptxas -v -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 &
  PIDS+=($!)
done
ok=1
for p in "${PIDS[@]}"; do wait "$p" || ok=0; done
cat "$BUILD"/buildlogs/*.log > "$LOG_DIR/build.log"
if [ "$ok" = 1 ]; then
  nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-cuda-train-check" -lgomp -Xlinker --gc-sections >> "$LOG_DIR/build.log" 2>&1 || ok=0
fi
if [ "$ok" != 1 ]; then grep -B2 -A3 -i "error" "$LOG_DIR/build.log" | head -60; echo "build failed"; exit 4; fi
grep -E "spill stores" "$LOG_DIR/build.log" | grep -v " 0 bytes spill stores" | head -5
"$BUILD/mamba-cuda-train-check" "$@" 2>&1 | tee "$LOG_DIR/train-check.log"
exit "${PIPESTATUS[0]}"
