#!/usr/bin/env bash
# The run command: installs what it needs, builds, and runs the suite's main job on
# localhost:
#   1. the core: a Mamba-1 and a Mamba-2 language model (../shared/golden) prefill a prompt
#      and decode tokens; the golden check;
#   2. forecasting: trains the Mamba forecaster on ETTh2 (../shared/data) once — cached in
#      var/models/etth2/1 — starts `mamba-forecast serve` on a free port with a bearer
#      token and metrics, waits for health, prints one real forecast through mambactl and
#      the server's metrics, then stops the server with SIGTERM (draining);
#   3. recommendation: starts a private PostgreSQL in var/pg (deploy/local/pg.sh), applies
#      the event store's migrations, ingests a generated RecBole .inter file (with two
#      malformed rows, to show the report) twice — the second run adds nothing — prints
#      the counts; then trains a tiny Mamba4Rec on generated stride walks (cached in
#      var/rec-models/rec/1), serves it with `mamba-rec serve` over the store, prints one
#      recommendation through `mambactl recommend` and stops both servers.
# Everything it writes stays under var/ (git-ignored). Re-running reuses the trained model;
# `rm -rf var/models var/rec-models` retrains.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
SHARED=${MAMBA_SHARED_DIR:-../shared}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target mamba-demo mamba-golden mamba-forecast mambactl mamba-rec

echo "== core: Mamba language models (prefill, then token-by-token decode)"
GOLDEN=${MAMBA_GOLDEN_DIR:-$SHARED/golden}
for m in mamba1_lm mamba2_lm; do
  f="$GOLDEN/$m.safetensors"
  if [ ! -f "$f" ]; then
    echo "run.sh: $f not found (set MAMBA_GOLDEN_DIR to the folder with the golden LM files)" >&2
    exit 1
  fi
  echo "-- $m"
  "$BUILD_DIR/tools/mamba-demo" "$f" --prompt 3,1,4,1,5,9,2,6 --tokens 12
