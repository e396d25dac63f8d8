#!/usr/bin/env bash
# The run command: installs what it needs, builds, and runs the suite's main job.
# For now (core library only) that is a demo of the core: load a Mamba language model,
# prefill a prompt, decode a few tokens, print the tokens and the timing, for a Mamba-1
# and a Mamba-2 model (the golden LM files in ../shared/golden).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target mamba-demo mamba-golden
GOLDEN=${MAMBA_GOLDEN_DIR:-../shared/golden}
for m in mamba1_lm mamba2_lm; do
  f="$GOLDEN/$m.safetensors"
  if [ ! -f "$f" ]; then
    echo "run.sh: $f not found (set MAMBA_GOLDEN_DIR to the folder with the golden LM files)" >&2
    exit 1
  fi
  echo "== $m"
  "$BUILD_DIR/tools/mamba-demo" "$f" --prompt 3,1,4,1,5,9,2,6 --tokens 12
done
echo "== golden check"
"$BUILD_DIR/tools/mamba-golden" "$GOLDEN"/*.safetensors | grep -E '^golden:|FAIL|ERROR' || true
