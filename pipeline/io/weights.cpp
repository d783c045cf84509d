#include "pipeline/io/weights.h"

#include <algorithm>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace sdxlb {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// How many entries of each list the message shows before eliding: enough to diagnose, bounded for huge
// models.
constexpr size_t kShowMax = 40;

void list_lines(std::string& out, const char* title, const std::vector<std::string>& items) {
  if (items.empty()) return;
  out += "\n  " + std::string(title) + " (" + std::to_string(items.size()) + "):";
  for (size_t i = 0; i < items.size() && i < kShowMax; ++i) out += "\n    " + items[i];
  if (items.size() > kShowMax) out += "\n    ... and " + std::to_string(items.size() - kShowMax) + " more";
}

}  // namespace

std::string LoadReport::describe(const std::string& what) const {
  std::string out = what + " do not match the model built from its config.json";
  list_lines(out, "missing from the file", missing);
  list_lines(out, "unexpected in the file", unexpected);
  std::vector<std::string> mm;
  for (const auto& m : mismatched)
    mm.push_back(m.name + ": model expects " + shape_str(m.expected) + ", file has " + shape_str(m.actual));
  list_lines(out, "shape mismatches", mm);
  out += "\n  (is the config.json from the same checkpoint as the weights?)";
  return out;
}

Status load_module_weights(torch::nn::Module& module, const WeightSet& weights, const std::string& what,
                           const LoadOptions& options, LoadReport* report_out) {
  LoadReport report;
  const std::set<std::string> optional(options.optional_keys.begin(), options.optional_keys.end());

  std::map<std::string, at::Tensor> slots;
  for (const auto& kv : module.named_parameters(/*recurse=*/true)) slots[kv.key()] = kv.value();
  for (const auto& kv : module.named_buffers(/*recurse=*/true)) slots[kv.key()] = kv.value();

  for (const auto& [name, slot] : slots) {
    const TensorInfo* info = weights.find(name);
    if (!info) {
      if (!optional.count(name)) report.missing.push_back(name);
      continue;
    }
    std::vector<int64_t> expected(slot.sizes().begin(), slot.sizes().end());
    if (expected != info->shape) report.mismatched.push_back({name, expected, info->shape});
  }
  for (const auto& name : weights.names())
    if (!slots.count(name) && !optional.count(name)) report.unexpected.push_back(name);

  if (report_out) *report_out = report;
  if (!report.ok()) return data_loss(report.describe(what + " (" + weights.describe() + ")"));

  try {
    at::NoGradGuard no_grad;
    for (auto& [name, slot] : slots) {
      if (!weights.find(name)) continue;  // optional and absent: keep the module's own value
      SDXLB_ASSIGN_OR_RETURN(at::Tensor src, weights.get(name));
      const at::ScalarType dtype = at::isFloatingType(src.scalar_type()) ? options.dtype : src.scalar_type();
      // .to() copies off the mapping (or to the device); the module never aliases the file's pages. The copy
      // is contiguous: a single file's transposed views must not leave strided parameters (another matmul
      // path, other rounding than the folder's weights).
      at::Tensor value =
          src.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/true, at::MemoryFormat::Contiguous);
      slot.set_data(value);
    }
  } catch (const c10::Error& e) {
    return Status(StatusCode::kResourceExhausted, what + ": copying weights to " + options.device.str() +
                                                      " failed: " + e.what_without_backtrace());
  }
  return Status::ok();
}

}  // namespace sdxlb
