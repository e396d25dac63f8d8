#!/usr/bin/env bash
# Conv1d forward and Mamba-1 state update round (branch bw80) on a GPU machine, from the repository root:
#   OUT=<dir> [BIN=<dir with a prebuilt mamba-cuda-check>] bash kernels/cuda/device_run_bw80.sh
# Uses $BIN/mamba-cuda-check when it starts there, else builds it (kernels/cuda/device_build_bw80.sh).
# Then `mamba-cuda-check --bw80`: checks of every kept version against the CPU reference, timings of
# each, the floors table. Summary on stdout; the full log goes to ONE file, $OUT/bw80-logs.tar.gz.
# Must finish in < 110 s.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device-bw80/out}"
mkdir -p "$OUT"
FINAL_OUT="$OUT"
OUT="$(mktemp -d)"
trap 'tar -C "$OUT" -czf "$FINAL_OUT/bw80-logs.tar.gz" . 2>/dev/null' EXIT
t0=$(date +%s)
BIN="${BIN:-}"
export PATH="$PATH:/usr/local/cuda/bin"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used --format=csv,noheader
usable() { [ -x "$1/mamba-cuda-check" ] && ! ldd "$1/mamba-cuda-check" 2>&1 | grep -q "not found\|version .GLIBC"; }
if [ -z "$BIN" ] || ! usable "$BIN"; then
  echo "== prebuilt binary not usable here ($BIN): building"
  BUILD=build-device-bw80 JOBS=16 timeout 75 bash kernels/cuda/device_build_bw80.sh > "$OUT/build.log" 2>&1
  echo "build rc=$? in $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/build.log"
  BIN=build-device-bw80
fi
left=$(( 106 - ($(date +%s) - t0) ))
echo "== mamba-cuda-check --bw80 (limit $left s)"
timeout $left "$BIN/mamba-cuda-check" --bw80 > "$OUT/bw80.log" 2>&1
rc=$?
grep -E "^FAIL|^cuda-check|timing failed|exception|error" "$OUT/bw80.log" | head -40
sed -n '/^floors:/,/^cuda-check/p' "$OUT/bw80.log"
echo "bw80 checks: $(grep -c '^ok' "$OUT/bw80.log") ok, $(grep -c '^FAIL' "$OUT/bw80.log") FAIL; rc=$rc; t=$(( $(date +%s) - t0 )) s"
[ $rc = 0 ]
