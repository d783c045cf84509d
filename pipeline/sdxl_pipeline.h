// SdxlPipeline: prompts -> uint8 images with SDXL, in three phases usable on their own.
//
//   encode(texts)                     -> TextEmbeddings (prompt_embeds [B, 77, D1+D2], pooled [B, P])
//   denoise(positive, negative, seeds) -> latents [B, 4, H/8, W/8]
//   decode(latents)                   -> uint8 images [B, H, W, 3] on the CPU
//
// It mirrors diffusers' StableDiffusionXLPipeline: both tokenizers and text encoders, the penultimate hidden
// states concatenated, pooled output from text_encoder_2, zero negative embeddings when the negative prompt
// is empty and the model says force_zeros_for_empty_prompt, micro-conditioning time_ids (H, W, 0, 0, H, W),
// CFG when guidance > 1, the sampler's steps (pipeline/samplers/), and per-image initial noise from a CPU
// generator seeded with that image's seed (bit-identical to torch.randn(shape,
// generator=torch.Generator("cpu").manual_seed(seed))).
//
// Batch invariance: the UNet runs a fixed number of images (their CFG pairs) per call, one unless the job
// sets images_per_unet_call, and the VAE decodes one image per call, so an image's pixels do not depend on
// the batch size or on the other images of its batch.
//
// A pipeline is used by one thread at a time, with one exception: decode() may run on a second thread (on its
// own CUDA stream) while the first denoises, given set_before_capture() (BatchRenderer's overlapped decode).
// Errors never throw: LibTorch failures become a Status naming
// the phase (kResourceExhausted for out-of-memory), NaN/Inf latents or images are kDataLoss.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "common/status.h"
#include "jobs/approximations.h"
#include "jobs/loras.h"
#include "jobs/sampler_choice.h"
#include "pipeline/io/file_opener.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

/// Which decoder turns latents into images, and how.
enum class DecoderKind { kFull, kSliced, kTiled, kTiny };

/// Where the UNet's weights live while it denoises (see weight_streamer.h and memory_plan.h).
enum class Placement {
  kResident,      ///< all on the GPU
  kModelOffload,  ///< on the GPU while denoising, back in host memory while the VAE decodes
  kStreamed,      ///< resident_budget_bytes of them on the GPU, the rest streamed from host memory per call
  kSequential,    ///< every unit streamed from host memory (the least GPU memory)
};

