#include "pipeline/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace sdxlb {
namespace {

// Measured on an H100 (bench/results/2026-11-25-h100-speed.json), 1024^2, fp16, allocator peak:
// full decode 7.40 / 14.52 / 24.03 GiB at batch 1 / 4 / 8; tiny decode 5.54 / 7.42 at batch 1 / 4.
constexpr double kWeightsGib = 4.91;        // UNet + VAE decoder weights, workspaces, the CUDA graph pool
constexpr double kUnetPerImageGib = 0.627;  // activations of one image's CFG pair (tiny slope)
constexpr double kVaePerImageGib = 1.749;   // full-VAE decode activations per image (full slope - tiny slope)
constexpr double kTileGib = 0.45;           // one 512^2 decode tile (a quarter of a 1024^2 image)
constexpr double kMargin = 0.90;            // leave 10% for fragmentation and the CUDA context
constexpr int64_t kMaxAutoBatch = 8;

}  // namespace

Status check_placement(const std::string& placement) {
  if (placement == "auto" || placement == "resident") return Status::ok();
  return unimplemented("memory.placement: " + placement +
                       " is not implemented yet; use auto or resident (the weights then stay on the GPU)");
}

double estimate_peak_gib(int64_t batch, int64_t width, int64_t height, const std::string& decode) {
  const double scale = static_cast<double>(width) * static_cast<double>(height) / (1024.0 * 1024.0);
  const double b = static_cast<double>(batch);
  double dec = 0;
  if (decode == "full")
    dec = kVaePerImageGib * scale * b;
  else if (decode == "sliced")
    dec = kVaePerImageGib * scale;
  else if (decode == "tiled")
    dec = std::min(kTileGib, kVaePerImageGib * scale);
  return kWeightsGib + kUnetPerImageGib * scale * b + dec;
}

std::string MemoryPlan::describe() const {
  char buf[256];
  std::snprintf(
      buf, sizeof buf, "memory plan: %s weights, %s decode, batch %lld (estimated peak %.1f GiB of %.1f GiB)",
      placement.c_str(), decode.c_str(), static_cast<long long>(batch_size), estimate_gib, budget_gib);
  return buf;
}

StatusOr<MemoryPlan> choose_memory_plan(const GpuBudgetInput& gpu, const MemoryRequest& req) {
  SDXLB_RETURN_IF_ERROR(check_placement(req.placement));
  MemoryPlan plan;
  double budget = gpu.total_gib;
  if (gpu.cap_gib) budget = std::min(budget, *gpu.cap_gib);
  budget = budget / std::max(1, gpu.ranks_sharing) * kMargin;
  plan.budget_gib = budget;

  std::vector<std::string> decodes;
  if (req.tiny_decoder)
    decodes = {"tiny"};
  else if (req.decode)
    decodes = {*req.decode};
  else
    decodes = {"full", "sliced", "tiled"};
  std::vector<int64_t> batches;
  if (req.batch_size)
    batches = {*req.batch_size};
  else
    for (int64_t b = kMaxAutoBatch; b >= 1; --b) batches.push_back(b);

  // Fastest first: a full decode beats sliced beats tiled at any batch, and a larger batch beats a smaller
  // one.
  for (const auto& decode : decodes) {
    for (int64_t b : batches) {
      const double est = estimate_peak_gib(b, req.width, req.height, decode);
      if (est <= budget) {
        plan.decode = decode;
        plan.batch_size = b;
        plan.estimate_gib = est;
        return plan;
      }
    }
  }
  const std::string lightest = decodes.back();
  const int64_t b = batches.back();
  char buf[320];
  std::snprintf(
      buf, sizeof buf,
      "the resident SDXL pipeline needs about %.1f GiB at batch %lld with %s decode, but this worker may use "
      "%.1f GiB; use a larger GPU, fewer ranks per GPU, a higher memory.max_gpu_gib, the tiny VAE, or a "
      "smaller batch_size",
      estimate_peak_gib(b, req.width, req.height, lightest), static_cast<long long>(b), lightest.c_str(),
      budget);
  return Status(StatusCode::kResourceExhausted, buf);
}

}  // namespace sdxlb
