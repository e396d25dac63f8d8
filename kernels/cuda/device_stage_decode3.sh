#!/usr/bin/env bash
# Stages the decode3 device snapshot into DEST (default /work/devq/decode3):
#   bash kernels/cuda/device_stage_decode3.sh [DEST]
# Needs ./build configured with -DMAMBA_CUDA=ON and the targets test_cuda_backend and
# mamba-decode-check, mamba-cuda-bench built. DEST gets the sources of HEAD (git archive), run.sh
# (kernels/cuda/device_run_decode3.sh) and bins.tar.xz: the two binaries stripped, their PTX
# dropped (tools/device/fatbin_drop_ptx.py; the device runs the sm_90 code), plus lib/ with
# the plain-loop CBLAS stand-in built as libopenblas.so.0 (tests/device/blas_stub.c) and
# libgomp (the device has neither OpenBLAS nor GoogleTest; gtest is linked statically).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${1:-/work/devq/decode3}"
T=$(mktemp -d)
mkdir -p "$T/lib"
for b in tests/test_cuda_backend kernels/cuda/mamba-decode-check tools/mamba-cuda-bench; do
  strip -o "$T/$(basename "$b")" "build/$b"
  python3 tools/device/fatbin_drop_ptx.py "$T/$(basename "$b")" > /dev/null
done
gcc -O2 -shared -fPIC -Wl,-soname,libopenblas.so.0 tests/device/blas_stub.c -o "$T/lib/libopenblas.so.0"
cp -L /lib/x86_64-linux-gnu/libgomp.so.1 "$T/lib/"
git rev-parse HEAD > "$T/COMMIT"
rm -rf "$DEST"; mkdir -p "$DEST"
git archive HEAD | tar -x -C "$DEST"
tar -C "$T" -cf - test_cuda_backend mamba-decode-check mamba-cuda-bench lib COMMIT | xz -6 -T1 > "$DEST/bins.tar.xz"
cp kernels/cuda/device_run_decode3.sh "$DEST/run.sh"
cp tools/device/round_steps.sh "$DEST/round_steps.sh"
rm -rf "$T"
du -sh "$DEST" "$DEST/bins.tar.xz"
