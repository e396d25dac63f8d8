#!/usr/bin/env bash
# Stages the device round of branch m2cuda (Mamba-2 on CUDA), run here after the CMake build
# with MAMBA_CUDA=ON and the targets mamba-golden, test_cuda_backend:
#   bash kernels/cuda/m2cuda_stage.sh [DEST]        (default /work/devq/m2cuda)
# DEST/bins.tar.xz: the two binaries stripped, their PTX dropped (the device runs the sm_90
# code), lib/ and golden/ from stage_pack; DEST/run.sh = kernels/cuda/m2cuda_device_run.sh.
set -eu
cd "$(dirname "$0")/../.."
DEST="${1:-/work/devq/m2cuda}"
BUILD="${BUILD:-build}"
W=$(mktemp -d)
mkdir -p "$W/bin"
for b in tools/mamba-golden tests/test_cuda_backend; do
  strip -o "$W/bin/$(basename "$b")" "$BUILD/$b"
  python3 tools/device/fatbin_drop_ptx.py "$W/bin/$(basename "$b")" > /dev/null
done
. tools/device/stage_common.sh
stage_pack "$W" "$DEST" kernels/cuda/m2cuda_device_run.sh
rm -rf "$W"
du -sh "$DEST"
