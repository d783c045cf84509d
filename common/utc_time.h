// The current UTC time formatted with strftime, e.g. "%Y-%m-%dT%H:%M:%SZ" (ISO 8601) or "%Y%m%dT%H%M%SZ"
// (a sortable run id).
#pragma once

#include <ctime>
#include <string>

namespace sdxlb {

inline std::string utc_now(const char* format) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

}  // namespace sdxlb
