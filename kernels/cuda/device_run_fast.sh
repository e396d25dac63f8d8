#!/usr/bin/env bash
# Scan forward v4 / decode / conv round on a GPU machine (nvcc only), from the repository root:
#   OUT=<dir> bash kernels/cuda/device_run_fast.sh
# Builds mamba-cuda-check for sm_90 (one nvcc per source, in parallel), runs
# `mamba-cuda-check --fast` (checks, microbenchmarks, the floors table), and, when ncu is on the
# machine, profiles one launch each of scan v3 / v4. Logs to $OUT. Must finish in < 150 s.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device/logs}"
mkdir -p "$OUT"
BUILD="${BUILD:-build-device}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$BUILD/obj" "$BUILD/buildlogs"
SRC=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_v6.cu kernels/cuda/selective_scan_bwd.cu
     kernels/cuda/causal_conv1d.cu kernels/cuda/selective_state_update.cu kernels/cuda/ssd_state_update.cu
     kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu kernels/cuda/mamba_cuda_check.cu
     kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
     kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc kernels/cpu/ssd.cc)
# ssd.cc: only ssd_state_update is used (the CPU reference of the Mamba-2 update); its sgemm
# callers are dropped by --gc-sections, so no BLAS is needed on the GPU machine.
NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
         -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
t0=$(date +%s)
OBJ=(); PIDS=()
for s in "${SRC[@]}"; do
  o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
  extra=(); case "$s" in *selective_scan*.cu|*state_update*.cu|*conv1d*.cu) extra=(-Xptxas -v);; esac
  timeout 100 nvcc "${NVFLAGS[@]}" "${extra[@]}" -c "$s" -o "$o" > "$BUILD/buildlogs/$(basename "$s").log" 2>&1 &
  PIDS+=($!)
done
ok=1
for p in "${PIDS[@]}"; do wait "$p" || ok=0; done
cat "$BUILD"/buildlogs/*.log > "$OUT/build.log"
[ "$ok" = 1 ] && { nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-cuda-check" -Xlinker --gc-sections -lgomp >> "$OUT/build.log" 2>&1 || ok=0; }
echo "== build ok=$ok in $(( $(date +%s) - t0 )) s"
if [ "$ok" != 1 ]; then grep -E "error" "$OUT/build.log" | head -40; exit 4; fi
# registers / spills of the v4 scan kernels
grep -A2 "selective_scan_fwd_v3_kernel.*Li16ELi2ELb1\|conv1d_fwd_v4\|ssd_state_update_vec" "$OUT/build.log" \
  | grep -E "Compiling|Used|spill" | sed -E 's/.*entry function .(_Z[^ ]*).*/\1/' > "$OUT/ptxas_regs.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
left=$(( 140 - ($(date +%s) - t0) ))
echo "== mamba-cuda-check --fast (limit $(( left - 25 )) s)"
timeout $(( left - 25 )) "$BUILD/mamba-cuda-check" --fast > "$OUT/fast.log" 2>&1
rc=$?
grep -E "^FAIL|^cuda-check|^microbench|^ok +ex2_poly|varlen argument" "$OUT/fast.log" | head -60
sed -n '/^floors:/,$p' "$OUT/fast.log"
echo "checks: $(grep -c '^ok' "$OUT/fast.log") ok, $(grep -c '^FAIL' "$OUT/fast.log") FAIL; rc=$rc"
if command -v cuobjdump > /dev/null; then
  # v4 = the v3 kernel template with kP16 = 2, kU = 4 (scan_fwd_v3.cuh)
  cuobjdump -sass "$BUILD/mamba-cuda-check" 2>/dev/null | awk '/selective_scan_fwd_v3_kernel.*Li16ELi2ELb1ELi2ELi4/{f=1} f{print} /EXIT/{if(f)n++} n>3{exit}' > "$OUT/sass_v4_s2.txt"
  wc -l "$OUT/sass_v4_s2.txt"
fi
left=$(( 145 - ($(date +%s) - t0) ))
if command -v ncu > /dev/null && [ $left -gt 15 ]; then
  echo "== ncu (limit $(( left - 5 )) s)"
  timeout $(( left - 5 )) ncu -k regex:selective_scan_fwd_v --section SchedulerStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats "$BUILD/mamba-cuda-check" --scan-once > "$OUT/ncu.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "selective_scan_fwd|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Stall|Pipe|Registers|Achieved Occ|Executed Ipc|SM Busy" "$OUT/ncu.txt" | head -70
else
  echo "ncu: $(command -v ncu || echo missing); left $left s"
fi
exit $rc
