#!/usr/bin/env bash
# Device round of the GPU trainer (staged by tools/device/train_lm_cuda_stage.sh):
#   cd SNAPSHOT && OUT=<dir> bash run.sh            (ROUND=1 | 2, default: the file ROUND, else 1)
# 1. correctness: mamba-train-lm-cuda --check --dtype both (the tiny awkward shape, and an
#    aligned one) for the default and the A/B variants, and the GoogleTest binary test_cuda_train;
# 2. timings, 24 layers d_model 768 vocab 50277 length 2048, 25 steps (median of the 20 after
#    5 warm-up): round 1 = the A/B experiments at bf16 b8 (phase tables) and the shapes;
#    round 2 = after (this branch) and before (main) at bf16 b4 / b8 / b16 and f32 b4.
# Every command has its own timeout and the whole stays under ~110 s. The logs go to ONE file,
# $OUT/gputrain3-logs.tar.gz (the device returns few files); what matters is printed.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
ROUND="${ROUND:-$(cat ROUND 2>/dev/null || echo 1)}"
LOGD=$(mktemp -d)
T0=$(date +%s)
left() { echo $(( 108 - ($(date +%s) - T0) )); }
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "round $ROUND; after commit $(cat "$W/COMMIT"), before commit $(cat "$W/BEFORE_COMMIT")"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader || true
A="$W/after/mamba-train-lm-cuda"; B="$W/before/mamba-train-lm-cuda"
rc=0
. ./round_steps.sh
checks() {  # name, environment assignment
  run "check_$1" 25 env $2 "$A" --check --dtype both
  grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/check_$1.log"
}
SHAPE="--layers 24 --d-model 768 --seq-len 2048 --vocab 50277 --steps 25 --warmup 5 --log-every 25"
bench() {  # name, environment assignment, binary, extra args...
  local name="$1" envs="$2" bin="$3"; shift 3
  run "$name" 20 env $envs "$bin" $SHAPE "$@"
  [ -f "$LOGD/$name.log" ] || return 0
  grep -E "^\| 24 |^median|cudaMalloc|^scan checkpoints" "$LOGD/$name.log"
  sed -n '/^phases/,$p' "$LOGD/$name.log"
}
D=MAMBA_GT_LAYOUT=direct
# Round 1 was the one round for everything (2 profiled steps, the plain cast too); later rounds
# profile 3 steps. Both: checks, the A/B at b8, then after vs before at every shape.
checks default $D
run check_aligned 25 "$A" --check --dtype both --layers 2 --d-model 128 --seq-len 128 --batch 2 --vocab 512 --steps 3
grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/check_aligned.log"
run gtest 40 "$W/after/test_cuda_train"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|^\[       OK|Failure|Expected|Which is|^  Actual" "$LOGD/gtest.log" | head -40
bench after_bf16_b8 $D "$A" --batch 8 --dtype bf16 --profile $([ "$ROUND" = 1 ] && echo 2 || echo 3)
bench before_bf16_b8 $D "$B" --batch 8 --dtype bf16
bench after_bf16_b8_nockpt MAMBA_GT_FWD_CKPT=0 "$A" --batch 8 --dtype bf16
for shape in "bf16 16" "bf16 4" "f32 4"; do
  set -- $shape
  bench "after_$1_b$2" $D "$A" --batch "$2" --dtype "$1"
  bench "before_$1_b$2" $D "$B" --batch "$2" --dtype "$1"
done
[ "$ROUND" = 1 ] && bench after_bf16_b8_castplain MAMBA_GT_CAST=plain "$A" --batch 8 --dtype bf16
rm -rf "$W"
tar -C "$LOGD" -czf "$OUT/gputrain3-logs.tar.gz" . && rm -rf "$LOGD"
echo "run.sh: total $(( $(date +%s) - T0 )) s, rc=$rc"
exit $rc
