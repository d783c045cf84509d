// LoRA: the low-rank weight updates a job fuses into the model (issue #15), as the job file's `loras:` key
// lists them.
//
// Each entry names a .safetensors LoRA file (kohya-ss or diffusers/PEFT format) and the scale its update is
// added with (diffusers' fuse_lora(lora_scale=...)). The list is ordered: the updates are added in this order
// (in float32, so the order changes the weights by rounding only). The pipeline reads and checks the files
// (pipeline/io/lora.h); here they are only names and numbers.
//
// Torch-free and YAML-free. Pure functions.
#pragma once

#include <string>
#include <vector>

namespace sdxlb {

/// One entry of `loras:`.
struct LoraEntry {
  std::string path;    ///< the LoRA file (resolved against the job file's folder)
  double scale = 1.0;  ///< finite; 0 adds nothing, negative subtracts the update
  /// "<file>:<line>:<column>" of the entry in the job file (empty when built by hand): where the pipeline's
  /// errors about this LoRA point. Not part of equality or of the JSON.
  std::string where;

  bool operator==(const LoraEntry& other) const { return path == other.path && scale == other.scale; }
  bool operator!=(const LoraEntry& other) const { return !(*this == other); }
};

/// Compact JSON array of the entries, [{"path":"/l/a.safetensors","scale":0.5}, ...]; "[]" when none.
/// Stable across runs and machines (a number reads back as written). index.h5 records it.
std::string loras_to_json(const std::vector<LoraEntry>& loras);

}  // namespace sdxlb
