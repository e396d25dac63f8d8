#include "mamba/tensor/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>

#include "mamba/kernels/half.h"
#include "mamba/tensor/allocator.h"
#include "mamba/tensor/cuda.h"

namespace mamba {

[[noreturn]] void fail(const std::string& op, const std::string& message) { throw Error(op + ": " + message); }

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

bool dtype_is_float(DType dt) {
  return dt == DType::f32 || dt == DType::f64 || dt == DType::bf16 || dt == DType::f16;
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string n = s.substr(5);
    if (!n.empty() && n.size() < 4 && std::all_of(n.begin(), n.end(), ::isdigit)) return cuda(std::stoi(n));
  }
  fail("Device::parse", "unknown device '" + s + "' (expected cpu, cuda or cuda:N)");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) fail("shape", "negative dimension in " + shape_str(s));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) fail("shape", "element count overflows in " + shape_str(s));
    n *= d;
  }
  return n;
}

// ---- Storage -----------------------------------------------------------------------

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), owned_(true), device_(device) {
  if (!device.is_cpu()) {
    data_ = cuda::allocate_device(bytes, device.index);  // throws when built without CUDA or no such GPU
    return;
  }
  try {
    data_ = cpu_allocate(bytes);
  } catch (const std::bad_alloc&) {
    fail("Storage", "out of memory allocating " + std::to_string(bytes) + " bytes");
  }
}

Storage::Storage(void* data, size_t bytes, std::shared_ptr<void> keep_alive, Device device)
    : data_(data), bytes_(bytes), owned_(false), keep_alive_(std::move(keep_alive)), device_(device) {}

Storage::~Storage() {
  if (!owned_) return;
  if (device_.is_cpu())
    cpu_free(data_, bytes_);
  else
    cuda::free_device(data_);
}

// ---- Tensor ------------------------------------------------------------------------

Shape Tensor::contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const int64_t n = shape_numel(shape);
  if (static_cast<uint64_t>(n) > std::numeric_limits<uint64_t>::max() / dtype_size(dtype))
    fail("Tensor::empty", "byte size overflows for " + shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (!device.is_cpu()) {
    if (t.nbytes()) cuda::fill(t, 0.0);
    return t;
  }
  if (t.nbytes()) std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  if (shape_numel(shape) != static_cast<int64_t>(v.size()))
    fail("Tensor::from_vector", std::to_string(v.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::f32);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_vector_i64(const std::vector<int64_t>& v, const Shape& shape) {
  if (shape_numel(shape) != static_cast<int64_t>(v.size()))
    fail("Tensor::from_vector", std::to_string(v.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::i64);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * 8);
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape,
                            const Shape& strides, DType dtype) {
  if (!storage) fail("Tensor::from_storage", "null storage");
  if (shape.size() != strides.size()) fail("Tensor::from_storage", "shape and strides differ in rank");
  const int64_t n = shape_numel(shape);
  // Largest element offset reached; strides must be non-negative.
  uint64_t max_off = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (strides[i] < 0) fail("Tensor::from_storage", "negative stride");
    if (shape[i] > 0) max_off += static_cast<uint64_t>(shape[i] - 1) * static_cast<uint64_t>(strides[i]);
  }
  const uint64_t need = n == 0 ? 0 : (max_off + 1) * dtype_size(dtype);
  if (byte_offset > storage->bytes() || need > storage->bytes() - byte_offset)
    fail("Tensor::from_storage", "tensor " + shape_str(shape) + " " + dtype_name(dtype) + " at byte " +
                                     std::to_string(byte_offset) + " does not fit in storage of " +
                                     std::to_string(storage->bytes()) + " bytes");
  Tensor t;
  t.storage_ = std::move(storage);
  t.byte_offset_ = byte_offset;
  t.shape_ = shape;
  t.strides_ = strides;
  t.dtype_ = dtype;
  return t;
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device::cpu(); }

int64_t Tensor::wrap_dim(int64_t d, const char* op, int64_t ndim) const {
  if (d < -ndim || d >= ndim)
    fail(op, "dimension " + std::to_string(d) + " out of range for tensor " + str());
  return d < 0 ? d + ndim : d;
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, "Tensor::size", dim())]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, "Tensor::stride", dim())]; }

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype_)) + shape_str(shape_);
}

void check_dtype(const Tensor& t, DType want, const char* op) {
  if (!t.defined()) fail(op, "tensor is undefined");
  if (t.dtype() != want) fail(op, std::string("expected ") + dtype_name(want) + ", got " + t.str());
}

