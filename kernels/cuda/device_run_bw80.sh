#!/usr/bin/env bash
# Conv1d forward and Mamba-1 state update round (branch bw80) on a GPU machine, from the repository root:
#   OUT=<dir> [BIN=<dir with a prebuilt mamba-cuda-check>] bash kernels/cuda/device_run_bw80.sh
# Uses $BIN/mamba-cuda-check when it starts there, else builds it (kernels/cuda/device_build_bw80.sh).
# Then `mamba-cuda-check --bw80` in three processes (MAMBA_BW80_PARTS=ssu, conv, ssd): checks of every kept version against the CPU reference, timings of
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
# Each part in its own process under its own limit (a hang in one leaves the others their time).
rc=0
for part in ssu:36 conv:40 ssd:18; do
  name=${part%%:*}; lim=${part##*:}
  left=$(( 107 - ($(date +%s) - t0) ))
  [ $lim -gt $left ] && lim=$left
  [ $lim -lt 5 ] && { echo "== $name: no time left"; rc=1; continue; }
  echo "== mamba-cuda-check --bw80, part $name (limit $lim s)"
  MAMBA_BW80_PARTS=$name timeout -k 3 $lim "$BIN/mamba-cuda-check" --bw80 > "$OUT/bw80_$name.log" 2>&1
  r=$?; [ $r = 0 ] || rc=$r
  grep -E "^FAIL|^cuda-check|timing failed|exception" "$OUT/bw80_$name.log" | head -30
  sed -n '/^floors:/,/^cuda-check/p' "$OUT/bw80_$name.log" | grep -v "^cuda-check"
  echo "$name: $(grep -c '^ok' "$OUT/bw80_$name.log") ok, $(grep -c '^FAIL' "$OUT/bw80_$name.log") FAIL; rc=$r; t=$(( $(date +%s) - t0 )) s"
done
[ $rc = 0 ]
