// MemoryPlan: how a worker uses its GPU: where the UNet's weights live, how the VAE decodes, how many
// images denoise concurrently and the batch size, chosen from a measured model of SDXL's memory and time.
//
// Every image is computed on its own (a fixed number of images per UNet call, the job's images_per_unet_call,
// and one per decode), so memory grows with the images denoised *concurrently* (unet_streams calls of
// images_per_call images), not with the batch, and no choice below changes a pixel
// except the tiled decode (compared to the full decode by PSNR) and the tiny VAE (a different decoder).
//
// The model (memory_plan.cpp, constants measured on an H100, fp16, 1024², activations scaled by pixels; the
// VAE's weights and decode about twice as large when it decodes in float32, measured on an H200):
// It predicts the allocator's peak *reserved* memory (what a cap limits), not only what tensors hold:
//   peak GiB ~ max(denoising: UNet weights on the GPU + VAE weights + (activations + graph pool) * concurrent
//   images,
//                  decoding:  UNet weights on the GPU while decoding + VAE weights + one image's decode
//                             + the denoising graph pools, which stay reserved)
// (so a resident plan's estimate already holds a decode running beside the denoising: overlap_decode)
// The UNet weights on the GPU are all of them (resident; model offload while denoising), the non-unit
// weights + resident_budget + 3 slots (streamed), or the non-unit weights + 2 slots (sequential); model
// offload and a streamed plan with unload_for_decode keep only the non-unit weights and slots while decoding.
// Relative time per image: the compute of a UNet call, or the weight copies when they take longer (a streamed
// call copies its streamed bytes from host memory while it computes), plus, once per batch, the re-upload of
// the units that left for the decode and a new CUDA graph capture.
//
// The budget is the GPU's memory (or `max_gpu_gib`), divided among the ranks sharing the GPU, less an 8%
// margin. The plan is the fastest candidate that fits: resident (most concurrent streams first), streamed
// (the largest resident share that fits), model offload, sequential, and only then the tiled decode. The
// job's own placement / decode / batch_size win when it sets them. Pure logic, thread-safe.
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
  /// Host RAM per worker on the node (nullopt: unknown, not checked). The streamed, sequential and
  /// model-offload placements keep the UNet's weights in page-locked host memory.
  std::optional<double> host_gib_per_worker = std::nullopt;
};

struct MemoryRequest {
  int64_t width = 1024, height = 1024;
  int64_t steps = 30;
  bool tiny_decoder = false;          ///< the job decodes with the tiny VAE
  std::optional<int64_t> batch_size;  ///< the job's batch_size (nullopt: auto)
  std::optional<std::string> decode;  ///< "full", "sliced" (the same on a GPU) or "tiled"; nullopt: auto
  std::string placement = "auto";     ///< auto, resident, model_offload, streamed or sequential
  /// The job's memory.concurrent_images (nullopt: auto): images, so concurrent_images / images_per_call
  /// UNet calls run at once (at least one).
  std::optional<int> concurrent_images;
  /// DeepCache: the cached feature map kept per image of a batch (deep_cache_gib_per_image); 0: none.
  double cached_gib_per_image = 0;
  /// unet_precision: fp8: the transformer linears at one byte per weight, resident or in host memory, so
  /// that the streamed and offloaded placements also move about half the units' bytes.
  bool fp8_unet = false;
  /// The job's images_per_unet_call: each concurrent UNet call holds this many images' activations. It
  /// changes pixels, so the plan never lowers it.
  int64_t images_per_call = 1;
  /// The full VAE decodes in float32 (the stock SDXL VAE under force_upcast in an fp16 job, vae_dtype:
  /// fp32, or an fp32 job): its weights and its decode's memory are twice the fp16 figures.
  bool vae_fp32 = false;
  /// memory.overlap_decode: true (on) or false (off) from the job; nullopt (auto): on where the UNet stays
  /// resident and the GPU's memory is neither capped nor shared.
  std::optional<bool> overlap_decode;
};

