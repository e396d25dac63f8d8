#!/usr/bin/env bash
# End to end: mambactl against a real `mamba-forecast serve`.
#   mambactl_smoke.sh PATH/TO/mamba-forecast PATH/TO/mambactl DATA.csv WORK_DIR
# Trains a tiny model, serves it on a free port (--port 0 --port-file), waits for
# health, then: forecast (96 rows), forecast --model nosuch (exit code of NOT_FOUND), a
# call without the bearer token (UNAUTHENTICATED), models, model, a short bench, and
# SIGTERM (the server must exit 0).
# Exits 77 (skipped) when the data file is missing.
set -euo pipefail
forecast_bin=$1
ctl=$2
data=$3
work=$4
if [ ! -f "$data" ]; then
  echo "SKIP: no data file $data"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"

server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  echo "---- server log (tail)"; tail -n 20 "$work/server.log" 2>/dev/null || true
  exit 1
}

echo "== train"
"$forecast_bin" train --data "$data" --protocol ett-hour --epochs 1 --max-windows 256 --d-model 16 --layers 1 \
  --out "$work/root/etth2/1" --quiet > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "training"; }

echo "== serve"
printf '# smoke-test token\nsmoke-secret\n' > "$work/tokens.txt"
"$forecast_bin" serve --model-root "$work/root" --port 0 --port-file "$work/port" --metrics-port 0 \
  --auth-token-file "$work/tokens.txt" --drain-seconds 0 --grace-seconds 5 > "$work/server.log" 2>&1 &
server_pid=$!

# Bounded wait: the port file, then SERVING (the model is loaded).
status=
for _ in $(seq 120); do
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited early"
  if [ -s "$work/port" ]; then
    status=$("$ctl" --addr "127.0.0.1:$(cat "$work/port")" --timeout-ms 1000 health 2>/dev/null) && break
  fi
  sleep 0.25
done
[ "$status" = SERVING ] || fail "the server did not become SERVING (last: '$status')"
addr="127.0.0.1:$(cat "$work/port")"
[ "$(MAMBA_ADDR=$addr "$ctl" health)" = SERVING ] || fail "MAMBA_ADDR is not used"
ctl_bin=$ctl
ctl=("$ctl" --addr "$addr" --timeout-ms 20000 --token-file "$work/tokens.txt")
echo "server at $addr: $status"

echo "== forecast"
"${ctl[@]}" forecast --csv "$data" --horizon 96 > "$work/forecast.txt" || fail "forecast (table) exit $?"
head -n 4 "$work/forecast.txt"
# caption + header + 96 rows
[ "$(wc -l < "$work/forecast.txt")" = 98 ] || fail "table forecast: expected 98 lines, got $(wc -l < "$work/forecast.txt")"
"${ctl[@]}" --output csv forecast --csv "$data" --horizon 96 --quantiles 0.1,0.9 > "$work/forecast.csv" ||
  fail "forecast (csv) exit $?"
[ "$(tail -n +2 "$work/forecast.csv" | wc -l)" = 96 ] || fail "csv forecast: expected 96 rows"
head -n 1 "$work/forecast.csv" | grep -q '^date,HUFL,HUFL_q0.1,HUFL_q0.9,' || fail "csv header: $(head -n 1 "$work/forecast.csv")"
"${ctl[@]}" --output json forecast --csv "$data" --horizon 24 --series-id s1 > "$work/forecast.json" ||
  fail "forecast (json) exit $?"
grep -q '"series_id": "s1"' "$work/forecast.json" || fail "json forecast lacks the series id"

echo "== errors"
set +e
"${ctl[@]}" forecast --csv "$data" --model nosuch > /dev/null 2> "$work/nosuch.err"
rc=$?
set -e
cat "$work/nosuch.err"
[ "$rc" = 7 ] || fail "--model nosuch: expected exit 7 (2 + NOT_FOUND), got $rc"
grep -q '^error: NOT_FOUND: ' "$work/nosuch.err" || fail "--model nosuch: no 'error: NOT_FOUND:' line"

set +e
"$ctl_bin" --addr "$addr" models > /dev/null 2> "$work/noauth.err"
rc=$?
set -e
cat "$work/noauth.err"
[ "$rc" = 18 ] || fail "no token: expected exit 18 (2 + UNAUTHENTICATED), got $rc"
grep -q '^error: UNAUTHENTICATED: ' "$work/noauth.err" || fail "no token: no 'error: UNAUTHENTICATED:' line"
"$ctl_bin" --addr "$addr" --token smoke-secret models > /dev/null || fail "--token: exit $?"

echo "== models / model"
"${ctl[@]}" models | tee "$work/models.txt"
grep -q '^etth2 ' "$work/models.txt" || fail "models does not list etth2"
"${ctl[@]}" --output json model --model etth2 > "$work/model.json" || fail "model exit $?"
grep -q '"seq_len": 96' "$work/model.json" || fail "model: no seq_len in the config"

echo "== bench"
"${ctl[@]}" bench forecast --csv "$data" --concurrency 1,4 --duration-s 2 --window-s 0.5 --max-windows 4 --quiet \
  > "$work/bench.txt" || fail "bench exit $?"
cat "$work/bench.txt"
grep -q '^concurrency  *windows  *stable  *requests  *throughput_rps  *p50_ms  *p90_ms  *p95_ms  *p99_ms  *errors' \
  "$work/bench.txt" || fail "bench: no table header"
grep -Eq '^ +1 +[0-9]+ ' "$work/bench.txt" || fail "bench: no row for concurrency 1"
grep -Eq '^ +4 +[0-9]+ ' "$work/bench.txt" || fail "bench: no row for concurrency 4"
grep -q '^concurrency 4: ' "$work/bench.txt" || fail "bench: no summary line for concurrency 4"

echo "== SIGTERM"
kill -TERM "$server_pid"
set +e
wait "$server_pid"
rc=$?
set -e
server_pid=
[ "$rc" = 0 ] || fail "the server exited $rc after SIGTERM"
echo "mambactl smoke: OK"
