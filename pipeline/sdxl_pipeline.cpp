#include "pipeline/sdxl_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "common/fingerprint.h"
#include "pipeline/io/lora.h"
#include "pipeline/io/model_source.h"
#include "pipeline/io/torch_error.h"
#include "pipeline/models/tiny_vae.h"
#include "pipeline/models/unet.h"
#include "pipeline/models/vae.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/fp8_attention.h"
#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/transformer_2d.h"
#include "pipeline/runtime/denoise_loop.h"
#include "pipeline/runtime/weight_streamer.h"
#include "pipeline/samplers/make_sampler.h"
#include "pipeline/text/clip_text_model.h"
#include "pipeline/text/clip_tokenizer.h"

#ifdef SDXLB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace sdxlb {

struct SdxlPipeline::Parts {
  std::string model_dir;
  ModelSource source;
  std::unique_ptr<ClipTokenizer> tokenizer, tokenizer_2;
  ClipTextModel text_encoder{nullptr}, text_encoder_2{nullptr};
  UNet2DConditionModel unet{nullptr};
  std::unique_ptr<WeightStreamer> streamer;  // non-resident placements (destroyed before the UNet)
  Vae vae{nullptr};
  TinyVae tiny_vae{nullptr};
  SchedulerConfig scheduler;
  std::unique_ptr<DenoiseLoop> loop;  // the static buffers (and CUDA graph) of the last batch shape
};

namespace {

// unet_precision: fp8 where no FP8 GEMM runs: the reason, and the way out.
Status fp8_refused(const std::string& why) {
  return invalid_argument("unet_precision: fp8 cannot run here: " + why +
                          ". Use unet_precision: fp16 (the default) on this machine.");
}

// attention_precision: fp8 where cuDNN's FP8 attention does not run: the reason, and the way out.
Status fp8_attention_refused(const std::string& why) {
  return invalid_argument("attention_precision: fp8 cannot run here: " + why +
                          ". Use attention_precision: fp16 (the default) on this machine.");
}

// convolution_precision: fp8 where the FP8 convolution kernel does not run: the reason, and the way out.
Status fp8_convolution_refused(const std::string& why) {
  return invalid_argument("convolution_precision: fp8 cannot run here: " + why +
                          ". Use convolution_precision: fp16 (the default) on this machine.");
}

using Clock = std::chrono::steady_clock;

constexpr int64_t kMaxTilePixels = 512;  // tiled decode: the largest tile side

void sync_device(const at::Device& device) {
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Turns a LibTorch exception into a Status naming the phase.
Status torch_error(const std::string& phase, const c10::Error& e) {
  return torch_error_status(phase, e, "lower batch_size or choose a lighter memory plan");
}

// Identity of a folder component (the tiny VAE): its config text, the headers of its weight files and a
// sample of their content (ModelSource::add_identity, which the model's own components go through, does the
// same).
Status add_component_identity(Fingerprint& fp, const ModelFolder& folder, const std::string& component,
                              const std::string& variant) {
  SDXLB_ASSIGN_OR_RETURN(auto config, folder.component_config(component));
  fp.add(component).add(config.dump());
  SDXLB_ASSIGN_OR_RETURN(auto weights, folder.component_weights(component, variant));
  for (const auto& f : weights.files()) {
    fp.add(f->header_json());
    add_content_sample(fp, *f);
  }
  return Status::ok();
}

at::Tensor ids_tensor(const ClipTokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<int64_t> flat;
  int64_t len = 0;
  for (const auto& t : texts) {
    auto ids = tok.encode(t);
    len = static_cast<int64_t>(ids.size());
    flat.insert(flat.end(), ids.begin(), ids.end());
  }
  return at::tensor(flat, at::kLong).reshape({static_cast<int64_t>(texts.size()), len});
}

}  // namespace

StatusOr<at::ScalarType> parse_dtype(const std::string& name) {
  if (name == "fp16" || name == "float16") return at::kHalf;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp32" || name == "float32") return at::kFloat;
  return invalid_argument("unknown dtype \"" + name + "\"; use fp16, bf16 or fp32");
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return "fp16";
    case at::kBFloat16:
      return "bf16";
    case at::kFloat:
      return "fp32";
    default:
      return c10::toString(dtype);
  }
}

SdxlPipeline::SdxlPipeline() : parts_(std::make_unique<Parts>()) {}
SdxlPipeline::~SdxlPipeline() = default;

