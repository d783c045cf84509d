#include "pipeline/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace sdxlb {
namespace {

// Measured on an H100 (bench/results/2026-11-25-h100-speed.json and 2026-11-25-h100-memory.json), fp16,
// 1024^2, allocator peak. Activation terms scale with the pixel count.
constexpr double kUnetUnitsGib = 4.67;      // weights of the UNet's resnets and transformer blocks
constexpr double kUnetOtherGib = 0.12;      // the rest of the UNet's weights (always on the GPU)
constexpr double kVaeGib = 0.16;            // the VAE's weights
constexpr double kSlotGib = 0.07;           // one streaming slot (the largest unit, a 1280-wide transformer block)
constexpr double kUnetPerImageGib = 0.627;  // activations of one image's CFG pair
constexpr double kFullDecodeGib = 1.749;    // decoding one image with the full VAE
constexpr double kTileGib = 0.45;           // one 512^2 decode tile
constexpr double kTinyDecodeGib = 0.05;     // the tiny VAE
constexpr double kMargin = 0.90;            // leave 10% for fragmentation and the CUDA context
// Time: one UNet call (one image's CFG pair) and the host-to-GPU copy rate of page-locked memory.
constexpr double kUnetCallS = 0.0413;
constexpr double kCopyGibPerS = 20.0;
constexpr double kRecaptureS = 0.1;  // model offload: capturing the step's CUDA graph again per batch
constexpr int kMaxStreams = 2;
constexpr int64_t kAutoBatch = 8;

double pixels_scale(int64_t width, int64_t height) {
  return static_cast<double>(width) * static_cast<double>(height) / (1024.0 * 1024.0);
}

// Throughput gained by denoising images concurrently (measured: see kMaxStreams).
double streams_speedup(int streams) {
  return streams >= 2 ? 1.0 / 0.95 : 1.0;
}

double decode_gib(const std::string& decode, double scale) {
  if (decode == "tiny") return kTinyDecodeGib * scale;
  if (decode == "tiled") return std::min(kTileGib, kFullDecodeGib * scale);
  return kFullDecodeGib * scale;
}

}  // namespace

double estimate_peak_gib(const MemoryPlan& p, int64_t width, int64_t height) {
  const double scale = pixels_scale(width, height);
  const double act = kUnetPerImageGib * scale * std::max(1, p.unet_streams);
  const double dec = decode_gib(p.decode, scale);
  if (p.placement == "model_offload")
    return kVaeGib + std::max(kUnetUnitsGib + kUnetOtherGib + act, kUnetOtherGib + dec);
  double unet = kUnetUnitsGib + kUnetOtherGib;
  if (p.placement == "streamed")
    unet = kUnetOtherGib + std::min(p.resident_budget_gib, kUnetUnitsGib) + 3 * kSlotGib;
  else if (p.placement == "sequential")
    unet = kUnetOtherGib + 2 * kSlotGib;
  return unet + kVaeGib + act + dec;
}

double estimate_relative_time(const MemoryPlan& p, int64_t width, int64_t height, int64_t steps) {
  const double scale = pixels_scale(width, height);
  const double compute = kUnetCallS * scale;
  double call = compute / streams_speedup(p.unet_streams);
  if (p.placement == "streamed" || p.placement == "sequential") {
    const double streamed = p.placement == "sequential"
                                ? kUnetUnitsGib
                                : std::max(0.0, kUnetUnitsGib - p.resident_budget_gib);
    call = std::max(compute, streamed / kCopyGibPerS);
  }
  double per_image = call * static_cast<double>(std::max<int64_t>(1, steps));
  if (p.placement == "model_offload")
    per_image += ((kUnetUnitsGib / kCopyGibPerS) + kRecaptureS) / static_cast<double>(std::max<int64_t>(1, p.batch_size));
  return per_image / (compute * static_cast<double>(std::max<int64_t>(1, steps)));
}

