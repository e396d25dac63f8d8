# Sourced by the device round, kernels/cuda/device_run.sh:
#   LOGD=<log dir>; left() { echo <seconds left>; }; rc=0; . tools/device/round_steps.sh
# run NAME TIMEOUT CMD...: runs CMD under min(TIMEOUT, left) seconds with its output in
# $LOGD/NAME.log, prints "== NAME rc=R (S s)" and on failure the log's last 4 lines; a step that
# no longer fits the budget is skipped. Any failure or skip sets rc=1. Returns CMD's status.
run() {
  local name="$1" t="$2"; shift 2
  local l; l=$(left)
  if [ "$l" -lt 6 ]; then echo "== $name SKIPPED (time budget)"; rc=1; return 1; fi
  [ "$t" -gt "$l" ] && t=$l
  local s; s=$(date +%s)
  timeout -k 2 "$t" "$@" > "$LOGD/$name.log" 2>&1
  local r=$?
  echo "== $name rc=$r ($(( $(date +%s) - s )) s, limit $t s)"
  [ "$r" = 0 ] || { rc=1; tail -4 "$LOGD/$name.log"; }
  return $r
}
# fails NAME [N]: the first N (12) FAIL lines of a step's log.
fails() { grep -E "^FAIL|FAIL " "$LOGD/$1.log" | head -"${2:-12}"; }
