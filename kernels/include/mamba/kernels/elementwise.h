// Elementwise binary arithmetic with broadcasting, on strided memory.
//
// Layout: `out`, `a` and `b` are addressed through per-dimension strides in elements over
// the output shape; a stride of 0 broadcasts an operand along that dimension (a scalar is
// an operand whose strides are all 0). Strides may be negative. `out` must not overlap `a`
// or `b` except when it is exactly the same memory with the same strides (in-place).
// Threading: OpenMP over rows of the output; each output element is computed by one thread,
// so results do not depend on the thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace mamba::kernels {

enum class BinaryOp : uint8_t { add, sub, mul, div };

struct BinaryParams {
  BinaryOp op = BinaryOp::add;
  std::vector<int64_t> shape;        // output shape (rank 0 means one element)
  std::vector<int64_t> out_strides;  // in elements
  std::vector<int64_t> a_strides;
  std::vector<int64_t> b_strides;
};

void binary_f32(const BinaryParams& p, const float* a, const float* b, float* out);
void binary_f64(const BinaryParams& p, const double* a, const double* b, double* out);
// Plain odometer loop, one element at a time.
void binary_f32_ref(const BinaryParams& p, const float* a, const float* b, float* out);
void binary_f64_ref(const BinaryParams& p, const double* a, const double* b, double* out);

}  // namespace mamba::kernels