StatusOr<std::unique_ptr<SdxlPipeline>> SdxlPipeline::load(const std::string& model_dir,
                                                           const PipelineOptions& options) {
  std::unique_ptr<SdxlPipeline> p(new SdxlPipeline());
  p->options_ = options;
  Parts& parts = *p->parts_;
  parts.model_dir = model_dir;
  // The model source: a diffusers folder, or a single file with a config folder or the built-in configs; the
  // job's VAE file over either. Everything below reads configs, weights and tokenizers through it.
  SDXLB_ASSIGN_OR_RETURN(
      parts.source, ModelSource::open(model_dir, options.model_config, options.vae, options.weights_opener));
  const ModelSource& source = parts.source;
  for (const char* c : {"unet", "vae", "text_encoder", "text_encoder_2"}) {
    if (!source.has_component(c)) {
      if (source.is_single_file())
        return not_found(model_dir + " has no " + c + " (no " + SingleFileCheckpoint::prefix_of(c) +
                         "* tensors)" + (std::string(c) == "vae" ? "; set vae: to a VAE file" : ""));
      return not_found(
          "model folder " + model_dir + " has no " + c +
          "/ component (an SDXL pipeline needs unet, vae, text_encoder, text_encoder_2, tokenizer, "
          "tokenizer_2 and scheduler)");
    }
  }
  if (!source.is_single_file())
    for (const char* c : {"tokenizer", "tokenizer_2", "scheduler"})
      if (!source.has_component(c))
        return not_found(
            "model folder " + model_dir + " has no " + c +
            "/ component (an SDXL pipeline needs unet, vae, text_encoder, text_encoder_2, tokenizer, "
            "tokenizer_2 and scheduler)");
  p->force_zeros_ = source.force_zeros_for_empty_prompt();

  nlohmann::json sched_json;
  {
    // Python's json module writes DPMSolverMultistepScheduler's lambda_min_clipped as -Infinity, which
    // strict JSON readers refuse: parse_config_json accepts it.
    const std::string path = source.config_path("scheduler", "scheduler_config.json");
    SDXLB_ASSIGN_OR_RETURN(const std::string text, source.scheduler_text());
    SDXLB_ASSIGN_OR_RETURN(sched_json, parse_config_json(text, path));
    auto resolved = resolve_scheduler(sched_json, path, options.sampler);
    if (!resolved.is_ok()) {
      // The folder's own scheduler, when the job names none: a model this port cannot render as it is.
      if (!options.sampler.name && resolved.status().code() == StatusCode::kUnimplemented)
        return data_loss(
            resolved.status().message() +
            "; or choose one of ours in the job file (e.g. `scheduler: euler`), which keeps this "
            "folder's betas and prediction type as diffusers' from_config does");
      return resolved.status();
    }
    parts.scheduler = *std::move(resolved);
    // Options the config reader knows but no sampler here runs (e.g. UniPC's solver_order 3): refused now,
    // before anything renders.
    SDXLB_RETURN_IF_ERROR(check_sampler(parts.scheduler));
  }

  // unet_precision: fp8 on the CPU is refused here, also on rank 0's probe (which loads no UNet), before
  // anything is written; a GPU without FP8 is found where the UNet loads.
  if (options.approximations.unet_precision == UNetPrecision::kFp8 && !options.device.is_cuda()) {
    std::string why;
    fp8_supported(options.device, &why);
    return fp8_refused(why);
  }
  if (options.approximations.attention_precision == AttentionPrecision::kFp8 && !options.device.is_cuda()) {
    std::string why;
    fp8_attention_supported(options.device, &why);
    return fp8_attention_refused(why);
  }
  if (options.approximations.convolution_precision == ConvolutionPrecision::kFp8 &&
      !options.device.is_cuda()) {
    std::string why;
    fp8_conv_supported(options.device, &why);
    return fp8_convolution_refused(why);
  }

  // LoRAs: read and matched against the weight headers here (also on rank 0's probe, which loads nothing),
  // fused into each module right after it loads, before placement, channels-last and CUDA graphs.
  SDXLB_ASSIGN_OR_RETURN(const LoraSet loras, LoraSet::open(options.loras, source, options.variant));
  p->loras_summary_ = loras.describe();
  Fingerprint te_id, model_id;
  SDXLB_RETURN_IF_ERROR(source.add_identity(te_id, "text_encoder", options.variant));
  SDXLB_RETURN_IF_ERROR(source.add_identity(te_id, "text_encoder_2", options.variant));
  source.add_tokenizer_identity(te_id);
  loras.add_identity(te_id, {"text_encoder", "text_encoder_2"});
  p->text_encoder_id_ = te_id.hex();
  model_id.add(p->text_encoder_id_);
  SDXLB_RETURN_IF_ERROR(source.add_identity(model_id, "unet", options.variant));
  SDXLB_RETURN_IF_ERROR(source.add_identity(model_id, "vae", options.variant));
  loras.add_identity(model_id, {"unet"});
  model_id.add(sched_json.dump());
  // Every component's config is checked here, loaded or not (cheap: no weights), so that rank 0 refuses a
  // corrupt or hostile one (a sanity limit, a wrong type) before anything is written.
  {
    SDXLB_ASSIGN_OR_RETURN(auto u, source.config("unet"));
    SDXLB_ASSIGN_OR_RETURN(auto unet_config, UNetConfig::from_json(u, source.config_path("unet")));
    if (const auto& dc = options.approximations.deep_cache)
      SDXLB_RETURN_IF_ERROR(check_deep_cache_branch(unet_config, dc->cache_branch_id, dc->where));
    SDXLB_ASSIGN_OR_RETURN(auto v, source.config("vae"));
    SDXLB_RETURN_IF_ERROR(VaeConfig::from_json(v, source.config_path("vae")).status());
    for (const char* te : {"text_encoder", "text_encoder_2"}) {
      SDXLB_ASSIGN_OR_RETURN(auto c, source.config(te));
      SDXLB_RETURN_IF_ERROR(ClipTextConfig::from_json(c, source.config_path(te)).status());
    }
  }

  if (options.load_text_encoders) {
    SDXLB_ASSIGN_OR_RETURN(auto dir1, source.tokenizer_dir("tokenizer"));
    SDXLB_ASSIGN_OR_RETURN(auto dir2, source.tokenizer_dir("tokenizer_2"));
    SDXLB_ASSIGN_OR_RETURN(auto t1, ClipTokenizer::load(dir1));
    SDXLB_ASSIGN_OR_RETURN(auto t2, ClipTokenizer::load(dir2));
    parts.tokenizer = std::make_unique<ClipTokenizer>(std::move(t1));
    parts.tokenizer_2 = std::make_unique<ClipTokenizer>(std::move(t2));
    for (const char* te : {"text_encoder", "text_encoder_2"}) {
      SDXLB_ASSIGN_OR_RETURN(auto c, source.config(te));
      SDXLB_ASSIGN_OR_RETURN(auto w, source.weights(te, options.variant));
      SDXLB_ASSIGN_OR_RETURN(
          auto m, load_clip_text_model(c, source.config_path(te), w, te, options.dtype, options.device));
      (std::string(te) == "text_encoder" ? parts.text_encoder : parts.text_encoder_2) = m;
    }
    SDXLB_RETURN_IF_ERROR(loras.apply(*parts.text_encoder, "text_encoder"));
    SDXLB_RETURN_IF_ERROR(loras.apply(*parts.text_encoder_2, "text_encoder_2"));
    if (!parts.text_encoder_2->text_projection)
      return data_loss(model_dir +
                       "/text_encoder_2 is not a CLIPTextModelWithProjection (no text_projection); "
                       "SDXL takes its pooled embedding from it");
  }
  // Dimensions from the configs, so that they are known without the encoders loaded.
  {
    SDXLB_ASSIGN_OR_RETURN(auto c1, source.config("text_encoder"));
    SDXLB_ASSIGN_OR_RETURN(auto c2, source.config("text_encoder_2"));
    SDXLB_ASSIGN_OR_RETURN(auto k1, ClipTextConfig::from_json(c1, source.config_path("text_encoder")));
    SDXLB_ASSIGN_OR_RETURN(auto k2, ClipTextConfig::from_json(c2, source.config_path("text_encoder_2")));
    p->prompt_dim_ = k1.hidden_size + k2.hidden_size;
    p->pooled_dim_ = k2.projection_dim;
  }

  if (options.load_denoiser) {
    const bool streamed = options.placement != Placement::kResident;
    // A streamed UNet is loaded into host memory and handed to the streamer, so that it never needs all of
    // its weights on the GPU at once.
    {
      SDXLB_ASSIGN_OR_RETURN(auto u, source.config("unet"));
      SDXLB_ASSIGN_OR_RETURN(auto unet_config, UNetConfig::from_json(u, source.config_path("unet")));
      SDXLB_ASSIGN_OR_RETURN(auto w, source.weights("unet", options.variant));
      SDXLB_ASSIGN_OR_RETURN(parts.unet, load_unet(unet_config, w, "unet weights", options.dtype,
                                                   streamed ? at::Device(at::kCPU) : options.device));
    }
    SDXLB_RETURN_IF_ERROR(loras.apply(*parts.unet, "unet"));
    // On the GPU the upsamplers run as phase convolutions (resnet_block.h): after LoRA (their weights come
    // from the merged 3x3 ones), before FP8 (which then quantises them too).
    if (options.device.is_cuda()) (void)use_phase_upsamplers(*parts.unet);
    if (options.approximations.unet_precision == UNetPrecision::kFp8) {
      // After LoRA (the e4m3 weights are quantised from the merged ones), before placement.
      std::string why;
      if (!fp8_supported(options.device, &why)) return fp8_refused(why);
      // Quantised on the job's device one layer at a time. A streamed UNet is in host memory: its e4m3
      // weights are then the resident UNet's bit for bit, and go back to host memory for the streamer
      // (which then moves one byte per weight).
      const c10::Device quantize_on = options.device;
      const int64_t switched = use_fp8_linears(*parts.unet, Fp8Layers{}, quantize_on);
      const std::string dtype = options.dtype == at::kBFloat16 ? "bf16" : "fp16";
      // convolution_precision: fp8, the resnets' and upsamplers' 3x3 convolutions (and the upsamplers' 2x2
      // phase convolutions) in the CUTLASS kernel.
      int64_t convs = 0;
      if (options.approximations.convolution_precision == ConvolutionPrecision::kFp8) {
        if (options.dtype != at::kHalf)
          return fp8_convolution_refused("the FP8 convolution kernel writes fp16 and this job's dtype is " +
                                         dtype + " (set dtype: fp16)");
        if (!fp8_conv_supported(options.device, &why)) return fp8_convolution_refused(why);
        convs = use_fp8_convolutions(*parts.unet, quantize_on);
      }
      const std::string conv_part =
          convs > 0 ? std::to_string(convs) +
                          " 3x3 and 2x2 convolutions in FP8 (per-image and per-channel scales); "
                    : "";
      const std::string other = convs > 0 ? "other convolutions" : "convolutions";
      p->precision_summary_ = "UNet: " + std::to_string(switched) +
                              " transformer linears in FP8 (e4m3, per-token and per-channel scales); " +
                              conv_part + other + ", norms and attention in " + dtype;
      if (options.approximations.attention_precision == AttentionPrecision::kFp8) {
        if (!fp8_attention_supported(options.device, &why)) return fp8_attention_refused(why);
        const int64_t attentions = use_fp8_attention(*parts.unet);
        p->precision_summary_ = "UNet: " + std::to_string(switched) +
                                " transformer linears in FP8 (e4m3, per-token and per-channel scales), " +
                                conv_part + std::to_string(attentions) +
                                " self-attentions in cuDNN FP8 (static scales); " + other +
                                ", norms and cross-attention in " + dtype;
      }
    }
    if (options.device.is_cuda()) {
      // Channels-last convolutions, and on Hopper in fp16 each feed-forward's projection and GEGLU in one
      // GEMM. The libraries' algorithms are the same in every process and for every place in a UNet call
      // (gpu_numerics.h), so two workers, or two batch sizes, render the same pixels.
      (void)prepare_unet_for_gpu(*parts.unet, options.device, options.dtype);
    }
    if (streamed) {
      StreamingOptions so;
      so.resident_budget_bytes = options.placement == Placement::kStreamed     ? options.resident_budget_bytes
                                 : options.placement == Placement::kSequential ? 0
                                                                               : INT64_MAX;
      so.slots = options.placement == Placement::kSequential ? 2 : 3;
      SDXLB_ASSIGN_OR_RETURN(parts.streamer, WeightStreamer::attach(parts.unet, options.device, so));
      // One compute stream: the streamed units' slots are shared by every UNet call.
      if (options.placement != Placement::kModelOffload) p->options_.unet_streams = 1;
    }
    for (int64_t d : parts.unet->config().cross_attention_dim)
      if (d != p->prompt_dim_)
        return data_loss(source.config_path("unet") + ": cross_attention_dim " + std::to_string(d) +
                         " does not match the text encoders' combined width " +
                         std::to_string(p->prompt_dim_));
    if (options.decoder == DecoderKind::kTiny) {
      if (options.tiny_vae.empty())
        return invalid_argument(
            "the tiny decoder needs a tiny VAE folder (job key tiny_vae, e.g. a TAESDXL folder)");
      SDXLB_ASSIGN_OR_RETURN(auto folder,
                             ModelFolder::open_component_folder(options.tiny_vae, options.weights_opener));
      SDXLB_ASSIGN_OR_RETURN(parts.tiny_vae, load_tiny_vae(folder, "", "", options.dtype, options.device));
    } else {
      VaeLoadOptions vo;
      vo.honor_force_upcast = !options.vae_fp16_safe;
      vo.dtype = options.vae_dtype;
      SDXLB_ASSIGN_OR_RETURN(auto v, source.config("vae"));
      SDXLB_ASSIGN_OR_RETURN(auto w, source.weights("vae", options.variant));
      SDXLB_ASSIGN_OR_RETURN(parts.vae,
                             load_vae(v, source.config_path("vae"), w, options.dtype, options.device, vo));
    }
  }
  // The tiny VAE decodes every image of a tiny-decoder job, so it is part of the identity whether or not
  // this instance loads it: rank 0's probe (no denoiser) and the workers must agree, or the job identity
  // would not see a changed tiny VAE (and index.h5's model_id differed from every row's).
  if (options.decoder == DecoderKind::kTiny && !options.tiny_vae.empty()) {
    Fingerprint tf;
    auto tf_dir = ModelFolder::open_component_folder(options.tiny_vae, options.weights_opener);
    if (tf_dir.is_ok()) SDXLB_RETURN_IF_ERROR(add_component_identity(tf, *tf_dir, "", ""));
    model_id.add("tiny_vae").add(tf.hex());
  }
  p->model_id_ = model_id.hex();
  return p;
}

