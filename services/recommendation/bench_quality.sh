#!/usr/bin/env bash
# Recommendation quality on real data (issue 6's quality target: the default `mamba-rec
# train` must beat the first-order Markov baseline on any real dataset in RecBole format).
#
#   services/recommendation/bench_quality.sh [--inter FILE] [--work DIR] [--build DIR]
#                                            [--train-args "ARGS"]   (extra `mamba-rec train` flags)
#
# Without --inter it uses real MovieLens ratings that Debian ships: the `movielens` table of
# the dslabs R package (r-cran-dslabs: GroupLens' ml-latest-small of 2016, 100,004 ratings,
# 671 users, 9,066 movies, Unix timestamps). The package is downloaded, not installed (its
# dependencies are the whole tidyverse); R itself (r-base-core, no recommends: 4 packages)
# reads the lazy-load database and writes a RecBole .inter (user_id:token item_id:token
# rating:float timestamp:float). The data stays in WORK; it is not redistributed here
# (GroupLens' terms). With --inter FILE any RecBole file is used instead (ML-1M, say).
#
# Then `mamba-rec train` with its defaults (the regularisation candidates chosen on the
# validation split, early stopping) and `--log`; it prints the popularity and Markov
# baselines and the model, valid and test, under the RecBole sequential protocol
# (leave-one-out, full ranking). The last lines are the table. About 10-40 minutes on 2 cores
# for the MovieLens table.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build inter= work= train_args=
while [ $# -gt 0 ]; do
  case "$1" in
    --inter) inter=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --train-args) train_args=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench_quality.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
rec=$build/services/recommendation/mamba-rec
[ -x "$rec" ] || { echo "bench_quality.sh: $rec not built (run ./tests/run.sh or cmake --build build)" >&2; exit 1; }
work=${work:-$root/var/bench-quality}
mkdir -p "$work"

if [ -z "$inter" ]; then
  inter=$work/ml-latest-small.inter
  if [ ! -s "$inter" ]; then
    if ! command -v Rscript >/dev/null; then
      SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
      $SUDO apt-get update -q
      $SUDO apt-get install -y --no-install-recommends r-base-core
    fi
    (cd "$work" && rm -f r-cran-dslabs_*.deb && apt-get download r-cran-dslabs)
    rm -rf "$work/dslabs" && dpkg-deb -x "$work"/r-cran-dslabs_*.deb "$work/dslabs"
    db=$(find "$work/dslabs" -path '*dslabs/data/Rdata.rdb' | head -n 1)
    [ -n "$db" ] || { echo "bench_quality.sh: no dslabs data in the package" >&2; exit 1; }
    Rscript -e '
      args <- commandArgs(trailingOnly = TRUE)
      e <- new.env(); lazyLoad(args[1], envir = e); m <- get("movielens", envir = e)
      out <- file(args[2], "w")
      writeLines("user_id:token\titem_id:token\trating:float\ttimestamp:float", out)
      write.table(m[, c("userId", "movieId", "rating", "timestamp")], out, sep = "\t",
                  row.names = FALSE, col.names = FALSE, quote = FALSE)
      close(out)' "${db%.rdb}" "$inter.tmp"
    mv "$inter.tmp" "$inter"
  fi
  echo "-- MovieLens (dslabs, ml-latest-small 2016): $(($(wc -l < "$inter") - 1)) ratings in $inter"
fi

model=$work/model
rm -rf "$model"
# shellcheck disable=SC2086
"$rec" train --inter "$inter" --out "$model" --log "$work/train.jsonl" $train_args | tee "$work/train.log"
echo "-- table (valid: the model choice; test: the figures)"
grep -E '^(valid|test) ' "$work/train.log" | tail -n 6
