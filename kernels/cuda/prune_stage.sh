#!/usr/bin/env bash
# Stages the device round of branch prune (run here, after the CMake build with MAMBA_CUDA=ON):
#   bash kernels/cuda/prune_stage.sh [DEST]        (default /work/devq/prune; < 12 MB)
# DEST/run.sh = kernels/cuda/prune_device_run.sh; DEST/bins.tar.xz = the prebuilt, stripped
# mamba-cuda-check and mamba-golden, libgomp, tools/device/refblas.c built as libopenblas.so.0
# (the GPU machine has no OpenBLAS), the Mamba-1 golden files and the commit; DEST/src.tar.xz =
# kernels/ at HEAD, from which run.sh builds mamba-cuda-train-check with nvcc on the device (the
# three binaries together do not fit the size limit).
set -eu
cd "$(dirname "$0")/../.."
DEST="${1:-/work/devq/prune}"
BUILD="${BUILD:-build}"
W=$(mktemp -d)
mkdir -p "$W/bin" "$W/lib" "$W/golden"
cp "$BUILD/kernels/cuda/mamba-cuda-check" "$BUILD/tools/mamba-golden" "$W/bin/"
strip "$W/bin/"*
cp "$(ldd "$W/bin/mamba-cuda-check" | awk '/libgomp/ {print $3}')" "$W/lib/libgomp.so.1"
gcc -O3 -fopenmp -fPIC -shared -Wl,-soname,libopenblas.so.0 tools/device/refblas.c -o "$W/lib/libopenblas.so.0"
G=../shared/golden
cp "$G"/selective_scan.safetensors "$G"/mamba1_block.safetensors "$G"/mamba1_lm.safetensors "$W/golden/"
git rev-parse HEAD > "$W/COMMIT"
git status --porcelain | head -5 > "$W/DIRTY"
rm -rf "$DEST"
mkdir -p "$DEST"
tar -C "$W" -cf - . | xz -9 -T2 > "$DEST/bins.tar.xz"
git archive HEAD kernels | xz -9 > "$DEST/src.tar.xz"
cp kernels/cuda/prune_device_run.sh "$DEST/run.sh"
rm -rf "$W"
du -sh "$DEST"
ls -la "$DEST"
