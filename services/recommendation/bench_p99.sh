#!/usr/bin/env bash
# Recommendation latency at 1/8/32 streams and per-request CPU, end to end on this machine
# (issue 6's speed target: p99 < 10 ms for top-10, 200-item history, 100k items, 32 streams).
#
#   services/recommendation/bench_p99.sh [--model-dir DIR] [--work DIR] [--build DIR]
#                                        [--duration-s S] [--levels 1,8,32] [--keep]
#                                        [--serve-args "ARGS"]   (extra `mamba-rec serve` flags)
#                                        [--omp-threads N]       (the server's OMP_NUM_THREADS, 2)
#
# Does the whole setup and tears it down again:
#   1. a private PostgreSQL (deploy/local/pg.sh, fsync off) in WORK/pg;
#   2. `mamba-rec generate` 1,000 stride walks of 200 events over exactly 100,000 items
#      (--cover-all; 212,917 events, 1,066 users) and `mamba-rec ingest` them;
#   3. a Mamba4Rec model (d_model 64, 1 layer, d_state 32, max_seq_len 200) trained for 2
#      steps (speed does not depend on the weights), or the model directory given with
#      --model-dir (DIR holds config.json ...; it is linked as WORK/models/rec100k/1);
#   4. `mamba-rec serve` (OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 unless --omp-threads,
#      its default batcher, unless --serve-args);
#   5. `mambactl bench recommend` (top-10) for Recommend (64 users, cached states after the
#      first call), RecommendFromHistory repeat (the same 200-item history per stream) and
#      fresh (a new 200-item history per call), one mambactl run per level;
#   6. per level the CPU seconds of the server, of every PostgreSQL process (live backends
#      plus what the postmaster reaped) and of the client, divided by the RPCs the server
#      answered in that time (its mamba_requests_total): CPU per request does not depend on
#      the load; latencies do, so the load average is printed with each row;
#   7. stops the server and PostgreSQL, removes WORK unless --keep.
# Prints one table at the end. About 3-4 minutes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
work=
model_dir=
duration=4
levels=1,8,32
keep=0
serve_args=
omp=2
while [ $# -gt 0 ]; do
  case $1 in
    --model-dir) model_dir=$(cd "$2" && pwd); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --duration-s) duration=$2; shift 2 ;;
    --levels) levels=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --serve-args) serve_args=$2; shift 2 ;;
    --omp-threads) omp=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench_p99.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
R=$build/services/recommendation/mamba-rec
CTL=$build/clients/mambactl/mambactl
for b in "$R" "$CTL"; do
  [ -x "$b" ] || { echo "bench_p99.sh: $b is missing (cmake --build build --target mamba-rec mambactl)" >&2; exit 1; }
done
[ -n "$work" ] || work=$(mktemp -d /tmp/rec-bench-p99.XXXXXX)
mkdir -p "$work"
work=$(cd "$work" && pwd)
chmod 755 "$work"  # pg.sh runs the server as another user when we are root
hz=$(getconf CLK_TCK)

