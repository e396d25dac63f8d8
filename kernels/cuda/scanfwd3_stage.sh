#!/usr/bin/env bash
# Stages the device round of branch scanfwd (run here after `bash kernels/cuda/device_build_scanfwd3.sh
# build-nv 2` and the CMake build of mamba-golden with MAMBA_CUDA=ON):
#   [ROUND=scanseg] bash kernels/cuda/scanfwd3_stage.sh [DEST]        (default /work/devq/scanfwd; < 12 MB)
# DEST/run.sh = kernels/cuda/device_run_scanfwd3.sh (+ sass_loops.py); DEST/bins.tar.xz = the
# stripped nvcc-only mamba-cuda-check, the CMake mamba-golden, libgomp, tools/device/refblas.c as
# libopenblas.so.0 (the GPU machine has no OpenBLAS), the Mamba-1 golden files and the commit;
# DEST/src.tar.xz = kernels/ at the working tree (the fallback build).
set -eu
cd "$(dirname "$0")/../.."
DEST="${1:-/work/devq/scanfwd}"
NV="${NV:-build-nv}"; BUILD="${BUILD:-build}"
W=$(mktemp -d)
mkdir -p "$W/bin" "$W/lib" "$W/golden"
cp "$NV/mamba-cuda-check" "$W/bin/"
# GOLDEN=0: without mamba-golden; GTESTS="build/tests/test_cuda_kernels ...": gtest binaries of the
# CMake build too (device_run_scanfwd3.sh runs the scan and backend tests of those it finds).
[ "${GOLDEN:-1}" = 0 ] || cp "$BUILD/tools/mamba-golden" "$W/bin/"
for t in ${GTESTS:-}; do cp "$t" "$W/bin/"; done
strip "$W/bin/"*
for b in "$W"/bin/*; do  # the CMake build also embeds PTX
  [ "$(basename "$b")" = mamba-cuda-check ] || python3 tools/device/fatbin_drop_ptx.py "$b"
done
. tools/device/stage_common.sh
stage_pack "$W" "$DEST" kernels/cuda/device_run_scanfwd3.sh
tar -cf - kernels | xz -9 > "$DEST/src.tar.xz"
[ -n "${ROUND:-}" ] && echo "$ROUND" > "$DEST/ROUND"  # ROUND=scanseg: the sequence split's steps (device_run_scanfwd3.sh)
cp kernels/cuda/sass_loops.py "$DEST/"
rm -rf "$W"
du -sh "$DEST"
ls -la "$DEST"
