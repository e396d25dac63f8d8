#!/usr/bin/env bash
# The one device round: builds, checks and times every CUDA kernel on a GPU machine, then prints
# ONE summary table (kernel, shape, dtype, time, GB/s, TFLOP/s or T exp/s, % of the floor and its
# kind) and a pass / fail count line. From the repository root (or a snapshot staged by
# kernels/cuda/device_stage.sh, whose run.sh calls this):
#   OUT=<dir> bash kernels/cuda/device_run.sh [--only STEPS] [--budget SECONDS]
# STEPS (comma-separated, also ONLY=...): build, check, time, profile, or any step name below
# (default all). The GPU machine has nvcc, g++ and the CUDA toolkit (cuBLAS, cuDNN, NCCL) but none
# of the project's Debian packages, so:
#   build  nvcc / g++ from the sources, 16 jobs: every kernel source and CPU reference once into
#          one archive, then mamba-cuda-check, mamba-cuda-train-check, mamba-decode-check and
#          (cuDNN found) mamba-conv-cudnn-check. The CPU references link no BLAS (--gc-sections).
#   PREBUILT=<dir> (device_stage.sh): bin/ with the CMake-built programs that need the project's
#          packages (mamba-golden, mamba-cuda-bench, mamba-train-lm-cuda) and stripped copies of
#          the four above (used when the build step is not selected or a program fails to build),
#          lib/ with tools/device/refblas.c as libopenblas.so.0 and libgomp, golden/ the golden files.
# Steps, each under its own time limit (tools/device/round_steps.sh: a step that no longer fits
# the budget is skipped and counts as failed); checks first, then the timings, the experiments'
# variants last:
#   check: golden (mamba-golden --device cuda, every golden file), cuda_check (mamba-cuda-check
#          --no-ssd --check-only), ssd_check (--ssd-only --check-only: check_ssd), train_check,
#          decode_check (--check-only), conv_cudnn_check, bench_check (mamba-cuda-bench
#          --check-only: GEMM, MambaLM on the GPU against the CPU), train_lm_check
#          (mamba-train-lm-cuda --check --dtype both; train_lm_check_aligned: an aligned shape), fast (--fast-check), scan6 (--scan6-check),
#          scan7 (--scan7-check), scanseg (--scanseg-check: the sequence split), bw80 (--bw80-check), bw81 (--bw81-check), nccl (tests/device/nccl_run.sh)
#          gtest_<name> (tests/test_cuda_<name>, the GoogleTest CUDA tests, prebuilt only)
#   time:  cuda_time (--no-ssd --timings-only: scan forward / backward, conv1d, state updates,
#          norms, GEMM), ssd_time (--ssd-only --timings-only), train_time (--bench: cross-entropy,
#          norm / conv backward), decode_time (mamba-decode-check: the persistent step, 24 x 768),
#          lm_decode_time (mamba-cuda-bench --decode-only: batch 1 / 4 / 16 / 256 through
#          CudaDecodeGraph), conv_cudnn_time (--bench-only), train_lm_time (mamba-train-lm-cuda: the
#          24 x 768 LM training step, bf16, batch 8, length 2048; train_lm_time_l1 / _l2: the same with
#          MAMBA_SCAN_BWD_V4_LAYOUT=1 / 2), and with time selected fast, scan6,
#          scan7, bw81, bw80 run their check + timing modes (--fast, --scan6, --scan7, --bw81, --bw80)
#          instead of the check ones, and decode_kernels (--decode-kernels: state update variants)
#   profile (only by name): ncu sections of one launch each (--scan-once, --ssd-once, --bw-once,
#          --scan7-once, train-check --once) and the SASS loop mix of scan forward v6 (sass_loops.py)
#   train_lm_profile (only by name): train_lm_time's step with its phase table (--profile 5)
#   profbwd (only by name; BWD_ONCE=train: the training shape b8 d1536): ncu of one scan backward v4 launch (--bwd-once: stalls, source counters)
#          and the v4 kernel's SASS
# Every timing prints perf records (mamba/kernels/cuda/perf_record.h); kernels/cuda/perf_summary.awk
# turns the standard steps' ones into THE table ($OUT/summary.md), the experiments' variants into
# $OUT/variants.md. Logs: $OUT/logs/<step>.log; stdout has every step's status, its
# failures and the table. Exit status 0 when every selected step passed. Budget: 390 s (the H200
# round allows 400), --budget or BUDGET to change it.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
ONLY="${ONLY:-all}"
BUDGET="${BUDGET:-390}"
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    *) echo "usage: OUT=<dir> bash kernels/cuda/device_run.sh [--only STEPS] [--budget SECONDS]"; exit 2 ;;
  esac