StatusOr<TextEmbeddings> SdxlPipeline::encode(const std::vector<std::string>& texts) {
  Parts& parts = *parts_;
  if (!parts.text_encoder || !parts.text_encoder_2)
    return failed_precondition("the text encoders are not loaded (released after the encode phase)");
  const auto t0 = Clock::now();
  try {
    c10::InferenceMode guard;
    at::Tensor ids1 = ids_tensor(*parts.tokenizer, texts);
    at::Tensor ids2 = ids_tensor(*parts.tokenizer_2, texts);
    // text_encoder contributes only its penultimate state: its last layer is skipped.
    SDXLB_ASSIGN_OR_RETURN(auto o1, parts.text_encoder->encode(ids1, /*run_last_layer=*/false));
    SDXLB_ASSIGN_OR_RETURN(auto o2, parts.text_encoder_2->encode(ids2, /*run_last_layer=*/true));
    TextEmbeddings out;
    out.prompt_embeds = at::cat({o1.penultimate, o2.penultimate}, -1);
    out.pooled = o2.pooled;
    sync_device(options_.device);
    times_.encode_ms = ms_since(t0);
    return out;
  } catch (const c10::Error& e) {
    return torch_error("text encoding", e);
  }
}

void SdxlPipeline::release_text_encoders() {
  parts_->text_encoder = nullptr;
  parts_->text_encoder_2 = nullptr;
  parts_->tokenizer.reset();
  parts_->tokenizer_2.reset();
}

