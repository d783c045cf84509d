// Writing .safetensors files: a header of sorted tensor entries padded to 8 bytes, then the data, written to
// a temporary file and renamed into place, so that a crash never leaves a file that looks complete.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "common/status.h"

namespace sdxlb {

/// Writes `tensors` (CPU or device; F32, F16, BF16, I64, I32, U8 ...) to `path` with optional string
/// metadata. Errors: kIoError naming the path; kInvalidArgument for a dtype safetensors cannot hold.
Status write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace sdxlb
