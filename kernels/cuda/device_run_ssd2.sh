#!/usr/bin/env bash
# SSD forward round (branch ssd2) on a GPU machine. Run from a snapshot dir that holds a prebuilt
# mamba-ssd-check (built here by kernels/cuda/ssd2_build.sh) and the sources under src/:
#   OUT=<dir> bash run.sh
# Falls back to building the binary from src/ (nvcc only, 16 jobs) when the prebuilt one does
# not start. Runs `mamba-ssd-check` (= mamba-cuda-check --ssd-only) (every SSD check, then the timings) and, with the
# time left, ncu on the new versions. Summary on stdout, full logs in $OUT. < 110 s.
set -u
OUT="${OUT:-out}"
mkdir -p "$OUT"
# Only one file goes back in $OUT (the rounds return few files): logs in $L, a tar.gz of them at the end.
L="$(mktemp -d)"
export PATH="$PATH:/usr/local/cuda/bin"
t0=$(date +%s)
BIN=./mamba-ssd-check
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
if [ ! -x "$BIN" ] || ldd "$BIN" 2>&1 | grep -q "not found"; then
  echo "== prebuilt binary does not load here ($(ldd "$BIN" 2>&1 | grep 'not found' | head -2 | tr '\n' ' ')): building from src/"
  ( cd src && BUILD=build-ssd2 J=16 timeout 80 bash kernels/cuda/ssd2_build.sh ) 2>&1 | tail -3
  BIN=src/build-ssd2/mamba-ssd-check
fi
left=$(( 100 - ($(date +%s) - t0) ))
echo "== mamba-ssd-check (limit $left s)"
timeout "$left" "$BIN" > "$L/ssd.log" 2>&1
echo "ssd rc=$? after $(( $(date +%s) - t0 )) s"
grep -E "^FAIL|^ssd-check|^ssd summary|^ssd timing" "$L/ssd.log" | head -60
grep -E "time ssd|MAMBA_SSD_SKIP|b1 \(" "$L/ssd.log" | sed -E 's/  floor\/time.*//; s/ \(v2 mma work\)//' | head -200
echo "checks: $(grep -c '^ok' "$L/ssd.log") ok, $(grep -c '^FAIL' "$L/ssd.log") FAIL"
NCU_ARGS=(--section SpeedOfLight --section SchedulerStats --section WarpStateStats --section Occupancy
          --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio")
ncu_show() {  # one line per kernel: duration, no-eligible %, cycles per issue, the main stall reasons
  awk '/ssd_fwd_tc_kernel</ {if (k != "") print k; match($0, /ssd_fwd_tc_kernel<[0-9, ]+>/); k = substr($0, RSTART + 18, RLENGTH - 18); next}
       /issue_stalled_/ {n = $1; sub(/smsp__average_warps_issue_stalled_/, "", n); sub(/_per_issue_active.ratio/, "", n);
                          if ($NF + 0 >= 0.1) k = k " " n "=" $NF; next}
       /Duration/ {k = k " dur=" $NF} /No Eligible/ {k = k " noelig=" $NF "%"} /Warp Cycles Per Issued/ {k = k " cpi=" $NF}
       END {if (k != "") print k}' "$1"
}
left=$(( 104 - ($(date +%s) - t0) ))
if command -v ncu > /dev/null && [ $left -gt 20 ]; then
  echo "== ncu v20 (limit $(( left - 2 )) s)"
  timeout $(( left - 2 )) ncu -k regex:ssd_fwd_tc --launch-skip 0 --launch-count 1 "${NCU_ARGS[@]}" "$BIN" --ssd-once > "$L/ncu_v20.txt" 2>&1
  echo "ncu rc=$?"; ncu_show "$L/ncu_v20.txt"
else
  echo "ncu: $(command -v ncu || echo missing); left $left s"
fi
echo "total $(( $(date +%s) - t0 )) s"
if command -v cuobjdump > /dev/null; then  # SASS of the n128 kernels (opcode counts) for the notes
  cuobjdump -sass "$BIN" > "$L/ssd_sass.txt" 2>/dev/null
  for v in "E v20"; do  # the one tensor-core forward since branch prune
    set -- $v
    awk -v k="ssd_fwd_tc_kernelILi128E$1" '/Function :/{f = index($0, k) > 0; next} f' "$L/ssd_sass.txt" \
      | grep -oE '^ +/\*[0-9a-f]+\*/ +[A-Z0-9_.]+' | awk '{print $2}' | sed 's/\..*//' | sort | uniq -c | sort -rn \
      | head -14 | awk -v n="$2" 'BEGIN{printf "sass %s:", n} {printf " %s %s", $2, $1} END{print ""}'
  done
fi
rm -f "$L/ssd_sass.txt"
tar czf "$OUT/ssd2_logs.tgz" -C "$L" . 2>/dev/null
