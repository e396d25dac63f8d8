#!/usr/bin/env bash
# Device round of branch m2cuda (staged by kernels/cuda/m2cuda_stage.sh):
#   cd SNAPSHOT && OUT=<dir> bash run.sh           (< 110 s; logs in $OUT, summary on stdout)
# mamba-golden --device cuda on every golden file (the Mamba-2 block and LM among them); the
# Mamba-2 CUDA-vs-CPU gtests, then again with MAMBA_SSD_VERSION=1 (the sequential SSD kernel
# for bf16 too); the rest of test_cuda_backend (Mamba-1 shares the conv helpers).
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $(( 106 - ($(date +%s) - T0) )); }
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT") (dirty: $(wc -l < "$W/DIRTY") files); extracted after $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
rc=0
LOGD="$OUT"
. ./round_steps.sh
gt() { grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) *\]|Failure|rel_err|Which is|tol" "$LOGD/$1.log" | head -${2:-40}; }
run golden 40 "$W/bin/mamba-golden" --device cuda "$W"/golden/*.safetensors
grep -E "^== |FAIL|passed|failed|device" "$LOGD/golden.log" | tail -12
run m2 40 "$W/bin/test_cuda_backend" --gtest_filter='*Mamba2*'
gt m2
run m2_seq 30 env MAMBA_SSD_VERSION=1 "$W/bin/test_cuda_backend" --gtest_filter='*Mamba2*'
gt m2_seq 12
run backend 40 "$W/bin/test_cuda_backend" --gtest_filter='-*Mamba2*'
gt backend 30
echo "total $(( $(date +%s) - T0 )) s, rc=$rc"
rm -rf "$W"
exit $rc
