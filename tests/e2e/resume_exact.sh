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
grep -q "resumed from step 20" "$work/resumed.out" || { cat "$work/resumed.out"; exit 1; }
# The (step, loss) of every training step: steps 21..40 of the uninterrupted run against
# the last 20 of the resumed log (timing fields differ between runs and are left out).
steps() { grep '"samples_per_s"' "$1" | grep -o '"loss":[^,}]*\|"step":[0-9]*' | paste -d' ' - - | tail -n 20; }
steps "$work/full.jsonl" > "$work/a"
steps "$work/resumed.jsonl" > "$work/b"
[ "$(wc -l < "$work/a")" = 20 ] || { echo "expected 20 training lines"; cat "$work/a"; exit 1; }
if ! diff "$work/a" "$work/b"; then
  echo "resumed loss curve differs from the uninterrupted run"
  exit 1
fi
echo "resume: steps 21-40 identical to the uninterrupted run ($(wc -l < "$work/a") lines)"
