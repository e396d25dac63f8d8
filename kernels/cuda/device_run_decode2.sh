#!/usr/bin/env bash
# Device round for the persistent decode step (branch decode2): build mamba-decode-check with
# nvcc (three sources in parallel) unless a prebuilt one runs, then check + time.
#   OUT=<dir> bash kernels/cuda/device_run_decode2.sh      (from the repository root)
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-build-device/logs}"
mkdir -p "$OUT" build-device/obj
export PATH="$PATH:/usr/local/cuda/bin"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null
BIN=build-device/mamba-decode-check
if [ -x prebuilt/mamba-decode-check ]; then prebuilt/mamba-decode-check --bad-flag > /dev/null 2>&1; pre_rc=$?; else pre_rc=127; fi
if [ "$pre_rc" = 2 ]; then
  BIN=prebuilt/mamba-decode-check
  echo "== prebuilt binary"
else
  echo "== build (nvcc sm_90)"
  F=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr -lineinfo -Ikernels/include)
  pids=()
  for s in mamba1_decode_persistent mamba1_decode_v3 decode_check; do
    timeout 100 nvcc "${F[@]}" -c kernels/cuda/$s.cu -o build-device/obj/$s.o > build-device/obj/$s.log 2>&1 &
    pids+=($!)
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  cat build-device/obj/*.log | grep -iE "error|warning" | head -20
  [ "$ok" = 1 ] && nvcc -gencode arch=compute_90,code=sm_90 build-device/obj/*.o -o "$BIN" || { echo "build failed"; exit 4; }
fi
left=$((105 - SECONDS)); [ "$left" -lt 20 ] && left=20
timeout "$left" "$BIN" "$@" 2>&1 | tee "$OUT/decode_check.log"
echo "rc ${PIPESTATUS[0]}"
# Stage-ring depth at batch 1 (timing only), while time is left.
for s in 1 2; do
  left=$((105 - SECONDS))
  [ "$left" -lt 12 ] && break
  echo "== MAMBA_DECODE_STAGES=$s, batch 1"
  MAMBA_DECODE_STAGES=$s timeout "$left" "$BIN" --time-only 1 --reps 30 2>&1 | grep -E "batch|copy|per layer|phase|breakdown"
done