done
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
OUT="${OUT:-build-device/out}"
LOGD="$OUT/logs"
mkdir -p "$LOGD"
BUILD="${BUILD:-build-device}"
JOBS="${JOBS:-$(nproc)}"
PREBUILT="${PREBUILT:-}"
export PATH="$PATH:/usr/local/cuda/bin"
CUDA=/usr/local/cuda

# sel KIND STEP: is the step selected (ONLY names it, its kind, or all; kind profile only by name)?
sel() {
  case ",$ONLY," in *",$1,"*|*",$2,"*) return 0 ;; esac
  [ "$1" != profile ] && [ "$1" != profbwd ] && case ",$ONLY," in *",all,"*) return 0 ;; esac
  return 1
}

echo "== device_run: commit $(cat "$PREBUILT/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo ?), steps $ONLY, budget $BUDGET s, $JOBS jobs"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader 2>&1 | head -4
nvcc --version 2>/dev/null | tail -1
g++ --version 2>/dev/null | head -1

# cuDNN: the toolkit's, else the nvidia-cudnn wheel's (lib and maybe headers), else the
# snapshot's headers ($PREBUILT/cudnn-include) with the wheel's or the system's library.
CUDNN_INC=""; CUDNN_LIB=""
WHEEL=$(python3 -c "import nvidia.cudnn, os; print(list(nvidia.cudnn.__path__)[0])" 2>/dev/null || true)
for d in "$CUDA/include" "$WHEEL/include" /usr/include "$PREBUILT/cudnn-include"; do
  [ -n "$d" ] && [ -f "$d/cudnn.h" ] && { CUDNN_INC=$d; break; }
done
for d in "$CUDA/lib64" "$CUDA/lib" "$WHEEL/lib" /usr/lib/x86_64-linux-gnu; do
  [ -n "$d" ] && [ -e "$d/libcudnn.so.9" ] && { CUDNN_LIB=$d; break; }
done
echo "cuDNN: include ${CUDNN_INC:-none}, lib ${CUDNN_LIB:-none}"
export LD_LIBRARY_PATH="${PREBUILT:+$PREBUILT/lib:}${CUDNN_LIB:+$CUDNN_LIB:}$CUDA/lib64:$CUDA/lib:${LD_LIBRARY_PATH:-}"

