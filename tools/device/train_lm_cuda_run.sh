#!/usr/bin/env bash
# Device round of the GPU trainer (staged by tools/device/train_lm_cuda_stage.sh):
#   cd SNAPSHOT && OUT=<dir> bash run.sh
# 1. correctness: mamba-train-lm-cuda --check --dtype both (the tiny awkward shape, and an
#    aligned one; CHECK_ALL=1 also the A/B variants) and the GoogleTest binary test_cuda_train;
# 2. timings, 24 layers d_model 768 vocab 50277 length 2048: after (this branch) and before
#    (main), bf16 batch 8 / 4 / 16 and f32 batch 4, 25 steps (median of the 20 after 5 warm-up);
#    the after run at batch 8 prints the phase table (--profile 3); then A/B experiments.
# Every command has its own timeout and the whole stays under ~110 s. The logs go to ONE file,
# $OUT/gputrain2-logs.tar.gz (the device returns few files); what matters is printed.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
LOGD=$(mktemp -d)
T0=$(date +%s)
left() { echo $(( 110 - ($(date +%s) - T0) )); }
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "after commit $(cat "$W/COMMIT"), before commit $(cat "$W/BEFORE_COMMIT")"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader || true
A="$W/after/mamba-train-lm-cuda"; B="$W/before/mamba-train-lm-cuda"
rc=0
run() {  # name, timeout, command...
  local name="$1" t="$2"; shift 2
  local l; l=$(left)
  if [ "$l" -lt 8 ]; then echo "== $name SKIPPED (time budget)"; return; fi
  [ "$t" -gt "$l" ] && t=$l
  local s; s=$(date +%s)
  timeout -k 2 "$t" "$@" > "$LOGD/$name.log" 2>&1
  local r=$?
  echo "== $name rc=$r ($(( $(date +%s) - s )) s)"
  [ "$r" = 0 ] || { rc=1; tail -4 "$LOGD/$name.log"; }
}
# Variants checked in earlier rounds (MAMBA_GT_CONV_BCL=0, MAMBA_GT_LAYOUT=transpose,
# MAMBA_GT_OVERLAP=1) can be checked again with CHECK_ALL=1.
run check_direct 25 "$A" --check --dtype both
grep -E "^check|AdamW steps|^ok|^FAIL|FAIL$|train-check" "$LOGD/check_direct.log"
if [ "${CHECK_ALL:-0}" = 1 ]; then
  for v in MAMBA_GT_CONV_BCL=0 MAMBA_GT_LAYOUT=transpose MAMBA_GT_OVERLAP=1; do
    run "check_$v" 25 env "$v" "$A" --check --dtype both
    grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/check_$v.log"
  done
fi
# The comparison at a shape whose sizes are multiples of 16 (every GEMM through cuBLASLt,
# batched ones included); the CPU side runs on the plain CBLAS stand-in, so few steps.
run check_aligned 25 "$A" --check --dtype both --layers 2 --d-model 128 --seq-len 128 --batch 2 --vocab 512 --steps 3
grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/check_aligned.log"
run gtest 30 "$W/after/test_cuda_train"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|^\[       OK|Failure|Expected|Which is|bf16 |shared |^  Actual" "$LOGD/gtest.log" | head -40
SHAPE="--layers 24 --d-model 768 --seq-len 2048 --vocab 50277 --steps 25 --warmup 5 --log-every 25"
bench() {  # name, environment assignment, binary, extra args...
  local name="$1" envs="$2" bin="$3"; shift 3
  run "$name" 20 env $envs "$bin" $SHAPE "$@"
  [ -f "$LOGD/$name.log" ] || return 0
  grep -E "^\| 24 |^median|cudaMalloc" "$LOGD/$name.log"
  sed -n '/^phases/,$p' "$LOGD/$name.log"
}
D=MAMBA_GT_LAYOUT=direct
# Before (main) and after, every standard shape, in this one round.
bench after_bf16_b8 $D "$A" --batch 8 --dtype bf16 --profile 3
bench before_bf16_b8 $D "$B" --batch 8 --dtype bf16
bench after_bf16_b4 $D "$A" --batch 4 --dtype bf16
bench after_bf16_b16 $D "$A" --batch 16 --dtype bf16
bench after_f32_b4 $D "$A" --batch 4 --dtype f32
bench before_bf16_b4 $D "$B" --batch 4 --dtype bf16
bench before_bf16_b16 $D "$B" --batch 16 --dtype bf16
bench before_f32_b4 $D "$B" --batch 4 --dtype f32
# Experiments at bf16 b8 (phase tables).
bench after_bf16_b8_conv_split MAMBA_GT_CONV_BCL=0 "$A" --batch 8 --dtype bf16 --profile 2
# What forward-written chunk checkpoints would save: the backward without its pass A
# (MAMBA_SCAN_BWD_SKIP=2: a timing experiment, the gradients are wrong).
bench after_bf16_b8_scanbwd_skipA MAMBA_SCAN_BWD_SKIP=2 "$A" --batch 8 --dtype bf16 --profile 2
bench after_bf16_b8_pairs_off MAMBA_GT_TRANSPOSE_PAIRS=0 "$A" --batch 8 --dtype bf16 --profile 2
bench after_bf16_b8_transpose MAMBA_GT_LAYOUT=transpose "$A" --batch 8 --dtype bf16 --profile 2
rm -rf "$W"
tar -C "$LOGD" -czf "$OUT/gputrain2-logs.tar.gz" . && rm -rf "$LOGD"
echo "run.sh: total $(( $(date +%s) - T0 )) s, rc=$rc"
exit $rc
