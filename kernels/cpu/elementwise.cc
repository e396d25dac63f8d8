#include "mamba/kernels/elementwise.h"

#include <algorithm>

namespace mamba::kernels {

namespace {

template <class T> inline T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return T(0);
}

// Merges adjacent dimensions whose strides chain for all three operands and drops size-1
// dimensions, so that a contiguous same-shape operation becomes one long row.
BinaryParams coalesce(const BinaryParams& p) {
  BinaryParams q;
  q.op = p.op;
  for (size_t d = 0; d < p.shape.size(); ++d) {
    if (p.shape[d] == 1) continue;
    if (!q.shape.empty()) {
      const int64_t n = p.shape[d];
      if (q.out_strides.back() == p.out_strides[d] * n && q.a_strides.back() == p.a_strides[d] * n &&
          q.b_strides.back() == p.b_strides[d] * n) {
        q.shape.back() *= n;
        q.out_strides.back() = p.out_strides[d];
        q.a_strides.back() = p.a_strides[d];
        q.b_strides.back() = p.b_strides[d];
        continue;
      }
    }
    q.shape.push_back(p.shape[d]);
    q.out_strides.push_back(p.out_strides[d]);
    q.a_strides.push_back(p.a_strides[d]);
    q.b_strides.push_back(p.b_strides[d]);
  }
  if (q.shape.empty()) {
    q.shape = {1};
    q.out_strides = q.a_strides = q.b_strides = {1};
  }
  return q;
}

// The inner loop over the last dimension. The branches give the compiler unit-stride loops
// to vectorise for the common cases.
template <class T>
inline void row(BinaryOp op, int64_t n, const T* a, int64_t sa, const T* b, int64_t sb, T* o, int64_t so) {
  if (so == 1 && sa == 1 && sb == 1) {
    switch (op) {
      case BinaryOp::add: for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i]; return;
      case BinaryOp::sub: for (int64_t i = 0; i < n; ++i) o[i] = a[i] - b[i]; return;
      case BinaryOp::mul: for (int64_t i = 0; i < n; ++i) o[i] = a[i] * b[i]; return;
      case BinaryOp::div: for (int64_t i = 0; i < n; ++i) o[i] = a[i] / b[i]; return;
    }
  }
  if (so == 1 && sa == 1 && sb == 0) {
    const T bv = *b;
    switch (op) {
      case BinaryOp::add: for (int64_t i = 0; i < n; ++i) o[i] = a[i] + bv; return;
      case BinaryOp::sub: for (int64_t i = 0; i < n; ++i) o[i] = a[i] - bv; return;
      case BinaryOp::mul: for (int64_t i = 0; i < n; ++i) o[i] = a[i] * bv; return;
      case BinaryOp::div: for (int64_t i = 0; i < n; ++i) o[i] = a[i] / bv; return;
    }
  }
  if (so == 1 && sa == 0 && sb == 1) {
    const T av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = apply(op, av, b[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) o[i * so] = apply(op, a[i * sa], b[i * sb]);
}

template <class T> void binary_fast(const BinaryParams& p0, const T* a, const T* b, T* out) {
  for (int64_t s : p0.shape)
    if (s == 0) return;
  const BinaryParams p = coalesce(p0);
  const int nd = static_cast<int>(p.shape.size());
  const int64_t inner = p.shape[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= p.shape[d];
  // Split each row into blocks so that one long row still spreads over threads.
  constexpr int64_t kBlock = 8192;
  const int64_t blocks_per_row = (inner + kBlock - 1) / kBlock;
  const int64_t tasks = rows * blocks_per_row;
#pragma omp parallel for schedule(static) if (tasks > 1 && rows * inner > 32768)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r = t / blocks_per_row, blk = t % blocks_per_row;
    int64_t oo = 0, ao = 0, bo = 0, rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % p.shape[d];
      rem /= p.shape[d];
      oo += i * p.out_strides[d];
      ao += i * p.a_strides[d];
      bo += i * p.b_strides[d];
    }
    const int64_t s = blk * kBlock, n = std::min(kBlock, inner - s);
    const int64_t so = p.out_strides[nd - 1], sa = p.a_strides[nd - 1], sb = p.b_strides[nd - 1];
    row(p.op, n, a + ao + s * sa, sa, b + bo + s * sb, sb, out + oo + s * so, so);
  }
}

template <class T> void binary_reference(const BinaryParams& p, const T* a, const T* b, T* out) {
  const size_t nd = p.shape.size();
  int64_t total = 1;
  for (int64_t s : p.shape) total *= s;
  std::vector<int64_t> idx(nd, 0);
  for (int64_t e = 0; e < total; ++e) {
    int64_t oo = 0, ao = 0, bo = 0;
    for (size_t d = 0; d < nd; ++d) {
      oo += idx[d] * p.out_strides[d];
      ao += idx[d] * p.a_strides[d];
      bo += idx[d] * p.b_strides[d];
    }
    out[oo] = apply(p.op, a[ao], b[bo]);
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < p.shape[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

void binary_f32(const BinaryParams& p, const float* a, const float* b, float* out) { binary_fast(p, a, b, out); }
void binary_f64(const BinaryParams& p, const double* a, const double* b, double* out) { binary_fast(p, a, b, out); }
void binary_f32_ref(const BinaryParams& p, const float* a, const float* b, float* out) {
  binary_reference(p, a, b, out);
}
void binary_f64_ref(const BinaryParams& p, const double* a, const double* b, double* out) {
  binary_reference(p, a, b, out);
}

}  // namespace mamba::kernels