std::string MemoryPlan::describe() const {
  char buf[320];
  char extra[64] = "";
  if (placement == "streamed") std::snprintf(extra, sizeof extra, " (%.2f GiB of UNet units resident)", resident_budget_gib);
  std::snprintf(buf, sizeof buf,
                "memory plan: %s weights%s, %s decode, %d image(s) denoised concurrently, batch %lld "
                "(estimated peak %.1f GiB of %.1f GiB, time %.2fx resident)",
                placement.c_str(), extra, decode.c_str(), unet_streams, static_cast<long long>(batch_size),
                estimate_gib, budget_gib, relative_time);
  return buf;
}

StatusOr<MemoryPlan> choose_memory_plan(const GpuBudgetInput& gpu, const MemoryRequest& req) {
  static const std::vector<std::string> kPlacements = {"resident", "streamed", "model_offload", "sequential"};
  std::vector<std::string> placements;
  if (req.placement == "auto")
    placements = kPlacements;
  else if (std::find(kPlacements.begin(), kPlacements.end(), req.placement) != kPlacements.end())
    placements = {req.placement};
  else
    return invalid_argument("memory.placement: unknown placement \"" + req.placement +
                            "\"; use auto, resident, model_offload, streamed or sequential");
  std::vector<std::string> decodes;
  if (req.tiny_decoder)
    decodes = {"tiny"};
  else if (req.decode)
    decodes = {*req.decode == "sliced" ? "full" : *req.decode};
  else
    decodes = {"full", "tiled"};  // tiled changes pixels (slightly): only when nothing else fits
  for (const auto& d : decodes)
    if (d != "full" && d != "tiled" && d != "tiny")
      return invalid_argument("memory.decode: unknown decode \"" + d + "\"; use auto, full, sliced or tiled");

  double budget = gpu.total_gib;
  if (gpu.cap_gib) budget = std::min(budget, *gpu.cap_gib);
  budget = budget / std::max(1, gpu.ranks_sharing) * kMargin;

  for (const auto& decode : decodes) {
    std::vector<MemoryPlan> fits;
    for (const auto& placement : placements) {
      for (int streams = kMaxStreams; streams >= 1; --streams) {
        if ((placement == "streamed" || placement == "sequential") && streams > 1) continue;
        MemoryPlan p;
        p.placement = placement;
        p.decode = decode;
        p.unet_streams = streams;
        p.batch_size = req.batch_size ? *req.batch_size : kAutoBatch;
        p.budget_gib = budget;
        if (placement == "streamed") {
          // The largest resident share that fits (all of it would be the resident plan).
          p.resident_budget_gib = 0;
          const double room = budget - estimate_peak_gib(p, req.width, req.height);
          if (room < 0) continue;
          p.resident_budget_gib = std::min(room, kUnetUnitsGib);
        }
        p.estimate_gib = estimate_peak_gib(p, req.width, req.height);
        if (p.estimate_gib > budget) continue;
        p.relative_time = estimate_relative_time(p, req.width, req.height, req.steps);
        fits.push_back(p);
      }
    }
    if (!fits.empty()) {
      // Fastest first; among equals, the earlier candidate (resident before streamed before offload).
      return *std::min_element(fits.begin(), fits.end(), [](const MemoryPlan& a, const MemoryPlan& b) {
        return a.relative_time < b.relative_time - 1e-9;
      });
    }
  }
  MemoryPlan lightest;
  lightest.placement = placements.size() > 1 ? "sequential" : placements.front();
  lightest.decode = decodes.back();
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "the lightest plan (%s weights, %s decode, one image at a time) needs about %.1f GiB, but this "
                "worker may use %.1f GiB; use a larger GPU, fewer ranks per GPU, a higher memory.max_gpu_gib, "
                "memory.placement: auto, the tiny VAE, or a smaller image",
                lightest.placement.c_str(), lightest.decode.c_str(),
                estimate_peak_gib(lightest, req.width, req.height), budget);
  return Status(StatusCode::kResourceExhausted, buf);
}

}  // namespace sdxlb
