// The CPU allocator behind every owned Storage.
//
// Small blocks (< 1 MiB) come from aligned_alloc directly. Large blocks are cached: a
// freed block is kept (up to `cache_limit` bytes in all) and handed to the next request
// of the same rounded size, so the activations of a forward pass reuse the previous
// pass's memory instead of faulting fresh pages in every time (glibc maps blocks over
// 32 MiB afresh on each allocation, and the kernel zeroes every page).
// Thread-safe. All blocks are 64-byte aligned.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mamba {

struct AllocatorStats {
  uint64_t bytes_in_use = 0;      // handed out and not yet freed (large blocks, rounded)
  uint64_t bytes_cached = 0;      // freed and kept for reuse
  uint64_t peak_bytes_in_use = 0;
  uint64_t cache_hits = 0, cache_misses = 0;
};

void* cpu_allocate(size_t bytes);
void cpu_free(void* p, size_t bytes);
AllocatorStats cpu_allocator_stats();
// Returns every cached block to the system.
void cpu_allocator_release_cache();
// Largest total of cached bytes (default 2 GiB; MAMBA_CPU_CACHE_BYTES overrides).
void cpu_allocator_set_cache_limit(uint64_t bytes);

}  // namespace mamba