std::string SdxlPipeline::placement_summary() const {
  switch (options_.placement) {
    case Placement::kResident:
      return std::string("placement: resident (the UNet stays on the ") +
             (options_.device.is_cuda() ? "GPU)" : "CPU)") +
             (precision_summary_.empty() ? std::string() : "; " + precision_summary_);
    case Placement::kModelOffload:
      return "placement: model offload (the UNet leaves the GPU while the VAE decodes)";
    case Placement::kStreamed:
    case Placement::kSequential:
      break;
  }
  return std::string("placement: ") +
         (options_.placement == Placement::kStreamed ? "streamed" : "sequential") +
         (options_.unload_for_decode ? " (resident units leave the GPU while the VAE decodes)" : "") + "; " +
         (parts_->streamer ? parts_->streamer->stats().describe() : std::string("no UNet loaded"));
}

std::string SdxlPipeline::decoder_summary() const {
  if (options_.decoder == DecoderKind::kTiny) return "decoder: tiny VAE in " + dtype_name(options_.dtype);
  if (!parts_->vae) return "decoder: none loaded";
  const at::ScalarType vae = parts_->vae->dtype();
  std::string line = "decoder: full VAE in " + dtype_name(vae) +
                     (options_.decoder == DecoderKind::kTiled ? ", in tiles" : "");
  if (options_.vae_dtype) return line + " (vae_dtype)";
  if (vae == at::kFloat && options_.dtype == at::kHalf)
    line +=
        " (its config's force_upcast: the SDXL VAE overflows in fp16; vae_dtype: bf16 decodes it without "
        "overflowing in about 60% of the time, vae_fp16_safe: true runs fp16-fix weights in fp16)";
  return line;
}

