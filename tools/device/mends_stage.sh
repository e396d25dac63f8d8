#!/usr/bin/env bash
# Stages branch mends' device snapshot from ./build (configured with -DMAMBA_CUDA=ON; targets
# mamba-cuda-check, mamba-cuda-train-check, mamba-train-lm-cuda, test_cuda_train built):
#   bash tools/device/mends_stage.sh DEST
# DEST gets run.sh (tools/device/mends_round.sh) and bins.tar.xz: the binaries stripped and
# without PTX (fatbin_drop_ptx.py; the trainer and its test slim, train_lm_cuda_slim.sh), plus
# lib/libopenblas.so.0 from tests/device/blas_stub.c and libgomp. Must stay under 12 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="$1"
T=$(mktemp -d)
mkdir -p "$T/bin" "$T/lib"
for b in kernels/cuda/mamba-cuda-check kernels/cuda/mamba-cuda-train-check; do
  strip -o "$T/bin/$(basename $b)" "build/$b"
  python3 tools/device/fatbin_drop_ptx.py "$T/bin/$(basename $b)"
done
for b in tools/mamba-train-lm-cuda tests/test_cuda_train; do
  bash tools/device/train_lm_cuda_slim.sh build "$b" "$T/bin/$(basename $b).full" > /dev/null
  strip -o "$T/bin/$(basename $b)" "$T/bin/$(basename $b).full" && rm -f "$T/bin/$(basename $b).full"
  python3 tools/device/fatbin_drop_ptx.py "$T/bin/$(basename $b)"
done
gcc -O2 -shared -fPIC -Wl,-soname,libopenblas.so.0 tests/device/blas_stub.c -o "$T/lib/libopenblas.so.0"
cp -L /lib/x86_64-linux-gnu/libgomp.so.1 "$T/lib/"
git rev-parse HEAD > "$T/COMMIT"
rm -rf "$DEST"; mkdir -p "$DEST"
tar -C "$T" -cf - bin lib COMMIT | xz --lzma2=preset=6,dict=128MiB,mf=hc4,depth=0 -T1 > "$DEST/bins.tar.xz"
cp tools/device/mends_round.sh "$DEST/run.sh"
cp tools/device/round_steps.sh "$DEST/round_steps.sh"
rm -rf "$T"
du -sh "$DEST"
