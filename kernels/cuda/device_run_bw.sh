#!/usr/bin/env bash
# Memory-bound kernel round (branches bwkern, bw80) on a GPU machine, from the repository root:
#   OUT=<dir> [BIN=<dir with prebuilt binaries>] bash kernels/cuda/device_run_bw.sh [--bw80]
# Uses the prebuilt mamba-cuda-check / mamba-cuda-train-check in $BIN when they start there,
# else builds them (kernels/cuda/device_build_bw.sh; the preamble is device_common.sh).
# Default: `mamba-cuda-check --bw` (state updates and conv1d forward: checks under every version,
# timings, floors table), `mamba-cuda-train-check --bench` (training-kernel checks, then
# timings) and, where ncu is found (SKIP_NCU unset), its sections of those kernels; logs in
# $OUT/bwkern-logs.tar.gz.
# --bw80: only `mamba-cuda-check --bw80` in three processes (MAMBA_BW80_PARTS=ssu, conv, ssd, each
# under its own limit, so a hang in one leaves the others their time), needing only
# mamba-cuda-check; logs in $OUT/bw80-logs.tar.gz.
# Everything needed goes to stdout. Must finish in < 110 s.
set -u
. "$(dirname "$0")/device_common.sh"
if [ "${1:-}" = --bw80 ]; then
  device_begin bw80
  device_bins mamba-cuda-check
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
  exit
fi
device_begin bwkern
device_bins mamba-cuda-check mamba-cuda-train-check
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