void SdxlPipeline::set_unet_streams(int streams) {
  if (parts_->streamer && options_.placement != Placement::kModelOffload) return;  // one stream only
  options_.unet_streams = std::max(1, streams);
  parts_->loop.reset();
}

StatusOr<TextEmbeddings> SdxlPipeline::negative_for(const std::string& text, const TextEmbeddings& like) {
  if (text.empty() && force_zeros_) {
    return TextEmbeddings{at::zeros_like(like.prompt_embeds), at::zeros_like(like.pooled)};
  }
  return encode({text});
}

at::Tensor SdxlPipeline::initial_noise(uint64_t seed, int64_t channels, int64_t h, int64_t w,
                                       at::ScalarType dtype) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({1, channels, h, w}, gen, at::TensorOptions().dtype(dtype).device(at::kCPU));
}

StatusOr<at::Tensor> SdxlPipeline::denoise(const TextEmbeddings& positive, const TextEmbeddings& negative,
                                           const std::vector<uint64_t>& seeds, const RenderSettings& s) {
  Parts& parts = *parts_;
  if (!parts.unet) return failed_precondition("the UNet is not loaded");
  const int64_t b = static_cast<int64_t>(seeds.size());
  if (positive.prompt_embeds.size(0) != b || negative.prompt_embeds.size(0) != b)
    return invalid_argument("denoise: " + std::to_string(b) + " seeds but " +
                            std::to_string(positive.prompt_embeds.size(0)) + " positive and " +
                            std::to_string(negative.prompt_embeds.size(0)) + " negative embeddings");
  // Pixels per latent pixel: 8 for SDXL's VAE and TAESDXL; smaller for tiny test models.
  const int64_t scale = options_.decoder == DecoderKind::kTiny ? parts.tiny_vae->spatial_scale()
                        : parts.vae                            ? parts.vae->spatial_scale()
                                                               : 8;
  if (s.width % scale || s.height % scale || s.width <= 0 || s.height <= 0)
    return invalid_argument("width and height must be positive multiples of " + std::to_string(scale) +
                            ", got " + std::to_string(s.width) + "x" + std::to_string(s.height));
  const int64_t per_call = std::max<int64_t>(1, options_.images_per_unet_call);
  if (b > 0 && b % per_call != 0) {
    // Not a whole number of UNet calls: pad with copies of the last image (each image's rows are computed on
    // their own, so the copies do not change the others' pixels) and keep the first b.
    const int64_t extra = per_call - b % per_call;
    auto pad = [&](const at::Tensor& t) {
      std::vector<at::Tensor> rows = {t};
      for (int64_t k = 0; k < extra; ++k) rows.push_back(t.narrow(0, b - 1, 1));
      return at::cat(rows, 0);
    };
    std::vector<uint64_t> padded_seeds = seeds;
    padded_seeds.insert(padded_seeds.end(), static_cast<size_t>(extra), seeds.back());
    SDXLB_ASSIGN_OR_RETURN(at::Tensor all,
                           denoise({pad(positive.prompt_embeds), pad(positive.pooled)},
                                   {pad(negative.prompt_embeds), pad(negative.pooled)}, padded_seeds, s));
    return all.narrow(0, 0, b);
  }
  SDXLB_ASSIGN_OR_RETURN(auto sampler, make_sampler(parts.scheduler, s.steps));
  const auto t0 = Clock::now();
  try {
    int warmup = 2;
    if (parts.streamer && parts.streamer->evicted()) {
      // Model offload: the UNet comes back to the GPU at new addresses; its graph is captured again (the
      // handles and workspaces exist by now, so without warm-up steps).
      if (before_capture_) before_capture_();
      parts.loop.reset();  // its private memory pool goes back before the weights come in
#ifdef SDXLB_WITH_CUDA
      if (options_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
      parts.streamer->restore();
      warmup = 0;
    }
    c10::InferenceMode guard;
    const at::ScalarType dtype = options_.dtype;
    const at::Device dev = options_.device;
    const int64_t channels = parts.unet->config().in_channels;
    const int64_t h = s.height / scale, w = s.width / scale;

    // Each image's noise from its own CPU generator, in diffusers' order: the initial latents now, then (for
    // stochastic samplers) one draw per step, made while the GPU runs the step before (see DenoiseLoop::run).
    std::vector<at::Generator> generators;
    std::vector<at::Tensor> noise;
    noise.reserve(b);
    const auto cpu = at::TensorOptions().device(at::kCPU);
    for (uint64_t seed : seeds) {
      generators.push_back(at::make_generator<at::CPUGeneratorImpl>(seed));
      noise.push_back(at::randn({1, channels, h, w}, generators.back(), cpu.dtype(dtype)));
    }
    at::Tensor latents = at::cat(noise, 0).to(dev);
    latents = latents * sampler->init_noise_sigma();
    DenoiseLoop::StepNoise step_noise;
    if (sampler->draws_noise()) {
      const at::ScalarType noise_dtype = sampler->noise_dtype(dtype);
      step_noise = [&generators, channels, h, w, cpu, noise_dtype](int64_t) {
        std::vector<at::Tensor> draws;
        for (auto& gen : generators)
          draws.push_back(at::randn({1, channels, h, w}, gen, cpu.dtype(noise_dtype)));
        return at::cat(draws, 0);
      };
    }

    const bool cfg = s.guidance > 1.0;
    auto to_dev = [&](const at::Tensor& t) { return t.to(dev, dtype); };
    at::Tensor time_ids = at::tensor({static_cast<double>(s.height), static_cast<double>(s.width), 0.0, 0.0,
                                      static_cast<double>(s.height), static_cast<double>(s.width)},
                                     at::TensorOptions().dtype(at::kFloat))
                              .reshape({1, 6})
                              .to(dtype);  // (CPU tensors cannot be built in half precision directly)
    // Conditioning grouped per image ([negative_i, positive_i] with CFG): the UNet runs a fixed number of
    // images per call, so an image's result does not depend on the batch it is in (see denoise_loop.h).
    const int64_t rows = cfg ? 2 : 1;
    at::Tensor embeds, pooled;
    if (cfg) {
      embeds = at::stack({to_dev(negative.prompt_embeds), to_dev(positive.prompt_embeds)}, 1).flatten(0, 1);
      pooled = at::stack({to_dev(negative.pooled), to_dev(positive.pooled)}, 1).flatten(0, 1);
    } else {
      embeds = to_dev(positive.prompt_embeds);
      pooled = to_dev(positive.pooled);
    }
    time_ids = time_ids.to(dev).repeat({rows * b, 1});
    // One host synchronisation per batch, before the loop: both checks in one read-back.
    if (cfg && s.zero_negatives &&
        at::logical_or(negative.prompt_embeds.ne(0).any(), negative.pooled.ne(0).any()).item<bool>())
      return invalid_argument(
          "denoise: RenderSettings.zero_negatives is set but a negative conditioning row is not zero "
          "(set it only when every negative prompt is empty and the model says "
          "force_zeros_for_empty_prompt)");
    // Every step through the denoise loop: one CUDA graph replay per step on CUDA (captured once per batch
    // shape, guidance and sampler), the same work eagerly elsewhere.
    DenoiseLoop::Key key = DenoiseLoop::key_for(*sampler);
    key.batch = b;
    key.channels = channels;
    key.height = h;
    key.width = w;
    key.seq = embeds.size(1);
    key.dim = embeds.size(2);
    key.pooled = pooled.size(1);
    key.dtype = dtype;
    key.cfg = cfg;
    key.guidance = s.guidance;
    key.streams = std::max(1, options_.unet_streams);
    key.images_per_call = per_call;
    key.zero_negatives = cfg && s.zero_negatives && fusion_enabled(Fusion::kZeroNegatives);
    key.cuda_graph = dev.is_cuda() && options_.cuda_graphs;
    key.approximations = options_.approximations;
    // Only where the UNet's weights stay in place: a streamed or offloaded UNet has its weights on the GPU
    // only inside its own calls (the streamer's hooks), not when the loop projects the prompts.
    key.project_context = options_.project_context && options_.placement == Placement::kResident;
    if (!parts.loop || !(parts.loop->key() == key)) {
      if (before_capture_) before_capture_();
      parts.loop.reset();
      SDXLB_ASSIGN_OR_RETURN(parts.loop, DenoiseLoop::create(parts.unet, *sampler, key, dev, warmup));
    }
    parts.loop->load(latents, embeds, pooled, time_ids, seeds);
    parts.loop->run(*sampler, step_noise);
    latents = parts.loop->latents().clone();
    sync_device(dev);
    times_.denoise_ms = ms_since(t0);
    return latents;
  } catch (const c10::Error& e) {
    return torch_error("denoising", e);
  }
}

const SchedulerConfig& SdxlPipeline::scheduler_config() const {
  return parts_->scheduler;
}

StatusOr<at::Tensor> SdxlPipeline::decode(const at::Tensor& latents) {
  Parts& parts = *parts_;
  const auto t0 = Clock::now();
  SDXLB_RETURN_IF_ERROR(check_finite(latents, "latents after denoising"));
  if (parts.streamer && (options_.placement == Placement::kModelOffload ||
                         (options_.placement == Placement::kStreamed && options_.unload_for_decode))) {
    try {
      parts.streamer->evict();  // the VAE decodes without the UNet on the GPU
#ifdef SDXLB_WITH_CUDA
      if (options_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    } catch (const c10::Error& e) {
      return torch_error("moving the UNet to host memory", e);
    }
  }
  // One image at a time: a decode's kernels then never depend on the batch size, so neither do the pixels
  // (and the peak memory is one image's).
  std::vector<at::Tensor> decoded;
  for (int64_t k = 0; k < latents.size(0); ++k) {
#ifdef SDXLB_WITH_CUDA
    if (options_.tight_memory && options_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    const at::Tensor one = latents.narrow(0, k, 1);
    at::Tensor image;
    if (options_.decoder == DecoderKind::kTiny) {
      if (!parts.tiny_vae) return failed_precondition("the tiny VAE is not loaded");
      SDXLB_ASSIGN_OR_RETURN(image, decode_checked(parts.tiny_vae, one));
    } else {
      if (!parts.vae) return failed_precondition("the VAE is not loaded");
      const VaeDecodeMode mode =
          options_.decoder == DecoderKind::kTiled ? VaeDecodeMode::kTiled : VaeDecodeMode::kFull;
      // Tiles of at most 512 pixels (SDXL's config says 1024, which would not tile a 1024^2 image at all).
      VaeTiling tiling = parts.vae->default_tiling();
      if (tiling.tile_sample_min_size > kMaxTilePixels) {
        tiling.tile_latent_min_size =
            tiling.tile_latent_min_size * kMaxTilePixels / tiling.tile_sample_min_size;
        tiling.tile_sample_min_size = kMaxTilePixels;
      }
      SDXLB_ASSIGN_OR_RETURN(image, decode_checked(parts.vae, one, mode, "VAE decode", tiling));
    }
    decoded.push_back(image);
  }
  const at::Tensor images = at::cat(decoded, 0);
  SDXLB_ASSIGN_OR_RETURN(auto u8, images_to_uint8(images));
  times_.decode_ms = ms_since(t0);
  return u8;
}

StatusOr<at::Tensor> SdxlPipeline::generate(const std::vector<std::string>& prompts,
                                            const std::vector<std::string>& negatives,
                                            const std::vector<uint64_t>& seeds,
                                            const RenderSettings& settings) {
  if (prompts.size() != seeds.size() || negatives.size() != prompts.size())
    return invalid_argument("generate: prompts, negatives and seeds must have the same length");
  SDXLB_ASSIGN_OR_RETURN(auto pos, encode(prompts));
  const double encode_ms = times_.encode_ms;
  std::vector<at::Tensor> neg_e, neg_p;
  for (size_t i = 0; i < negatives.size(); ++i) {
    TextEmbeddings one{pos.prompt_embeds.narrow(0, i, 1), pos.pooled.narrow(0, i, 1)};
    SDXLB_ASSIGN_OR_RETURN(auto n, negative_for(negatives[i], one));
    neg_e.push_back(n.prompt_embeds);
    neg_p.push_back(n.pooled);
  }
  TextEmbeddings neg{at::cat(neg_e, 0), at::cat(neg_p, 0)};
  times_.encode_ms = encode_ms;
  SDXLB_ASSIGN_OR_RETURN(auto latents, denoise(pos, neg, seeds, settings));
  return decode(latents);
}

}  // namespace sdxlb
