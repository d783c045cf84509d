#include "pipeline/nn/kernels/programmatic_launch.cuh"

#include <algorithm>
#include <atomic>

#include "pipeline/nn/disabled_fusions.h"

namespace sdxlb::kernels {
namespace {

bool switched_on() {
  const std::vector<std::string> off = disabled_fusion_names();
  return std::none_of(off.begin(), off.end(), [](const std::string& n) { return n == "pdl" || n == "all"; });
}

}  // namespace

bool programmatic_launch_enabled() {
  static const bool on = switched_on();
  if (!on) return false;
  // Per device: 0 not asked yet, 1 yes, 2 no (devices beyond 64 ask every time).
  static std::atomic<int> capable[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (device >= 0 && device < 64 && capable[device].load(std::memory_order_relaxed) != 0)
    return capable[device].load(std::memory_order_relaxed) == 1;
  int major = 0;
  const bool yes =
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9;
  if (device >= 0 && device < 64) capable[device].store(yes ? 1 : 2, std::memory_order_relaxed);
  return yes;
}

}  // namespace sdxlb::kernels
