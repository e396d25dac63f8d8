#!/usr/bin/env bash
# cuDNN convolution round on a GPU machine (nvcc only), from the repository root:
#   OUT=<dir> bash kernels/cuda/conv_cudnn_device_run.sh
# Builds mamba-conv-cudnn-check for sm_90 against the pip wheel nvidia-cudnn-cu13 (lib and
# include from python3's nvidia.cudnn; cuDNN is not in /usr/local/cuda there), runs the checks
# and the --bench shapes. Falls back to a prebuilt binary ($PREBUILT) when the build fails.
# $OUT gets two files (check.log, test_cuda_conv.log); the build log and the bench go to stdout. Finishes in < 120 s (timeouts inside).
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device/logs}"
mkdir -p "$OUT"
BUILD="${BUILD:-build-device}"
export PATH="$PATH:/usr/local/cuda/bin"
t0=$(date +%s)
CUDNN_DIR=$(python3 -c "import nvidia.cudnn,os;print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null)
[ -n "$CUDNN_DIR" ] || CUDNN_DIR=$(python3 -c "import nvidia.cudnn;print(list(nvidia.cudnn.__path__)[0])" 2>/dev/null)
echo "== cuDNN dir: ${CUDNN_DIR:-NOT FOUND}"
CUDNN_INC="$CUDNN_DIR/include"
[ -f "$CUDNN_INC/cudnn.h" ] || CUDNN_INC="${CUDNN_HEADERS:-/usr/local/cuda/include}"
echo "cudnn.h from $CUDNN_INC"
export LD_LIBRARY_PATH="$CUDNN_DIR/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/conv_cudnn.cu kernels/cuda/conv_cudnn_check.cu kernels/cpu/conv.cc)
# conv.cc: only the reference loops are used; conv_f32's sgemm call is dropped by --gc-sections.
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -I"$CUDNN_INC" -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections
         -DMAMBA_HAVE_CUDA=1 -DMAMBA_HAVE_CUDNN=1)
OBJ=(); PIDS=()
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
  timeout 90 nvcc "${NVFLAGS[@]}" -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 &
  PIDS+=($!)
done
ok=1
for p in "${PIDS[@]}"; do wait "$p" || ok=0; done
cat "$BUILD"/buildlogs/*.log > "$BUILD/build.log"
BIN="$BUILD/mamba-conv-cudnn-check"
[ "$ok" = 1 ] && { nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BIN" -L"$CUDNN_DIR/lib" \
  -l:libcudnn.so.9 -lgomp -Xlinker --gc-sections >> "$BUILD/build.log" 2>&1 || ok=0; }
echo "== build ok=$ok in $(( $(date +%s) - t0 )) s"
if [ "$ok" != 1 ]; then
  grep -E "error" "$BUILD/build.log" | head -30
  if [ -n "${PREBUILT:-}" ] && [ -x "$PREBUILT" ]; then echo "using the prebuilt $PREBUILT"; BIN="$PREBUILT"; else exit 4; fi
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
left=$(( 112 - ($(date +%s) - t0) ))
echo "== checks (limit $(( left / 2 )) s)"
timeout $(( left / 2 )) "$BIN" > "$OUT/check.log" 2>&1
rc=$?
grep -E "^FAIL" "$OUT/check.log" | head -40
grep -E "^cuDNN|^plans|^conv-cudnn-check|bad-arg|exception|L40003" "$OUT/check.log"
echo "check rc=$rc"
grep -E "^  worst" "$OUT/check.log"
left=$(( ${BENCH_END:-115} - ($(date +%s) - t0) ))
echo "== bench (limit $left s)"
timeout "$left" "$BIN" --bench-only ${BENCH_FLAGS:-} > "$BUILD/bench.log" 2>&1
echo "bench rc=$?"
cat "$BUILD/bench.log"
# The tensor-level GoogleTest (built on a machine with the project's packages; see
# conv_cudnn_stage.sh), when the snapshot carries it: OpenBLAS is replaced by the plain-loop
# stand-in tests/device/blas_stub.c (the GPU machine has no BLAS).
if [ -n "${GTEST_BIN:-}" ] && [ -f "$GTEST_BIN" ]; then
  left=$(( 117 - ($(date +%s) - t0) ))
  echo "== test_cuda_conv (limit $left s)"
  LD_LIBRARY_PATH="${STUB_DIR:-}:$LD_LIBRARY_PATH" timeout "$left" "$GTEST_BIN" > "$OUT/test_cuda_conv.log" 2>&1
  echo "test_cuda_conv rc=$?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|exception|rel_err|Expected|Which is|dx|dw|db" "$OUT/test_cuda_conv.log" | head -60
fi
echo "== total $(( $(date +%s) - t0 )) s"
exit $rc
