// DenoiseLoop: the denoising steps of a batch over static device buffers, run eagerly or as a CUDA graph.
//
// One step of one image is: the sampler's model input, the UNet on its CFG pair, the guidance combine, the
// sampler's step (pipeline/samplers/sampler.h). That step is written once (denoise_loop.cpp) and either runs
// eagerly (CPU, or CUDA without graphs) or is captured once as a CUDA graph and replayed every step. A
// replay launches the whole step with one call, so the loop costs no per-kernel launch overhead and has no
// host synchronisation: before each step the loop copies the sampler's coefficient row i (and, for
// stochastic samplers, the step's noise) into static device buffers that the captured work reads.
//
// Batch invariance: the UNet is called on a fixed number of images at a time (Key::images_per_call, the job's
// images_per_unet_call; 1 by default: one image's CFG pair), whatever the batch, so every image runs exactly
// the same kernels on the same shapes, and its pixels do not depend on the batch size. Within a call each
// image's rows are computed on their own (per-row GEMMs, per-sample normalisations and attention), so neither
// do they depend on the other images of the call (the GPU tests and the CPU end-to-end test check it). With a
// graph, the calls of a batch run on `streams` concurrent CUDA streams inside it, which recovers part of what
// one large call would gain. Conditioning rows come grouped per image: [negative_0, positive_0, negative_1,
// positive_1, ...] with CFG, [positive_0, ...] without; inside each UNet call of k images the loop lays them
// out as diffusers lays out a batch, negatives first: [negative_0 .. negative_{k-1}, positive_0 ..
// positive_{k-1}]. With Key::zero_negatives the negatives' cross-attentions are filled in rather than
// computed (UNetCall::zero_context_samples): a setting of the whole job, so that every call of every batch
// runs the same kernels.
//
// Approximations (opt-in, jobs/approximations.h): ToMe and ToDo change the UNet call of every step (ToMe's
// random destinations are a function of the image's seed and the step, see token_merging.h); DeepCache makes
// two kinds of step, full and shallow (a full one every cache_interval steps, from step 0), captured as two
// graphs that share the static buffers and one memory pool, with one cached feature map per image.
//
// One loop serves one Key (shapes, dtype, guidance, the sampler's step signature); the pipeline makes a new
// one when the key changes. Not thread-safe; used by the pipeline's thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "common/status.h"
#include "jobs/approximations.h"
#include "pipeline/models/unet.h"
#include "pipeline/samplers/sampler.h"

namespace sdxlb {

class DenoiseLoop {
 public:
  struct Key {
    int64_t batch = 0, channels = 0, height = 0, width = 0;  ///< latents [batch, channels, height, width]
    int64_t seq = 0, dim = 0, pooled = 0;                    ///< embeds [., seq, dim], pooled [., pooled]
    at::ScalarType dtype = at::kHalf;
    bool cfg = true;
    double guidance = 5.0;
    int streams = 1;  ///< with a graph: UNet calls computed concurrently (1: one after the other)
    /// Images in each UNet call (their CFG pairs side by side); batch must be a multiple of it. ToMe (one
    /// seed per call) needs 1.
    int64_t images_per_call = 1;
    bool cuda_graph = true;  ///< capture the step as a CUDA graph (CUDA devices only)
    std::string sampler;     ///< Sampler::step_signature()
    int64_t coefficient_width = 0, history = 0;
    bool noise = false;
    Approximations approximations;  ///< ToMe / ToDo / DeepCache (empty: the exact step)
    /// Each image's cross-attention keys and values projected once per batch (by load()) instead of at every
    /// step: the same bits, about 48 MiB an image kept at SDXL's widths.
    bool project_context = true;
    /// With cfg: every image's negative conditioning (embeds and pooled) is all zeros (an empty negative
    /// prompt under force_zeros_for_empty_prompt), so the loop skips the negatives' cross-attentions
    /// (UNetCall::zero_context_samples). load()'s caller guarantees the zeros.
    bool zero_negatives = false;
    bool operator==(const Key& o) const;
  };
  /// The key of a batch for `sampler` (its signature, table width, history and noise).
  static Key key_for(const Sampler& sampler);

  /// Allocates the static buffers. With key.cuda_graph (CUDA only), warms the UNet up on a side stream
  /// (`warmup` steps: cuBLAS/cuDNN handles and workspaces, and the weight streamer's tracing pass, must exist
  /// before capture) and captures the step with `sampler`. Errors: kInvalidArgument for a graph off CUDA or
  /// a key that does not match `sampler` or whose batch is not a multiple of images_per_call (or ToMe with
  /// more than one image per call), kUnimplemented for a graph in a build without CUDA,
  /// kResourceExhausted when capture runs out of memory, kInternal for other CUDA failures.
  static StatusOr<std::unique_ptr<DenoiseLoop>> create(UNet2DConditionModel unet, const Sampler& sampler,
                                                       const Key& key, at::Device device, int warmup = 2);
  ~DenoiseLoop();

  const Key& key() const { return key_; }
  /// Copies the initial latents [batch, ...] and the conditioning (grouped per image as above: with cfg,
  /// embeds/pooled/time_ids have 2*batch rows) into the static inputs, and zeroes the sampler's history.
  /// `seeds` (batch entries, or empty) key ToMe's random destinations per image.
  void load(const at::Tensor& latents, const at::Tensor& embeds, const at::Tensor& pooled,
            const at::Tensor& time_ids, const std::vector<uint64_t>& seeds = {});
  /// Whether step i runs the whole UNet (always, unless DeepCache makes it a shallow step).
  bool full_step(int64_t i) const;
  /// Step i's standard-normal draws for the batch, [batch, channels, height, width] on the CPU.
  using StepNoise = std::function<at::Tensor(int64_t step)>;
  /// Runs every step of `sampler` (whose key_for() must equal key()'s sampler fields). For stochastic
  /// samplers `noise` is called once per step, in step order, while the device still runs the steps before
  /// (a CUDA graph replay returns at once), so drawing on the CPU overlaps the GPU's work; its tensor goes to
  /// the device through pinned memory. LibTorch errors throw c10::Error, as from the UNet.
  void run(const Sampler& sampler, const StepNoise& noise);
  /// The latents after the steps run so far (the static buffer: clone it before the next load()).
  const at::Tensor& latents() const;

  struct State;  ///< (the implementation's)

 private:
  DenoiseLoop();
  Key key_;
  std::unique_ptr<State> s_;
};

}  // namespace sdxlb