# ---- build -----------------------------------------------------------------------------------
# The check programs' own sources; every other kernels/cuda/*.cu and kernels/cpu/*.cc (but the
# CBLAS glue gemm.cc and the no-CUDA stub) goes into one archive.
MAINS="mamba_cuda_check check_ssd check_train_kernels decode_check conv_cudnn_check"
build() {
  mkdir -p "$BUILD/obj" "$BUILD/logs" "$BUILD/bin"
  local nv=(-O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -lineinfo --expt-relaxed-constexpr -Ikernels/include
            -Xcompiler -fopenmp,-march=native,-ffunction-sections,-fdata-sections -DMAMBA_HAVE_CUDA=1)
  local cc=(-O3 -std=c++20 -march=native -fopenmp -ffunction-sections -fdata-sections -Ikernels/include -I$CUDA/include
            -DMAMBA_HAVE_CUDA=1)
  [ -n "$CUDNN_INC" ] && [ -n "$CUDNN_LIB" ] && nv+=(-I"$CUDNN_INC" -DMAMBA_HAVE_CUDNN=1)
  local s list=()
  for s in kernels/cuda/*.cu kernels/cpu/*.cc; do
    case "$(basename "$s")" in gemm.cc|cuda_runtime_info_stub.cc) continue ;; conv_cudnn_check.cu) [ -n "$CUDNN_LIB" ] || continue ;; esac
    list+=("$s")
  done
  # The largest first (the build's wall time is the slowest source's).
  printf '%s\n' "${list[@]}" | xargs -I{} stat -c '%s {}' {} | sort -rn | cut -d' ' -f2 |
    NV="${nv[*]}" CC="${cc[*]}" B="$BUILD" xargs -P "$JOBS" -I{} bash -c '
      s={}; o="$B/obj/$(basename "$s").o"; l="$B/logs/$(basename "$s").log"; t0=$(date +%s)
      case "$s" in *.cu) nvcc $NV -c "$s" -o "$o" > "$l" 2>&1 ;; *) g++ $CC -c "$s" -o "$o" > "$l" 2>&1 ;; esac
      r=$?; echo "$(( $(date +%s) - t0 )) s $s" >> "$B/logs/times.txt"; [ $r = 0 ] || { echo "FAILED $s"; rm -f "$o"; }'
  local objs=()
  for s in "${list[@]}"; do
    case " $MAINS " in *" $(basename "${s%.*}") "*) continue ;; esac
    [ -f "$BUILD/obj/$(basename "$s").o" ] && objs+=("$BUILD/obj/$(basename "$s").o")
  done
  rm -f "$BUILD/libmamba_device.a"
  ar rcs "$BUILD/libmamba_device.a" "${objs[@]}"
  local libs=(-L"$CUDA/lib64" -lcublasLt -lgomp)
  [ -n "$CUDNN_LIB" ] && libs+=(-L"$CUDNN_LIB" -l:libcudnn.so.9)
  link() {  # program, main objects...
    local p="$1"; shift
    local m o=(); for m in "$@"; do o+=("$BUILD/obj/$m.o"); done
    for m in "${o[@]}"; do [ -f "$m" ] || { echo "not linked: $p ($m missing)"; return 1; }; done
    nvcc -gencode arch=compute_90,code=sm_90 "${o[@]}" "$BUILD/libmamba_device.a" -o "$BUILD/bin/$p" \
      -Xlinker --gc-sections "${libs[@]}" > "$BUILD/logs/link-$p.log" 2>&1 || { echo "link failed: $p"; head -20 "$BUILD/logs/link-$p.log"; return 1; }
  }
  local ok=0
  link mamba-cuda-check mamba_cuda_check.cu check_ssd.cu || ok=1
  link mamba-cuda-train-check check_train_kernels.cu || ok=1
  link mamba-decode-check decode_check.cu || ok=1
  if [ -n "$CUDNN_LIB" ]; then link mamba-conv-cudnn-check conv_cudnn_check.cu || ok=1; fi
  sort -rn "$BUILD/logs/times.txt" | head -5 | sed 's/^/  slowest: /'
  grep -h "FAILED\|error" "$BUILD"/logs/*.log 2>/dev/null | head -20
  return $ok
}

rc=0
. tools/device/round_steps.sh
declare -a PASSED=() FAILED=() SKIPPED=()
# The build runs in the background while the programs it does not make (prebuilt only) run
# their checks; everything else waits for it.
BPID=""
if sel build build; then
  BS=$(date +%s)
  rm -f "$BUILD/logs/times.txt"
  l=$(left); [ "$l" -gt 300 ] && l=300
  export -f build; export MAINS BUILD JOBS CUDA CUDNN_INC CUDNN_LIB
  timeout -k 5 "$l" bash -c build > "$LOGD/build.log" 2>&1 &
  BPID=$!
fi
build_wait() {
  [ -n "$BPID" ] || return 0
  wait "$BPID"; local r=$?
  BPID=""
  echo "== build rc=$r ($(( $(date +%s) - BS )) s, $JOBS jobs)"
  grep -vE "^$" "$LOGD/build.log" | tail -12
  if [ $r = 0 ]; then PASSED+=(build); else FAILED+=(build); rc=1; fi
}

# bin NAME: the program built here, else the prebuilt one, else nothing.
bin() {
  if [ -z "$BPID" ] && [ -x "$BUILD/bin/$1" ] && sel build build; then echo "$ROOT/$BUILD/bin/$1"
  elif [ -n "$PREBUILT" ] && [ -x "$PREBUILT/bin/$1" ]; then echo "$PREBUILT/bin/$1"; fi
}
# step NAME KIND TIMEOUT PROGRAM ARGS...: runs when selected; a missing program is a skip.
step() {
  sel "$2" "$1" || return 0
  run_prog "$@"
}
run_prog() {  # NAME KIND TIMEOUT PROGRAM ARGS...
  local name="$1" t="$3" prog="$4"; shift 4
  local b; b=$(bin "$prog")
  if [ -z "$b" ]; then echo "== $name SKIPPED (no $prog)"; SKIPPED+=("$name"); return 0; fi
  if run "$name" "$t" "$b" "$@"; then PASSED+=("$name"); else FAILED+=("$name"); fi
  # The first failures, then the program's own count lines.
  grep -E "^ *FAIL|exception|timing failed" "$LOGD/$name.log" | head -8
  grep -E "^(cuda-check|ssd-check|train-check|decode-check|conv-cudnn-check|cuda-bench)[ :]|passed,|^ssd summary" "$LOGD/$name.log" |
    sort -u | tail -4
}
echo "== programs: $(for p in mamba-cuda-check mamba-cuda-train-check mamba-decode-check mamba-conv-cudnn-check mamba-golden mamba-cuda-bench mamba-train-lm-cuda; do b=$(bin $p); echo -n "$p=${b:+${b#$ROOT/}} "; done)"

# ---- checks ----------------------------------------------------------------------------------
GOLDEN=()
for d in "$PREBUILT/golden" ../shared/golden; do [ -d "$d" ] && { GOLDEN=("$d"/*.safetensors); break; }; done
if [ ${#GOLDEN[@]} -gt 0 ]; then step golden check 30 mamba-golden --device cuda "${GOLDEN[@]}"
elif sel check golden; then echo "== golden SKIPPED (no golden files)"; SKIPPED+=(golden); fi
step bench_check check 30 mamba-cuda-bench --check-only
step train_lm_check check 30 mamba-train-lm-cuda --check --dtype both
step train_lm_check_aligned check 30 mamba-train-lm-cuda --check --dtype both --layers 2 --d-model 128 --seq-len 128 \
  --batch 2 --vocab 512 --steps 3
# ---- multi-GPU NCCL (its own build with g++; one GPU: the multi-GPU part says it is skipped) ----
if sel check nccl; then
  if [ -f tests/device/nccl_run.sh ] && [ -d shared-core/src ]; then
    if run nccl 120 env OUT="$LOGD/nccl" bash tests/device/nccl_run.sh; then PASSED+=(nccl); else FAILED+=(nccl); fi
    grep -E "^==|SKIPPED|expected|nccl_run:" "$LOGD/nccl.log" | head -10
  else echo "== nccl SKIPPED (no sources)"; SKIPPED+=(nccl); fi
fi

build_wait
step cuda_check check 40 mamba-cuda-check --no-ssd --check-only
step ssd_check check 40 mamba-cuda-check --ssd-only --check-only
step train_check check 30 mamba-cuda-train-check
step decode_check check 30 mamba-decode-check --check-only
step conv_cudnn_check check 40 mamba-conv-cudnn-check
for g in "$PREBUILT"/bin/test_cuda_*; do  # the GoogleTest CUDA tests (prebuilt only)
  [ -x "$g" ] && step "gtest_$(basename "$g" | sed 's/^test_cuda_//')" check 60 "$(basename "$g")"
done

# ---- timings at the standard shapes ----------------------------------------------------------
step cuda_time time 50 mamba-cuda-check --no-ssd --timings-only
step ssd_time time 40 mamba-cuda-check --ssd-only --timings-only
step train_time time 40 mamba-cuda-train-check --bench
step decode_time time 40 mamba-decode-check --reps 40
step lm_decode_time time 40 mamba-cuda-bench --decode-only --reps 20
step conv_cudnn_time time 40 mamba-conv-cudnn-check --bench-only
step train_lm_time time 40 mamba-train-lm-cuda --layers 24 --d-model 768 --seq-len 2048 --vocab 50277 --batch 8 \
  --dtype bf16 --steps 25 --warmup 5 --log-every 25
# named only: the same step's phase table (CUDA events per phase, mean of 5 profiled steps)
step train_lm_profile profile 60 mamba-train-lm-cuda --layers 24 --d-model 768 --seq-len 2048 --vocab 50277 --batch 8 \
  --dtype bf16 --steps 10 --warmup 3 --log-every 10 --profile 5
# the same step with scan backward v4's other lane layouts (SelectiveScanBwdCudaParams::v4_layout)
for lay in 1 2; do
  if sel time "train_lm_time_l$lay"; then
    MAMBA_SCAN_BWD_V4_LAYOUT=$lay run_prog "train_lm_time_l$lay" time 40 mamba-train-lm-cuda --layers 24 --d-model 768 \
      --seq-len 2048 --vocab 50277 --batch 8 --dtype bf16 --steps 25 --warmup 5 --log-every 25
  fi
done

# ---- the experiments' checks (and their timings when time is selected) -------------------------
dual() {  # NAME TIMEOUT CHECK_ARGS TIME_ARGS: the time mode when time (or NAME) is selected, else the check mode
  local name="$1" t="$2" ca="$3" ta="$4"
  if sel time "$name"; then run_prog "$name" time "$t" mamba-cuda-check $ta
  elif sel check "$name"; then run_prog "$name" check "$t" mamba-cuda-check $ca; fi
}
dual fast 60 --fast-check --fast
dual scan6 45 --scan6-check --scan6
dual scan7 80 --scan7-check --scan7
dual scanseg 40 --scanseg-check --scanseg-time
dual bw81 90 --bw81-check --bw81
dual bw80 90 --bw80-check --bw80
step decode_kernels time 40 mamba-cuda-check --decode-kernels

# ---- profiles (only when named: --only profile): ncu sections of one launch each, SASS loop mix ----
if sel profile profile && [ -n "$(bin mamba-cuda-check)" ]; then
  C=$(bin mamba-cuda-check)
  if command -v ncu > /dev/null; then
    SEC=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats)
    for m in scan-once ssd-once bw-once scan7-once; do
      run "ncu_$m" 60 ncu "${SEC[@]}" "$C" "--$m"
      grep -E "^  [a-zA-Z_].*\(|Duration|Throughput|No Eligible|Registers Per|Achieved Occupancy" "$LOGD/ncu_$m.log" |
        sed -E 's/^ +//' | cut -c1-120 | head -30
    done
    [ -n "$(bin mamba-cuda-train-check)" ] && run ncu_train_once 60 ncu "${SEC[@]}" "$(bin mamba-cuda-train-check)" --once
  else echo "== ncu: not on this machine"; fi
  if command -v cuobjdump > /dev/null; then
    cuobjdump -sass "$C" 2> /dev/null | awk '/Function :/ { f = ($0 ~ /selective_scan_fwd_v6_kernel/) } f' > "$LOGD/sass_scan.txt"
    run sass_loops 30 python3 kernels/cuda/sass_loops.py "$LOGD/sass_scan.txt" && head -40 "$LOGD/sass_loops.log"
  fi
fi

# ---- profbwd (only when named: --only profbwd): ncu of one scan backward v4 launch (the
# training path) with the stall breakdown and the hottest SASS lines, and the kernel's SASS ----
if sel profbwd profbwd && [ -n "$(bin mamba-cuda-check)" ]; then
  C=$(bin mamba-cuda-check)
  if command -v ncu > /dev/null; then
    run ncu_bwd 90 ncu -k regex:scan_bwd_v4 -c 1 --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section SourceCounters \
      --section ComputeWorkloadAnalysis --section InstructionStats --print-details all "$C" --bwd-once ${BWD_ONCE:-}
    grep -E "Duration|Throughput|Issue Slots|Eligible|Active Warps|Registers Per|Achieved Occupancy|Stall|stall" \
      "$LOGD/ncu_bwd.log" | sed -E 's/^ +//' | cut -c1-160 | head -40
  else echo "== ncu: not on this machine"; fi
  if command -v cuobjdump > /dev/null; then
    cuobjdump -sass "$C" 2> /dev/null | awk '/Function :/ { f = ($0 ~ /scan_bwd_v4_kernel/) } f' > "$LOGD/sass_bwd_v4.txt"
    echo "== sass_bwd_v4: $(grep -c '/\*[0-9a-f]*\*/' "$LOGD/sass_bwd_v4.txt") instructions in $(grep -c 'Function :' "$LOGD/sass_bwd_v4.txt") kernels"
  fi
fi

# ---- the summary -----------------------------------------------------------------------------
# THE table: the standard steps' records, in this order; the experiments' variants (every
# version / knob of fast, scan6, scan7, bw80, bw81) go to $OUT/variants.md, same columns.
STD="cuda_time ssd_time decode_kernels train_time decode_time lm_decode_time train_lm_time conv_cudnn_time bench_check"
VAR="fast scan6 scan7 bw80 bw81"
logs=(); for n in $STD $VAR; do [ -f "$LOGD/$n.log" ] && logs+=("$LOGD/$n.log"); done
for f in "$LOGD"/*.log; do case " ${logs[*]} " in *" $f "*) ;; *) logs+=("$f") ;; esac; done
rx() { echo "/($(echo $1 | tr ' ' '|'))[.]log\$"; }
awk -v rows="$(rx "$VAR")" -v title="variants (the experiments' versions and knobs)" -f kernels/cuda/perf_summary.awk \
  "${logs[@]}" > "$OUT/variants.md"
echo "== variants: $(( $(grep -c "^| " "$OUT/variants.md") - 1 )) rows in $OUT/variants.md (same columns)"
awk -v rows="$(rx "$STD")" -f kernels/cuda/perf_summary.awk "${logs[@]}" | tee "$OUT/summary.md"
# Check lines: "ok ..." / "PASS ..." / "FAIL ..." (mamba-golden: "<label> ok|FAIL max_abs ...").
# GoogleTest: "[       OK ] Suite.Test (N ms)" / "[  FAILED  ] Suite.Test (N ms)".
ok=$(cat "$LOGD"/*.log 2>/dev/null | grep -cE "^ *(ok|PASS)\b| ok +max_abs|^\[       OK \]")
bad=$(cat "$LOGD"/*.log 2>/dev/null | grep -cE "^ *FAIL\b|  FAIL$| FAIL (max_abs|shape)|^\[  FAILED  \] [A-Za-z0-9_/.]+ \(")
echo "passed steps: ${PASSED[*]:-none}"
[ ${#FAILED[@]} = 0 ] || echo "FAILED steps: ${FAILED[*]}"
[ ${#SKIPPED[@]} = 0 ] || echo "skipped steps: ${SKIPPED[*]}"
echo "device_run: ${#PASSED[@]} steps passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped; check lines $ok ok, $bad FAIL; total $(( $(date +%s) - T0 )) s" |
  tee -a "$OUT/summary.md"
[ ${#FAILED[@]} = 0 ] && [ "$rc" = 0 ]
