// Vae: diffusers' AutoencoderKL (SDXL's VAE) in LibTorch: decoder, optional encoder, and the image helpers
// the pipeline needs after decoding (NaN/Inf check, uint8 conversion).
//
// Decoder: post_quant_conv (1x1) -> conv_in -> mid block (resnet, single-head self-attention over all h*w
// latent pixels, resnet) -> up blocks (layers_per_block + 1 resnets, then nearest x2 + conv, except the last)
// -> GroupNorm -> SiLU -> conv_out. Submodule names are the diffusers state-dict names
// ("decoder.mid_block.attentions.0.to_q", "decoder.up_blocks.1.upsamplers.0.conv", ...), so loading is a
// lookup.
//
// fp16: the SDXL VAE overflows in float16. Like StableDiffusionXLPipeline, load_vae() keeps the weights in
// float32 when asked for float16 and the config says force_upcast (the "sdxl-vae-fp16-fix" weights set it to
// false and run in float16). Output images are never silently NaN: decode_checked() reports them.
//
// Thread-safety: after loading the module is read-only; concurrent decodes on one instance are safe (each
// runs under InferenceMode and keeps no state).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"

namespace sdxlb {

/// AutoencoderKL's config.json.
struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels{64};
  int64_t layers_per_block = 1;
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;  ///< tiles of tiled decode are this many pixels (first entry if a list)
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;  ///< null for SDXL
  std::vector<double> latents_mean;    ///< empty when null; when both are set the pipeline de-normalises
  std::vector<double> latents_std;
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;
  /// Parses and validates (only "UpDecoderBlock2D"/"DownEncoderBlock2D" blocks and act_fn "silu" are
  /// supported). Every error starts with `source` (the file path) and names the key.
  static StatusOr<VaeConfig> from_json(const nlohmann::json& json, const std::string& source);
};

/// Tiled-decode geometry, as AutoencoderKL's attributes of the same names.
struct VaeTiling {
  int64_t tile_sample_min_size = 0;  ///< output pixels per tile side
  int64_t tile_latent_min_size = 0;  ///< latent pixels per tile side
  double tile_overlap_factor = 0.25;
};

/// The VAE mid block's attention (diffusers Attention with _from_deprecated_attn_block, AttnProcessor2_0):
/// GroupNorm, q/k/v projections, SDPA over h*w tokens, to_out.0, + residual, / rescale_output_factor.
class VaeAttentionImpl : public torch::nn::Module {
 public:
  VaeAttentionImpl(int64_t channels, int64_t heads, int64_t groups, double eps, double rescale_output_factor);
  /// x [B, C, h, w] -> [B, C, h, w].
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t heads_;
  double rescale_output_factor_;
  GroupNorm group_norm_{nullptr};
  Linear to_q_{nullptr}, to_k_{nullptr}, to_v_{nullptr};
  torch::nn::ModuleList to_out_{nullptr};  ///< "0": Linear (diffusers' "1" is a parameterless Dropout)
};
TORCH_MODULE(VaeAttention);

/// diffusers' UNetMidBlock2D without time embedding: resnets.0, then (attentions.i, resnets.i+1).
class VaeMidBlockImpl : public torch::nn::Module {
 public:
  VaeMidBlockImpl(int64_t channels, int64_t groups, bool add_attention);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::ModuleList resnets_{nullptr};
  torch::nn::ModuleList attentions_{nullptr};  ///< null without attention
};
TORCH_MODULE(VaeMidBlock);

/// diffusers' Decoder (norm_type "group"): the whole image side after post_quant_conv.
class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const VaeConfig& config);
  /// z [B, latent_channels, h, w] (after post_quant_conv) -> [B, out_channels, h*f, w*f].
  at::Tensor forward(const at::Tensor& z);

 private:
  Conv2d conv_in_{nullptr};
  VaeMidBlock mid_block_{nullptr};
  torch::nn::ModuleList up_blocks_{nullptr};  ///< each a Module with "resnets" and optional "upsamplers"
  GroupNorm conv_norm_out_{nullptr};
  Conv2d conv_out_{nullptr};
};
TORCH_MODULE(VaeDecoder);

/// diffusers' Encoder (double_z): images [B, in_channels, H, W] -> moments [B, 2 * latent_channels, h, w].
class VaeEncoderImpl : public torch::nn::Module {
 public:
  explicit VaeEncoderImpl(const VaeConfig& config);
  at::Tensor forward(const at::Tensor& images);

 private:
  Conv2d conv_in_{nullptr};
  torch::nn::ModuleList down_blocks_{nullptr};
  VaeMidBlock mid_block_{nullptr};
  GroupNorm conv_norm_out_{nullptr};
  Conv2d conv_out_{nullptr};
};
TORCH_MODULE(VaeEncoder);

/// AutoencoderKL: decoder (+ post_quant_conv), and the encoder (+ quant_conv) when built with one.
class VaeImpl : public torch::nn::Module {
 public:
  VaeImpl(VaeConfig config, bool with_encoder);