done
echo "-- golden check"
"$BUILD_DIR/tools/mamba-golden" "$GOLDEN"/*.safetensors | grep -E '^golden:|FAIL|ERROR' || true

VAR=var
mkdir -p "$VAR/models/etth2" "$VAR/run"
DATA="$SHARED/data/ETTh2.csv"
FORECAST="$BUILD_DIR/services/forecasting/mamba-forecast"
CTL="$BUILD_DIR/clients/mambactl/mambactl"

echo "== forecasting: the Mamba forecaster on ETTh2 (look-back 96, horizon 96)"
if [ ! -f "$VAR/models/etth2/1/config.json" ]; then
  echo "-- training (once; cached in $VAR/models/etth2/1)"
  rm -rf "$VAR/models/etth2/.incoming"
  "$FORECAST" train --data "$DATA" --protocol ett-hour --seq-len 96 --horizon 96 \
    --out "$VAR/models/etth2/.incoming" --log "$VAR/run/etth2-train.jsonl" \
    --checkpoint-dir "$VAR/run/etth2-checkpoints" --resume
  mv "$VAR/models/etth2/.incoming" "$VAR/models/etth2/1"
else
  echo "-- using the trained model in $VAR/models/etth2/1 (test errors in its metrics.json)"
fi

TOKEN_FILE="$VAR/run/tokens"
[ -f "$TOKEN_FILE" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TOKEN_FILE"; echo >> "$TOKEN_FILE")
rm -f "$VAR/run/forecast.port" "$VAR/run/forecast.metrics-port"
"$FORECAST" serve --host 127.0.0.1 --port 0 --port-file "$VAR/run/forecast.port" \
  --metrics-port -1 --metrics-port-file "$VAR/run/forecast.metrics-port" \
  --model-root "$VAR/models" --auth-token-file "$TOKEN_FILE" --drain-seconds 1 \
  2> "$VAR/run/forecast-server.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -s "$VAR/run/forecast.port" ] && break; sleep 0.1; done
PORT=$(cat "$VAR/run/forecast.port")
ADDR="127.0.0.1:$PORT"
for _ in $(seq 1 200); do "$CTL" --addr "$ADDR" health >/dev/null 2>&1 && break; sleep 0.1; done
echo "-- server on $ADDR: $("$CTL" --addr "$ADDR" health)"
echo "-- mambactl forecast --csv ETTh2.csv --horizon 96 (first 12 of 96 rows)"
"$CTL" --addr "$ADDR" --token-file "$TOKEN_FILE" forecast --csv "$DATA" --model etth2 --horizon 96 \
  --quantiles 0.1,0.9 --output table | sed -n '1,14p' 
if [ -s "$VAR/run/forecast.metrics-port" ]; then
  echo "-- metrics (http://127.0.0.1:$(cat "$VAR/run/forecast.metrics-port")/metrics, excerpt)"
  curl -s "http://127.0.0.1:$(cat "$VAR/run/forecast.metrics-port")/metrics" | grep -E '^mamba_requests_total|^mamba_model_version' || true
fi
kill -TERM $SERVER
wait $SERVER && echo "-- server drained and stopped (exit 0)"
trap - EXIT

echo "== recommendation: the event store on a private PostgreSQL (var/pg)"
REC="$BUILD_DIR/services/recommendation/mamba-rec"
DB=$(bash deploy/local/pg.sh start "$VAR/pg")
trap 'bash deploy/local/pg.sh stop "$VAR/pg" || true' EXIT
echo "-- server: $DB"
"$REC" migrate --db "$DB"
INTER="$VAR/run/synthetic.inter"
awk 'BEGIN { srand(1); print "user_id:token\titem_id:token\trating:float\ttimestamp:float";
             for (r = 0; r < 20000; r++) printf "u%d\ti%d\t%d\t%d\n", int(rand() * 300), int(rand() * 800), 1 + int(rand() * 5), 1700000000 + r;
             print "u1\ti1\tfive\t1800000000"; print "u2\ti2\t3" }' > "$INTER"
echo "-- mamba-rec ingest (first time)"
"$REC" ingest --db "$DB" --inter "$INTER"
echo "-- mamba-rec ingest (again: nothing new)"
"$REC" ingest --db "$DB" --inter "$INTER"
"$REC" stats --db "$DB"

echo "== recommendation: a tiny Mamba4Rec served over the event store"
WALKS="$VAR/run/walks.inter"
# Stride walks (synthetic.h), renamed w<n>/j<n> so they stay apart from the random u/i rows.
"$REC" generate --out "$WALKS.tmp" --users 200 --events 20 --items 100 --seed 1
sed -e '2,$s/^u/w/' -e '2,$s/\ti/\tj/' "$WALKS.tmp" > "$WALKS" && rm -f "$WALKS.tmp"
"$REC" ingest --db "$DB" --inter "$WALKS" | tail -n 2
if [ ! -f "$VAR/rec-models/rec/1/config.json" ]; then
  echo "-- training (once; cached in $VAR/rec-models/rec/1)"
  mkdir -p "$VAR/rec-models/rec"
  "$REC" train --inter "$WALKS" --out "$VAR/rec-models/rec/1" --d-model 32 --d-state 16 --max-seq-len 20 \
    --epochs 4 --batch 128 --lr 0.01 --quiet | tail -n 1
else
  echo "-- using the trained model in $VAR/rec-models/rec/1"
fi
rm -f "$VAR/run/rec.port"
"$REC" serve --db "$DB" --model-root "$VAR/rec-models" --host 127.0.0.1 --port 0 --port-file "$VAR/run/rec.port" \
  --auth-token-file "$TOKEN_FILE" --drain-seconds 0.5 --poll-seconds 0 2> "$VAR/run/rec-server.log" &
REC_SERVER=$!
trap 'kill -TERM $REC_SERVER 2>/dev/null || true; wait $REC_SERVER 2>/dev/null || true; bash deploy/local/pg.sh stop "$VAR/pg" || true' EXIT
for _ in $(seq 1 200); do [ -s "$VAR/run/rec.port" ] && break; sleep 0.1; done
REC_ADDR="127.0.0.1:$(cat "$VAR/run/rec.port")"
for _ in $(seq 1 200); do "$CTL" --addr "$REC_ADDR" health >/dev/null 2>&1 && break; sleep 0.1; done
echo "-- server on $REC_ADDR: $("$CTL" --addr "$REC_ADDR" health)"
echo "-- mambactl recommend --user w1 --k 10"
"$CTL" --addr "$REC_ADDR" --token-file "$TOKEN_FILE" recommend --model rec --user w1 --k 10
kill -TERM $REC_SERVER
wait $REC_SERVER && echo "-- server drained and stopped (exit 0)"
bash deploy/local/pg.sh stop "$VAR/pg"
trap - EXIT
