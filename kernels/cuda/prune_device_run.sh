#!/usr/bin/env bash
# Device round of branch prune (staged by kernels/cuda/prune_stage.sh): cd SNAPSHOT && OUT=<dir> bash run.sh
# Prebuilt mamba-cuda-check / mamba-golden (bins.tar.xz); mamba-cuda-train-check built here with
# nvcc from src.tar.xz in the background while the checks run. In order (each with its own
# timeout, the whole < 110 s): mamba-golden --device cuda on the Mamba-1 golden files; every SSD
# check and the SSD timings (--ssd-only); the scan / backward / conv / norm checks (--no-ssd
# --check-only); --scan6-check; --fast-check; mamba-cuda-train-check --bench (checks, then the
# training kernels timed: conv1d_bwd among them); the default run's timings (--no-ssd
# --timings-only: scan forward / backward at the standard shapes). Summary on stdout, logs in ONE
# file, $OUT/prune-logs.tar.gz.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $(( 108 - ($(date +%s) - T0) )); }
L=$(mktemp -d)
W=$(mktemp -d)
export PATH="$PATH:/usr/local/cuda/bin"
tar -C "$W" -xJf bins.tar.xz || { echo "extract failed"; exit 4; }
mkdir -p "$W/src" && tar -C "$W/src" -xJf src.tar.xz || { echo "src extract failed"; exit 4; }
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT") (dirty: $(wc -l < "$W/DIRTY") files); extracted after $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader || true
# mamba-cuda-train-check from the sources, in the background (CPU only).
(
  cd "$W/src"
  TRAIN=(kernels/cuda/train_norm.cu kernels/cuda/cross_entropy.cu kernels/cuda/conv1d_bwd.cu kernels/cuda/optim.cu
         kernels/cuda/check_train_kernels.cu kernels/cpu/rms_norm.cc kernels/cpu/cross_entropy.cc
         kernels/cpu/causal_conv1d.cc kernels/cpu/norm.cc kernels/cpu/parallel.cc)
  mkdir -p obj
  printf '%s\n' "${TRAIN[@]}" | xargs -P 10 -I{} sh -c 'nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo \
    --expt-relaxed-constexpr -Ikernels/include -Xcompiler -fopenmp,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1 \
    -Xptxas -v -c {} -o obj/$(basename {}).o > obj/$(basename {}).log 2>&1 || echo "FAILED {}"'
  nvcc -gencode arch=compute_90,code=sm_90 $(for s in "${TRAIN[@]}"; do echo "obj/$(basename "$s").o"; done) \
    -o mamba-cuda-train-check -Xlinker --gc-sections -lgomp > obj/link.log 2>&1 || echo "link FAILED"
  cat obj/*.log > "$L/train_build.log"
  echo "train-check build done at $(( $(date +%s) - T0 )) s"
) > "$L/train_build_status.txt" 2>&1 &
BPID=$!
C="$W/bin/mamba-cuda-check"
rc=0
LOGD="$L"
. ./round_steps.sh
run golden 15 "$W/bin/mamba-golden" --device cuda "$W/golden/selective_scan.safetensors" "$W/golden/mamba1_block.safetensors" \
  "$W/golden/mamba1_lm.safetensors"
grep -E "passed|failed|FAIL|device" "$L/golden.log" | tail -6
run ssd 30 "$C" --ssd-only
fails ssd
grep -E "^ssd-check|^ssd summary|^ok +ssd fwd version|time ssd|SKIP \(|ssd timing" "$L/ssd.log" | sed -E 's/  floor\/time.*//' | head -40
run checks 30 "$C" --no-ssd --check-only
fails checks
grep -E "^cuda-check:" "$L/checks.log" | tail -1
run scan6 20 "$C" --scan6-check
fails scan6
grep -E "^cuda-check --scan6:|argument errors" "$L/scan6.log" | tail -3
run fast 20 "$C" --fast-check
fails fast
grep -E "^cuda-check --fast:|argument errors|ex2_poly_fma" "$L/fast.log" | tail -4
l=$(left); w=0
while kill -0 $BPID 2> /dev/null && [ $w -lt $(( l - 30 )) ]; do sleep 1; w=$((w + 1)); done
cat "$L/train_build_status.txt"
TC="$W/src/mamba-cuda-train-check"
if [ -x "$TC" ]; then
  run train 28 "$TC" --bench
  fails train 20
  grep -E "cross_entropy (f32|bf16) rows 1 V 3|^train-check|causal_conv1d_bwd|copy" "$L/train.log" | head -24
  grep -A2 "conv1d_bwd_v3_kernel\|conv1d_bwd_kernel" "$L/train_build.log" 2>/dev/null | grep -E "registers|spill" | head -6
else
  echo "== train SKIPPED: no binary ($(tail -3 "$L/train_build_status.txt" 2>/dev/null))"; rc=1
fi
run timings 40 "$C" --no-ssd --timings-only
grep -E "scan (fwd|bwd)|copy|^cuda-check:|timing failed" "$L/timings.log" | head -40
echo "total $(( $(date +%s) - T0 )) s, rc=$rc"
tar czf "$OUT/prune-logs.tar.gz" -C "$L" . 2> /dev/null
exit $rc
