#include "mamba/kernels/shape_ops.h"

#include <cstring>

namespace mamba::kernels {

namespace {

// Drops size-1 dims and merges dims whose strides chain in both src and dst.
CopyParams coalesce(const CopyParams& p) {
  CopyParams q;
  q.elem_size = p.elem_size;
  for (size_t d = 0; d < p.shape.size(); ++d) {
    if (p.shape[d] == 1) continue;
    const int64_t n = p.shape[d];
    if (!q.shape.empty() && q.src_strides.back() == p.src_strides[d] * n &&
        q.dst_strides.back() == p.dst_strides[d] * n) {
      q.shape.back() *= n;
      q.src_strides.back() = p.src_strides[d];
      q.dst_strides.back() = p.dst_strides[d];
      continue;
    }
    q.shape.push_back(n);
    q.src_strides.push_back(p.src_strides[d]);
    q.dst_strides.push_back(p.dst_strides[d]);
  }
  if (q.shape.empty()) {
    q.shape = {1};
    q.src_strides = q.dst_strides = {1};
  }
  return q;
}

template <class T> void copy_row(int64_t n, const T* s, int64_t ss, T* d, int64_t ds) {
  for (int64_t i = 0; i < n; ++i) d[i * ds] = s[i * ss];
}

void row(size_t es, int64_t n, const char* s, int64_t ss, char* d, int64_t ds) {
  if (ss == 1 && ds == 1) {
    std::memcpy(d, s, static_cast<size_t>(n) * es);
    return;
  }
  switch (es) {
    case 1: copy_row(n, reinterpret_cast<const uint8_t*>(s), ss, reinterpret_cast<uint8_t*>(d), ds); return;
    case 2: copy_row(n, reinterpret_cast<const uint16_t*>(s), ss, reinterpret_cast<uint16_t*>(d), ds); return;
    case 4: copy_row(n, reinterpret_cast<const uint32_t*>(s), ss, reinterpret_cast<uint32_t*>(d), ds); return;
    default: copy_row(n, reinterpret_cast<const uint64_t*>(s), ss, reinterpret_cast<uint64_t*>(d), ds); return;
  }
}

}  // namespace

void copy_strided(const CopyParams& p0, const void* src, void* dst) {
  for (int64_t s : p0.shape)
    if (s == 0) return;
  const CopyParams p = coalesce(p0);
  const int nd = static_cast<int>(p.shape.size());
  const int64_t inner = p.shape[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= p.shape[d];
  const auto es = static_cast<int64_t>(p.elem_size);
  const char* s = static_cast<const char*>(src);
  char* o = static_cast<char*>(dst);
#pragma omp parallel for schedule(static) if (rows > 1 && rows * inner > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t so = 0, oo = 0, rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % p.shape[d];
      rem /= p.shape[d];
      so += i * p.src_strides[d];
      oo += i * p.dst_strides[d];
    }
    row(p.elem_size, inner, s + so * es, p.src_strides[nd - 1], o + oo * es, p.dst_strides[nd - 1]);
  }
}

void copy_strided_ref(const CopyParams& p, const void* src, void* dst) {
  const size_t nd = p.shape.size();
  int64_t total = 1;
  for (int64_t s : p.shape) total *= s;
  std::vector<int64_t> idx(nd, 0);
  const auto es = static_cast<int64_t>(p.elem_size);
  for (int64_t e = 0; e < total; ++e) {
    int64_t so = 0, oo = 0;
    for (size_t d = 0; d < nd; ++d) {
      so += idx[d] * p.src_strides[d];
      oo += idx[d] * p.dst_strides[d];
    }
    std::memcpy(static_cast<char*>(dst) + oo * es, static_cast<const char*>(src) + so * es, p.elem_size);
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < p.shape[d]) break;
      idx[d] = 0;
    }
  }
}

void gather(const GatherParams& p, const void* src, void* dst) {
  const int nd = static_cast<int>(p.shape.size());
  int64_t total = 1;
  for (int64_t s : p.shape) total *= s;
  if (total == 0) return;
  const int64_t inner = nd == 0 ? 1 : p.shape[nd - 1];
  const int64_t rows = total / inner;
  const size_t es = p.elem_size;
  const char* s = static_cast<const char*>(src);
  char* o = static_cast<char*>(dst);
  // The last dim's source offsets, once.
  std::vector<int64_t> last(static_cast<size_t>(inner), 0);
  for (int64_t i = 0; i < inner && nd > 0; ++i) {
    const int64_t m = p.maps[static_cast<size_t>(nd - 1)][static_cast<size_t>(i)];
    last[static_cast<size_t>(i)] = m < 0 ? -1 : m * p.src_strides[static_cast<size_t>(nd - 1)];
  }
#pragma omp parallel for schedule(static) if (rows > 1 && total > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t so = 0, rem = r;
    bool filled = false;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = rem % p.shape[d];
      rem /= p.shape[d];
      const int64_t m = p.maps[static_cast<size_t>(d)][static_cast<size_t>(i)];
      if (m < 0) filled = true;
      so += m * p.src_strides[d];
    }
    char* orow = o + static_cast<size_t>(r * inner) * es;
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t l = last[static_cast<size_t>(i)];
      std::memcpy(orow + static_cast<size_t>(i) * es,
                  (filled || l < 0) ? p.fill : static_cast<const void*>(s + (so + l) * static_cast<int64_t>(es)), es);
    }
  }
}

void gather_ref(const GatherParams& p, const void* src, void* dst) {
  const size_t nd = p.shape.size();
  int64_t total = 1;
  for (int64_t s : p.shape) total *= s;
  std::vector<int64_t> idx(nd, 0);
  for (int64_t e = 0; e < total; ++e) {
    int64_t so = 0;
    bool filled = false;
    for (size_t d = 0; d < nd; ++d) {
      const int64_t m = p.maps[d][static_cast<size_t>(idx[d])];
      if (m < 0) filled = true;
      so += m * p.src_strides[d];
    }
    std::memcpy(static_cast<char*>(dst) + static_cast<size_t>(e) * p.elem_size,
                filled ? p.fill : static_cast<const char*>(src) + so * static_cast<int64_t>(p.elem_size), p.elem_size);
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < p.shape[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace mamba::kernels