  /// Pipeline latents [B, C, h, w] -> images [B, 3, 8h, 8w] in about [-1, 1] (unclamped), as
  /// StableDiffusionXLPipeline gets them: the latents are moved to the module's device and dtype, divided by
  /// scaling_factor (or de-normalised with latents_mean/std when the config has both; then shift_factor is
  /// added when the config has one, as SD3/Flux pipelines do: SDXL's has none), then AutoencoderKL.decode.
  /// Throws c10::Error on bad input; decode_checked() is the Status-returning entry point.
  at::Tensor decode(const at::Tensor& latents);
  /// decode() one image at a time (lower peak memory); the same result up to kernel choice (~1e-6).
  at::Tensor decode_sliced(const at::Tensor& latents);
  /// AutoencoderKL.tiled_decode: overlapping latent tiles decoded separately, seams blended linearly.
  /// APPROXIMATE: the mid-block attention and the GroupNorms see one tile, not the whole image, so the result
  /// differs from decode() (visibly so only near tile seams on real weights). Falls back to the plain decode
  /// when the latents fit one tile, like diffusers. `tiling` defaults to the config's (sample_size).
  at::Tensor decode_tiled(const at::Tensor& latents, const std::optional<VaeTiling>& tiling = std::nullopt);
  /// AutoencoderKL.encode(images).latent_dist.parameters: [B, 2C, h, w], mean then log-variance along
  /// channels, unscaled (multiply the mean by scaling_factor for pipeline latents). Needs with_encoder.
  at::Tensor encode(const at::Tensor& images);

  const VaeConfig& config() const { return config_; }
  /// The tiling diffusers uses for this config: sample_size pixels a tile, overlap 0.25.
  VaeTiling default_tiling() const;
  /// Pixels per latent pixel along each side (2 ^ (levels - 1)).
  int64_t spatial_scale() const;
  bool has_encoder() const { return !encoder_.is_empty(); }
  /// The compute dtype (float32 when force_upcast kept the weights out of float16).
  at::ScalarType dtype() const;
  at::Device device() const;

 private:
  /// latents (pipeline scale) -> what AutoencoderKL.decode takes.
  at::Tensor unscale(const at::Tensor& latents) const;
  /// AutoencoderKL._decode without tiling: post_quant_conv and decoder.
  at::Tensor decode_raw(const at::Tensor& z);
  at::Tensor tiled_decode_raw(const at::Tensor& z, const VaeTiling& tiling);

  VaeConfig config_;
  Conv2d post_quant_conv_{nullptr};
  VaeDecoder decoder_{nullptr};
  Conv2d quant_conv_{nullptr};
  VaeEncoder encoder_{nullptr};
};
TORCH_MODULE(Vae);

/// How decode_checked() runs the decoder.
enum class VaeDecodeMode { kFull, kSliced, kTiled };

/// Options of load_vae().
struct VaeLoadOptions {
  /// Build and load the encoder too (img2img); decode-only otherwise, and the file's encoder weights are
  /// skipped.
  bool with_encoder = false;
  /// When false, float16 is used even if the config says force_upcast (for users who know their weights).
  bool honor_force_upcast = true;
  /// The compute dtype whatever load_vae's `dtype` and force_upcast say (set: the job key vae_dtype).
  std::optional<at::ScalarType> dtype;
};

/// Loads component `component` ("vae") of a diffusers pipeline folder. `dtype` is the requested compute type;
/// float16 with force_upcast becomes float32, like the SDXL pipeline's upcast_vae() (see vae->dtype()). On a
/// CUDA device the decoder's upsamplers run as phase convolutions (use_phase_upsamplers, resnet_block.h).
/// Errors: kNotFound (no component/files), kDataLoss (a config key or the weights do not match, named).
StatusOr<Vae> load_vae(const ModelFolder& folder, const std::string& variant, at::ScalarType dtype,
                       at::Device device, const VaeLoadOptions& options = {},
                       const std::string& component = "vae");
/// The same from a parsed config (`config_path` names it in errors) and weights under diffusers names (a
/// folder's, a single file's converted ones, or a VAE file's).
StatusOr<Vae> load_vae(const nlohmann::json& config_json, const std::string& config_path,
                       const WeightSet& weights, at::ScalarType dtype, at::Device device,
                       const VaeLoadOptions& options = {});

/// vae->decode / decode_sliced / decode_tiled (with `tiling`, default the config's) behind a Status: checks
/// the latents' shape and that they are finite, turns LibTorch errors into a Status (kResourceExhausted for
/// out-of-memory), and checks the images are finite. Errors name `what`.
StatusOr<at::Tensor> decode_checked(Vae& vae, const at::Tensor& latents,
                                    VaeDecodeMode mode = VaeDecodeMode::kFull,
                                    const std::string& what = "VAE decode",
                                    const std::optional<VaeTiling>& tiling = std::nullopt);

/// OK when `latents` is [batch, channels, h, w] with finite values; otherwise kInvalidArgument (shape) or
/// kDataLoss (NaN/Inf), naming `what`. Shared by the full and the tiny VAE.
Status check_latents(const at::Tensor& latents, int64_t channels, const std::string& what);

/// OK when every element of `t` is finite; otherwise kDataLoss naming `what`, the NaN and Inf counts, the
/// batch items affected (dim 0), and the usual cause (SDXL's VAE in float16).
Status check_finite(const at::Tensor& t, const std::string& what);

/// Decoded images [B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C] on the CPU, exactly as diffusers'
/// VaeImageProcessor.postprocess(output_type="pil"): (x * 0.5 + 0.5).clamp(0, 1) in the input dtype, then
/// float32, * 255, round half to even, computed on the images' device (the same bits: each step is one
/// correctly rounded IEEE operation). Errors: kInvalidArgument for a tensor that is not [B, C, H, W] floats.
StatusOr<at::Tensor> images_to_uint8(const at::Tensor& images);

}  // namespace sdxlb
