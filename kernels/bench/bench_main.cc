// mamba-bench entry point. Every bench_*.cc in this folder registers its benchmarks;
// see README.md for what each row and counter means.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
