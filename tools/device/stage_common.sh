# Sourced by the stage scripts of the Mamba-1 device rounds (prune_stage.sh, scanfwd3_stage.sh),
# from the repository root, after they copied their binaries into $W/bin:
#   stage_pack W DEST RUN_SCRIPT
# adds to W libgomp (from the ldd of W/bin's binaries), tools/device/refblas.c built as
# libopenblas.so.0 (the GPU machine has no OpenBLAS), the Mamba-1 golden files, COMMIT and DIRTY;
# then DEST = bins.tar.xz (W, xz) + run.sh (RUN_SCRIPT) + round_steps.sh.
stage_pack() {
  local W="$1" DEST="$2" RUN="$3" G=../shared/golden
  mkdir -p "$W/lib" "$W/golden"
  cp "$(for b in "$W"/bin/*; do ldd "$b"; done | awk '/libgomp/ {print $3; exit}')" "$W/lib/libgomp.so.1"
  gcc -O3 -fopenmp -fPIC -shared -Wl,-soname,libopenblas.so.0 tools/device/refblas.c -o "$W/lib/libopenblas.so.0"
  cp "$G"/selective_scan.safetensors "$G"/mamba1_block.safetensors "$G"/mamba1_lm.safetensors "$W/golden/"
  git rev-parse HEAD > "$W/COMMIT"
  git status --porcelain | head -5 > "$W/DIRTY"
  rm -rf "$DEST"
  mkdir -p "$DEST"
  tar -C "$W" -cf - . | xz -9 -T2 > "$DEST/bins.tar.xz"
  cp "$RUN" "$DEST/run.sh"
  cp tools/device/round_steps.sh "$DEST/round_steps.sh"
}
