#!/usr/bin/env bash
# Staged by kernels/cuda/device_stage.sh: cd SNAPSHOT && OUT=<dir> bash run.sh [device_run.sh arguments]
cd "$(dirname "$0")"
OUT=$(realpath -m "${OUT:-out}"); mkdir -p "$OUT"
W=$(mktemp -d)
mkdir -p "$W/src"
tar -C "$W" -xJf bins.tar.xz && tar -C "$W/src" -xJf src.tar.xz || { echo "extract failed"; exit 4; }
echo "snapshot of commit $(cat "$W/COMMIT"), $(wc -l < "$W/DIRTY") changed files; unpacked in $SECONDS s"
OUT="$OUT" PREBUILT="$W" bash "$W/src/kernels/cuda/device_run.sh" "$@"
r=$?
rm -rf "$W"
exit $r
