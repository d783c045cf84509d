// Loading a module's parameters and buffers from a WeightSet by name.
//
// Module parameter names are the checkpoint's own names (diffusers/transformers state-dict keys), so loading
// is a lookup. Every problem is collected before reporting: all missing keys, all unexpected keys, all shape
// mismatches, in one error.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include "common/status.h"
#include "pipeline/io/model_folder.h"

namespace sdxlb {

struct ShapeMismatch {
  std::string name;
  std::vector<int64_t> expected;  ///< the module's shape
  std::vector<int64_t> actual;    ///< the file's shape
};

struct LoadReport {
  std::vector<std::string> missing;     ///< in the module, not in the file
  std::vector<std::string> unexpected;  ///< in the file, not in the module
  std::vector<ShapeMismatch> mismatched;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// A multi-line message listing every problem, headed by `what` (e.g. "unet weights in /m/unet").
  std::string describe(const std::string& what) const;
};

struct LoadOptions {
  /// Floating-point parameters and buffers are converted to this type; integer buffers keep theirs.
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  /// Keys that may be absent from the file or present without a module slot (e.g. transformers'
  /// non-persistent "text_model.embeddings.position_ids").
  std::vector<std::string> optional_keys;
};

/// Compares `module`'s parameters and buffers with `weights` and, when everything matches, copies them in.
/// On any mismatch nothing is loaded and the error (kDataLoss) lists every problem; `report` (optional)
/// receives the details.
Status load_module_weights(torch::nn::Module& module, const WeightSet& weights, const std::string& what,
                           const LoadOptions& options, LoadReport* report = nullptr);

}  // namespace sdxlb
