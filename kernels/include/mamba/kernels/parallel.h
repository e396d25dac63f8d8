// Thread count for the CPU kernels (OpenMP). Results never depend on it beyond rounding:
// every kernel splits work so that each output element is computed by one thread in a
// fixed order.
#pragma once

namespace mamba::kernels {

void set_num_threads(int n);  // n <= 0 restores the default (OMP_NUM_THREADS or all cores)
int num_threads();

}  // namespace mamba::kernels
