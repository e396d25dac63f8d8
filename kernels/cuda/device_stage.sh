#!/usr/bin/env bash
# Stages the device round's snapshot (run here, after the CMake build with -DMAMBA_CUDA=ON of
# mamba-cuda-check mamba-cuda-train-check mamba-decode-check mamba-conv-cudnn-check mamba-golden
# mamba-cuda-bench mamba-train-lm-cuda, and where wanted the tests/test_cuda_* GoogleTest programs):
#   bash kernels/cuda/device_stage.sh DEST [BUILD]
# DEST gets (< 25 MB):
#   run.sh       cd DEST && OUT=<dir> bash run.sh [device_run.sh's arguments]: unpacks, then
#                kernels/cuda/device_run.sh with PREBUILT = the unpacked bins.tar.xz
#   src.tar.xz   what device_run.sh builds from and runs (kernels/, tools/device/, tests/device/,
#                tests/util/, shared-core/ and tools/mamba_launch.cc for the NCCL check), as in the working tree
#   bins.tar.xz  bin/: the programs stripped, their PTX dropped (tools/device/fatbin_drop_ptx.py;
#                the GPU runs the sm_90 code); lib/: tools/device/refblas.c built as
#                libopenblas.so.0 (the GPU machine has no OpenBLAS) and libgomp; golden/: the golden
#                files; cudnn-include/: this machine's cudnn*.h (when the GPU machine has no
#                headers); COMMIT, DIRTY (the working tree's changes against it)
# One xz stream with a long window: the kernel images the programs share are stored once.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="$1"; BUILD="${2:-build}"
T=$(mktemp -d)
mkdir -p "$T/bin" "$T/lib" "$T/golden"
for b in kernels/cuda/mamba-cuda-check kernels/cuda/mamba-cuda-train-check kernels/cuda/mamba-decode-check \
         kernels/cuda/mamba-conv-cudnn-check tools/mamba-golden tools/mamba-cuda-bench tools/mamba-train-lm-cuda; do
  [ -x "$BUILD/$b" ] || { echo "missing $BUILD/$b (build it first)"; exit 3; }
  strip -o "$T/bin/$(basename "$b")" "$BUILD/$b"
  python3 tools/device/fatbin_drop_ptx.py "$T/bin/$(basename "$b")" > /dev/null
done
for b in "$BUILD"/tests/test_cuda_*; do  # the GoogleTest CUDA tests, where built (device_run.sh's gtest step)
  [ -x "$b" ] || continue
  strip -o "$T/bin/$(basename "$b")" "$b"
  python3 tools/device/fatbin_drop_ptx.py "$T/bin/$(basename "$b")" > /dev/null
done
gcc -O3 -fopenmp -fPIC -shared -Wl,-soname,libopenblas.so.0 tools/device/refblas.c -o "$T/lib/libopenblas.so.0"
cp -L "$(ldd "$T/bin/mamba-golden" | awk '/libgomp/ {print $3}')" "$T/lib/libgomp.so.1"
cp ../shared/golden/*.safetensors "$T/golden/"
if ls /usr/local/cuda/include/cudnn*.h > /dev/null 2>&1; then mkdir -p "$T/cudnn-include"; cp /usr/local/cuda/include/cudnn*.h "$T/cudnn-include/"; fi
git rev-parse HEAD > "$T/COMMIT"
git status --porcelain > "$T/DIRTY"
rm -rf "$DEST"; mkdir -p "$DEST"
tar -C "$T" -cf - . | xz --lzma2=preset=6,dict=192MiB,mf=hc4,depth=0 -T1 > "$DEST/bins.tar.xz"
git ls-files -co --exclude-standard -z -- kernels tools/device tests/device tests/util shared-core tools/mamba_launch.cc | tar --null -T - -cf - | xz -6 > "$DEST/src.tar.xz"
cat > "$DEST/run.sh" <<'RUN'
#!/usr/bin/env bash
# Staged by kernels/cuda/device_stage.sh: cd SNAPSHOT && OUT=<dir> bash run.sh [device_run.sh arguments]
cd "$(dirname "$0")"
OUT=$(realpath -m "${OUT:-out}"); mkdir -p "$OUT"
W=$(mktemp -d)
mkdir -p "$W/src"
tar -C "$W" -xJf bins.tar.xz && tar -C "$W/src" -xJf src.tar.xz || { echo "extract failed"; exit 4; }
echo "snapshot of commit $(cat "$W/COMMIT"), $(wc -l < "$W/DIRTY") changed files; unpacked in $SECONDS s"
OUT="$OUT" PREBUILT="$W" bash "$W/src/kernels/cuda/device_run.sh" "$@"
r=$?
rm -rf "$W"
exit $r
RUN
rm -rf "$T"
du -sh "$DEST"
[ "$(du -sm "$DEST" | cut -f1)" -le 25 ] || { echo "the snapshot is over 25 MB"; exit 5; }
