#!/usr/bin/env bash
# Build, check and time the CUDA kernels on a GPU machine (the one entry for all of them:
# mamba-cuda-check, then its --bw80 parts through device_run_bw.sh). From the repository root:
#   bash kernels/cuda/device_run.sh
# Logs go to $OUT when that is set (else build-device/logs). Exit status: that of
# mamba-cuda-check (non-zero when any check fails), or of the build when it fails.
set -u
cd "$(dirname "$0")/../.."
LOG_DIR="${OUT:-build-device/logs}"
mkdir -p "$LOG_DIR"
exec > >(tee "$LOG_DIR/device_run.log") 2>&1
BUILD="${BUILD:-build-device}"
JOBS="${JOBS:-16}"
export PATH="$PATH:/usr/local/cuda/bin"

echo "== tools"
for t in cmake g++ nvcc ninja nvidia-smi; do
  if command -v "$t" > /dev/null; then echo "$t: $(command -v "$t")"; else echo "$t: MISSING"; fi
done
cmake --version | head -1
g++ --version | head -1
nvcc --version | tail -2

# The GPU image has nvcc and g++ but not this project's Debian packages (OpenBLAS,
# nlohmann-json, GoogleTest) and no network, so the check program is built with nvcc
# directly from the sources it needs: the CUDA kernels and the CPU references (which need
# only OpenMP). The full CMake build, tests included, is what CI compiles.
echo "== build (nvcc, sm_90; one nvcc per source, in parallel, then the link)"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_bwd.cu kernels/cuda/causal_conv1d.cu
     kernels/cuda/selective_state_update.cu kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu
     kernels/cuda/mamba_cuda_check.cu
     kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
     kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc
     kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu kernels/cuda/check_ssd.cu kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
# -ffunction-sections,-fdata-sections + --gc-sections: kernels/cpu/ssd.cc's BLAS path (sgemm, not needed by the
# checks, which use ssd_scan_ref) is dropped at the link, so OpenBLAS is not needed.
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-march=native,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
# scan forward v6 / Mamba-2 decode update (the --fast checks).
SRC+=(kernels/cuda/selective_scan_v6.cu kernels/cuda/ssd_state_update.cu)
OBJ=()
PIDS=()
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"
  OBJ+=("$o")
  nvcc "${NVFLAGS[@]}" -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 &
  PIDS+=($!)
done
build_ok=1
for p in "${PIDS[@]}"; do wait "$p" || build_ok=0; done
cat "$BUILD"/buildlogs/*.log > "$LOG_DIR/build.log"
if [ "$build_ok" = 1 ]; then
  nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-cuda-check" -lgomp -Xlinker --gc-sections >> "$LOG_DIR/build.log" 2>&1 || build_ok=0
fi
if [ "$build_ok" != 1 ]; then
  cat "$LOG_DIR/build.log" | head -60
  echo "build failed"
  exit 4
fi
grep -iE "warning" "$LOG_DIR/build.log" | head -10
echo "built: $BUILD/mamba-cuda-check"
TESTS=OFF

echo "== nvidia-smi"
nvidia-smi || echo "nvidia-smi failed"

echo "== mamba-cuda-check"
"$BUILD/mamba-cuda-check" 2>&1 | tee "$LOG_DIR/mamba-cuda-check.log"
check_rc=${PIPESTATUS[0]}
echo "mamba-cuda-check exit status $check_rc"

test_rc=0
if [ "$TESTS" = ON ]; then
  echo "== test_cuda_kernels"
  "$BUILD/tests/test_cuda_kernels" 2>&1 | tee "$LOG_DIR/test_cuda_kernels.log" | tail -25
  test_rc=${PIPESTATUS[0]}
  echo "test_cuda_kernels exit status $test_rc"
fi

# The memory-bound round's kernel versions (state updates, conv1d forward, Mamba-2 update), each
# part in its own process: device_run_bw.sh --bw80 on the binary built above (its logs:
# $LOG_DIR/bw80-logs.tar.gz).
echo "== mamba-cuda-check --bw80 (device_run_bw.sh --bw80)"
OUT="$LOG_DIR" BIN="$BUILD" bash kernels/cuda/device_run_bw.sh --bw80
bw80_rc=$?

echo "== summary: mamba-cuda-check rc=$check_rc, --bw80 rc=$bw80_rc, test_cuda_kernels rc=$test_rc (tests built: $TESTS)"
grep -E "^cuda-check:" "$LOG_DIR/mamba-cuda-check.log" | tail -1
if [ "$check_rc" != 0 ]; then exit "$check_rc"; fi
if [ "$bw80_rc" != 0 ]; then exit "$bw80_rc"; fi
exit "$test_rc"
