// The pass / fail bookkeeping shared by the check programs (mamba_cuda_check.cu, check_ssd.cu):
// one relative-L2 comparison against a reference and one exception guard, printing one line each.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace mamba::kernels::cuda::check {

// ||out - ref|| / ||ref|| over the entries where mask is true (all when mask is empty; ||out - ref||
// when ref is zero); pass when below tol, no compared output is NaN / inf and the sizes agree.
// Counts into passed / failed and prints "ok" or "FAIL", the name (padded to width), the error.
template <class Mask = std::vector<char>>
bool report(int& passed, int& failed, const std::string& name, const std::vector<float>& out,
            const std::vector<float>& ref, double tol, const Mask& mask = {}, int width = 78) {
  double num = 0, den = 0;
  size_t nonfinite = 0;
  for (size_t i = 0; i < ref.size() && i < out.size(); ++i) {
    if (!mask.empty() && !mask[i]) continue;
    if (!std::isfinite(out[i])) { ++nonfinite; continue; }
    const double e = double(out[i]) - ref[i];
    num += e * e;
    den += double(ref[i]) * ref[i];
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const bool ok = nonfinite == 0 && rel < tol && out.size() == ref.size();
  (ok ? passed : failed)++;
  std::printf("%-4s %-*s rel %.2e (tol %.0e)%s\n", ok ? "ok" : "FAIL", width, name.c_str(), rel, tol,
              nonfinite ? (" NaN/inf x" + std::to_string(nonfinite)).c_str() : "");
  std::fflush(stdout);
  return ok;
}

// Runs fn; an exception counts as one failure (printed with the case name) and clears CUDA's last error.
inline void run_case(int& failed, const std::string& name, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    ++failed;
    std::printf("FAIL %s: exception: %s\n", name.c_str(), e.what());
    std::fflush(stdout);
    cudaGetLastError();
  }
}

}  // namespace mamba::kernels::cuda::check
