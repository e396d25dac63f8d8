// mamba-bench entry point. Every bench_*.cc in this folder registers its benchmarks;
// see README.md for what each row and counter means. The header of the table records the
// thread count and OpenMP wait policy, which change the numbers more than anything else on
// a shared machine.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "mamba/kernels/parallel.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("mamba_threads", std::to_string(mamba::kernels::num_threads()));
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  benchmark::AddCustomContext("OMP_WAIT_POLICY", policy ? policy : "(unset: libgomp spins, then sleeps)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
