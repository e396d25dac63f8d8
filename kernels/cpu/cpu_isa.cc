#include "mamba/kernels/cpu_isa.h"

namespace mamba::kernels {

bool cpu_isa_available(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::scalar:
      return true;
    case CpuIsa::avx2:
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
    {
      static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
      return ok;
    }
#else
      return false;
#endif
    case CpuIsa::avx512:
#if defined(__x86_64__) && defined(__AVX512F__)
    {
      static const bool ok = __builtin_cpu_supports("avx512f");
      return ok;
    }
#else
      return false;
#endif
  }
  return false;
}

CpuIsa cpu_isa_best() {
  static const CpuIsa best = cpu_isa_available(CpuIsa::avx512) ? CpuIsa::avx512
                             : cpu_isa_available(CpuIsa::avx2) ? CpuIsa::avx2
                                                               : CpuIsa::scalar;
  return best;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::scalar: return "scalar";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
  }
  return "?";
}

}  // namespace mamba::kernels
