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
. tools/device/stage_common.sh
stage_pack "$W" "$DEST" kernels/cuda/prune_device_run.sh
git archive HEAD kernels | xz -9 > "$DEST/src.tar.xz"
rm -rf "$W"
du -sh "$DEST"
ls -la "$DEST"