struct MemoryPlan {
  std::string placement = "resident";  ///< resident, model_offload, streamed or sequential
  std::string decode = "full";         ///< full, tiled or tiny
  int64_t batch_size = 8;
  int unet_streams = 1;             ///< UNet calls run concurrently
  int64_t images_per_call = 1;      ///< images in each of them (from the request)
  bool vae_fp32 = false;            ///< the full VAE decodes in float32 (from the request)
  double resident_budget_gib = 0;   ///< streamed: UNet unit weights kept on the GPU
  double cached_gib_per_image = 0;  ///< DeepCache's feature map per image of the batch (from the request)
  bool unload_for_decode = false;   ///< streamed: the resident units leave the GPU while the VAE decodes
  /// Each image's prompt keys and values projected once per batch and kept (about 48 MiB an image at SDXL's
  /// widths): resident placements only, and off where memory is too tight for them (the steps then project
  /// them again).
  bool project_context = true;
  bool fp8_unet = false;  ///< the UNet's transformer linears in FP8 (from the request)
  /// A group's VAE decode runs on its own stream while the next group denoises. Resident plans only (the
  /// other placements move the UNet's weights around the decode). It costs no memory the estimate does not
  /// hold already: a resident plan's estimate is the decode beside the denoising graphs' pools.
  bool overlap_decode = false;
  double estimate_gib = 0;   ///< predicted allocator peak
  double budget_gib = 0;     ///< what this worker may use
  double relative_time = 1;  ///< predicted time per image / the resident plan's
  /// One line for the log: the choice and the numbers behind it.
  std::string describe() const;
};

/// batch_size: auto on a GPU: 8 images, rounded up to a whole number of the concurrent UNet calls the plan
/// may choose (two) of `images_per_call` images each. The run context dispatches batches of this size.
int64_t auto_batch_size(int64_t images_per_call);

/// The allocator peak (GiB) the model predicts for `plan` at this image size.
double estimate_peak_gib(const MemoryPlan& plan, int64_t width, int64_t height);
/// The time per image the model predicts for `plan`, relative to resident with one stream.
double estimate_relative_time(const MemoryPlan& plan, int64_t width, int64_t height, int64_t steps);

/// DeepCache's cached features of one image (its CFG pair, fp16) for SDXL's UNet (channels 320, 640, 1280,
/// two layers per level) at this size and cache_branch_id: the input of the branch's up layer.
double deep_cache_gib_per_image(int64_t width, int64_t height, int64_t cache_branch_id);

/// Activation memory (GiB) of one SDXL image of this size: the UNet's CFG pair plus a full-VAE decode, fp16,
/// as measured at 1024^2 and scaled by pixels.
double activation_gib_per_image(int64_t width, int64_t height);

/// Activation memory (GiB) of one image on the CPU (fp32: twice the fp16 figure) for a model whose UNet and
/// VAE are `unet_scale` and `vae_scale` times as wide as SDXL's (block_out_channels[0] / 320 and / 128),
/// scaled by pixels; `decode` is "full", "tiled" or "tiny".
double cpu_activation_gib(int64_t width, int64_t height, double unet_scale, double vae_scale,
                          const std::string& decode);

/// A warning for images larger than 2048x2048 pixels in area ("" otherwise): how many times SDXL's 1024^2
/// they are, what that does to composition and time, and the activation estimate; on the CPU (fp32: twice
/// the memory) it says when the estimate exceeds `host_ram_gib`.
std::string large_image_warning(int64_t width, int64_t height, bool on_cpu, double host_ram_gib);

/// Host RAM a worker needs for a placement that keeps the UNet in host memory (an FP8 UNet's units hold its
/// transformer linears at one byte per weight).
double host_gib_needed(const std::string& placement, bool fp8_unet = false);

/// Chooses the plan. Errors: kInvalidArgument for an unknown placement or decode; kResourceExhausted when
/// not even the lightest candidate fits the GPU, or a placement the job forces does not fit the host's
/// memory (naming the numbers and the fixes).
StatusOr<MemoryPlan> choose_memory_plan(const GpuBudgetInput& gpu, const MemoryRequest& request);

}  // namespace sdxlb
