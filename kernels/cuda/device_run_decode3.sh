#!/usr/bin/env bash
# Device round of branch decode3 (staged by kernels/cuda/device_stage_decode3.sh as run.sh):
#   cd SNAPSHOT && OUT=<dir> bash run.sh
# The GPU machine has no GoogleTest / OpenBLAS, so prebuilt binaries come in bins.tar.xz
# (test_cuda_backend, mamba-decode-check, lib/: a plain-loop libopenblas.so.0 stand-in and
# libgomp). If the prebuilt mamba-decode-check does not start, it is built here with nvcc.
# 1. test_cuda_backend's decode tests (CudaDecodeGraph on the GPU against the CPU; the default
#    version, then MAMBA_DECODE_VERSION=2 and =3; its other tests last, while time is left);
# 2. mamba-decode-check: both kernel versions against the CPU step, then the timings (24L
#    d768 bf16, batch 1 / 4 / 8 / 16, v2 and v3) then mamba-cuda-bench --decode-only (through
#    CudaDecodeGraph) with versions 3 and 2, the stage depths, while time is left.
# Whole run < 110 s; logs go to ONE file, $OUT/decode3-logs.tar.gz.
set -u
OUT="${OUT:-out}"; mkdir -p "$OUT"
T0=$(date +%s)
BUDGET="${BUDGET:-108}"  # seconds for the whole run (the shared rounds allow 110)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
LOGD=$(mktemp -d)
W=$(mktemp -d)
tar -C "$W" -xJf bins.tar.xz || echo "extract failed"
export PATH="$PATH:/usr/local/cuda/bin"
export LD_LIBRARY_PATH="$W/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "commit $(cat "$W/COMMIT" 2>/dev/null)"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader 2>/dev/null
rc=0
. ./round_steps.sh
TB="$W/test_cuda_backend"
G='^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|^\[==========\]|Failure|Expected|Which is|exception'
run gtest_decode 30 "$TB" --gtest_filter='CudaBackend.MambaLM*'
grep -E "$G" "$LOGD/gtest_decode.log" | head -30
for v in 2 3; do
  run "gtest_graph_v$v" 15 env MAMBA_DECODE_VERSION=$v "$TB" --gtest_filter='CudaBackend.MambaLMGraphDecodeMatchesCpu'
  grep -E "$G" "$LOGD/gtest_graph_v$v.log" | head -12
done

DC="$W/mamba-decode-check"
"$DC" --bad-flag > /dev/null 2>&1
if [ $? != 2 ]; then
  echo "== prebuilt mamba-decode-check does not start: building with nvcc"
  mkdir -p "$W/obj"
  F=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr -lineinfo -Ikernels/include)
  pids=()
  for s in mamba1_decode_persistent mamba1_decode_v3 decode_check; do
    timeout 90 nvcc "${F[@]}" -c kernels/cuda/$s.cu -o "$W/obj/$s.o" > "$W/obj/$s.log" 2>&1 &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  grep -iE "error" "$W"/obj/*.log | head -10
  [ "$ok" = 1 ] && nvcc -gencode arch=compute_90,code=sm_90 "$W"/obj/*.o -o "$DC" || echo "build failed"
fi
l=$(left); [ "$l" -gt 40 ] && l=40
run decode_check "$l" "$DC" --reps 40
grep -vE "^  ok  " "$LOGD/decode_check.log" | head -60
echo "checks: $(grep -c '^  ok  ' "$LOGD/decode_check.log") ok lines"
# The step through CudaDecodeGraph (mamba-cuda-bench: persistent / fused / unfused, batch 1 4 16 256).
for v in 3; do
  [ -x "$W/mamba-cuda-bench" ] && [ "$(left)" -gt 15 ] || break
  run "bench_v$v" "$(left)" env MAMBA_DECODE_VERSION=$v "$W/mamba-cuda-bench" --decode-only --reps 20
  grep -E "==|persist|fused|ok|FAIL|batch" "$LOGD/bench_v$v.log" | head -20 | sed "s/^/  [v$v] /"
done
for st in 1 2; do  # the stage-ring depth at batch 1, while time is left
  [ "$(left)" -gt 15 ] || break
  run "decode_stages$st" "$(left)" env MAMBA_DECODE_STAGES=$st "$DC" --time-only 1 --reps 30
  grep -E "batch +1 v3:" "$LOGD/decode_stages$st.log" | sed "s/^/  stages $st: /"
done
run gtest_rest 25 "$TB" --gtest_filter='-CudaBackend.MambaLM*'
grep -E "^\[ *(FAILED|PASSED) *\]|Failure" "$LOGD/gtest_rest.log" | head -12
( cd "$LOGD" && tar czf "$OUT/decode3-logs.tar.gz" ./*.log ) 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s, rc $rc"
exit $rc
