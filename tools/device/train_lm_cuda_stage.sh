#!/usr/bin/env bash
# Stages the GPU-training device snapshot (no GPU here; the GPU machine has no OpenBLAS,
# nlohmann-json or GoogleTest, so prebuilt binaries go with it):
#   bash tools/device/train_lm_cuda_stage.sh BEFORE_BUILD BEFORE_REV DEST
# BEFORE_BUILD: the build directory of the base BEFORE_REV (main) with mamba-train-lm-cuda
# built, for the before/after timings: `git archive BEFORE_REV` unpacked at
# build-before/src (ignored), built in build-before/src/build, so its paths relative to the
# build directory match ./build's and ccache gives byte-identical kernel objects (which the
# xz stream then stores once);
# the after binaries come from ./build (configured with -DMAMBA_CUDA=ON). DEST gets run.sh
# (tools/device/train_lm_cuda_run.sh) and bins.tar.xz: before/ and after/ binaries (stripped)
# plus lib/libopenblas.so.0 built from tests/device/blas_stub.c (the three CBLAS calls the CPU
# reference uses) and libgomp. One xz stream, so the identical kernel images of the binaries
# are stored once.
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE_BUILD="$1"; BEFORE_REV="$2"; DEST="$3"
T=$(mktemp -d)
mkdir -p "$T/before" "$T/after" "$T/lib"
# Slim links (train_lm_cuda_slim.sh: the kernels the trainer never calls left out) without
# PTX (fatbin_drop_ptx.py): a whole binary no longer fits the 12 MB of a snapshot.
slim() {  # build dir, target, output
  bash tools/device/train_lm_cuda_slim.sh "$1" "$2" "$3.full" > /dev/null
  strip -o "$3" "$3.full" && rm -f "$3.full"
  python3 tools/device/fatbin_drop_ptx.py "$3"
}
slim "$BEFORE_BUILD" tools/mamba-train-lm-cuda "$T/before/mamba-train-lm-cuda"
slim build tools/mamba-train-lm-cuda "$T/after/mamba-train-lm-cuda"
slim build tests/test_cuda_train "$T/after/test_cuda_train"
gcc -O2 -shared -fPIC -Wl,-soname,libopenblas.so.0 tests/device/blas_stub.c -o "$T/lib/libopenblas.so.0"
cp -L /lib/x86_64-linux-gnu/libgomp.so.1 "$T/lib/"
git rev-parse HEAD > "$T/COMMIT"
git rev-parse "$BEFORE_REV" > "$T/BEFORE_COMMIT"
rm -rf "$DEST"; mkdir -p "$DEST"
# hc4 finds the long repeats between the binaries (the default bt4 of presets 6-9 did not here).
tar -C "$T" -cf - after/mamba-train-lm-cuda after/test_cuda_train before lib COMMIT BEFORE_COMMIT |
  xz --lzma2=preset=6,dict=128MiB,mf=hc4,depth=0 -T1 > "$DEST/bins.tar.xz"
cp tools/device/train_lm_cuda_run.sh "$DEST/run.sh"
cp tools/device/round_steps.sh "$DEST/round_steps.sh"
rm -rf "$T"
du -sh "$DEST"
