// JobSpec: a validated job file (YAML) with every default filled in and its prompts loaded.
//
// Parsing collects every problem of the file and reports them together, one per line, each as
// "<file>:<line>:<column>: <key>: <what is wrong>; <fix>". Relative paths resolve against the job file's
// folder. Validation only reads (the job file, the prompt file, and whether folders exist); it never writes.
//
// Thread-safety: a JobSpec is an immutable-after-load value; copies share the (const) prompt list.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "jobs/approximations.h"
#include "jobs/loras.h"
#include "jobs/prompt_source.h"
#include "jobs/sampler_choice.h"

namespace sdxlb {

/// The largest job file read (long prompt lists belong in a prompts_file).
constexpr uint64_t kMaxJobFileBytes = uint64_t{64} << 20;

/// Options for JobSpec::load_file / JobSpec::parse.
struct JobLoadOptions {
  /// Check that model is an existing folder or .safetensors file, model_config and tiny_vae existing folders,
  /// vae an existing .safetensors file, and that output is not an existing file.
  bool check_paths = true;
};

/// A job: what to render (model, prompts, sampling settings) and how (placement, batching, output).
struct JobSpec {
  enum class DType { kFp16, kBf16, kFp32 };
  enum class Device { kAuto, kCuda, kCpu };
  enum class ImageFormat { kRaw, kPng };
  /// Which VAE decodes latents; kAuto means tiny when tiny_vae is set, else full.
  enum class Decoder { kAuto, kFull, kTiny };
  /// Where weights live during the render (see the memory plan).
  enum class Placement { kAuto, kResident, kModelOffload, kStreamed, kSequential };
  /// How the full VAE decodes a batch.
  enum class Decode { kAuto, kFull, kSliced, kTiled };
  /// Whether a node's first worker reads the weight files and shares them with the node's other workers;
  /// kAuto: when more than one worker of a node loads the model under MPI.
  enum class WeightsBroadcast { kAuto, kOn, kOff };
  /// Whether a group's VAE decode runs while the next group denoises (memory.overlap_decode); kAuto: on a
  /// GPU where the UNet stays resident and memory is not capped or shared.
  enum class OverlapDecode { kAuto, kOn, kOff };

  /// The `memory:` map: overrides for the memory plan.
  struct Memory {
    Placement placement = Placement::kAuto;
    Decode decode = Decode::kAuto;
    std::optional<double> max_gpu_gib;  ///< cap on GPU memory the plan may use; nullopt: no cap
    /// Images denoised at once on a GPU: whole UNet calls (a multiple of images_per_unet_call, at most 8
    /// calls); nullopt: auto.
    std::optional<int64_t> concurrent_images;
    OverlapDecode overlap_decode = OverlapDecode::kAuto;  ///< never changes a pixel
  };

  /// Where the prompts came from.
  struct PromptSource {
    bool from_file = false;  ///< false: the inline `prompts:` list
    std::string file;        ///< resolved prompts_file path (from_file only)
    PromptFormat format = PromptFormat::kTxt;
    std::string csv_prompt_column = "prompt";
    std::string csv_negative_column;  ///< empty: none
  };

  // --- the job file as read
  std::string job_file;   ///< path as given ("" when parsed from text without a file)
  std::string base_dir;   ///< folder that relative paths resolve against
  std::string yaml_text;  ///< the job file's text, for recording with the output

  // --- model
  std::string model;  ///< diffusers SDXL folder or SDXL .safetensors single file (resolved path)
  std::string
      model_config;  ///< a single file's config folder (resolved), "" for the built-in SDXL base configs
  std::string vae;   ///< VAE .safetensors replacing the model's VAE (resolved), "" when unset
  std::string model_variant;   ///< "" or "fp16"
  std::string tiny_vae;        ///< AutoencoderTiny folder (resolved), "" when unset
  bool vae_fp16_safe = false;  ///< the VAE may run in fp16 (else it is upcast to fp32)
  /// The full VAE's compute dtype (`vae_dtype:`); unset: the job's dtype, fp16 upcast to fp32 unless
  /// vae_fp16_safe. bf16 has fp32's range, so the stock SDXL VAE does not overflow in it.
  std::optional<DType> vae_dtype;

  // --- prompts
  PromptSource prompt_source;
  std::shared_ptr<const PromptList> prompts;  ///< never null after a successful load; >= 1 prompt
  std::string negative_prompt;                ///< for prompts without a negative of their own
  std::string prompts_sha256;                 ///< digest of every prompt's text, effective negative, seed

