#!/usr/bin/env bash
# Device round of branch mends (staged by tools/device/mends_stage.sh; bins.tar.xz holds prebuilt,
# stripped binaries without PTX and a libopenblas.so.0 stand-in, the GPU machine having no
# OpenBLAS):  cd SNAPSHOT && OUT=<dir> bash run.sh
# 1. mamba-cuda-check --ssd-only (check_ssd: every SSD forward / backward check), 2. mamba-cuda-train-check
# (training-kernel checks, no timings), 3. mamba-cuda-check --fast-check (scan forward v6 / decode
# checks), 4. mamba-train-lm-cuda --check --dtype both (tiny awkward shape, and an aligned one),
# 5. test_cuda_train, 6. one timing of the GPU trainer at bf16 b8 (24 layers, d 768, l 2048),
# 7. the SSD timings (mamba-cuda-check --ssd-only --timings-only: forward, backward with / without z).
# Every command has its own timeout; the whole stays under ~110 s. Logs: ONE file,
# $OUT/mends-logs.tar.gz; what matters is printed.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
LOGD=$(mktemp -d)
T0=$(date +%s)
left() { echo $(( 107 - ($(date +%s) - T0) )); }
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT")"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader || true
rc=0
. ./round_steps.sh
B="$W/bin"
run check_ssd 30 "$B/mamba-cuda-check" --ssd-only --check-only
grep -E "^FAIL|dA\[|l2 h1 .* dA|ssd-check|cuda-check|exception" "$LOGD/check_ssd.log" | head -60
run train_check 25 "$B/mamba-cuda-train-check"
grep -E "^FAIL|train-check|exception" "$LOGD/train_check.log" | head -30
run fast_check 20 "$B/mamba-cuda-check" --fast-check
grep -E "^FAIL|cuda-check|exception" "$LOGD/fast_check.log" | head -30
SHAPE="--layers 24 --d-model 768 --seq-len 2048 --vocab 50277 --steps 25 --warmup 5 --log-every 25"
run gt_check 20 "$B/mamba-train-lm-cuda" --check --dtype both
grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/gt_check.log"
run gt_check_aligned 20 "$B/mamba-train-lm-cuda" --check --dtype both --layers 2 --d-model 128 --seq-len 128 --batch 2 --vocab 512 --steps 3
grep -E "^check|AdamW steps|FAIL|train-check" "$LOGD/gt_check_aligned.log"
run gtest 15 "$B/test_cuda_train"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" "$LOGD/gtest.log" | head -20
run gt_bf16_b8 20 "$B/mamba-train-lm-cuda" $SHAPE --batch 8 --dtype bf16
grep -E "^\| 24 |^median|cudaMalloc" "$LOGD/gt_bf16_b8.log"
run ssd_timing 25 "$B/mamba-cuda-check" --ssd-only --timings-only
grep -E "summary|bwd|timing failed" "$LOGD/ssd_timing.log" | head -20
rm -rf "$W"
tar -C "$LOGD" -czf "$OUT/mends-logs.tar.gz" . && rm -rf "$LOGD"
echo "run.sh: total $(( $(date +%s) - T0 )) s, rc=$rc"
exit $rc
