#include "pipeline/io/torch_error.h"

namespace sdxlb {

Status torch_error_status(const std::string& phase, const c10::Error& e, const std::string& oom_hint) {
  const std::string what = e.what_without_backtrace();
  if (what.find("out of memory") != std::string::npos) {
    return Status(
        StatusCode::kResourceExhausted,
        oom_hint.empty() ? phase + ": " + what : phase + ": out of GPU memory (" + what + "); " + oom_hint);
  }
  return internal_error(phase + ": " + what);
}

}  // namespace sdxlb
