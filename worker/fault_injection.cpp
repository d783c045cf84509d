#include "worker/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>

namespace sdxlb {

const FaultPlan& FaultPlan::get() {
  static const FaultPlan plan = [] {
    FaultPlan p;
    const char* env = std::getenv("SDXLB_FAULT");
    if (!env) return p;
    std::stringstream ss(env);
    std::string part;
    while (std::getline(ss, part, ',')) {
      const auto eq = part.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = part.substr(0, eq), value = part.substr(eq + 1);
      if (key == "kill_rank") p.kill_rank = std::stoi(value);
      if (key == "kill_after") p.kill_after = std::stoll(value);
      if (key == "oom_batches") p.oom_batches = std::stoll(value);
      if (key == "nan_items") {
        std::stringstream vs(value);
        std::string item;
        while (std::getline(vs, item, ':'))
          if (!item.empty()) p.nan_items.insert(std::stoll(item));
      }
    }
    return p;
  }();
  return plan;
}

void FaultPlan::maybe_kill(int rank, int64_t count) const {
  if (rank == kill_rank && kill_after >= 0 && count >= kill_after) ::kill(::getpid(), SIGKILL);
}

}  // namespace sdxlb
