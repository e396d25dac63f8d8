// The CUDA tensor backend (mamba/tensor/cuda.h): device checks, streams, the caching
// allocator, pinned memory and copies. Without CUDA (MAMBA_HAVE_CUDA undefined) the same
// functions exist and throw "built without CUDA".
#include "mamba/tensor/cuda.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>
#include <vector>

#ifdef MAMBA_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "mamba/kernels/cuda/cuda_check.h"
#include "mamba/kernels/cuda/tensor_ops_cuda.h"
#endif

namespace mamba::cuda {

#ifndef MAMBA_HAVE_CUDA

namespace {
[[noreturn]] void no_cuda(const char* op) {
  fail(op, "built without CUDA (configure with -DMAMBA_CUDA=ON on a machine with nvcc)");
}
}  // namespace

bool is_available() { return false; }
int device_count() { return 0; }
void require_device(const Device& device, const char* op) {
  if (device.is_cpu()) fail(op, "expected a cuda device, got cpu");
  no_cuda(op);
}
std::string device_name(const Device&) { return "none (built without CUDA)"; }
Stream Stream::create(Device, bool) { no_cuda("cuda::Stream::create"); }
Stream Stream::default_stream(Device) { no_cuda("cuda::Stream::default_stream"); }
void Stream::synchronize() const { no_cuda("cuda::Stream::synchronize"); }
Stream current_stream(Device) { no_cuda("cuda::current_stream"); }
void set_current_stream(const Stream&) { no_cuda("cuda::set_current_stream"); }
StreamGuard::StreamGuard(const Stream&) { no_cuda("cuda::StreamGuard"); }
StreamGuard::~StreamGuard() = default;
void synchronize(Device) { no_cuda("cuda::synchronize"); }
CudaAllocatorStats allocator_stats(int) { return {}; }
std::string allocator_stats_prometheus() { return ""; }
void release_cache(int) {}
void* allocate_device(size_t, int, void*) { no_cuda("cuda::allocate_device"); }
void free_device(void*) {}
PinnedBuffer::PinnedBuffer(size_t) { no_cuda("cuda::PinnedBuffer"); }
Tensor pinned_empty(const Shape&, DType) { no_cuda("cuda::pinned_empty"); }
void copy_async(Tensor&, const Tensor&, const Stream&) { no_cuda("cuda::copy_async"); }
void copy(Tensor&, const Tensor&) { no_cuda("cuda::copy"); }
void fill(Tensor&, double) { no_cuda("cuda::fill"); }
double measure_copy_bandwidth_gbs(Device, size_t, int) { no_cuda("cuda::measure_copy_bandwidth_gbs"); }

#else  // MAMBA_HAVE_CUDA

#define CK(op, expr) MAMBA_CUDA_CHECK(op, expr)

namespace {

// Restores the calling thread's current device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CK("cuda::DeviceGuard", cudaGetDevice(&prev_));
    if (prev_ != device) CK("cuda::DeviceGuard", cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

int count_devices() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

}  // namespace

bool is_available() { return count_devices() > 0; }
int device_count() { return count_devices(); }

void require_device(const Device& device, const char* op) {
  if (device.is_cpu()) fail(op, "expected a cuda device, got cpu");
  const int n = count_devices();
  if (n == 0) fail(op, "no CUDA device: the CUDA runtime sees no GPU (driver missing or no GPU on this machine)");
  if (device.index < 0 || device.index >= n)
    fail(op, "no CUDA device " + device.str() + ": " + std::to_string(n) + " device(s) visible (cuda:0..cuda:" +
                 std::to_string(n - 1) + ")");
}

std::string device_name(const Device& device) {
  require_device(device, "cuda::device_name");
  cudaDeviceProp p{};
  CK("cuda::device_name", cudaGetDeviceProperties(&p, device.index));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 30) + " GiB)";
}

// ---- streams ----------------------------------------------------------------------------

Stream Stream::create(Device device, bool non_blocking) {
  require_device(device, "cuda::Stream::create");
  DeviceGuard g(device.index);
  cudaStream_t s = nullptr;
  CK("cuda::Stream::create", cudaStreamCreateWithFlags(&s, non_blocking ? cudaStreamNonBlocking : cudaStreamDefault));
  Stream r;
  r.handle_ = s;
  r.device_ = device;
  r.owner_ = std::shared_ptr<void>(s, [device](void* h) {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device.index);
    cudaStreamDestroy(static_cast<cudaStream_t>(h));
    cudaSetDevice(prev);
  });
  return r;
}

