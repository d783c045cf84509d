// Logging for code that cannot include spdlog directly: LibTorch bundles its own {fmt}, which clashes with
// the one spdlog uses, so translation units that include LibTorch log through these functions (compiled in a
// torch-free file). Messages go to stderr with the time, the rank and the level.
#pragma once

#include <string>

namespace sdxlb {

/// Sets the rank shown in every line and the level from $SDXLB_LOG (trace, debug, info, warn, error).
void init_logging(int rank);
/// Whether debug lines are printed (SDXLB_LOG=debug or trace): skip building costly debug messages.
bool log_debug_enabled();
void log_debug(const std::string& message);
void log_info(const std::string& message);
void log_warn(const std::string& message);
void log_error(const std::string& message);

}  // namespace sdxlb