  // --- sampling
  int64_t images_per_prompt = 1;
  uint64_t seed = 0;  ///< base seed: item i gets seed + i unless its prompt has a seed of its own
  int64_t steps = 30;
  double guidance = 5.0;
  int64_t width = 1024;
  int64_t height = 1024;
  /// The `scheduler:` key: a sampler and/or options over the model folder's scheduler_config.json; empty
  /// (the default): the folder's scheduler as it is. Which options a named sampler accepts is checked here;
  /// without a name they are checked against the folder's class when the model is loaded.
  SamplerChoice scheduler;
  /// The `token_merging`, `token_downsampling` and `deep_cache` keys: opt-in speed-ups that change the
  /// image. Empty (the default): the exact computation. Never both token_merging and token_downsampling.
  Approximations approximations;
  /// The `loras:` key: LoRA files fused into the weights at load, in order, each at its scale; empty (the
  /// default): the model as it is. The files' content is part of the model identity (the pipeline's
  /// model_id); the scales are also in the canonical JSON's "image" part, the paths in its "run" part.
  std::vector<LoraEntry> loras;

  // --- execution
  std::optional<int64_t> batch_size;  ///< nullopt: "auto" (chosen by the memory plan)
  /// Images in each UNet call (`images_per_unet_call:`, 1 to 64): larger calls run the GEMMs more
  /// efficiently. The kernels' rounding depends on the call's shape, so it is part of the images' identity
  /// (when not 1); the pixels stay independent of batch_size and of the cluster's shape. Not with
  /// token_merging.
  int64_t images_per_unet_call = 1;
  DType dtype = DType::kFp16;
  Device device = Device::kAuto;
  Decoder decoder = Decoder::kAuto;
  Memory memory;
  /// The `weights_broadcast` key (pipeline/io/weights_broadcast.h). Never changes a pixel.
  WeightsBroadcast weights_broadcast = WeightsBroadcast::kAuto;

  // --- output
  std::string output;  ///< output folder (resolved)
  ImageFormat image_format = ImageFormat::kRaw;
  std::string embedding_cache;    ///< resolved; default "<output>/embeddings"
  int64_t segment_items = 256;    ///< a worker publishes its segment after this many items ...
  double segment_seconds = 60.0;  ///< ... or this many seconds of work, whichever comes first
  double progress_interval_s = 10.0;
  /// The coordinator declares a worker lost when it has heard nothing from it for this long while the
  /// worker holds work (workers report after every image group).
  double worker_timeout_s = 600.0;

  /// Reads and validates a job file. On failure: kNotFound when the file does not exist, kIoError when it
  /// cannot be read, kInvalidArgument listing every problem (YAML syntax, keys, values, prompt file), and
  /// for a path that is not a regular file or holds more than kMaxJobFileBytes.
  static StatusOr<JobSpec> load_file(const std::string& path, const JobLoadOptions& options = {});
  /// Validates job YAML given as text; `file_name` names it in messages and `base_dir` resolves relative
  /// paths. Same errors as load_file.
  static StatusOr<JobSpec> parse(const std::string& yaml_text, const std::string& file_name,
                                 const std::string& base_dir, const JobLoadOptions& options = {});

  /// kFull or kTiny: kAuto resolved (tiny when tiny_vae is set).
  Decoder resolved_decoder() const;
  /// Number of prompts.
  uint64_t num_prompts() const { return prompts ? prompts->size() : 0; }
  /// prompts x images_per_prompt.
  uint64_t num_items() const { return num_prompts() * static_cast<uint64_t>(images_per_prompt); }
  /// The negative text used for prompt i: its own, else the job's negative_prompt.
  std::string_view negative_for(size_t i) const { return prompts->negative_or(i, negative_prompt); }

  /// The whole resolved job as compact JSON with sorted keys (stable across runs and machines):
  /// {"format": "sdxlb-job/1", "image": {everything that changes the pixels}, "run": {paths, batching,
  /// memory, output settings}}. Prompts appear as their count and SHA-256, not their text. "image" has an
  /// "approximations" entry (Approximations::to_json()) only when one is set, so a job without them keeps
  /// the JSON and identity it had before they existed; likewise "loras" (the scales) only when loras is set.
  std::string to_canonical_json() const;
  /// A stable 64-hex-digit SHA-256 over the model's identity (supplied by the caller, e.g. a hash of the
  /// weights' headers), the tiny VAE's identity when the tiny decoder is used (the caller's, or its
  /// resolved path when `tiny_vae_identity` is empty), and the canonical JSON's "image" part. Output folder,
  /// batch size, memory, device, image format, progress and segment size do not change it.
  std::string identity(const std::string& model_identity, const std::string& tiny_vae_identity = {}) const;
};

const char* dtype_name(JobSpec::DType v);
const char* device_name(JobSpec::Device v);
const char* image_format_name(JobSpec::ImageFormat v);
const char* decoder_name(JobSpec::Decoder v);
const char* placement_name(JobSpec::Placement v);
const char* decode_name(JobSpec::Decode v);
const char* overlap_decode_name(JobSpec::OverlapDecode v);
const char* weights_broadcast_name(JobSpec::WeightsBroadcast v);

}  // namespace sdxlb
