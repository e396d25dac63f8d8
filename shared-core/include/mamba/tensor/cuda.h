// The CUDA side of the tensor library: devices, streams, the caching allocator behind every
// cuda:N Storage, pinned host memory and asynchronous copies.
//
// The same API is compiled with and without CUDA. Without it every call that needs a GPU
// throws mamba::Error("...: built without CUDA ..."); with CUDA but no usable GPU (or an index
// past the last one) it throws "...: no CUDA device ...". is_available() never throws.
//
// Streams. Each thread has a current stream per device (initially the device's default
// stream). Device memory is allocated on, and ordered by, the current stream: a block freed
// on stream S goes back to S's pool and is handed out again only to work queued on S, so
// reuse needs no synchronisation. A tensor used on another stream than the one that was
// current when it was allocated must be kept alive by the caller until that work is done.
//
// Allocator. Requests are rounded (512 bytes below 1 MiB, 2 MiB-multiples of whole segments
// above; small blocks are carved out of 2 MiB segments), free blocks are kept per (device,
// stream) and split / merged with their free neighbours, so a steady-state loop of
// allocations issues no cudaMalloc. release_cache() returns every segment with no live block.
// On cudaMalloc failure the cache is released and the call retried once, then a mamba::Error
// names the request and the pool's figures. Thread-safe (one mutex per device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "mamba/tensor/tensor.h"

namespace mamba::cuda {

// True when built with CUDA and at least one GPU is visible. Never throws.
bool is_available();
int device_count();  // 0 without CUDA or GPUs
// Throws the "built without CUDA" / "no CUDA device" error for `op` unless `device` is a usable GPU.
void require_device(const Device& device, const char* op);
std::string device_name(const Device& device);  // "NVIDIA H200 (sm_90, 139 GiB)"

// A CUDA stream on one device. Cheap to copy (shared handle). A default-constructed Stream
// is the default (legacy) stream of cuda:0.
class Stream {
 public:
  Stream() = default;
  // A new stream, destroyed with its last copy. non_blocking: no implicit ordering with the
  // legacy default stream (blocking streams wait for it and it for them).
  static Stream create(Device device, bool non_blocking = true);
  static Stream default_stream(Device device);  // the device's legacy default stream
  void* native() const { return handle_; }      // the cudaStream_t
  Device device() const { return device_; }
  void synchronize() const;                      // waits for everything queued on it
  bool operator==(const Stream& o) const { return handle_ == o.handle_ && device_ == o.device_; }

 private:
  std::shared_ptr<void> owner_;
  void* handle_ = nullptr;
  Device device_ = Device::cuda(0);
};

// The calling thread's current stream for `device` (the default stream until set).
Stream current_stream(Device device);
void set_current_stream(const Stream& stream);
// Makes `stream` current for its device during a scope, then restores the previous one.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};
void synchronize(Device device);  // cudaDeviceSynchronize on that device

// ---- the caching allocator ----------------------------------------------------------
struct CudaAllocatorStats {
  uint64_t bytes_in_use = 0;       // handed out (rounded sizes)
  uint64_t bytes_reserved = 0;     // held from cudaMalloc (in use + cached)
  uint64_t bytes_cached = 0;       // reserved but free, ready for reuse
  uint64_t peak_bytes_in_use = 0;
  uint64_t cache_hits = 0;         // requests served from cached memory
  uint64_t cache_misses = 0;       // requests that needed a new segment
  uint64_t cuda_malloc_calls = 0;  // successful cudaMalloc calls
  uint64_t cuda_free_calls = 0;
  uint64_t segments = 0;           // live cudaMalloc'd segments
  uint64_t blocks_in_use = 0;
};
// Figures for one device (zeros when none was ever allocated on it, or without CUDA).
CudaAllocatorStats allocator_stats(int device);
// The same for every device that has allocated, in Prometheus text exposition format
// (mamba_cuda_allocator_bytes_in_use{device="0"} ...), for a /metrics endpoint.
std::string allocator_stats_prometheus();
// Returns every segment with no live block to the driver (cudaFree). device -1: all devices.
void release_cache(int device = -1);
// Raw blocks (what Storage uses): allocated on `stream` (null: the current stream of
// `device`). free_device takes the pointer back; it must come from allocate_device.
void* allocate_device(size_t bytes, int device, void* stream = nullptr);
void free_device(void* ptr);

// ---- pinned host memory ---------------------------------------------------------------
// Page-locked host memory (cudaHostAlloc), freed with the last handle. Copies from and to it
// can run asynchronously and at full bus speed.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  void* data() const { return data_.get(); }
  size_t size() const { return bytes_; }

 private:
  std::shared_ptr<void> data_;
  size_t bytes_ = 0;
};
// A CPU tensor whose storage is pinned host memory.
Tensor pinned_empty(const Shape& shape, DType dtype = DType::f32);

// ---- copies ---------------------------------------------------------------------------
// dst <- src (same shape; dtypes may differ when both are on one GPU or both on the host),
// queued on `stream` and returned at once. Host memory that is not pinned is staged through
// pinned buffers: host -> device returns once the data is staged (src may then be reused);
// device -> host fills dst when the stream reaches the copy (read dst only after
// stream.synchronize()). Strided device tensors are gathered on the GPU first.
void copy_async(Tensor& dst, const Tensor& src, const Stream& stream);
// The same, waiting for completion (what Tensor::copy_from and Tensor::to do).
void copy(Tensor& dst, const Tensor& src);

// Fills a cuda tensor (any layout) with `value` on the current stream.
void fill(Tensor& t, double value);

// Measured device-to-device copy bandwidth in GB/s counting read + write bytes (median of
// `reps` copies of `bytes` bytes after a warm-up, timed with CUDA events).
double measure_copy_bandwidth_gbs(Device device, size_t bytes = size_t{1} << 30, int reps = 20);

}  // namespace mamba::cuda