Stream Stream::default_stream(Device device) {
  require_device(device, "cuda::Stream::default_stream");
  Stream r;
  r.device_ = device;
  return r;
}

void Stream::synchronize() const {
  DeviceGuard g(device_.index);
  CK("cuda::Stream::synchronize", cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
}

namespace {
thread_local std::map<int, Stream>* t_current = nullptr;
std::map<int, Stream>& current_map() {
  if (!t_current) t_current = new std::map<int, Stream>;  // per thread, lives as long as the thread
  return *t_current;
}
}  // namespace

Stream current_stream(Device device) {
  require_device(device, "cuda::current_stream");
  auto& m = current_map();
  auto it = m.find(device.index);
  if (it != m.end()) return it->second;
  return Stream::default_stream(device);
}

void set_current_stream(const Stream& stream) {
  require_device(stream.device(), "cuda::set_current_stream");
  current_map()[stream.device().index] = stream;
}

StreamGuard::StreamGuard(const Stream& stream) : previous_(current_stream(stream.device())) { set_current_stream(stream); }
StreamGuard::~StreamGuard() { current_map()[previous_.device().index] = previous_; }

void synchronize(Device device) {
  require_device(device, "cuda::synchronize");
  DeviceGuard g(device.index);
  CK("cuda::synchronize", cudaDeviceSynchronize());
}

// ---- the caching allocator ----------------------------------------------------------------

namespace {

constexpr size_t kMinBlock = 512;              // every size rounds up to this
constexpr size_t kSmallLimit = size_t{1} << 20;  // requests below go to the small pool
constexpr size_t kSmallSegment = size_t{2} << 20;  // small blocks are carved from 2 MiB segments
constexpr size_t kLargeRound = size_t{2} << 20;  // large segments: multiples of 2 MiB

struct Block {
  cudaStream_t stream = nullptr;
  size_t size = 0;
  char* ptr = nullptr;
  bool allocated = false;
  bool small = false;
  Block* prev = nullptr;  // neighbours inside the same segment
  Block* next = nullptr;
};

struct BlockLess {
  bool operator()(const Block* a, const Block* b) const {
    if (a->stream != b->stream) return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
    if (a->size != b->size) return a->size < b->size;
    return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
  }
};

struct DevicePool {
  std::mutex mu;
  std::set<Block*, BlockLess> free_small, free_large;
  std::unordered_map<void*, Block*> live;
  CudaAllocatorStats stats;
};

struct Allocator {
  std::mutex mu;  // guards `pools` (the map itself) and `owner`
  std::map<int, DevicePool*> pools;
  std::unordered_map<void*, int> owner;  // live pointer -> device
  DevicePool& pool(int device) {
    std::lock_guard<std::mutex> lock(mu);
    auto& p = pools[device];
    if (!p) p = new DevicePool;
    return *p;
  }
};
Allocator& allocator() {
  static Allocator* a = new Allocator;  // never destroyed: tensors may die during static destruction
  return *a;
}

size_t round_size(size_t bytes) { return (bytes + kMinBlock - 1) / kMinBlock * kMinBlock; }

// Frees every segment that is one whole free block (caller holds the pool lock).
void release_free_segments(DevicePool& p, int device) {
  DeviceGuard g(device);
  for (auto* set : {&p.free_small, &p.free_large}) {
    for (auto it = set->begin(); it != set->end();) {
      Block* b = *it;
      if (!b->prev && !b->next) {
        cudaFree(b->ptr);
        ++p.stats.cuda_free_calls;
        --p.stats.segments;
        p.stats.bytes_reserved -= b->size;
        p.stats.bytes_cached -= b->size;
        delete b;
        it = set->erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace

void* allocate_device(size_t bytes, int device, void* stream_in) {
  if (bytes == 0) return nullptr;
  require_device(Device::cuda(device), "cuda::allocate_device");
  cudaStream_t stream = stream_in ? static_cast<cudaStream_t>(stream_in)
                                  : static_cast<cudaStream_t>(current_stream(Device::cuda(device)).native());
  const size_t size = round_size(bytes);
  const bool small = size < kSmallLimit;
  Allocator& A = allocator();
  DevicePool& p = A.pool(device);
  std::unique_lock<std::mutex> lock(p.mu);
  auto& free_set = small ? p.free_small : p.free_large;
  Block key;
  key.stream = stream;
  key.size = size;
  key.ptr = nullptr;
  Block* blk = nullptr;
  auto it = free_set.lower_bound(&key);
  if (it != free_set.end() && (*it)->stream == stream) {
    blk = *it;
    free_set.erase(it);
    ++p.stats.cache_hits;
    p.stats.bytes_cached -= blk->size;
  } else {
    ++p.stats.cache_misses;
    const size_t seg = small ? kSmallSegment : (size + kLargeRound - 1) / kLargeRound * kLargeRound;
    void* ptr = nullptr;
    cudaError_t e;
    {
      DeviceGuard g(device);
      e = cudaMalloc(&ptr, seg);
      if (e != cudaSuccess) {
        cudaGetLastError();
        release_free_segments(p, device);  // memory is tight: give the cache back, retry once
        e = cudaMalloc(&ptr, seg);
      }
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      const CudaAllocatorStats s = p.stats;
      fail("cuda::allocate_device",
           "out of memory on cuda:" + std::to_string(device) + " allocating " + std::to_string(bytes) + " bytes (" +
               cudaGetErrorString(e) + "); " + std::to_string(s.bytes_in_use) + " bytes in use, " +
               std::to_string(s.bytes_reserved) + " reserved");
    }
    ++p.stats.cuda_malloc_calls;
    ++p.stats.segments;
    p.stats.bytes_reserved += seg;
    blk = new Block;
    blk->stream = stream;
    blk->size = seg;
    blk->ptr = static_cast<char*>(ptr);
    blk->small = small;
  }
  // Split off the remainder when it is worth keeping.
  const size_t rest = blk->size - size;
  if (rest >= (small ? kMinBlock : kSmallLimit)) {
    Block* r = new Block;
    r->stream = stream;
    r->size = rest;
    r->ptr = blk->ptr + size;
    r->small = blk->small;
    r->prev = blk;
    r->next = blk->next;
    if (blk->next) blk->next->prev = r;
    blk->next = r;
    blk->size = size;
    free_set.insert(r);
    p.stats.bytes_cached += rest;
  }
  blk->allocated = true;
  p.live[blk->ptr] = blk;
  p.stats.bytes_in_use += blk->size;
  ++p.stats.blocks_in_use;
  p.stats.peak_bytes_in_use = std::max(p.stats.peak_bytes_in_use, p.stats.bytes_in_use);
  lock.unlock();
  {
    std::lock_guard<std::mutex> g(A.mu);
    A.owner[blk->ptr] = device;
  }
  return blk->ptr;
}

void free_device(void* ptr) {
  if (!ptr) return;
  Allocator& A = allocator();
  int device;
  {
    std::lock_guard<std::mutex> g(A.mu);
    auto it = A.owner.find(ptr);
    if (it == A.owner.end()) return;  // not ours: nothing to do (never throw from a destructor path)
    device = it->second;
    A.owner.erase(it);
  }
  DevicePool& p = A.pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.live.find(ptr);
  if (it == p.live.end()) return;
  Block* b = it->second;
  p.live.erase(it);
  b->allocated = false;
  p.stats.bytes_in_use -= b->size;
  --p.stats.blocks_in_use;
  p.stats.bytes_cached += b->size;
  auto& free_set = b->small ? p.free_small : p.free_large;
  // Merge with free neighbours (same segment, hence same stream).
  if (b->prev && !b->prev->allocated) {
    Block* pr = b->prev;
    free_set.erase(pr);
    pr->size += b->size;
    pr->next = b->next;
    if (b->next) b->next->prev = pr;
    delete b;
    b = pr;
  }
  if (b->next && !b->next->allocated) {
    Block* nx = b->next;
    free_set.erase(nx);
    b->size += nx->size;
    b->next = nx->next;
    if (nx->next) nx->next->prev = b;
    delete nx;
  }
  free_set.insert(b);
}

CudaAllocatorStats allocator_stats(int device) {
  Allocator& A = allocator();
  {
    std::lock_guard<std::mutex> g(A.mu);
    if (!A.pools.count(device)) return {};
  }
  DevicePool& p = A.pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  return p.stats;
}

std::string allocator_stats_prometheus() {
  std::vector<int> devices;
  {
    Allocator& A = allocator();
    std::lock_guard<std::mutex> g(A.mu);
    for (auto& [d, p] : A.pools) devices.push_back(d);
  }
  std::ostringstream o;
  const std::pair<const char*, uint64_t CudaAllocatorStats::*> fields[] = {
      {"bytes_in_use", &CudaAllocatorStats::bytes_in_use},
      {"bytes_reserved", &CudaAllocatorStats::bytes_reserved},
      {"bytes_cached", &CudaAllocatorStats::bytes_cached},
      {"peak_bytes_in_use", &CudaAllocatorStats::peak_bytes_in_use},
      {"cache_hits_total", &CudaAllocatorStats::cache_hits},
      {"cache_misses_total", &CudaAllocatorStats::cache_misses},
      {"cuda_malloc_calls_total", &CudaAllocatorStats::cuda_malloc_calls},
      {"cuda_free_calls_total", &CudaAllocatorStats::cuda_free_calls},
      {"segments", &CudaAllocatorStats::segments},
      {"blocks_in_use", &CudaAllocatorStats::blocks_in_use}};
  for (const auto& [name, field] : fields) {
    const bool counter = std::string(name).find("_total") != std::string::npos;
    o << "# TYPE mamba_cuda_allocator_" << name << (counter ? " counter\n" : " gauge\n");
    for (int d : devices) o << "mamba_cuda_allocator_" << name << "{device=\"" << d << "\"} " << allocator_stats(d).*field << "\n";
  }
  return o.str();
}

void release_cache(int device) {
  Allocator& A = allocator();
  std::vector<int> devices;
  {
    std::lock_guard<std::mutex> g(A.mu);
    for (auto& [d, p] : A.pools)
      if (device < 0 || d == device) devices.push_back(d);
  }
  for (int d : devices) {
    DevicePool& p = A.pool(d);
    std::lock_guard<std::mutex> lock(p.mu);
    release_free_segments(p, d);
  }
}

// ---- pinned memory -------------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (!is_available()) require_device(Device::cuda(0), "cuda::PinnedBuffer");
  void* p = nullptr;
  if (bytes) CK("cuda::PinnedBuffer (cudaHostAlloc)", cudaHostAlloc(&p, bytes, cudaHostAllocPortable));
  data_ = std::shared_ptr<void>(p, [](void* q) {
    if (q) cudaFreeHost(q);
  });
}

Tensor pinned_empty(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto buf = std::make_shared<PinnedBuffer>(bytes);
  void* data = buf->data();
  auto storage = std::make_shared<Storage>(data, bytes, std::shared_ptr<void>(buf, data), Device::cpu());
  return Tensor::from_storage(storage, 0, shape, Tensor::contiguous_strides(shape), dtype);
}

namespace {

// Pinned staging buffers for copies from / to pageable host memory, reused once the stream
// has passed the copy (a host callback hands them back; callbacks make no CUDA calls).
struct StagingPool {
  std::mutex mu;
  std::multimap<size_t, void*> free_list;
  std::unordered_map<void*, size_t> size_of;
};
StagingPool& staging() {
  static StagingPool* s = new StagingPool;
  return *s;
}
void* staging_acquire(size_t bytes) {
  const size_t r = std::max<size_t>(size_t{1} << 16, (bytes + 4095) / 4096 * 4096);
  StagingPool& s = staging();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.free_list.lower_bound(r);
    if (it != s.free_list.end() && it->first <= 2 * r) {
      void* p = it->second;
      s.free_list.erase(it);
      return p;
    }
  }
  void* p = nullptr;
  CK("cuda::copy_async (cudaHostAlloc staging)", cudaHostAlloc(&p, r, cudaHostAllocPortable));
  std::lock_guard<std::mutex> lock(s.mu);
  s.size_of[p] = r;
  return p;
}
void staging_release(void* p) {
  StagingPool& s = staging();
  std::lock_guard<std::mutex> lock(s.mu);
  s.free_list.emplace(s.size_of[p], p);
}

// What a host callback does after a staged copy: optionally copy staging -> pageable host
// memory (device -> host), then hand the staging buffer back.
struct StagedDone {
  void* staging = nullptr;
  void* host_dst = nullptr;  // null for host -> device
  size_t bytes = 0;
  std::shared_ptr<Storage> keep;  // keeps the host destination alive
};
void CUDART_CB staged_done(void* arg) {
  auto* d = static_cast<StagedDone*>(arg);
  if (d->host_dst && d->bytes) std::memcpy(d->host_dst, d->staging, d->bytes);
  staging_release(d->staging);
  delete d;
}

bool is_pinned(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

kernels::cuda::ElemType elem_type(DType d) {
  switch (d) {
    case DType::f32: return kernels::cuda::ElemType::f32;
    case DType::f64: return kernels::cuda::ElemType::f64;
    case DType::bf16: return kernels::cuda::ElemType::bf16;
    case DType::f16: return kernels::cuda::ElemType::f16;
    case DType::i32: return kernels::cuda::ElemType::i32;
    case DType::i64: return kernels::cuda::ElemType::i64;
    case DType::u8: return kernels::cuda::ElemType::u8;
  }
  return kernels::cuda::ElemType::f32;
}

// dst <- src on one device (strides and dtypes may differ), on `stream`.
void device_strided_copy(Tensor& dst, const Tensor& src, cudaStream_t stream) {
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    CK("cuda::copy (device to device)",
       cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  kernels::cuda::StridedCopyParams p;
  // Drop size-1 dims so that high-rank views fit.
  for (int64_t d = 0; d < dst.dim(); ++d) {
    if (dst.size(d) == 1) continue;
    if (p.rank == kernels::cuda::kMaxCopyRank) fail("cuda::copy", "more than 8 non-trivial dims in " + dst.str());
    p.shape[p.rank] = dst.size(d);
    p.src_stride[p.rank] = src.stride(d);
    p.dst_stride[p.rank] = dst.stride(d);
    ++p.rank;
  }
  p.src = src.raw_data();
  p.dst = dst.raw_data();
  p.src_type = elem_type(src.dtype());
  p.dst_type = elem_type(dst.dtype());
  kernels::cuda::strided_copy_cuda(p, stream);
}

// A contiguous device copy of `src` (a device tensor) with dtype `dt`, allocated on `stream`.
Tensor device_contiguous(const Tensor& src, DType dt, const Stream& stream) {
  if (src.is_contiguous() && src.dtype() == dt) return src;
  StreamGuard g(stream);
  Tensor t = Tensor::empty(src.shape(), dt, src.device());
  device_strided_copy(t, src, static_cast<cudaStream_t>(stream.native()));
  return t;
}

void copy_impl(Tensor& dst, const Tensor& src, const Stream& stream) {
  const char* op = "cuda::copy";
  if (dst.shape() != src.shape()) fail(op, "shape mismatch: " + dst.str() + " <- " + src.str());
  if (dst.numel() == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream.native());
  const Device dd = dst.device(), sd = src.device();
  if (dd.is_cpu() && sd.is_cpu()) {
    dst.copy_from(src);
    return;
  }
  DeviceGuard g(stream.device().index);
  if (!dd.is_cpu() && !sd.is_cpu()) {
    if (dd == sd) {
      device_strided_copy(dst, src, s);
      return;
    }
    // Across GPUs: a contiguous image of src, peer copy into a contiguous buffer on dst's
    // device, then the strided / converting copy there.
    const Tensor sc = device_contiguous(src, src.dtype(), Stream::default_stream(sd));
    Tensor tmp;
    {
      StreamGuard sg(stream);
      tmp = Tensor::empty(src.shape(), src.dtype(), dd);
    }
    {
      DeviceGuard sg(sd.index);
      CK(op, cudaDeviceSynchronize());  // the gather ran on src's default stream
    }
    CK(op, cudaMemcpyPeerAsync(tmp.raw_data(), dd.index, sc.raw_data(), sd.index, sc.nbytes(), s));
    device_strided_copy(dst, tmp, s);
    return;
  }
  if (!dd.is_cpu()) {  // host -> device
    require_device(dd, op);
    const Tensor hs = src.dtype() == dst.dtype() && src.is_contiguous() ? src : src.to(dst.dtype()).contiguous();
    Tensor target = dst;
    if (!dst.is_contiguous()) {
      StreamGuard sg(stream);
      target = Tensor::empty(dst.shape(), dst.dtype(), dd);
    }
    const size_t bytes = hs.nbytes();
    if (is_pinned(hs.raw_data())) {
      CK(op, cudaMemcpyAsync(target.raw_data(), hs.raw_data(), bytes, cudaMemcpyHostToDevice, s));
    } else {
      void* st = staging_acquire(bytes);
      std::memcpy(st, hs.raw_data(), bytes);
      CK(op, cudaMemcpyAsync(target.raw_data(), st, bytes, cudaMemcpyHostToDevice, s));
      CK(op, cudaLaunchHostFunc(s, staged_done, new StagedDone{st, nullptr, 0, nullptr}));
    }
    if (!dst.is_contiguous()) device_strided_copy(dst, target, s);
    return;
  }
  // device -> host: gather + convert on the device, then one byte copy.
  require_device(sd, op);
  const Tensor sc = device_contiguous(src, dst.dtype(), stream);
  const size_t bytes = sc.nbytes();
  if (dst.is_contiguous() && is_pinned(dst.raw_data())) {
    CK(op, cudaMemcpyAsync(dst.raw_data(), sc.raw_data(), bytes, cudaMemcpyDeviceToHost, s));
    return;
  }
  if (dst.is_contiguous()) {
    void* st = staging_acquire(bytes);
    CK(op, cudaMemcpyAsync(st, sc.raw_data(), bytes, cudaMemcpyDeviceToHost, s));
    CK(op, cudaLaunchHostFunc(s, staged_done, new StagedDone{st, dst.raw_data(), bytes, dst.storage()}));
    return;
  }
  // A strided host destination: land in a contiguous host tensor, then scatter on the CPU
  // once the copy is done (this case waits for the stream).
  Tensor host = Tensor::empty(dst.shape(), dst.dtype());
  CK(op, cudaMemcpyAsync(host.raw_data(), sc.raw_data(), bytes, cudaMemcpyDeviceToHost, s));
  CK(op, cudaStreamSynchronize(s));
  dst.copy_from(host);
}

}  // namespace

void copy_async(Tensor& dst, const Tensor& src, const Stream& stream) {
  if (!dst.defined() || !src.defined()) fail("cuda::copy_async", "undefined tensor");
  copy_impl(dst, src, stream);
}

void copy(Tensor& dst, const Tensor& src) {
  if (!dst.defined() || !src.defined()) fail("cuda::copy", "undefined tensor");
  const Device d = dst.is_cuda() ? dst.device() : src.device();
  if (d.is_cpu()) {
    dst.copy_from(src);
    return;
  }
  const Stream s = current_stream(d);
  copy_impl(dst, src, s);
  s.synchronize();
}

void fill(Tensor& t, double value) {
  require_device(t.device(), "cuda::fill");
  const Stream st = current_stream(t.device());
  cudaStream_t s = static_cast<cudaStream_t>(st.native());
  DeviceGuard g(t.device().index);
  if (t.is_contiguous()) {
    if (value == 0.0) {
      CK("cuda::fill", cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), s));
    } else {
      kernels::cuda::fill_cuda(t.raw_data(), elem_type(t.dtype()), t.numel(), 1, value, s);
    }
    return;
  }
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  kernels::cuda::fill_cuda(c.raw_data(), elem_type(t.dtype()), c.numel(), 1, value, s);
  device_strided_copy(t, c, s);
}

double measure_copy_bandwidth_gbs(Device device, size_t bytes, int reps) {
  require_device(device, "cuda::measure_copy_bandwidth_gbs");
  DeviceGuard g(device.index);
  const char* op = "cuda::measure_copy_bandwidth_gbs";
  Tensor a = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, device);
  Tensor b = Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, device);
  cudaStream_t s = static_cast<cudaStream_t>(current_stream(device).native());
  CK(op, cudaMemsetAsync(a.raw_data(), 1, bytes, s));
  cudaEvent_t e0, e1;
  CK(op, cudaEventCreate(&e0));
  CK(op, cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = -3; i < reps; ++i) {
    CK(op, cudaEventRecord(e0, s));
    CK(op, cudaMemcpyAsync(b.raw_data(), a.raw_data(), bytes, cudaMemcpyDeviceToDevice, s));
    CK(op, cudaEventRecord(e1, s));
    CK(op, cudaEventSynchronize(e1));
    float t = 0;
    CK(op, cudaEventElapsedTime(&t, e0, e1));
    if (i >= 0) ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  return 2.0 * static_cast<double>(bytes) / (med * 1e-3) / 1e9;
}

#endif  // MAMBA_HAVE_CUDA

}  // namespace mamba::cuda
