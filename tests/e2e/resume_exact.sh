#!/usr/bin/env bash
# A training run killed part-way and resumed from its last checkpoint follows exactly the
# loss curve of an uninterrupted run (same data order, optimiser state and RNG).
#   resume_exact.sh PATH/TO/mamba-train-synthetic WORK_DIR
set -euo pipefail
bin=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
common=(selective-copy --seq-len 24 --tokens 4 --steps 40 --batch 8 --d-model 32 --eval 16 --threads 1 --seed 5)
"$bin" "${common[@]}" --log "$work/full.jsonl" > "$work/full.out"
set +e
"$bin" "${common[@]}" --log "$work/resumed.jsonl" --checkpoint-dir "$work/ckpt" --checkpoint-every 10 --stop-after 25 \
  > "$work/killed.out"
rc=$?
set -e
[ "$rc" = 3 ] || { echo "expected the interrupted run to stop with status 3, got $rc"; exit 1; }
"$bin" "${common[@]}" --log "$work/resumed.jsonl" --checkpoint-dir "$work/ckpt" --checkpoint-every 10 --resume \
  > "$work/resumed.out"
grep -q "resumed from .*checkpoint-20 at step 20" "$work/resumed.out" || { cat "$work/resumed.out"; exit 1; }
# Steps 21..40 of the uninterrupted run against the resumed run's last 20 lines.
tail -n 20 "$work/full.jsonl" > "$work/a"
tail -n 20 "$work/resumed.jsonl" > "$work/b"
if ! diff "$work/a" "$work/b"; then
  echo "resumed loss curve differs from the uninterrupted run"
  exit 1
fi
echo "resume: steps 21-40 identical to the uninterrupted run ($(wc -l < "$work/a") lines)"