void check_shape(const Tensor& t, const Shape& want, const char* op, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is undefined, expected shape " + shape_str(want));
  if (t.shape() != want) fail(op, std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(want));
}

void* Tensor::raw_data() const {
  if (!storage_) fail("Tensor::data", "tensor is undefined");
  return static_cast<char*>(storage_->data()) + byte_offset_;
}

// ---- element conversion helpers ----------------------------------------------------

namespace {

double load_as_double(const char* p, DType dt) {
  switch (dt) {
    case DType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::f64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::bf16: { uint16_t v; std::memcpy(&v, p, 2); return kernels::bf16_to_f32(v); }
    case DType::f16: { uint16_t v; std::memcpy(&v, p, 2); return kernels::f16_to_f32(v); }
    case DType::i32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::i64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case DType::u8: return static_cast<unsigned char>(*p);
  }
  return 0;
}

void store_from_double(char* p, DType dt, double x) {
  switch (dt) {
    case DType::f32: { float v = static_cast<float>(x); std::memcpy(p, &v, 4); break; }
    case DType::f64: std::memcpy(p, &x, 8); break;
    case DType::bf16: { uint16_t v = kernels::f32_to_bf16(static_cast<float>(x)); std::memcpy(p, &v, 2); break; }
    case DType::f16: { uint16_t v = kernels::f32_to_f16(static_cast<float>(x)); std::memcpy(p, &v, 2); break; }
    case DType::i32: { int32_t v = static_cast<int32_t>(x); std::memcpy(p, &v, 4); break; }
    case DType::i64: { int64_t v = static_cast<int64_t>(x); std::memcpy(p, &v, 8); break; }
    case DType::u8: *p = static_cast<char>(static_cast<unsigned char>(x)); break;
  }
}

// Walks every element of `shape` in row-major order, calling f(src_offset, dst_offset) with
// element offsets under the two stride sets. The innermost dimension is a tight loop.
template <class F>
void for_each_offset(const Shape& shape, const Shape& s1, const Shape& s2, F&& f) {
  const size_t nd = shape.size();
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    f(int64_t{0}, int64_t{0});
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  const int64_t inner = shape[nd - 1], a1 = s1[nd - 1], a2 = s2[nd - 1];
  int64_t o1 = 0, o2 = 0;
  while (true) {
    for (int64_t i = 0; i < inner; ++i) f(o1 + i * a1, o2 + i * a2);
    int64_t d = static_cast<int64_t>(nd) - 2;
    for (; d >= 0; --d) {
      o1 += s1[d];
      o2 += s2[d];
      if (++idx[d] < shape[d]) break;
      o1 -= s1[d] * shape[d];
      o2 -= s2[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace

double Tensor::item() const {
  if (numel() != 1) fail("Tensor::item", "expected one element, got " + str());
  if (is_cuda()) return to(Device::cpu()).item();
  return load_as_double(static_cast<const char*>(raw_data()), dtype_);
}

void Tensor::copy_from(const Tensor& src) {
  if (shape_ != src.shape_) fail("Tensor::copy_from", "shape mismatch: " + str() + " <- " + src.str());
  if (is_cuda() || src.is_cuda()) {
    cuda::copy(*this, src);
    return;
  }
  char* dst_base = static_cast<char*>(raw_data());
  const char* src_base = static_cast<const char*>(src.raw_data());
  const size_t ds = dtype_size(dtype_), ss = dtype_size(src.dtype_);
  if (dtype_ == src.dtype_) {
    if (is_contiguous() && src.is_contiguous()) {
      if (nbytes()) std::memmove(dst_base, src_base, nbytes());
      return;
    }
    if (ds == 4) {
      for_each_offset(shape_, src.strides_, strides_, [&](int64_t so, int64_t dof) {
        std::memcpy(dst_base + dof * 4, src_base + so * 4, 4);
      });
      return;
    }
    for_each_offset(shape_, src.strides_, strides_, [&](int64_t so, int64_t dof) {
      std::memcpy(dst_base + dof * ds, src_base + so * ss, ds);
    });
    return;
  }
  const DType sd = src.dtype_, dd = dtype_;
  for_each_offset(shape_, src.strides_, strides_, [&](int64_t so, int64_t dof) {
    store_from_double(dst_base + dof * ds, dd, load_as_double(src_base + so * ss, sd));
  });
}

void Tensor::fill(double value) {
  if (is_cuda()) {
    cuda::fill(*this, value);
    return;
  }
  char* base = static_cast<char*>(raw_data());
  if (dtype_ == DType::f32 && is_contiguous()) {
    std::fill_n(reinterpret_cast<float*>(base), numel(), static_cast<float>(value));
    return;
  }
  const size_t ds = dtype_size(dtype_);
  for_each_offset(shape_, strides_, strides_, [&](int64_t o, int64_t) { store_from_double(base + o * ds, dtype_, value); });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (!defined()) fail("Tensor::to", "tensor is undefined");
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

std::vector<float> Tensor::to_vector_f32() const {
  if (is_cuda()) return to(Device::cpu()).to_vector_f32();
  Tensor c = to(DType::f32).contiguous();
  const float* p = c.data<float>();
  return std::vector<float>(p, p + c.numel());
}

// ---- views -------------------------------------------------------------------------

namespace {
Shape infer_shape(const Shape& want, int64_t numel, const Tensor& t) {
  Shape s = want;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) fail("Tensor::view", "more than one -1 in " + shape_str(want));
      infer = static_cast<int64_t>(i);
    } else if (s[i] < 0) {
      fail("Tensor::view", "negative dimension in " + shape_str(want));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0) fail("Tensor::view", "cannot view " + t.str() + " as " + shape_str(want));
    s[infer] = numel / known;
  }
  if (shape_numel(s) != numel) fail("Tensor::view", "cannot view " + t.str() + " as " + shape_str(want));
  return s;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), *this);
  // General case: each run of new dims must map to a run of old dims that is itself
  // contiguous (strides chain). Computed like PyTorch's computeStride.
  Shape ns(s.size());
  if (numel() == 0 || is_contiguous()) {
    ns = contiguous_strides(s);
  } else {
    int64_t view_d = static_cast<int64_t>(s.size()) - 1;
    int64_t chunk_base_stride = strides_.empty() ? 1 : strides_.back();
    int64_t tensor_numel = 1, view_numel = 1;
    for (int64_t td = dim() - 1; td >= 0; --td) {
      tensor_numel *= shape_[td];
      if (td == 0 || (shape_[td - 1] != 1 && strides_[td - 1] != tensor_numel * chunk_base_stride)) {
        while (view_d >= 0 && (view_numel < tensor_numel || s[view_d] == 1)) {
          ns[view_d] = view_numel * chunk_base_stride;
          view_numel *= s[view_d];
          --view_d;
        }
        if (view_numel != tensor_numel) fail("Tensor::view", "cannot view non-contiguous " + str() + " as " + shape_str(s) + " (use reshape)");
        if (td > 0) {
          chunk_base_stride = strides_[td - 1];
          tensor_numel = 1;
          view_numel = 1;
        }
      }
    }
    if (view_d != -1) fail("Tensor::view", "cannot view " + str() + " as " + shape_str(s));
  }
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = ns;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  try {
    return view(shape);
  } catch (const Error&) {
    return contiguous().view(shape);
  }
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, "Tensor::transpose", dim());
  d1 = wrap_dim(d1, "Tensor::transpose", dim());
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  if (static_cast<int64_t>(dims.size()) != dim()) fail("Tensor::permute", "need " + std::to_string(dim()) + " dims for " + str());
  std::vector<bool> seen(dims.size(), false);
  Tensor t = *this;
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], "Tensor::permute", dim());
    if (seen[d]) fail("Tensor::permute", "repeated dimension " + std::to_string(d));
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, "Tensor::slice", dim());
  const int64_t n = shape_[d];
  if (step <= 0) fail("Tensor::slice", "step must be positive");
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(start * strides_[d]) * dtype_size(dtype_);
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] = strides_[d] * step;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, "Tensor::select", dim());
  if (index < -shape_[d] || index >= shape_[d])
    fail("Tensor::select", "index " + std::to_string(index) + " out of range for dim " + std::to_string(d) + " of " + str());
  if (index < 0) index += shape_[d];
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(index * strides_[d]) * dtype_size(dtype_);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, "Tensor::unsqueeze", dim() + 1);
  Tensor t = *this;
  const int64_t st = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, st);
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, "Tensor::squeeze", dim());
  if (shape_[d] != 1) fail("Tensor::squeeze", "dimension " + std::to_string(d) + " of " + str() + " is not 1");
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, "Tensor::flatten", dim());
  end = wrap_dim(end, "Tensor::flatten", dim());
  Shape s;
  for (int64_t i = 0; i < start; ++i) s.push_back(shape_[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape_[i];
  s.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) s.push_back(shape_[i]);
  return reshape(s);
}

}  // namespace mamba
