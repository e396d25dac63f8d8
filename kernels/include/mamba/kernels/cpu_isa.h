#pragma once
// The vector instruction sets that CPU kernels with hand-written vector paths choose between
// at run time.
#include <cstdint>

namespace mamba::kernels {

enum class CpuIsa : uint8_t { scalar, avx2, avx512 };  // avx2 = AVX2 + FMA; avx512 = AVX-512 F

// Whether a path can run: this build compiled it (the compiler's target ISA, -march) and this
// CPU executes it (cpuid). scalar is always available.
bool cpu_isa_available(CpuIsa isa);
// The widest available path: what the kernels run unless a caller names one.
CpuIsa cpu_isa_best();
const char* cpu_isa_name(CpuIsa isa);

}  // namespace mamba::kernels
