#include "mamba/tensor/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace mamba {

namespace {

constexpr size_t kLarge = 1 << 20;       // blocks at least this big are cached
constexpr size_t kGranule = 64 << 10;    // large sizes round up to 64 KiB

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  AllocatorStats stats;
  uint64_t limit = [] {
    const char* env = std::getenv("MAMBA_CPU_CACHE_BYTES");
    return env ? std::strtoull(env, nullptr, 10) : (2ull << 30);
  }();
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: Storage may be freed during static destruction
  return *c;
}

size_t round_large(size_t bytes) { return (bytes + kGranule - 1) / kGranule * kGranule; }

void* raw_alloc(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* cpu_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes < kLarge) return raw_alloc(bytes);
  const size_t r = round_large(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find(r);
    if (it != c.free_blocks.end()) {
      void* p = it->second;
      c.free_blocks.erase(it);
      c.stats.bytes_cached -= r;
      c.stats.bytes_in_use += r;
      c.stats.peak_bytes_in_use = std::max(c.stats.peak_bytes_in_use, c.stats.bytes_in_use);
      ++c.stats.cache_hits;
      return p;
    }
    ++c.stats.cache_misses;
  }
  void* p;
  try {
    p = raw_alloc(r);
  } catch (const std::bad_alloc&) {
    cpu_allocator_release_cache();  // memory is tight: give the cache back and retry once
    p = raw_alloc(r);
  }
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.bytes_in_use += r;
  c.stats.peak_bytes_in_use = std::max(c.stats.peak_bytes_in_use, c.stats.bytes_in_use);
  return p;
}

void cpu_free(void* p, size_t bytes) {
  if (!p) return;
  if (bytes < kLarge) {
    std::free(p);
    return;
  }
  const size_t r = round_large(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.bytes_in_use -= r;
  if (c.stats.bytes_cached + r <= c.limit) {
    c.free_blocks.emplace(r, p);
    c.stats.bytes_cached += r;
  } else {
    std::free(p);
  }
}

AllocatorStats cpu_allocator_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void cpu_allocator_release_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [size, p] : c.free_blocks) std::free(p);
  c.free_blocks.clear();
  c.stats.bytes_cached = 0;
}

void cpu_allocator_set_cache_limit(uint64_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
}

}  // namespace mamba