struct PipelineOptions {
  std::string variant;  ///< weight file variant: "" or e.g. "fp16"
  /// A single-file model's config folder (a diffusers SDXL folder: configs, scheduler, tokenizers); "" for
  /// the built-in SDXL base configs. Refused with a folder model.
  std::string model_config;
  std::string vae;  ///< a VAE .safetensors replacing the model's VAE weights (its config stays); "" for none
  at::ScalarType dtype = at::kFloat;  ///< compute dtype (fp32 on CPU; fp16/bf16 on CUDA)
  at::Device device = at::kCPU;
  DecoderKind decoder = DecoderKind::kFull;
  std::string tiny_vae;        ///< AutoencoderTiny folder (required for kTiny)
  bool vae_fp16_safe = false;  ///< run the full VAE in fp16 even when its config says force_upcast
  /// The full VAE's compute dtype whatever `dtype`, force_upcast and vae_fp16_safe say (job key vae_dtype).
  std::optional<at::ScalarType> vae_dtype;
  bool load_text_encoders = true;  ///< false for render-only workers that read stored embeddings
  bool load_denoiser = true;       ///< false for encode-only work
  bool cuda_graphs = true;         ///< on CUDA, run each denoising step as one CUDA graph replay
  int unet_streams = 2;            ///< on CUDA with graphs: UNet calls of a batch run concurrently
  /// Images in each UNet call (job key images_per_unet_call): a batch is padded to a whole number of calls
  /// with copies of its last image. Part of what an image's bits depend on (the kernels see its shape).
  int64_t images_per_unet_call = 1;
  Placement placement = Placement::kResident;
  int64_t resident_budget_bytes = 0;  ///< kStreamed: UNet unit weights kept on the GPU
  /// kStreamed: the resident units leave the GPU while the VAE decodes (as model offload does), so that the
  /// decode has the memory they held; they come back before the next batch denoises.
  bool unload_for_decode = false;
  /// Project each image's prompt keys and values for the cross-attentions once per batch and keep them
  /// (DenoiseLoop::Key::project_context); false: every step projects them again (less memory, same bits).
  /// Applies to the resident placement only.
  bool project_context = true;
  /// Memory is capped or tight: return the allocator's cached blocks before each image's VAE decode, so that
  /// fragmentation makes a cuDNN workspace allocation (and PyTorch's silent fallback to another algorithm)
  /// less likely. The memory plan's headroom is what prevents it; this only helps.
  bool tight_memory = false;
  /// The job's sampler: another sampler than the folder's and/or options over its config (key by key, as
  /// diffusers' `XScheduler.from_config(folder_config, **options)`); empty: the folder's scheduler as it is.
  SamplerChoice sampler;
  /// Opt-in approximations of the UNet (ToMe, ToDo, DeepCache); empty: the exact computation. DeepCache's
  /// branch is checked against the UNet when it loads.
  Approximations approximations;
  /// LoRAs fused into the UNet and text encoders at load (pipeline/io/lora.h), in order; part of
  /// text_encoder_id() (those that change a text encoder) and model_id().
  std::vector<LoraEntry> loras;
  /// How every weight file (the model's, the VAE file, the tiny VAE's, the LoRAs) is opened during load();
  /// empty: from disk. A worker of a node that shares its weight files passes WeightsBroadcast::opener()
  /// (pipeline/io/weights_broadcast.h); the weights and the identities are the same either way.
  FileOpener weights_opener;
};

/// Text conditioning for a batch: prompt_embeds [B, 77, D] and pooled [B, P], on the pipeline's device.
struct TextEmbeddings {
  at::Tensor prompt_embeds;
  at::Tensor pooled;
};

struct RenderSettings {
  int64_t steps = 30;
  double guidance = 5.0;
  int64_t width = 1024;
  int64_t height = 1024;
  /// Every image's negative conditioning is zeros (an empty negative prompt under
  /// force_zeros_for_empty_prompt): the UNet then fills in the negatives' cross-attention outputs (to_out's
  /// bias) instead of computing them (UNetCall::zero_context_samples). Set it for a whole job or for none of
  /// it: an image's rounding may differ with and without. denoise() refuses it when a negative is not zero.
  bool zero_negatives = false;
};

/// Per-phase wall times of the last call (milliseconds, after a device synchronize).
struct PhaseTimes {
  double encode_ms = 0, denoise_ms = 0, decode_ms = 0;
};

class SdxlPipeline {
 public:
  /// Loads the model: a diffusers StableDiffusionXLPipeline folder, or an SDXL .safetensors single file in
  /// the original layout (with options.model_config or the built-in configs; see pipeline/io/model_source.h).
  /// Errors name the missing or corrupt component file and what to do.
  static StatusOr<std::unique_ptr<SdxlPipeline>> load(const std::string& model_dir,
                                                      const PipelineOptions& options);
  ~SdxlPipeline();

  /// Encodes prompts with both text encoders. Errors: kFailedPrecondition when the text encoders are not
  /// loaded.
  StatusOr<TextEmbeddings> encode(const std::vector<std::string>& texts);
  /// Frees the tokenizers and text encoders (the render phase reads embeddings from shards instead).
  void release_text_encoders();

  /// The negative conditioning for one text: zeros (of `like`'s shapes) when `text` is empty and the model
  /// says force_zeros_for_empty_prompt, otherwise encode({text}).
  StatusOr<TextEmbeddings> negative_for(const std::string& text, const TextEmbeddings& like);

