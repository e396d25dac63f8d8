// Tensor: reference-counted storage + shape, strides (in elements), dtype and device.
//
// Ownership: a Tensor is a cheap handle (shared_ptr to Storage). Copies share storage;
// views (slice, transpose, permute, view/reshape when possible) share storage too.
// `clone()` and `contiguous()` (when not already contiguous) allocate new storage.
// Thread-safety: distinct Tensor handles may be used from different threads; writing
// the same storage from several threads without synchronisation is a data race.
// Errors: every failed precondition throws mamba::Error naming the op and the shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mamba {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
bool dtype_is_float(DType dt);

struct Device {
  enum class Kind : uint8_t { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i) { return {Kind::cuda, i}; }
  // Parses "cpu", "cuda", "cuda:N".
  static Device parse(const std::string& s);
  bool is_cpu() const { return kind == Kind::cpu; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);  // throws on negative dims or overflow

// A block of bytes. Either owned (64-byte aligned heap memory) or borrowed from
// something else (a memory map) that `keep_alive` holds open.
class Storage {
 public:
  explicit Storage(size_t bytes, Device device = Device::cpu());
  Storage(void* data, size_t bytes, std::shared_ptr<void> keep_alive, Device device = Device::cpu());
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool owned_ = false;
  std::shared_ptr<void> keep_alive_;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  // ---- factories ----
  // A cuda:N device allocates from the CUDA caching allocator (mamba/tensor/cuda.h) on the
  // calling thread's current stream; a build without CUDA, or a machine without that GPU,
  // throws mamba::Error saying so.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_vector_i64(const std::vector<int64_t>& v, const Shape& shape);
  // Wraps existing storage; checks that the described elements lie inside it.
  static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape,
                             const Shape& strides, DType dtype);
  static Shape contiguous_strides(const Shape& shape);

  // ---- metadata ----
  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const;
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  // Every shape was checked (no negative dimension, no overflow) when its tensor was made, and
  // views, slices and permutations never raise the count: a plain product, inline.
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape_) n *= d;
    return n;
  }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  std::string str() const;  // "f32[2, 3]"
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t byte_offset() const { return byte_offset_; }

  // ---- data access. data<T>() checks that T matches the dtype. On a cuda tensor the
  // pointer is a DEVICE pointer (for kernels); item() and to_vector_f32() copy to the host.
  template <class T> T* data();
  template <class T> const T* data() const;
  void* raw_data() const;
  double item() const;  // single-element tensor, any dtype, as double

  // ---- views (share storage) ----
  Tensor view(const Shape& shape) const;     // requires a compatible layout; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a copy
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t d, int64_t start, int64_t end, int64_t step = 1) const;  // [start, end)
  Tensor select(int64_t d, int64_t index) const;  // drops dimension d
  Tensor unsqueeze(int64_t d) const;
  Tensor squeeze(int64_t d) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;

  // ---- copies ----
  Tensor contiguous() const;  // self when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // converts (self when already that dtype)
  // A copy on `device` (self when already there), contiguous; synchronous. Host <-> device,
  // device <-> device (also across GPUs). Asynchronous copies: mamba::cuda::copy_async.
  Tensor to(Device device) const;
  bool is_cuda() const { return device().kind == Device::Kind::cuda; }
  // Same shape; converts dtype. Either side may be on a GPU (synchronous with the current
  // stream: returns when the copy is done).
  void copy_from(const Tensor& src);
  void fill(double value);
  std::vector<float> to_vector_f32() const;

 private:
  int64_t wrap_dim(int64_t d, const char* op, int64_t ndim) const;

  std::shared_ptr<Storage> storage_;
  size_t byte_offset_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::f32;
};

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

void check_dtype(const Tensor& t, DType want, const char* op);

template <class T> T* Tensor::data() {
  if constexpr (std::is_same_v<T, uint16_t>) {
    if (dtype_ != DType::bf16 && dtype_ != DType::f16) check_dtype(*this, DType::bf16, "data<uint16_t>");
  } else {
    check_dtype(*this, dtype_of<T>(), "data");
  }
  return static_cast<T*>(raw_data());
}
template <class T> const T* Tensor::data() const { return const_cast<Tensor*>(this)->data<T>(); }

// Throws mamba::Error("<op>: <message>") — helpers to keep error text uniform.
[[noreturn]] void fail(const std::string& op, const std::string& message);
void check_shape(const Tensor& t, const Shape& want, const char* op, const char* name);

}  // namespace mamba
