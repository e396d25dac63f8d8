// Thread count for the CPU kernels (OpenMP). Results never depend on it beyond rounding:
// every kernel splits work so that each output element is computed by one thread in a
// fixed order.
#pragma once

namespace mamba::kernels {

void set_num_threads(int n);  // n <= 0 restores the default (OMP_NUM_THREADS or all cores)
int num_threads();

// Sets flush-to-zero and denormals-are-zero on the calling thread and every OpenMP worker
// (x86 MXCSR; a no-op elsewhere). Training drives many values towards zero, and
// arithmetic on denormal floats is up to 100x slower; treating them as zero changes
// results only below 1.2e-38. Tools and servers call it once at start-up.
void flush_denormals();

}  // namespace mamba::kernels
