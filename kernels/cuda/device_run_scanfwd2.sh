#!/usr/bin/env bash
# Scan forward v6 round on a GPU machine (branch scanfwd2), from the repository root or from a
# snapshot whose bin/ holds a prebuilt mamba-cuda-check:
#   OUT=<dir> bash kernels/cuda/device_run_scanfwd2.sh
# Uses $BIN (default bin/mamba-cuda-check when it exists and loads, else builds it with nvcc,
# 16 jobs), then: `mamba-cuda-check --scan6` (v6 checks, v3 / v6 timings, floors table), the SASS
# of the v3 and v6 kernels at the standard shape, and ncu (scheduler / warp-state / pipe figures)
# on one launch of each (`--scan6-once`) when ncu is on the machine. Logs to $OUT; < 110 s.
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[ -f "$ROOT/kernels/cuda/selective_scan.cu" ] || ROOT="$(cd "$(dirname "$0")" && pwd)"
cd "$ROOT"
OUT="${OUT:-build-device/logs}"
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
t0=$(date +%s)
BIN="${BIN:-bin/mamba-cuda-check}"
runs() { [ -x "$BIN" ] && "$BIN" --scan6-hello 2>&1 | grep -q "scan6 hello"; }
if [ -x "$BIN" ] && ! runs && [ -f bin/libgomp.so.1 ]; then  # the libgomp shipped beside it
  export LD_LIBRARY_PATH="$ROOT/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! runs; then
  [ -x "$BIN" ] && "$BIN" --scan6-hello 2>&1 | head -5
  echo "== building (no usable prebuilt $BIN)"
  BUILD=build-device; mkdir -p "$BUILD/obj"
  SRC=(kernels/cuda/selective_scan.cu kernels/cuda/selective_scan_v6.cu
       kernels/cuda/selective_scan_bwd.cu kernels/cuda/causal_conv1d.cu kernels/cuda/selective_state_update.cu
       kernels/cuda/ssd_state_update.cu kernels/cuda/runtime_info.cu kernels/cuda/rms_norm.cu
       kernels/cuda/mamba_cuda_check.cu kernels/cuda/check_ssd.cu kernels/cuda/ssd.cu kernels/cuda/ssd_bwd.cu
       kernels/cpu/selective_scan.cc kernels/cpu/selective_scan_bwd.cc kernels/cpu/causal_conv1d.cc
       kernels/cpu/rms_norm.cc kernels/cpu/parallel.cc kernels/cpu/ssd.cc kernels/cpu/ssd_bwd.cc)
  NVFLAGS=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr
           -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
  OBJ=(); PIDS=()
  for s in "${SRC[@]}"; do
    o="$BUILD/obj/$(basename "$s").o"; OBJ+=("$o")
    timeout 80 nvcc "${NVFLAGS[@]}" -c "$s" -o "$o" > "$BUILD/obj/$(basename "$s").log" 2>&1 &
    PIDS+=($!)
  done
  ok=1
  for p in "${PIDS[@]}"; do wait "$p" || ok=0; done
  cat "$BUILD"/obj/*.log > "$OUT/build.log"
  [ "$ok" = 1 ] && { nvcc -gencode arch=compute_90,code=sm_90 "${OBJ[@]}" -o "$BUILD/mamba-cuda-check" -Xlinker --gc-sections -lgomp >> "$OUT/build.log" 2>&1 || ok=0; }
  echo "== build ok=$ok in $(( $(date +%s) - t0 )) s"
  [ "$ok" = 1 ] || { grep -E "error" "$OUT/build.log" | head -30; exit 4; }
  BIN="$BUILD/mamba-cuda-check"
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
echo "== mamba-cuda-check --scan6"
timeout 55 "$BIN" --scan6 > "$OUT/scan6.log" 2>&1
rc=$?
grep -E "^FAIL|^cuda-check|^microbench|timing failed" "$OUT/scan6.log" | head -40
sed -n '/^floors:/,$p' "$OUT/scan6.log" | head -60
echo "checks: $(grep -c '^ok' "$OUT/scan6.log") ok, $(grep -c '^FAIL' "$OUT/scan6.log") FAIL; rc=$rc; $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null; then
  timeout 15 cuobjdump -sass "$BIN" 2>/dev/null | awk '
    /Function :/ { f = ($0 ~ /selective_scan_fwd_v3_kernelI13__nv_bfloat16Li16ELi2ELb1ELin1ELi4ELb0E/ ||
                        $0 ~ /selective_scan_fwd_v6_kernelI13__nv_bfloat16Li16ELi2ELb1ELi64ELi8ELi8ELb0ELi0ELi128E/ ||
                        $0 ~ /selective_scan_fwd_v6_kernelI13__nv_bfloat16Li16ELi2ELb1ELi64ELi8ELi8ELb0ELi0ELi32E/) }
    f { print }' > "$OUT/sass_scan.txt"
  echo "sass: $(grep -c 'Function :' "$OUT/sass_scan.txt") functions, $(wc -l < "$OUT/sass_scan.txt") lines"
  python3 kernels/cuda/sass_loops.py "$OUT/sass_scan.txt" 2>&1 | head -40
fi
left=$(( 105 - ($(date +%s) - t0) ))
if command -v ncu > /dev/null && [ $left -gt 20 ]; then
  echo "== ncu sections (limit $(( left / 2 )) s)"
  timeout $(( left / 2 )) ncu -k regex:selective_scan_fwd_v --section SchedulerStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats \
    "$BIN" --scan6-once > "$OUT/ncu.txt" 2>&1
  echo "ncu rc=$?"
  grep -E "selective_scan_fwd|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Registers Per|Achieved Active|Executed Ipc A|Duration" "$OUT/ncu.txt" | sed -E 's/\(SelectiveScanCudaParams.*//' | head -40
  left=$(( 105 - ($(date +%s) - t0) ))
  if [ $left -gt 10 ]; then  # stall reasons (warps per issue, by reason) and pipe utilisation
    timeout $(( left / 2 )) ncu -k regex:selective_scan_fwd_v \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.sum,smsp__inst_executed.sum" \
      "$BIN" --scan6-once > "$OUT/ncu_stall.txt" 2>&1
    echo "ncu stall rc=$?"
    grep -E "selective_scan_fwd|ERROR|rror" "$OUT/ncu_stall.txt" | sed -E 's/\(SelectiveScanCudaParams.*//' | head -8
    awk '/selective_scan_fwd/ {k++} /(stalled|pipe_|inst_executed)/ && $NF+0 > 0.02 {printf "k%d %s %s\n", k, $1, $NF}' "$OUT/ncu_stall.txt" | head -90
  fi
  left=$(( 105 - ($(date +%s) - t0) ))
  if [ $left -gt 8 ]; then
    timeout $(( left - 3 )) ncu -k regex:selective_scan_fwd_v --metrics \
