// nccl_check: the "nccl" backend of train/distributed.h on real GPUs (tests/device/nccl_run.sh
// builds and runs it; it needs only the CUDA toolkit and NCCL, no Debian packages).
//
//   nccl_check                      world size 1: a real one-rank NCCL communicator (forced;
//                                   make_communicator would return the local no-op one)
//   MAMBA_RANK/MAMBA_WORLD_SIZE/... one rank of a W-rank job (mamba-launch --device cuda)
//
// Checks all_reduce_sum (float, double; host and device buffers; the sizes of the CPU
// tests) against the sum of every rank's inputs (bit-exact for W <= 2, where addition order
// cannot matter; within W float roundings otherwise), all_reduce_mean (ncclAvg on device
// buffers), broadcast from every root (host and device), barrier, and that every rank got
// the same bits. Then prints the all-reduce time and bus bandwidth of a 256 MiB f32 buffer
// (a figure, never a pass/fail). Exit 0 when every check passed.
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../util/dist_values.h"
#include "mamba/train/distributed.h"

namespace mt = mamba::train;
using namespace mamba::testing;

namespace {

int failures = 0, checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    if (failures <= 20) std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
}

uint64_t fnv(const void* p, size_t n, uint64_t h) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

template <class T> T value(size_t n, int r, size_t i) {
  if constexpr (std::is_same_v<T, float>) return dist_value_f(n, r, i);
  else return dist_value_d(n, r, i);
}

// Every rank's inputs summed in rank order (for W <= 2 any order gives these bits).
template <class T> std::vector<T> reference(size_t n, int W) {
  std::vector<T> out(n);
  for (size_t i = 0; i < n; ++i) {
    T acc = value<T>(n, 0, i);
    for (int r = 1; r < W; ++r) acc = acc + value<T>(n, r, i);
    out[i] = acc;
  }
  return out;
}

template <class T> void compare(const std::vector<T>& got, size_t n, int W, const std::string& what) {
  const auto ref = reference<T>(n, W);
  for (size_t i = 0; i < n; ++i) {
    if (W <= 2) {
      if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0) {
        expect(false, what + " n=" + std::to_string(n) + " i=" + std::to_string(i));
        return;
      }
    } else {
      double mag = 0;
      for (int r = 0; r < W; ++r) mag += std::fabs(static_cast<double>(value<T>(n, r, i)));
      const double eps = std::is_same_v<T, float> ? 6e-8 : 1.2e-16;
      if (std::fabs(static_cast<double>(got[i]) - static_cast<double>(ref[i])) > W * eps * mag) {
        expect(false, what + " n=" + std::to_string(n) + " i=" + std::to_string(i));
        return;
      }
    }
  }
  expect(true, what);
}

template <class T> uint64_t run_sums(mt::Communicator& comm, bool device, uint64_t h) {
  const int W = comm.world_size(), r = comm.rank();
  for (size_t n : kDistSizes) {
    std::vector<T> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = value<T>(n, r, i);
    if (device) {
      T* d = nullptr;
      cudaMalloc(&d, std::max<size_t>(n, 1) * sizeof(T));
      cudaMemcpy(d, v.data(), n * sizeof(T), cudaMemcpyHostToDevice);
      comm.all_reduce_sum(d, n);
      cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
      cudaFree(d);
    } else {
      comm.all_reduce_sum(v.data(), n);
    }
    compare(v, n, W, std::string(device ? "device " : "host ") + (sizeof(T) == 4 ? "float" : "double") + " sum");
    h = fnv(v.data(), n * sizeof(T), h);
  }
  return h;
}

}  // namespace

int main() {
  try {
    const mt::DistConfig cfg = mt::dist_config_from_env();
    std::unique_ptr<mt::Communicator> comm =
        cfg.world_size == 1 ? mt::detail::make_nccl_communicator(cfg, mt::make_local_communicator())
                            : mt::communicator_from_env("nccl");
    const int W = comm->world_size(), r = comm->rank();
    int dev = -1;
    cudaGetDevice(&dev);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, dev);
    std::printf("nccl_check: rank %d of %d, backend %s, CUDA device %d (%s)\n", r, W, comm->backend(), dev, prop.name);
    uint64_t h = 1469598103934665603ull;
    for (bool device : {false, true}) {
      h = run_sums<float>(*comm, device, h);
      h = run_sums<double>(*comm, device, h);
      // mean
      const size_t n = kDistMeanSize;
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = dist_value_f(n, r, i);
      if (device) {
        float* d = nullptr;
        cudaMalloc(&d, n * sizeof(float));
        cudaMemcpy(d, v.data(), n * sizeof(float), cudaMemcpyHostToDevice);
        comm->all_reduce_mean(d, n);
        cudaMemcpy(v.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
        cudaFree(d);
      } else {
        comm->all_reduce_mean(v.data(), n);
      }
      const auto ref = reference<float>(n, W);
      bool ok = true;
      for (size_t i = 0; i < n; ++i) {
        const double want = static_cast<double>(ref[i]) / W;
        ok = ok && std::fabs(v[i] - want) <= 2.4e-7 * (std::fabs(want) + 1e-30) * W;
      }
      expect(ok, std::string(device ? "device" : "host") + " mean");
      h = fnv(v.data(), n * sizeof(float), h);
      // broadcast
      for (int root = 0; root < W; ++root) {
        std::vector<unsigned char> b(kDistBroadcastBytes, 0);
        if (r == root)
          for (size_t i = 0; i < b.size(); ++i) b[i] = dist_byte(root, i);
        if (device) {
          unsigned char* d = nullptr;
          cudaMalloc(&d, b.size());
          cudaMemcpy(d, b.data(), b.size(), cudaMemcpyHostToDevice);
          comm->broadcast(d, b.size(), root);
          cudaMemcpy(b.data(), d, b.size(), cudaMemcpyDeviceToHost);
          cudaFree(d);
        } else {
          comm->broadcast(b.data(), b.size(), root);
        }
        bool same = true;
        for (size_t i = 0; i < b.size(); ++i) same = same && b[i] == dist_byte(root, i);
        expect(same, std::string(device ? "device" : "host") + " broadcast from root " + std::to_string(root));
      }
    }
    comm->barrier();
    uint64_t h0 = h;
    comm->broadcast(&h0, sizeof h0, 0);
    expect(h0 == h, "rank " + std::to_string(r) + " has the same bits as rank 0");

    // A figure: 256 MiB f32 all-reduce on device buffers.
    const size_t n = 64ull << 20;
    float* d = nullptr;
    cudaMalloc(&d, n * sizeof(float));
    cudaMemset(d, 0, n * sizeof(float));
    comm->all_reduce_sum(d, n);  // warm-up
    const int reps = 5;
    comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) comm->all_reduce_sum(d, n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    cudaFree(d);
    const double bytes = static_cast<double>(n * sizeof(float));
    std::printf("nccl_check: rank %d: all_reduce_sum of 256 MiB f32 on device: %.3f ms, bus bandwidth %.1f GB/s\n", r,
                s * 1e3, W > 1 ? bytes * 2 * (W - 1) / W / s / 1e9 : bytes / s / 1e9);
    std::printf("nccl_check: rank %d: %d checks, %d failed\n", r, checks, failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nccl_check: %s\n", e.what());
    return 1;
  }
}
