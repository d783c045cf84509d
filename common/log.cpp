#include "common/log.h"

#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace sdxlb {

void init_logging(int rank) {
  auto logger = spdlog::get("sdxlb");
  if (!logger) logger = spdlog::stderr_color_mt("sdxlb");
  logger->set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(rank) + "] %^%l%$: %v");
  spdlog::set_default_logger(logger);
  if (const char* lvl = std::getenv("SDXLB_LOG")) spdlog::set_level(spdlog::level::from_str(lvl));
}

bool log_debug_enabled() {
  return spdlog::should_log(spdlog::level::debug);
}

void log_debug(const std::string& message) {
  spdlog::debug("{}", message);
}
void log_info(const std::string& message) {
  spdlog::info("{}", message);
}
void log_warn(const std::string& message) {
  spdlog::warn("{}", message);
}
void log_error(const std::string& message) {
  spdlog::error("{}", message);
}

}  // namespace sdxlb