smsp__inst_executed.sum,sm__inst_executed_pipe_fma.sum,sm__inst_executed_pipe_fmaheavy.sum,sm__inst_executed_pipe_alu.sum,sm__inst_executed_pipe_xu.sum,sm__inst_executed_pipe_lsu.sum,sm__inst_executed_pipe_adu.sum,sm__inst_executed_pipe_cbu.sum,sm__inst_executed_pipe_uniform.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__cycles_elapsed.avg \
      "$BIN" --scan6-once > "$OUT/ncu_metrics.txt" 2>&1
    echo "ncu metrics rc=$?"
    grep -E "selective_scan_fwd|sm__|smsp__|l1tex__|ERROR|rror" "$OUT/ncu_metrics.txt" | sed -E 's/\(SelectiveScanCudaParams.*//' | head -40
  fi
else
  echo "ncu: $(command -v ncu || echo missing); left $left s"
fi
left=$(( 106 - ($(date +%s) - t0) ))
if [ $left -gt 8 ]; then  # the older checks (v4, varlen, decode, conv), now with v6 as the automatic scan
  echo "== mamba-cuda-check --fast-check (limit $(( left - 3 )) s)"
  timeout $(( left - 3 )) "$BIN" --fast-check > "$OUT/fast_check.log" 2>&1
  echo "fast-check rc=$?: $(grep -c '^ok' "$OUT/fast_check.log") ok, $(grep -c '^FAIL' "$OUT/fast_check.log") FAIL"
  grep -E "^FAIL|^cuda-check" "$OUT/fast_check.log" | head -20
fi
echo "== done in $(( $(date +%s) - t0 )) s"
exit $rc
