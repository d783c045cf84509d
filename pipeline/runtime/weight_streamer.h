// WeightStreamer: runs the UNet when its weights do not all stay on the GPU (streamed and sequential
// placements of the memory plan).
//
// The UNet's weight units (its ResnetBlock2Ds and BasicTransformerBlocks, 97% of its bytes for SDXL) live in
// one page-locked host buffer: their parameters and buffers (an FP8 UNet's e4m3 weights and scales, so that
// it streams half the bytes). Everything else (convs in/out, embeddings, projections, samplers) moves to the
// GPU. Some units stay resident on the GPU, as many as `resident_budget_bytes` allows, spread evenly over the
// forward pass; the others stream: each owns a view into one of `slots` GPU buffers, and while unit s
// computes, a side stream copies unit s + slots - 1 into the buffer unit s - 1 just released, so copies
// overlap the math. Every copy and wait is an ordinary stream operation, so a forward pass with streaming
// can be captured in a CUDA graph (the graph then holds the copies too).
//
// The first forward pass after attach() runs each unit right after a copy on the compute stream and records
// the order the units run in; the layout (which units stay resident, which slot each streamed unit uses) is
// fixed at the start of the second pass. A unit's weights are bit-for-bit the same wherever they live, so a
// streamed UNet computes exactly what the resident one does.
//
// On the CPU (tests) the same logic runs with synchronous copies. Not thread-safe: the UNet is used by one
// thread and one compute stream at a time while streamed. The UNet must not be used after the streamer is
// destroyed (its streamed weights are views into the streamer's buffers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "common/status.h"
#include "pipeline/models/unet.h"
#include "pipeline/nn/unit_hook.h"

namespace sdxlb {

struct StreamingOptions {
  /// Unit weights that may stay on the GPU (bytes); 0 streams every unit (sequential offload).
  int64_t resident_budget_bytes = 0;
  /// GPU buffers the streamed units rotate through (>= 2): slots - 1 units are in flight ahead of compute.
  int slots = 3;
};

struct StreamingStats {
  int units = 0, streamed_units = 0;
  int64_t unit_bytes = 0;      ///< all units' weights
  int64_t resident_bytes = 0;  ///< units kept on the GPU, after the first forward
  int64_t streamed_bytes = 0;  ///< copied per forward pass
  int64_t slot_bytes = 0;      ///< all slots together
  int64_t other_bytes = 0;     ///< the UNet's weights outside units (always on the GPU)
  std::string describe() const;
};

class WeightStreamer : public UnitHook {
 public:
  /// Takes over `unet`, whose parameters must be on the CPU in their compute dtype and memory format, and
  /// moves what is not streamed to `device`. Errors: kInvalidArgument when the UNet is not on the CPU or
  /// slots < 2; kResourceExhausted when host or GPU memory runs out.
  static StatusOr<std::unique_ptr<WeightStreamer>> attach(UNet2DConditionModel unet, c10::Device device,
                                                          const StreamingOptions& options);
  ~WeightStreamer() override;
  WeightStreamer(const WeightStreamer&) = delete;
  WeightStreamer& operator=(const WeightStreamer&) = delete;

  void begin_forward() override;
  void before_unit(int unit) override;

  /// Model offload: frees the resident units' GPU buffers (e.g. while the VAE decodes), and copies them
  /// back. The weights' GPU addresses change, so a CUDA graph of the UNet must be captured again after
  /// restore(). The UNet must not run while evicted. Both do nothing before the layout is fixed.
  void evict();
  void restore();
  bool evicted() const;

  /// The layout (resident and streamed bytes are final after the first forward pass).
  StreamingStats stats() const;

 private:
  struct State;
  WeightStreamer();
  std::unique_ptr<State> s_;
};

}  // namespace sdxlb
