// Data movement for the shape ops: strided copies and index-map gathers on raw bytes.
//
// copy_strided: dst[idx . dst_strides] = src[idx . src_strides] for every index idx of
//   `shape`; strides in elements (negative allowed), elements of `elem_size` bytes
//   (1, 2, 4 or 8). src and dst must not overlap.
// gather: dst is contiguous of `shape`; along each dim d, output index i reads source index
//   maps[d][i], or writes `fill` (elem_size bytes) when any maps[d][i] is -1. Used for
//   constant, reflect and replicate padding.
// Threading: OpenMP over output rows; each element is written once, so results do not
// depend on the thread count.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mamba::kernels {

struct CopyParams {
  std::vector<int64_t> shape;
  std::vector<int64_t> src_strides;
  std::vector<int64_t> dst_strides;
  size_t elem_size = 4;
};

void copy_strided(const CopyParams& p, const void* src, void* dst);
void copy_strided_ref(const CopyParams& p, const void* src, void* dst);

struct GatherParams {
  std::vector<int64_t> shape;                // output shape
  std::vector<int64_t> src_strides;          // in elements
  std::vector<std::vector<int64_t>> maps;    // maps[d].size() == shape[d]
  size_t elem_size = 4;
  const void* fill = nullptr;                // elem_size bytes, used where a map is -1
};

void gather(const GatherParams& p, const void* src, void* dst);
void gather_ref(const GatherParams& p, const void* src, void* dst);

}  // namespace mamba::kernels
