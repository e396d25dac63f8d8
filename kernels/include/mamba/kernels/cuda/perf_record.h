// One machine-readable line per timing, for the device round's summary table
// (kernels/cuda/device_run.sh collects them from every check program and computes the floors):
//
//   perf|<kernel>|<shape>|<dtype>|<time us>|<bytes>|<ops>|<unit>
//
// bytes: what the kernel must move at least (each input read once, each output written once);
// ops: the operations of the unit that does them, unit one of
//   tc   dense bf16 / f16 tensor-core FLOPs (2 per multiply-add)
//   tf32 dense TF32 tensor-core FLOPs (f32 inputs rounded to TF32)
//   fma  f32 FLOPs on the FMA pipe (2 per FFMA)
//   exp  MUFU exponentials (one ex2 each)
//   -    none counted (the floor is the memory one)
// The first record of a process is preceded by one line naming the device:
//   perf-device|<name>|<SM count>|<max SM clock MHz>|<compute capability major>.<minor>
// A record with kernel "memcpy d2d" is the measured copy bandwidth the memory floors use.
// Host only; prints to stdout and flushes. Not thread-safe (the check programs are single-threaded).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

namespace mamba::kernels::cuda {

inline void perf_record(const std::string& kernel, const std::string& shape, const std::string& dtype, double us,
                        double bytes, double ops = 0, const char* unit = "-") {
  static bool device_printed = false;
  if (!device_printed) {
    device_printed = true;
    int dev = 0, sms = 0, khz = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    cudaDeviceProp prop{};
    const bool named = cudaGetDeviceProperties(&prop, dev) == cudaSuccess;
    std::printf("perf-device|%s|%d|%d|%d.%d\n", named ? prop.name : "?", sms, khz / 1000, major, minor);
  }
  std::printf("perf|%s|%s|%s|%.3f|%.6g|%.6g|%s\n", kernel.c_str(), shape.c_str(), dtype.c_str(), us, bytes, ops,
              ops > 0 ? unit : "-");
  std::fflush(stdout);
}

// A record whose label names the element type as one of its words ("scan fwd bf16 auto"):
// the word goes to the dtype column ("-" when none), the rest is the kernel; with an empty
// shape, the words after the type are the shape ("rms_norm_bwd bf16 rows 16384 dim 768").
inline void perf_record_label(const std::string& label, const std::string& shape, double us, double bytes,
                              double ops = 0, const char* unit = "-") {
  for (const char* t : {"bf16", "f16", "f32"}) {
    const std::string w(t);
    for (size_t p = label.find(w); p != std::string::npos; p = label.find(w, p + 1)) {
      const bool start = p == 0 || label[p - 1] == ' ';
      const bool end = p + w.size() == label.size() || label[p + w.size()] == ' ';
      if (!start || !end) continue;
      if (shape.empty() && p + w.size() < label.size()) {
        std::string k = label.substr(0, p);
        while (!k.empty() && k.back() == ' ') k.pop_back();
        return perf_record(k, label.substr(p + w.size() + 1), w, us, bytes, ops, unit);
      }
      std::string kernel = label.substr(0, p) + label.substr(p + w.size());
      const size_t dbl = kernel.find("  ");
      if (dbl != std::string::npos) kernel.erase(dbl, 1);
      while (!kernel.empty() && kernel.back() == ' ') kernel.pop_back();
      return perf_record(kernel, shape, w, us, bytes, ops, unit);
    }
  }
  perf_record(label, shape.empty() ? "-" : shape, "-", us, bytes, ops, unit);
}

}  // namespace mamba::kernels::cuda
