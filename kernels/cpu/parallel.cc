#include "mamba/kernels/parallel.h"

#include <omp.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace mamba::kernels {

namespace {
const int kDefaultThreads = omp_get_max_threads();
}

void set_num_threads(int n) {
  omp_set_num_threads(n > 0 ? n : kDefaultThreads);
}
int num_threads() { return omp_get_max_threads(); }

void flush_denormals() {
#if defined(__SSE__)
  _mm_setcsr(_mm_getcsr() | 0x8040);  // FTZ | DAZ
#pragma omp parallel
  { _mm_setcsr(_mm_getcsr() | 0x8040); }
#endif
}

}  // namespace mamba::kernels
