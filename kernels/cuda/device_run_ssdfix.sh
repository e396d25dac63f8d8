#!/usr/bin/env bash
# SSD + scan round on a GPU machine (nvcc only), from the repository root:
#   OUT=<dir> bash kernels/cuda/device_run_ssdfix.sh
# Builds mamba-cuda-check for sm_90 (one nvcc per source, in parallel), then runs
# `mamba-cuda-check --ssd-only` (SSD checks and timings) and `mamba-cuda-check --fast` (scan
# v3 / v4 incl. varlen, decode, conv checks and timings). Logs to $OUT; a summary on stdout.
# Must finish in < 120 s including the build.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device/logs}"
mkdir -p "$OUT"
BUILD="${BUILD:-build-device}"
# Logs under $BUILD/logs; only ssd.log goes to $OUT at the end (the batched rounds return few files).
LOGS="$BUILD/logs"
mkdir -p "$LOGS"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_v6.cu kernels/cuda/selective_scan_bwd.cu
     kernels/cuda/causal_conv1d.cu kernels/cuda/selective_state_update.cu kernels/cuda/ssd_state_update.cu
     kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu kernels/cuda/mamba_cuda_check.cu
     kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu kernels/cuda/check_ssd.cu
     kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
     kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-march=native,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
t0=$(date +%s)
OBJ=(); PIDS=()
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
  extra=(); case "$s" in *ssd*.cu|*selective_scan*.cu) extra=(-Xptxas -v);; esac
  timeout 70 nvcc "${NVFLAGS[@]}" "${extra[@]}" -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 &
  PIDS+=($!)
done
ok=1
for p in "${PIDS[@]}"; do wait "$p" || ok=0; done
cat "$BUILD"/buildlogs/*.log > "$LOGS/build.log"
[ "$ok" = 1 ] && { nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-cuda-check" -Xlinker --gc-sections -lgomp >> "$LOGS/build.log" 2>&1 || ok=0; }
echo "== build ok=$ok in $(( $(date +%s) - t0 )) s"
if [ "$ok" != 1 ]; then grep -E "error" "$LOGS/build.log" | head -40; exit 4; fi
grep -A2 "ssd_fwd_tc_kernel\|ssd_bwd_tc_kernel" "$LOGS/build.log" | grep -E "Used|spill" | head -16
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
left=$(( 112 - ($(date +%s) - t0) ))
ssd_lim=$(( left * 60 / 100 ))
echo "== mamba-cuda-check --ssd-only (limit $ssd_lim s)"
timeout "$ssd_lim" "$BUILD/mamba-cuda-check" --ssd-only > "$LOGS/ssd.log" 2>&1
echo "ssd rc=$?"
grep -E "^FAIL|^ssd-check|^ssd summary|time ssd|MAMBA_SSD_SKIP" "$LOGS/ssd.log" | head -80
left=$(( 114 - ($(date +%s) - t0) ))
echo "== mamba-cuda-check --fast (limit $left s)"
timeout "$left" "$BUILD/mamba-cuda-check" --fast > "$LOGS/fast.log" 2>&1
rc=$?
grep -E "^FAIL|^cuda-check|^microbench|ex2_poly|varlen argument|^  timed" "$LOGS/fast.log" | head -90
echo "checks: ssd $(grep -c '^ok' "$LOGS/ssd.log") ok, $(grep -c '^FAIL' "$LOGS/ssd.log") FAIL; fast $(grep -c '^ok' "$LOGS/fast.log") ok, $(grep -c '^FAIL' "$LOGS/fast.log") FAIL; fast rc=$rc"
echo "total $(( $(date +%s) - t0 )) s"
left=$(( 118 - ($(date +%s) - t0) ))
if [ -z "${SKIP_NCU:-}" ] && command -v ncu > /dev/null && [ $left -gt 8 ]; then
  echo "== ncu ssd fwd (limit $(( left - 2 )) s)"
  timeout $(( left - 2 )) ncu -k regex:ssd_fwd_tc --section SpeedOfLight --section SchedulerStats --section WarpStateStats \
    --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis "$BUILD/mamba-cuda-check" --ssd-once > "$LOGS/ncu_ssd.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "ssd_fwd_tc|Duration|Throughput|Issue Slots|No Eligible|Eligible Warps|Warp Cycles Per Issued|Stall|Registers|Achieved Occ|Executed Ipc|Block Limit" "$LOGS/ncu_ssd.txt" | head -60
else
  echo "ncu: $(command -v ncu || echo missing); left $left s"
fi
cp "$LOGS/ssd.log" "$OUT/" 2>/dev/null
