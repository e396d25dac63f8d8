#!/usr/bin/env bash
# trainkern device round 2: build (nvcc, sm_90), check every training kernel against the CPU
# reference, then time them (--bench). Two files in $OUT: run.log, build.log.
cd "$(dirname "$0")"
OUT="${OUT:-$PWD/out}"; mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
OUT=/tmp/tk-logs BUILD=/tmp/tk-build timeout -k 3 112 bash kernels/cuda/device_run_train.sh --bench > "$OUT/run.log" 2>&1
rc=$?
cp /tmp/tk-logs/build.log "$OUT/build.log" 2>/dev/null
grep -vE "^PASS" "$OUT/run.log" | head -150
echo "PASS lines: $(grep -c '^PASS' "$OUT/run.log")"
grep -E "^PASS" "$OUT/run.log" | head -120
echo "trainkern rc=$rc"
exit $rc
