#include "common/process_clock.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace sdxlb {

double seconds_since_process_start() {
  std::ifstream stat("/proc/self/stat"), uptime("/proc/uptime");
  if (!stat || !uptime) return -1;
  std::string line;
  std::getline(stat, line);
  // Field 22 (starttime, in clock ticks since boot) follows the command name, which is in parentheses.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
  }
  double up = 0;
  uptime >> up;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return up - std::stod(field) / ticks;
}

}  // namespace sdxlb