server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  "$root/deploy/local/pg.sh" stop "$work/pg" >/dev/null 2>&1 || true
  if [ "$keep" = 0 ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

log "PostgreSQL in $work/pg"
url=$(MAMBA_PG_NOSYNC=1 "$root/deploy/local/pg.sh" start "$work/pg" | tail -n 1)
pg_pid=$(head -n 1 "$work/pg/data/postmaster.pid")

log "generate + ingest (100k items)"
"$R" generate --out "$work/walks.inter" --users 1000 --events 200 --items 100000 --cover-all >/dev/null
"$R" ingest --db "$url" --inter "$work/walks.inter" >&2

mkdir -p "$work/models/rec100k"
if [ -n "$model_dir" ]; then
  ln -s "$model_dir" "$work/models/rec100k/1"
  log "model: $model_dir"
else
  log "train (2 steps: a model for timing only)"
  OMP_NUM_THREADS=2 "$R" train --inter "$work/walks.inter" --out "$work/models/rec100k/1" --max-seq-len 200 \
    --max-steps 2 --batch 32 --epochs 1 --patience 0 --quiet >&2
fi

log "serve"
OMP_WAIT_POLICY=passive OMP_NUM_THREADS=$omp "$R" serve --db "$url" --model-root "$work/models" --host 127.0.0.1 \
  --port 0 --port-file "$work/port" --metrics-port -1 --metrics-port-file "$work/mport" --poll-seconds 0 \
  --log-level warn $serve_args >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  if [ -s "$work/port" ] && "$CTL" --addr "127.0.0.1:$(cat "$work/port")" health >/dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done
addr=127.0.0.1:$(cat "$work/port")
mport=$(cat "$work/mport")

# CPU ticks of a process (utime + stime), of its reaped children too when $2 = 1.
ticks() { awk -v c="${2:-0}" '{ s = $14 + $15; if (c) s += $16 + $17; print s }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
  local sum
  sum=$(ticks "$pg_pid" 1)
  for p in $(pgrep -P "$pg_pid" || true); do sum=$((sum + $(ticks "$p"))); done
  echo "$sum"
}
served() {  # Recommend + RecommendFromHistory answered so far
  curl -s "http://127.0.0.1:$mport/metrics" |
    awk '/^mamba_requests_total/ && /method="Recommend(FromHistory)?"/ { s += $NF } END { printf "%d\n", s }'
}

batches() {  # "requests batches" the recommend scoring batcher has run so far
  curl -s "http://127.0.0.1:$mport/metrics" |
    awk '/^mamba_batch_size_sum/ && /batcher="recommend"/ { s = $NF } /^mamba_batch_size_count/ && /batcher="recommend"/ { c = $NF }
         END { printf "%d %d\n", s, c }'
}

users=$(seq -s, -f 'u%g' 1 64)
rows=()
run_mode() {  # name, mambactl arguments...
  local name=$1
  shift
  local n
  for n in ${levels//,/ }; do
    local load s0 p0 r0 t0 s1 p1 r1 out ccpu b0 b1
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    s0=$(ticks "$server_pid"); p0=$(pg_ticks); r0=$(served); b0=$(batches)
    out=$( { /usr/bin/time -f 'CLIENTCPU %U %S' "$CTL" --addr "$addr" -o csv bench recommend --k 10 "$@" \
               --concurrency "$n" --duration-s "$duration" --window-s 1 --max-windows 8 --warmup-s 1 -q; } 2>&1)
    s1=$(ticks "$server_pid"); p1=$(pg_ticks); r1=$(served); b1=$(batches)
    ccpu=$(echo "$out" | awk '/^CLIENTCPU/ { print $2 + $3 }')
    # csv: concurrency,windows,stable,requests,throughput_rps,p50_ms,p90_ms,p95_ms,p99_ms,errors
    local line
    line=$(echo "$out" | awk -F, -v n="$n" '$1 == n && NF >= 10 { print; exit }')
    [ -n "$line" ] || { echo "$out" >&2; exit 1; }
    rows+=("$(awk -F, -v name="$name" -v s="$((s1 - s0))" -v p="$((p1 - p0))" -v c="$ccpu" -v r="$((r1 - r0))" \
      -v hz="$hz" -v load="$load" -v b0="$b0" -v b1="$b1" '{
        rq = r > 0 ? r : 1
        su = s / hz / rq * 1e6; pu = p / hz / rq * 1e6; cu = c / rq * 1e6
        split(b0, x, " "); split(b1, y, " "); nb = y[2] - x[2]
        mb = nb > 0 ? sprintf("%.1f", (y[1] - x[1]) / nb) : "-"
        printf "| %s | %d | %.1f | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f | %s | %s | %s |",
          name, $1, $5, $6, $8, $9, su, pu, cu, su + pu + cu, mb, $10, load }' <<<"$line")")
    log "${rows[-1]}"
  done
}

log "bench: Recommend (64 users)"
"$CTL" --addr "$addr" recommend --user u1 --k 10 >/dev/null  # first call: the model is loaded
run_mode "Recommend, cached states" --user "$users"
log "bench: RecommendFromHistory repeat"
run_mode "RecommendFromHistory, repeat" --history-mode repeat --history-len 200
log "bench: RecommendFromHistory fresh"
run_mode "RecommendFromHistory, fresh" --history-mode fresh --history-len 200

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), model $( [ -n "$model_dir" ] && echo "$model_dir" || echo 'trained 2 steps')"
echo "server: OMP_NUM_THREADS=$omp, flags: ${serve_args:-(defaults)}"
echo "CPU per request = (server + PostgreSQL + client CPU seconds) / RPCs answered, in us"
echo
echo "mean batch = requests per scoring batch run by the server (its mamba_batch_size{batcher=\"recommend\"})"
echo
echo "| path | streams | req/s | p50 ms | p95 ms | p99 ms | server us | postgres us | client us | total us | mean batch | errors | load avg before |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
printf '%s\n' "${rows[@]}"
# Cold windows prefilled and the batched prefills that ran them (absent on builds before
# batched prefills).
curl -s "http://127.0.0.1:$mport/metrics" | awk '/^mamba_rec_prefills_total / { p = $NF } /^mamba_rec_prefill_batches_total / { b = $NF }
  END { if (b > 0) printf "\ncold prefills: %d windows in %d batched prefills (%.2f per batch)\n", p, b, p / b }'
