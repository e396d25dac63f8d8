#!/usr/bin/env bash
# Stages a self-contained snapshot for a GPU machine with nvcc and the nvidia-cudnn-cu13 wheel
# but none of the project's packages:  bash kernels/cuda/conv_cudnn_stage.sh DEST [BUILD]
# DEST gets: the sources (git archive HEAD), cudnn-headers/ (this machine's cudnn*.h, used when
# the wheel has none), prebuilt/mamba-conv-cudnn-check (the fallback when the device build fails),
# prebuilt/test_cuda_conv (stripped; from BUILD, a MAMBA_CUDA=ON build) with the BLAS stand-in
# prebuilt/stub/libopenblas.so.0, and run.sh (OUT=<dir> bash run.sh).
set -eu
cd "$(dirname "$0")/../.."
DEST=$1
BUILD=${2:-build}
rm -rf "$DEST"; mkdir -p "$DEST/prebuilt/stub" "$DEST/cudnn-headers"
git archive HEAD | tar -x -C "$DEST"
cp /usr/local/cuda/include/cudnn*.h "$DEST/cudnn-headers/"
# The fallback check binary: nvcc only, no BLAS (as conv_cudnn_device_run.sh builds it).
T=$(mktemp -d)
NV=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr -Ikernels/include
    -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1 -DMAMBA_HAVE_CUDNN=1)
for s in kernels/cuda/conv_cudnn.cu kernels/cuda/conv_cudnn_check.cu kernels/cpu/conv.cc; do
  nvcc "${NV[@]}" -c "$s" -o "$T/$(basename "$s").o"
done
nvcc -gencode arch=compute_90,code=sm_90 "$T"/*.o -o "$DEST/prebuilt/mamba-conv-cudnn-check" -L/usr/local/cuda/lib64 \
  -l:libcudnn.so.9 -lgomp -Xlinker --gc-sections
rm -rf "$T"
if [ -x "$BUILD/tests/test_cuda_conv" ]; then
  strip -o "$DEST/prebuilt/test_cuda_conv" "$BUILD/tests/test_cuda_conv"
  xz -T2 -6 "$DEST/prebuilt/test_cuda_conv"
  gcc -O2 -shared -fPIC -Wl,-soname,libopenblas.so.0 -o "$DEST/prebuilt/stub/libopenblas.so.0" tests/device/blas_stub.c
fi
cat > "$DEST/run.sh" <<'RUN'
#!/usr/bin/env bash
cd "$(dirname "$0")"
export PREBUILT="$PWD/prebuilt/mamba-conv-cudnn-check" CUDNN_HEADERS="$PWD/cudnn-headers" STUB_DIR="$PWD/prebuilt/stub"
export BENCH_FLAGS=${BENCH_FLAGS:---find} BENCH_END=${BENCH_END:-95}
if [ -f prebuilt/test_cuda_conv.xz ]; then xz -d -k -f prebuilt/test_cuda_conv.xz && chmod +x prebuilt/test_cuda_conv && export GTEST_BIN="$PWD/prebuilt/test_cuda_conv"; fi
timeout -k 3 118 bash kernels/cuda/conv_cudnn_device_run.sh
RUN
du -sh "$DEST"
