// MemoryPlan: how a worker uses its GPU's memory — the batch size and how the full VAE decodes — chosen from
// a measured model of SDXL's memory use and the memory this worker may use.
//
// The model (memory_plan.cpp, from bench/results/2026-11-25-h100-speed.json, fp16, random weights):
//   peak GiB ~ weights + unet_per_image * b * (pixels / 1024^2) + decode
// where decode is vae_per_image * b (full), * 1 (sliced: one image at a time), a 512^2-tile's worth (tiled),
// or ~0 (tiny VAE). The budget is the GPU's memory (or `max_gpu_gib`), divided among the ranks that share the
// GPU, with a safety margin. The plan picks the fastest option that fits: the largest batch (up to 8) with a
// full decode, then sliced, then tiled; the job's own batch_size / decode win when it sets them.
//
// Only resident placement exists so far: a job that asks for model/streamed/sequential offload gets an
// "unimplemented" error rather than a silently different plan. Pure logic, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace sdxlb {

/// What the node probe says about the GPU this worker uses.
struct GpuBudgetInput {
  double total_gib = 0;           ///< the GPU's memory
  int ranks_sharing = 1;          ///< workers that use this GPU
  std::optional<double> cap_gib;  ///< the job's memory.max_gpu_gib
};

struct MemoryRequest {
  int64_t width = 1024, height = 1024;
  bool tiny_decoder = false;          ///< the job decodes with the tiny VAE
  std::optional<int64_t> batch_size;  ///< the job's batch_size (nullopt: auto)
  std::optional<std::string> decode;  ///< "full", "sliced" or "tiled" (nullopt: auto)
  std::string placement = "auto";     ///< the job's memory.placement
};

struct MemoryPlan {
  std::string placement = "resident";
  std::string decode = "full";  ///< full, sliced, tiled or tiny
  int64_t batch_size = 1;
  double estimate_gib = 0;  ///< predicted peak of the allocator
  double budget_gib = 0;    ///< what this worker may use
  /// One line for the log: the choice and the numbers behind it.
  std::string describe() const;
};

/// OK for the placements that exist ("auto", "resident"); kUnimplemented naming the job key otherwise.
Status check_placement(const std::string& placement);

/// Predicted allocator peak (GiB) of the resident fp16 pipeline for this batch, size and decode.
double estimate_peak_gib(int64_t batch, int64_t width, int64_t height, const std::string& decode);

/// Chooses the plan. Errors: kUnimplemented for a placement other than auto/resident; kResourceExhausted
/// when even batch 1 with the lightest decode does not fit the budget (naming both numbers and the fixes).
StatusOr<MemoryPlan> choose_memory_plan(const GpuBudgetInput& gpu, const MemoryRequest& request);

}  // namespace sdxlb
