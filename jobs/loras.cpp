#include "jobs/loras.h"

#include <nlohmann/json.hpp>

namespace sdxlb {

std::string loras_to_json(const std::vector<LoraEntry>& loras) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& l : loras) j.push_back({{"path", l.path}, {"scale", l.scale}});
  return j.dump();
}

}  // namespace sdxlb
