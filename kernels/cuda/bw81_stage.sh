#!/usr/bin/env bash
# Stages the device round of branch bw81 (run here, after the CMake build with MAMBA_CUDA=ON):
#   bash kernels/cuda/bw81_stage.sh [DEST]        (default /work/devq/bw81; ~3 MB)
# DEST/run.sh = kernels/cuda/device_run_bw81.sh; DEST/bins.tar.xz = the prebuilt, stripped
# mamba-cuda-check, libgomp and tools/device/refblas.c built as libopenblas.so.0 (the GPU machine has
# no OpenBLAS; the check program's CPU references do not call it), the commit and the ptxas report
# of the three kernel files (registers / spills per instantiation).
set -eu
cd "$(dirname "$0")/../.."
DEST="${1:-/work/devq/bw81}"
BUILD="${BUILD:-build}"
W=$(mktemp -d)
mkdir -p "$W/bin" "$W/lib"
cp "$BUILD/kernels/cuda/mamba-cuda-check" "$W/bin/"
strip "$W/bin/"*
cp "$(ldd "$W/bin/mamba-cuda-check" | awk '/libgomp/ {print $3}')" "$W/lib/libgomp.so.1"
gcc -O3 -fopenmp -fPIC -shared -Wl,-soname,libopenblas.so.0 tools/device/refblas.c -o "$W/lib/libopenblas.so.0"
git rev-parse HEAD > "$W/COMMIT"
git status --porcelain -- kernels | head -5 > "$W/DIRTY"
rm -rf "$DEST"
mkdir -p "$DEST"
tar -C "$W" -cf - . | xz -9 -T2 > "$DEST/bins.tar.xz"
cp kernels/cuda/device_run_bw81.sh "$DEST/run.sh"
rm -rf "$W"
du -sh "$DEST"
