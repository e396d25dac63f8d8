#!/usr/bin/env bash
# Memory-bound kernel round (branch bwkern) on a GPU machine, from the repository root:
#   OUT=<dir> [BIN=<dir with prebuilt binaries>] bash kernels/cuda/device_run_bw.sh
# Uses the prebuilt mamba-cuda-check / mamba-cuda-train-check in $BIN when they start there,
# else builds them (kernels/cuda/device_build_bw.sh). Then: `mamba-cuda-check --bw` (state
# updates and conv1d forward: checks under every version, timings, floors table) and
# `mamba-cuda-train-check --bench` (training-kernel checks, then timings). Everything needed
# goes to stdout; the full logs go to ONE file, $OUT/bwkern-logs.tar.gz (the device round returns
# few files). Must finish in < 110 s.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device-bw/out}"
mkdir -p "$OUT"
FINAL_OUT="$OUT"
OUT="$(mktemp -d)"
trap 'tar -C "$OUT" -czf "$FINAL_OUT/bwkern-logs.tar.gz" . 2>/dev/null' EXIT
t0=$(date +%s)
BIN="${BIN:-}"
export PATH="$PATH:/usr/local/cuda/bin"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used --format=csv,noheader
usable() { [ -x "$1/mamba-cuda-check" ] && [ -x "$1/mamba-cuda-train-check" ] && ! ldd "$1/mamba-cuda-check" 2>&1 | grep -q "not found\|version .GLIBC"; }
if [ -z "$BIN" ] || ! usable "$BIN"; then
  echo "== prebuilt binaries not usable here ($BIN): building"
  BUILD=build-device-bw JOBS=16 timeout 80 bash kernels/cuda/device_build_bw.sh > "$OUT/build.log" 2>&1
  echo "build rc=$? in $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/build.log"
  BIN=build-device-bw
fi
left=$(( 108 - ($(date +%s) - t0) ))
echo "== mamba-cuda-check --bw (limit $(( left / 2 )) s)"
timeout $(( left / 2 )) "$BIN/mamba-cuda-check" --bw > "$OUT/bw.log" 2>&1
rc1=$?
grep -E "^FAIL|^cuda-check|timing failed|exception" "$OUT/bw.log" | head -40
sed -n '/^floors:/,/^cuda-check/p' "$OUT/bw.log"
echo "bw checks: $(grep -c '^ok' "$OUT/bw.log") ok, $(grep -c '^FAIL' "$OUT/bw.log") FAIL; rc=$rc1; t=$(( $(date +%s) - t0 )) s"
left=$(( 108 - ($(date +%s) - t0) ))
echo "== mamba-cuda-train-check --bench (limit $(( left - 2 )) s)"
timeout $(( left - 2 )) "$BIN/mamba-cuda-train-check" --bench > "$OUT/train.log" 2>&1
rc2=$?
grep -E "^FAIL|train-check:|exception" "$OUT/train.log" | head -40
grep -E "^bench" "$OUT/train.log"
echo "train rc=$rc2; t=$(( $(date +%s) - t0 )) s"
left=$(( 106 - ($(date +%s) - t0) ))
if [ -z "${SKIP_NCU:-}" ] && command -v ncu > /dev/null && [ $left -gt 20 ]; then
  SEC=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis)
  echo "== ncu (limit $(( left / 2 - 1 )) s each)"
  timeout $(( left / 2 - 1 )) ncu -k regex:"state_update_v[56]|conv1d_fwd_v[45]" "${SEC[@]}" "$BIN/mamba-cuda-check" --bw-once > "$OUT/ncu_bw.txt" 2>&1
  echo "ncu bw rc=$?"
  timeout $(( left / 2 - 1 )) ncu -k regex:"gated_rms_norm_bwd|conv1d_bwd" "${SEC[@]}" "$BIN/mamba-cuda-train-check" --once > "$OUT/ncu_train.txt" 2>&1
  echo "ncu train rc=$?"
  grep -hE "^  [a-zA-Z_].*\(|DRAM Throughput|Memory Throughput|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Waves Per SM" \
    "$OUT/ncu_bw.txt" "$OUT/ncu_train.txt" | sed -E 's/^ +//' | cut -c1-110 | head -80
else
  echo "ncu: $(command -v ncu || echo missing); left $left s"
fi
echo "total $(( $(date +%s) - t0 )) s"
[ $rc1 = 0 ] && [ $rc2 = 0 ]
