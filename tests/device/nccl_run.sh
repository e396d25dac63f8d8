#!/usr/bin/env bash
# The nccl backend on a GPU machine. From the repository root:  bash tests/device/nccl_run.sh
# Builds nccl_check and mamba-launch with g++ against the CUDA toolkit's NCCL (the GPU image
# has no Debian packages, and these need none), then runs:
#   1. one rank on GPU 0 (a real one-rank NCCL communicator: init, host/device buffers);
#   2. every rank without a visible GPU: each must fail with a clear error, not hang;
#   3. two ranks on the same GPU: NCCL refuses; each rank must fail with the NCCL error;
#   4. with >= 2 GPUs: mamba-launch --nproc <#GPUs> --device cuda nccl_check (the real
#      multi-GPU check; on one GPU it is skipped and says so).
# Logs go to $OUT when set (else build-nccl/logs). Exit status non-zero when a step fails.
set -u
cd "$(dirname "$0")/../.."
LOG="${OUT:-build-nccl/logs}"
B=build-nccl
mkdir -p "$LOG" "$B"
exec > >(tee "$LOG/nccl_run.log") 2>&1
CUDA=/usr/local/cuda
INC=(-Ishared-core/include -I$CUDA/include)
LIBS=(-L$CUDA/lib64 -L$CUDA/lib -lnccl -lcudart -Wl,-rpath,$CUDA/lib64 -Wl,-rpath,$CUDA/lib -pthread)
set -x
g++ -O2 -std=c++20 -DMAMBA_HAVE_NCCL=1 "${INC[@]}" tests/device/nccl_check.cc shared-core/src/train/distributed.cc \
  shared-core/src/train/distributed_nccl.cc "${LIBS[@]}" -o $B/nccl_check || exit 4
g++ -O2 -std=c++20 "${INC[@]}" tools/mamba_launch.cc shared-core/src/train/launch.cc -o $B/mamba-launch || exit 4
set +x
nvidia-smi -L
NGPU=$(nvidia-smi -L | grep -c '^GPU')
rc=0
echo "== 1. one rank, real NCCL communicator"
$B/nccl_check || rc=1
echo "== 2. no visible GPU (2 ranks): each must fail clearly"
CUDA_VISIBLE_DEVICES= timeout 120 $B/mamba-launch --nproc 2 -- $B/nccl_check; s=$?
[ "$s" != 0 ] && [ "$s" != 124 ] || { echo "expected a clean failure, got $s"; rc=1; }
echo "== 3. two ranks on one GPU: NCCL refuses; each must fail clearly"
timeout 120 $B/mamba-launch --nproc 2 --device cuda --gpus 0,0 --grace-s 20 -- $B/nccl_check; s=$?
[ "$s" != 0 ] && [ "$s" != 124 ] || { echo "expected a clean failure, got $s"; rc=1; }
echo "== 4. $NGPU GPU(s)"
if [ "$NGPU" -ge 2 ]; then
  timeout 300 $B/mamba-launch --nproc "$NGPU" --device cuda -- $B/nccl_check || rc=1
else
  echo "SKIPPED: the multi-GPU NCCL check needs >= 2 GPUs (this machine has $NGPU)"
fi
echo "nccl_run: exit $rc"
exit $rc
