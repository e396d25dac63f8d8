// Shape and data-movement ops (PyTorch semantics where one exists). Any dtype, any strides.
// Results are new contiguous tensors except split, which returns views.
#pragma once
#include <utility>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::ops {

// torch.cat: every tensor has the same rank, dtype and sizes except along `dim`.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor concat_ref(const std::vector<Tensor>& xs, int64_t dim);

// torch.split with a list of sizes: views of x, consecutive along `dim`; sizes are >= 0
// and sum to x.size(dim).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// torch.flip: reverses the order along each dim in `dims` (each at most once).
Tensor flip(const Tensor& x, const std::vector<int64_t>& dims);
Tensor flip_ref(const Tensor& x, const std::vector<int64_t>& dims);

// Contiguous copy of x.permute(dims).
Tensor permute_copy(const Tensor& x, const std::vector<int64_t>& dims);
Tensor permute_copy_ref(const Tensor& x, const std::vector<int64_t>& dims);

// Padding. pads[i] = {before, after} for dim x.dim() - pads.size() + i, i.e. pads lists the
// trailing dims in order (NOT F.pad's last-dim-first order). All values must be >= 0.
//   constant:  new elements are `value` (converted to x's dtype).
//   reflect:   mirror without repeating the edge (torch "reflect"); needs before, after < size;
//              at most 3 padded dims (1-D/2-D/3-D spatial padding).
//   replicate: repeat the edge element; needs size >= 1; at most 3 padded dims.
enum class PadMode : uint8_t { constant, reflect, replicate };
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode = PadMode::constant,
           double value = 0.0);
Tensor pad_ref(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode = PadMode::constant,
               double value = 0.0);

}  // namespace mamba::ops