  /// Runs the denoising loop from per-image seeded noise. `positive` and `negative` have B rows each, seeds
  /// B entries. No host synchronisation inside the loop.
  StatusOr<at::Tensor> denoise(const TextEmbeddings& positive, const TextEmbeddings& negative,
                               const std::vector<uint64_t>& seeds, const RenderSettings& settings);
  /// Latents -> uint8 [B, H, W, 3] on the CPU, one image at a time (kFull and kSliced are therefore the same
  /// computation). kDataLoss when the latents or images hold NaN/Inf.
  StatusOr<at::Tensor> decode(const at::Tensor& latents);

  /// encode + denoise + decode for prompts with their negatives ("" = none) and seeds.
  StatusOr<at::Tensor> generate(const std::vector<std::string>& prompts,
                                const std::vector<std::string>& negatives, const std::vector<uint64_t>& seeds,
                                const RenderSettings& settings);

  /// The initial latent of one image: randn([1, C, h, w], CPU generator seeded with `seed`) in `dtype`.
  static at::Tensor initial_noise(uint64_t seed, int64_t channels, int64_t h, int64_t w,
                                  at::ScalarType dtype);

  const PipelineOptions& options() const { return options_; }
  /// Switches how the full VAE decodes (full, sliced or tiled), e.g. to sliced after an out-of-memory. The
  /// tiny VAE cannot be switched to or from here (it is loaded or not); such a call is ignored.
  void set_decoder(DecoderKind decoder) {
    if (options_.decoder != DecoderKind::kTiny && decoder != DecoderKind::kTiny) options_.decoder = decoder;
  }
  /// Sets how many images of a batch denoise concurrently (>= 1; fewer use less memory, same pixels). The
  /// next denoise() re-captures its CUDA graph.
  void set_unet_streams(int streams);
  /// Called by denoise() before it captures a CUDA graph (a new denoise loop, or the UNet back on the GPU
  /// after model offload). A caller that runs decode() on another thread meanwhile waits for it here: a
  /// capture must not meet another thread's allocations or synchronisations.
  void set_before_capture(std::function<void()> hook) { before_capture_ = std::move(hook); }
  bool force_zeros_for_empty_prompt() const { return force_zeros_; }
  /// Width of prompt_embeds' last axis and of pooled (for the embedding store).
  int64_t prompt_embed_dim() const { return prompt_dim_; }
  int64_t pooled_dim() const { return pooled_dim_; }
  /// Identity of the text encoders (a hash of their weight headers and configs), for the embedding cache.
  const std::string& text_encoder_id() const { return text_encoder_id_; }
  /// Identity of all weights (text encoders, UNet, VAE, tiny VAE), recorded with every output.
  const std::string& model_id() const { return model_id_; }
  /// The job's LoRAs as loaded: each file, its scale and how many modules of each component it changes
  /// ("no LoRA" when none).
  const std::string& loras_summary() const { return loras_summary_; }
  const PhaseTimes& last_times() const { return times_; }
  /// The scheduler that denoises: the folder's config with the job's choice applied.
  const SchedulerConfig& scheduler_config() const;
  /// One line on where the UNet's weights are (after the first denoise for streamed placements), and in
  /// which precision when unet_precision is fp8.
  std::string placement_summary() const;
  /// One line on the decoder and the dtype it runs in; where the VAE's force_upcast keeps an fp16 job's VAE
  /// in float32, it names the faster settings (vae_dtype: bf16, vae_fp16_safe for fp16-fix weights).
  std::string decoder_summary() const;

 private:
  struct Parts;
  SdxlPipeline();

  PipelineOptions options_;
  std::unique_ptr<Parts> parts_;
  bool force_zeros_ = true;
  int64_t prompt_dim_ = 0, pooled_dim_ = 0;
  std::string text_encoder_id_, model_id_, loras_summary_, precision_summary_;
  PhaseTimes times_;
  std::function<void()> before_capture_;
};

/// Parses "fp16" | "bf16" | "fp32" (also "float16", "bfloat16", "float32").
StatusOr<at::ScalarType> parse_dtype(const std::string& name);
/// The inverse: "fp16", "bf16" or "fp32" (the job file's names), LibTorch's name for any other type.
std::string dtype_name(at::ScalarType dtype);

}  // namespace sdxlb
