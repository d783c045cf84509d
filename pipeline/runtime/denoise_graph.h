// DenoiseGraph: one classifier-free-guidance Euler step (scale input, UNet, guidance, Euler update) captured
// as a CUDA graph for fixed shapes, then replayed once per step.
//
// A replay launches the whole step with one call, so the loop costs no per-kernel launch overhead and has no
// host synchronisation: the per-step scalars (timestep, input scale, sigma, dt) live in device tensors that
// are filled (asynchronously) before each replay. Inputs and outputs are static device buffers owned by the
// graph. The arithmetic is the eager path's (epsilon prediction), so results agree with it to rounding.
// One graph serves one (batch, size, dtype, guidance) combination; the pipeline re-captures when they change.
//
// Batch invariance: the UNet is called on one image at a time (its CFG pair), whatever the batch, so every
// image runs exactly the same kernels on the same shapes and its pixels do not depend on the batch size or
// on the other images in the batch. The images of a batch run on `streams` concurrent CUDA streams inside
// the graph, which recovers most of what one large call would gain. Conditioning rows come grouped per
// image: [negative_0, positive_0, negative_1, positive_1, ...] with CFG, [positive_0, ...] without.
// Not thread-safe; used by the pipeline's thread only.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>

#include "common/status.h"
#include "pipeline/models/unet.h"

namespace sdxlb {

class DenoiseGraph {
 public:
  struct Key {
    int64_t batch = 0, channels = 0, height = 0, width = 0;  ///< latents [batch, channels, height, width]
    int64_t seq = 0, dim = 0, pooled = 0;                    ///< embeds [., seq, dim], pooled [., pooled]
    at::ScalarType dtype = at::kHalf;
    bool cfg = true;
    double guidance = 5.0;
    int streams = 1;  ///< images computed concurrently (1: one after the other)
    bool operator==(const Key& o) const;
  };

  /// Warms the UNet up on a side stream (`warmup` steps: cuBLAS/cuDNN handles and workspaces, and the weight
  /// streamer's tracing pass, must exist before capture) and captures the step. Errors: kUnimplemented in a
  /// build without CUDA, kResourceExhausted when capture runs out of memory, kInternal for other CUDA
  /// failures.
  static StatusOr<std::unique_ptr<DenoiseGraph>> capture(UNet2DConditionModel unet, const Key& key,
                                                         at::Device device, int warmup = 2);
  ~DenoiseGraph();

  const Key& key() const { return key_; }
  /// Copies the initial latents [batch, ...] and the conditioning (grouped per image as above: with cfg,
  /// embeds/pooled/time_ids have 2*batch rows) into the static inputs.
  void load(const at::Tensor& latents, const at::Tensor& embeds, const at::Tensor& pooled,
            const at::Tensor& time_ids);
  /// Runs one step with these scalars: timestep t, model-input scale 1/sqrt(sigma^2+1), sigma, and
  /// dt = sigma_next - sigma.
  void step(float timestep, float input_scale, float sigma, float dt);
  /// The latents after the steps run so far (the static buffer: clone it before the next load()).
  const at::Tensor& latents() const;

  struct State;  ///< (the implementation's)

 private:
  DenoiseGraph();
  Key key_;
  std::unique_ptr<State> s_;
};

}  // namespace sdxlb
