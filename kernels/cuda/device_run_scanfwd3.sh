#!/usr/bin/env bash
# Device round of branch scanfwd (issue 3: scan forward toward 240 us), staged by
# kernels/cuda/scanfwd3_stage.sh: cd SNAPSHOT && OUT=<dir> bash run.sh  (< 110 s)
# Prebuilt mamba-cuda-check (nvcc-only build, kernels/cuda/device_build_scanfwd3.sh) and
# mamba-golden (CMake) in bins.tar.xz; when the prebuilt check binary does not start, it is built
# here from src.tar.xz. In order, each with its own timeout: --scan7-check (the v6 variants of
# NOTES.md "Scan forward v7" against the CPU reference); --scan7-time (v3, v6 default, every
# variant; the two best at the other shapes; floors table); the SASS instruction mix of the scan
# loops (cuobjdump); mamba-golden --device cuda (Mamba-1 files); --scan6-check (v6 and its older
# variants); --no-ssd --check-only (scan fwd / bwd, conv, norms); ncu metrics on one launch of
# each variant (--scan7-once) with the time left.
# (checks of the variants and their timings first: the rest as time allows.) Summary on stdout, logs in ONE file: $OUT/scanfwd-logs.tar.gz.
# With a file ROUND = "scanseg" in the snapshot (scanfwd3_stage.sh with ROUND=scanseg): the sequence
# split's round instead (--scanseg-check, --scanseg-time, registers, then --scan7-check, --scan6-check,
# golden, --no-ssd --check-only; logs in $OUT/scanseg-logs.tar.gz).
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $(( 107 - ($(date +%s) - T0) )); }
L=$(mktemp -d)
W=$(mktemp -d)
export PATH="$PATH:/usr/local/cuda/bin"
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT") (dirty: $(wc -l < "$W/DIRTY") files); extracted after $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader || true
C="$W/bin/mamba-cuda-check"
if ! "$C" --scan6-hello 2>&1 | grep -q "scan6 hello"; then
  "$C" --scan6-hello 2>&1 | head -3
  echo "== building mamba-cuda-check here (prebuilt does not start)"
  mkdir -p "$W/src" && tar -C "$W/src" -xJf src.tar.xz
  (cd "$W/src" && timeout 80 bash kernels/cuda/device_build_scanfwd3.sh "$W/nv" 16 > "$L/build.log" 2>&1)
  tail -3 "$L/build.log"
  C="$W/nv/mamba-cuda-check"
fi
rc=0
LOGD="$L"
. ./round_steps.sh
if [ "$(cat ROUND 2>/dev/null)" = scanseg ]; then
  # Round of branch scanseg (NOTES.md "Scan forward: sequence split"): the split's checks and
  # timings, the registers of the v6 kernels, then the older checks (every variant, v6, the rest).
  run scansegcheck 30 "$C" --scanseg-check
  fails scansegcheck 20
  grep -E "^cuda-check --scanseg|scanseg (argument|workspace)" "$L/scansegcheck.log"
  echo "worst y errors (scanseg): f32 $(grep -E '^ok .*scan f32.* y ' "$L/scansegcheck.log" | grep -oE 'rel [0-9.e+-]+' | sort -g -k2 | tail -1) bf16 $(grep -E '^ok .*scan bf16.* y ' "$L/scansegcheck.log" | grep -oE 'rel [0-9.e+-]+' | sort -g -k2 | tail -1)"
  echo "checks that split (ws > 0): $(grep -cE '^ok .*\[seg [0-9]+ ws [1-9]' "$L/scansegcheck.log"), without: $(grep -cE '^ok .*\[seg [0-9]+ ws 0\]' "$L/scansegcheck.log")"
  run scansegtime 35 "$C" --scanseg-time
  grep -E "timing failed|copy" "$L/scansegtime.log" | head -3
  grep -E "^  timed" "$L/scansegtime.log"
  command -v cuobjdump > /dev/null && timeout 10 cuobjdump --dump-resource-usage "$C" 2>/dev/null |
    grep -A1 "selective_scan_fwd_v6_kernel" | grep -oE "(Function [^ :]+|REG:[0-9]+|STACK:[0-9]+)" | paste -d' ' - - - |
    grep -E "Li16ELi2E|Li64ELi2E" | head -24
  for t in test_cuda_kernels test_cuda_backend test_cuda_train; do  # staged with GTESTS=...
    [ -x "$W/bin/$t" ] || continue
    f='*'; [ $t = test_cuda_kernels ] && f='CudaKernels.*Scan*'
    run "$t" 25 "$W/bin/$t" --gtest_filter="$f"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests ran" "$L/$t.log" | head -8
  done
  run scan7check 22 "$C" --scan7-check
  fails scan7check 20
  grep -E "^cuda-check --scan7" "$L/scan7check.log"
  run scan6check 15 "$C" --scan6-check
  fails scan6check
  grep -E "^cuda-check --scan6" "$L/scan6check.log"
  if [ -x "$W/bin/mamba-golden" ]; then  # staged without it with GOLDEN=0
    run golden 12 "$W/bin/mamba-golden" --device cuda "$W/golden/selective_scan.safetensors" "$W/golden/mamba1_block.safetensors" \
      "$W/golden/mamba1_lm.safetensors"
    grep -E "passed|failed|FAIL" "$L/golden.log" | tail -4
  fi
  run checks 15 "$C" --no-ssd --check-only
  fails checks
  grep -E "^cuda-check:" "$L/checks.log"
  tar -C "$L" -czf "$OUT/scanseg-logs.tar.gz" . 2>/dev/null
  echo "== done in $(( $(date +%s) - T0 )) s, rc=$rc"
  exit $rc
