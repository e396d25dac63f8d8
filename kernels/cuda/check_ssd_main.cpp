// mamba-ssd-check: the SSD part of mamba-cuda-check alone (check_ssd.cu), a small binary for device
// rounds. Same arguments: --ssd-only is implied; --check-only, --ssd-once as in check_ssd.h.
// Built by kernels/cuda/ssd2_build.sh (not by CMake: mamba-cuda-check --ssd-only is the same run).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "check_ssd.h"

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("ssd-check: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device 0: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::vector<char*> args(argv, argv + argc);
  char ssd_only[] = "--ssd-only";
  args.push_back(ssd_only);
  int passed = 0, failed = 0;
  run_ssd_cuda_checks(static_cast<int>(args.size()), args.data(), passed, failed);
  std::printf("ssd-check total: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
