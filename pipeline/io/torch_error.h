// LibTorch exceptions as Status values, for the pipeline's entry points that must not throw.
#pragma once

#include <string>

#include <c10/util/Exception.h>

#include "common/status.h"

namespace sdxlb {

/// `phase: what` as kResourceExhausted when the exception is an out-of-memory error (the worker's fallback
/// keys on that code), else as an internal error. With an `oom_hint`, an out-of-memory message reads
/// `phase: out of GPU memory (what); oom_hint`.
Status torch_error_status(const std::string& phase, const c10::Error& e, const std::string& oom_hint = "");

}  // namespace sdxlb
