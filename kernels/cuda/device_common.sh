# Sourced by the device round scripts (device_run_bw.sh): the common preamble. From the script:
#   . "$(dirname "$0")/device_common.sh"; device_begin NAME; device_bins BIN_NAME...
# device_begin: to the repository root, PATH with /usr/local/cuda/bin, t0 = the start; the logs
# go to a temporary $OUT that is packed into ONE file, $FINAL_OUT/NAME-logs.tar.gz, at exit (the
# device round returns few files); one nvidia-smi line. device_bins: $BIN when the named binaries
# start there, else builds them with device_build_bw.sh into build-device-bw (ONLY=check when
# only mamba-cuda-check is named) and sets BIN to it.
device_begin() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  OUT="${OUT:-build-device-bw/out}"
  mkdir -p "$OUT"
  FINAL_OUT="$OUT"
  OUT="$(mktemp -d)"
  DEVICE_LOGS="$FINAL_OUT/$1-logs.tar.gz"
  trap 'tar -C "$OUT" -czf "$DEVICE_LOGS" . 2>/dev/null' EXIT
  t0=$(date +%s)
  BIN="${BIN:-}"
  export PATH="$PATH:/usr/local/cuda/bin"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used --format=csv,noheader
}
device_bins() {
  local b usable=1 only=""
  [ -n "$BIN" ] || usable=0
  for b in "$@"; do
    [ -x "$BIN/$b" ] && ! ldd "$BIN/$b" 2>&1 | grep -q "not found\|version .GLIBC" || usable=0
  done
  [ "$*" = mamba-cuda-check ] && only=check
  if [ "$usable" = 0 ]; then
    echo "== prebuilt binaries not usable here ($BIN): building"
    BUILD=build-device-bw JOBS=16 ONLY=$only timeout 80 bash kernels/cuda/device_build_bw.sh > "$OUT/build.log" 2>&1
    echo "build rc=$? in $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/build.log"
    BIN=build-device-bw
  fi
}
