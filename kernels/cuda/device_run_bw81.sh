#!/usr/bin/env bash
# Device round of branch bw81 (staged by kernels/cuda/bw81_stage.sh): cd SNAPSHOT && OUT=<dir> bash run.sh
# The prebuilt mamba-cuda-check --bw81 in three processes (MAMBA_BW81_PARTS=conv, ssu, ssd), each under
# its own time limit (the whole < 110 s): checks of every kept version against the CPU references,
# the removed versions' errors, then 1-call / back-to-back / graph timings and the table. Summary on
# stdout; the full logs in ONE file, $OUT/bw81-logs.tar.gz.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
T0=$(date +%s)
L=$(mktemp -d)
trap 'tar -C "$L" -czf "$OUT/bw81-logs.tar.gz" . 2>/dev/null' EXIT
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT") (dirty kernel files: $(wc -l < "$W/DIRTY")); extracted after $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used --format=csv,noheader || true
C="$W/bin/mamba-cuda-check"
rc=0
for part in conv:34 ssu:40 ssd:22; do
  name=${part%%:*}; lim=${part##*:}
  left=$(( 107 - ($(date +%s) - T0) ))
  [ "$lim" -gt "$left" ] && lim=$left
  [ "$lim" -lt 5 ] && { echo "== $name: no time left"; rc=1; continue; }
  echo "== mamba-cuda-check --bw81, part $name (limit $lim s)"
  MAMBA_BW81_PARTS=$name timeout -k 3 "$lim" "$C" --bw81 > "$L/bw81_$name.log" 2>&1
  r=$?; [ $r = 0 ] || rc=$r
  grep -E "^FAIL|^cuda-check|timing failed|exception|^copy 1 GiB" "$L/bw81_$name.log" | head -20
  sed -n '/^bw81 table/,/^cuda-check/p' "$L/bw81_$name.log" | grep -v "^cuda-check"
  [ $r = 0 ] || tail -3 "$L/bw81_$name.log"
  echo "$name: $(grep -c '^ok' "$L/bw81_$name.log") ok, $(grep -c '^FAIL' "$L/bw81_$name.log") FAIL; rc=$r; t=$(( $(date +%s) - T0 )) s"
done
exit $rc
