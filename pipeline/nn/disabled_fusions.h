// The names listed in SDXLB_DISABLE_FUSION (comma-separated; "all" for every one), read by fused_ops.cpp,
// which checks each name against its Fusion list, and by the kernels' programmatic launch
// (kernels/programmatic_launch.cuh). Header-only and free of LibTorch and CUDA, for both.
#pragma once

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace sdxlb {

/// The non-empty names in SDXLB_DISABLE_FUSION, in order (none where it is unset).
inline std::vector<std::string> disabled_fusion_names() {
  std::vector<std::string> names;
  const char* env = std::getenv("SDXLB_DISABLE_FUSION");
  if (env == nullptr) return names;
  std::stringstream ss(env);
  std::string name;
  while (std::getline(ss, name, ','))
    if (!name.empty()) names.push_back(name);
  return names;
}

}  // namespace sdxlb
