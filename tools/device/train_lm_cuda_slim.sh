#!/usr/bin/env bash
# Links a slim mamba-train-lm-cuda / test_cuda_train for the device snapshot (which must stay
# under 12 MB): the kernels the trainer never calls (Mamba-2 SSD, decode state updates, the
# persistent decode, scan forward v4, cuDNN convolutions, the inference GEMM: the trainer runs
# its own train_gemm_cuda) are left out by defining their
# entry points in a stub object whose every function is `ud2` (a call would stop the program
# with SIGILL, never compute silently); the link is the build's own, plus that object.
#   bash tools/device/train_lm_cuda_slim.sh BUILD_DIR TARGET OUT_BINARY
# TARGET: tools/mamba-train-lm-cuda or tests/test_cuda_train (paths inside BUILD_DIR).
set -euo pipefail
BUILD="$(cd "$1" && pwd)"; TARGET="$2"; OUTB="$(realpath -m "$3")"
DROP="gemm_cublaslt selective_state_update ssd mamba1_decode_persistent selective_scan_v4 ssd_bwd mamba1_decode ssd_state_update conv_cudnn"
T=$(mktemp -d)
( cd "$T" && ar x "$BUILD/kernels/cuda/libmamba_kernels_cuda.a" )
# Stubbed: the functions of namespace mamba (strong or weak: explicit template instantiations
# are weak) that the left-out members define and nothing kept defines (the kept CUDA members,
# the core and CPU kernel libraries, the target's own objects); any other symbol (std::,
# inline helpers also defined elsewhere) stays as it is.
keep_objs=$(cd "$BUILD" && ninja -t commands "$TARGET" | tail -1 | tr ' ' '\n' | grep -E '\.o$' | sed "s#^#$BUILD/#")
{
  for f in "$T"/*.o; do
    m=$(basename "$f" .cu.o)
    case " $DROP " in *" $m "*) ;; *) nm -g --defined-only "$f" ;; esac
  done
  nm -g --defined-only "$BUILD/shared-core/libmamba_core.a" "$BUILD/kernels/libmamba_kernels.a" $keep_objs 2>/dev/null
} | awk 'NF >= 3 {print $3}' | sort -u > "$T/kept.txt"
for m in $DROP; do
  [ -f "$T/$m.cu.o" ] || continue
  nm -g --defined-only "$T/$m.cu.o" | awk '($2 == "T" || $2 == "W") && $3 ~ /^_ZN?K?5mamba/ {print $3}'
done | sort -u | comm -23 - "$T/kept.txt" > "$T/stub.txt"
# One function of a left-out member is given its real body: gemm_cuda_workspace_bytes() (the
# constant 32 MiB of gemm_cublaslt.cu; checked there), which main's trainer sizes its GEMM
# workspace with.
WSB=_ZN5mamba7kernels4cuda25gemm_cuda_workspace_bytesEv
grep -q 'size_t gemm_cuda_workspace_bytes() { return size_t{32} << 20; }' "$BUILD/../kernels/cuda/gemm_cublaslt.cu" ||
  { echo "gemm_cuda_workspace_bytes is no longer 32 MiB: update $0"; exit 3; }
{
  echo '.text'
  if grep -qx "$WSB" "$T/stub.txt"; then
    printf '.globl %s\n.type %s,@function\n%s:\n  movl $33554432, %%eax\n  ret\n' "$WSB" "$WSB" "$WSB"
    sed -i "/^$WSB\$/d" "$T/stub.txt"
  fi
  while read -r s; do printf '.globl %s\n.type %s,@function\n%s:\n  ud2\n' "$s" "$s" "$s"; done < "$T/stub.txt"
  echo '.section .note.GNU-stack,"",@progbits'
} > "$T/stub.s"
echo "stubbed $(wc -l < "$T/stub.txt") functions of: $DROP"
as -o "$T/stub.o" "$T/stub.s"
# The build's link command for TARGET, with the stub object first and the output renamed.
cmd=$(cd "$BUILD" && ninja -t commands "$TARGET" | tail -1)
cmd=${cmd#": && "}; cmd=${cmd%" && :"}
cmd=$(printf '%s' "$cmd" | sed "s# -o $TARGET # -o $OUTB $T/stub.o #")
( cd "$BUILD" && eval "$cmd" )
rm -rf "$T"
ls -la "$OUTB"
