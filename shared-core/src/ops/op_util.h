// Internal helpers shared by the ops sources (not installed).
#pragma once
#include <string>

#include "mamba/tensor/tensor.h"

namespace mamba::ops::detail {

// Wraps a possibly negative dim into [0, ndim) or throws naming the op and the shape.
inline int64_t wrap_dim(const char* op, const Tensor& t, int64_t dim) {
  const int64_t nd = t.dim();
  const int64_t d = dim < 0 ? dim + nd : dim;
  if (d < 0 || d >= nd)
    fail(op, "dim " + std::to_string(dim) + " is out of range for " + t.str());
  return d;
}

// [outer, n, inner] view of a contiguous tensor around dimension d.
struct Split3 {
  int64_t outer = 1, n = 1, inner = 1;
};
inline Split3 split3(const Shape& s, int64_t d) {
  Split3 r;
  for (int64_t i = 0; i < d; ++i) r.outer *= s[static_cast<size_t>(i)];
  r.n = s[static_cast<size_t>(d)];
  for (size_t i = static_cast<size_t>(d) + 1; i < s.size(); ++i) r.inner *= s[i];
  return r;
}

inline void check_defined(const char* op, const Tensor& t, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is undefined");
}

inline void check_cpu(const char* op, const Tensor& t, const char* name) {
  if (!t.device().is_cpu()) fail(op, std::string(name) + " must be on cpu, got " + t.device().str());
}

// Requires f32 or f64.
inline void check_float(const char* op, const Tensor& t, const char* name, bool allow_f64 = true) {
  check_defined(op, t, name);
  check_cpu(op, t, name);
  if (t.dtype() != DType::f32 && !(allow_f64 && t.dtype() == DType::f64))
    fail(op, std::string(name) + " must be f32" + (allow_f64 ? " or f64" : "") + ", got " + t.str());
}

}  // namespace mamba::ops::detail