fi
run scan7check 22 "$C" --scan7-check
fails scan7check 20
grep -E "^cuda-check --scan7" "$L/scan7check.log"
echo "worst y errors per dtype (scan7): f32 $(grep -E '^ok .*scan f32.* y ' "$L/scan7check.log" | grep -oE 'rel [0-9.e+-]+' | sort -g -k2 | tail -1) bf16 $(grep -E '^ok .*scan bf16.* y ' "$L/scan7check.log" | grep -oE 'rel [0-9.e+-]+' | sort -g -k2 | tail -1)"
run scan7time 32 "$C" --scan7-time
grep -E "timing failed|^scan7 best|^microbench|copy" "$L/scan7time.log" | head -8
sed -n '/^floors:/,$p' "$L/scan7time.log" | grep -E "floors|kernel|---|scan" | head -70
if command -v cuobjdump > /dev/null && [ "$(left)" -gt 40 ]; then
  timeout 10 cuobjdump -sass "$C" 2>/dev/null | awk '
    /Function :/ { f = ($0 ~ /selective_scan_fwd_v6_kernel.*nv_bfloat16.*Li16ELi2E/) }
    f { print }' > "$L/sass_scan.txt"
  echo "sass: $(grep -c 'Function :' "$L/sass_scan.txt") functions"
  python3 sass_loops.py "$L/sass_scan.txt" 2>&1 | grep -B1 -A2 "ELb0E" | head -90
fi
run golden 12 "$W/bin/mamba-golden" --device cuda "$W/golden/selective_scan.safetensors" "$W/golden/mamba1_block.safetensors" \
  "$W/golden/mamba1_lm.safetensors"
grep -E "passed|failed|FAIL" "$L/golden.log" | tail -4
run scan6check 15 "$C" --scan6-check
fails scan6check
grep -E "^cuda-check --scan6" "$L/scan6check.log"
run checks 15 "$C" --no-ssd --check-only
fails checks
grep -E "^cuda-check:" "$L/checks.log"
if command -v ncu > /dev/null && [ "$(left)" -gt 15 ]; then
  t=$(( $(left) - 4 ))
  timeout $t ncu -k regex:selective_scan_fwd_v6 --metrics \
smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.sum,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,smsp__warps_eligible.avg.per_cycle_active,smsp__warps_active.avg.per_cycle_active,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,sm__cycles_elapsed.avg,launch__registers_per_thread \
    "$C" --scan7-once > "$L/ncu.txt" 2>&1
  echo "ncu rc=$? (limit $t s)"
  awk '/selective_scan_fwd_v6/ {k++; print "kernel", k-1} /(smsp__|sm__|launch__)/ {printf "  %s %s\n", $1, $NF}' "$L/ncu.txt" | head -160
fi
cp sass_loops.py "$L/" 2>/dev/null
tar -C "$L" -czf "$OUT/scanfwd-logs.tar.gz" . 2>/dev/null
echo "== done in $(( $(date +%s) - T0 )) s, rc=$rc"
exit $rc
