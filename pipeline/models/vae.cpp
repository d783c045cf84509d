#include "pipeline/models/vae.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "pipeline/io/config_reader.h"
#include "pipeline/io/weights.h"
#include "pipeline/nn/attention.h"

namespace sdxlb {
namespace {

// diffusers' Encoder/Decoder build every GroupNorm and resnet with eps 1e-6.
constexpr double kVaeEps = 1e-6;

std::string list_str(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

ResnetBlock2D vae_resnet(int64_t in, int64_t out, int64_t groups) {
  return ResnetBlock2D(ResnetBlock2DOptions(in, out).groups(groups).eps(kVaeEps));
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

// --- config
// -------------------------------------------------------------------------------------------------

StatusOr<VaeConfig> VaeConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader r(json, source);
  VaeConfig c;
  const std::string cls = r.get<std::string>("_class_name", "AutoencoderKL");
  if (cls != "AutoencoderKL")
    r.fail("_class_name", "is \"" + cls + "\", not \"AutoencoderKL\" (for TAESD use load_tiny_vae)");
  c.in_channels = r.get<int64_t>("in_channels", c.in_channels);
  c.out_channels = r.get<int64_t>("out_channels", c.out_channels);
  c.block_out_channels = r.get<std::vector<int64_t>>("block_out_channels", c.block_out_channels);
  c.layers_per_block = r.get<int64_t>("layers_per_block", c.layers_per_block);
  c.latent_channels = r.get<int64_t>("latent_channels", c.latent_channels);
  c.norm_num_groups = r.get<int64_t>("norm_num_groups", c.norm_num_groups);
  if (r.has("sample_size") && json.at("sample_size").is_array()) {
    // diffusers allows [h, w]; its tiling then reads the first entry.
    const auto list = r.get<std::vector<int64_t>>("sample_size", {});
    if (list.empty())
      r.fail("sample_size", "is an empty list");
    else
      c.sample_size = list[0];
  } else {
    c.sample_size = r.get<int64_t>("sample_size", c.sample_size);
  }
  c.scaling_factor = r.get<double>("scaling_factor", c.scaling_factor);
  if (r.has("shift_factor")) c.shift_factor = r.get<double>("shift_factor", 0.0);
  c.latents_mean = r.get<std::vector<double>>("latents_mean", {});
  c.latents_std = r.get<std::vector<double>>("latents_std", {});
  c.force_upcast = r.get<bool>("force_upcast", c.force_upcast);
  c.use_quant_conv = r.get<bool>("use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = r.get<bool>("use_post_quant_conv", c.use_post_quant_conv);
  c.mid_block_add_attention = r.get<bool>("mid_block_add_attention", c.mid_block_add_attention);
  const std::string act = r.get<std::string>("act_fn", "silu");
  const auto up_types = r.get<std::vector<std::string>>("up_block_types", {"UpDecoderBlock2D"});
  const auto down_types = r.get<std::vector<std::string>>("down_block_types", {"DownEncoderBlock2D"});
  SDXLB_RETURN_IF_ERROR(r.status());

  const size_t levels = c.block_out_channels.size();
  if (levels == 0) r.fail("block_out_channels", "is empty");
  for (int64_t ch : c.block_out_channels) {
    if (ch <= 0)
      r.fail("block_out_channels", "must hold positive widths, not " + list_str(c.block_out_channels));
    else if (c.norm_num_groups <= 0 || ch % c.norm_num_groups != 0)
      r.fail("norm_num_groups", "is " + std::to_string(c.norm_num_groups) +
                                    ", which does not divide every width in block_out_channels " +
                                    list_str(c.block_out_channels));
  }
  if (c.layers_per_block < 1) r.fail("layers_per_block", "must be at least 1");
  if (c.latent_channels <= 0) r.fail("latent_channels", "must be positive");
  if (c.in_channels <= 0) r.fail("in_channels", "must be positive");
  if (c.out_channels <= 0) r.fail("out_channels", "must be positive");
  if (c.sample_size <= 0) r.fail("sample_size", "must be positive");
  if (!(c.scaling_factor != 0.0)) r.fail("scaling_factor", "must be non-zero");
  // Decoder's up blocks take their resnets' nonlinearity from act_fn; only SiLU (every SD VAE's) is built.
  if (act != "silu" && act != "swish") r.fail("act_fn", "is \"" + act + "\"; only \"silu\" is supported");
  if (up_types.size() != levels)
    r.fail("up_block_types", "has " + std::to_string(up_types.size()) +
                                 " entries but block_out_channels has " + std::to_string(levels));
  for (const auto& t : up_types)
    if (t != "UpDecoderBlock2D")
      r.fail("up_block_types", "holds \"" + t + "\"; only \"UpDecoderBlock2D\" is supported");
  if (down_types.size() != levels)
    r.fail("down_block_types", "has " + std::to_string(down_types.size()) +
                                   " entries but block_out_channels has " + std::to_string(levels));
  for (const auto& t : down_types)
    if (t != "DownEncoderBlock2D")
      r.fail("down_block_types", "holds \"" + t + "\"; only \"DownEncoderBlock2D\" is supported");
  if (!c.latents_mean.empty() && c.latents_mean.size() != static_cast<size_t>(c.latent_channels))
    r.fail("latents_mean", "must have latent_channels (" + std::to_string(c.latent_channels) + ") entries");
  if (!c.latents_std.empty() && c.latents_std.size() != static_cast<size_t>(c.latent_channels))
    r.fail("latents_std", "must have latent_channels (" + std::to_string(c.latent_channels) + ") entries");
  SDXLB_RETURN_IF_ERROR(r.status());
  return c;
}

// --- attention and mid block
// --------------------------------------------------------------------------------

VaeAttentionImpl::VaeAttentionImpl(int64_t channels, int64_t heads, int64_t groups, double eps,
                                   double rescale_output_factor)
    : heads_(heads), rescale_output_factor_(rescale_output_factor) {
  group_norm_ = register_module("group_norm", GroupNorm(groups, channels, eps));
  to_q_ = register_module("to_q", Linear(channels, channels));
  to_k_ = register_module("to_k", Linear(channels, channels));
  to_v_ = register_module("to_v", Linear(channels, channels));
  to_out_ = register_module("to_out", torch::nn::ModuleList(Linear(channels, channels)));
}

at::Tensor VaeAttentionImpl::forward(const at::Tensor& x) {
  // AttnProcessor2_0 for a 4-D input. Its group norm runs on x [B, C, H·W] viewed from [B, C, H, W]: the same
  // numbers as on the 4-D tensor, which is what this normalises (diffusers' 3-D view of a channels-last x
  // made PyTorch copy it twice), in the fused GroupNorm kernel where it runs (fused_ops.h; PyTorch's
  // elsewhere).
  const at::Tensor residual = x;
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor hs = group_norm_->forward_act(x, /*silu=*/false).reshape({b, c, h * w}).transpose(1, 2);
  at::Tensor q = to_q_(hs);
  at::Tensor k = to_k_(hs);
  at::Tensor v = to_v_(hs);
  const int64_t inner = k.size(-1);
  const int64_t head_dim = inner / heads_;
  q = q.view({b, -1, heads_, head_dim}).transpose(1, 2);
  k = k.view({b, -1, heads_, head_dim}).transpose(1, 2);
  v = v.view({b, -1, heads_, head_dim}).transpose(1, 2);
  at::Tensor o = attend(q, k, v);
  o = o.transpose(1, 2).reshape({b, -1, heads_ * head_dim}).to(q.scalar_type());
  o = to_out_->at<LinearImpl>(0).forward(o);
  o = o.transpose(-1, -2).reshape({b, c, h, w});
  o = o + residual;
  // x / 1.0 is exact, so the common case (SDXL's VAE) skips a kernel without changing a bit.
  return rescale_output_factor_ == 1.0 ? o : o / rescale_output_factor_;
}

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups, bool add_attention) {
  resnets_ = register_module("resnets", torch::nn::ModuleList(vae_resnet(channels, channels, groups),
                                                              vae_resnet(channels, channels, groups)));
  // attention_head_dim = channels: one head over the whole width; output_scale_factor 1.
  if (add_attention)
    attentions_ =
        register_module("attentions", torch::nn::ModuleList(VaeAttention(channels, 1, groups, kVaeEps, 1.0)));
}

at::Tensor VaeMidBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets_->at<ResnetBlock2DImpl>(0).forward(x);
  if (attentions_) h = attentions_->at<VaeAttentionImpl>(0).forward(h);
  return resnets_->at<ResnetBlock2DImpl>(1).forward(h);
}

// --- up and down blocks
// -------------------------------------------------------------------------------------

namespace {

/// diffusers' UpDecoderBlock2D without time embedding.
class VaeUpBlockImpl : public torch::nn::Module {
 public:
  VaeUpBlockImpl(int64_t in, int64_t out, int64_t num_layers, int64_t groups, bool add_upsample) {
    resnets_ = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < num_layers; ++i) resnets_->push_back(vae_resnet(i == 0 ? in : out, out, groups));
    if (add_upsample)
      upsamplers_ = register_module(
          "upsamplers",
          torch::nn::ModuleList(Upsample2D(Upsample2DOptions(out).use_conv(true).out_channels(out))));
  }
  at::Tensor forward(at::Tensor x) {
    for (size_t i = 0; i < resnets_->size(); ++i) x = resnets_->at<ResnetBlock2DImpl>(i).forward(x);
    if (upsamplers_) x = upsamplers_->at<Upsample2DImpl>(0).forward(x);
    return x;
  }

 private:
  torch::nn::ModuleList resnets_{nullptr};
  torch::nn::ModuleList upsamplers_{nullptr};
};
TORCH_MODULE(VaeUpBlock);

/// diffusers' DownEncoderBlock2D (downsample_padding 0: asymmetric pad, then a stride-2 conv).
class VaeDownBlockImpl : public torch::nn::Module {
 public:
  VaeDownBlockImpl(int64_t in, int64_t out, int64_t num_layers, int64_t groups, bool add_downsample) {
    resnets_ = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < num_layers; ++i) resnets_->push_back(vae_resnet(i == 0 ? in : out, out, groups));
    if (add_downsample)
      downsamplers_ = register_module(
          "downsamplers", torch::nn::ModuleList(Downsample2D(
                              Downsample2DOptions(out).use_conv(true).out_channels(out).padding(0))));
  }
  at::Tensor forward(at::Tensor x) {
    for (size_t i = 0; i < resnets_->size(); ++i) x = resnets_->at<ResnetBlock2DImpl>(i).forward(x);
    if (downsamplers_) x = downsamplers_->at<Downsample2DImpl>(0).forward(x);
    return x;
  }

 private:
  torch::nn::ModuleList resnets_{nullptr};
  torch::nn::ModuleList downsamplers_{nullptr};
};
TORCH_MODULE(VaeDownBlock);

}  // namespace

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& config) {
  const auto& ch = config.block_out_channels;
  const int64_t groups = config.norm_num_groups;
  conv_in_ = register_module("conv_in", Conv2d(config.latent_channels, ch.back(), 3, 1, 1));
  mid_block_ = register_module("mid_block", VaeMidBlock(ch.back(), groups, config.mid_block_add_attention));
  up_blocks_ = register_module("up_blocks", torch::nn::ModuleList());
  int64_t prev = ch.back();
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t out = ch[ch.size() - 1 - i];
    up_blocks_->push_back(VaeUpBlock(prev, out, config.layers_per_block + 1, groups, i + 1 < ch.size()));
    prev = out;
  }
  conv_norm_out_ = register_module("conv_norm_out", GroupNorm(groups, ch.front(), kVaeEps));
  conv_out_ = register_module("conv_out", Conv2d(ch.front(), config.out_channels, 3, 1, 1));
}

at::Tensor VaeDecoderImpl::forward(const at::Tensor& z) {
  // On the GPU every activation is channels-last from here on (cuDNN keeps its input's layout), which the
  // fused GroupNorm, bias and upsampling kernels take: from an NCHW latent the first resnets and the mid
  // block's attention fell back to PyTorch's GroupNorm with layout copies. The CPU keeps diffusers' layout.
  at::Tensor x = conv_in_(z.is_cuda() ? z.contiguous(at::MemoryFormat::ChannelsLast) : z);
  x = mid_block_(x);
  for (size_t i = 0; i < up_blocks_->size(); ++i) x = up_blocks_->at<VaeUpBlockImpl>(i).forward(x);
  // diffusers' conv_act is nn.SiLU whatever act_fn says; GroupNorm and SiLU in one kernel where the fused one
  // runs (fused_ops.h), as every resnet's norms and the UNet's conv_norm_out already do.
  x = conv_norm_out_->forward_act(x, /*silu=*/true);
  return conv_out_(x);
}

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& config) {
  const auto& ch = config.block_out_channels;
  const int64_t groups = config.norm_num_groups;
  conv_in_ = register_module("conv_in", Conv2d(config.in_channels, ch.front(), 3, 1, 1));
  down_blocks_ = register_module("down_blocks", torch::nn::ModuleList());
  int64_t prev = ch.front();
  for (size_t i = 0; i < ch.size(); ++i) {
    down_blocks_->push_back(VaeDownBlock(prev, ch[i], config.layers_per_block, groups, i + 1 < ch.size()));
    prev = ch[i];
  }
  mid_block_ = register_module("mid_block", VaeMidBlock(ch.back(), groups, config.mid_block_add_attention));
  conv_norm_out_ = register_module("conv_norm_out", GroupNorm(groups, ch.back(), kVaeEps));
  conv_out_ = register_module("conv_out", Conv2d(ch.back(), 2 * config.latent_channels, 3, 1, 1));
}

at::Tensor VaeEncoderImpl::forward(const at::Tensor& images) {
  at::Tensor x = conv_in_(images);
  for (size_t i = 0; i < down_blocks_->size(); ++i) x = down_blocks_->at<VaeDownBlockImpl>(i).forward(x);
  x = mid_block_(x);
  x = conv_norm_out_->forward_act(x, /*silu=*/true);
  return conv_out_(x);
}

// --- AutoencoderKL
// ------------------------------------------------------------------------------------------

VaeImpl::VaeImpl(VaeConfig config, bool with_encoder) : config_(std::move(config)) {
  const int64_t c = config_.latent_channels;
  if (with_encoder) {
    encoder_ = register_module("encoder", VaeEncoder(config_));
    if (config_.use_quant_conv) quant_conv_ = register_module("quant_conv", Conv2d(2 * c, 2 * c, 1));
  }
  decoder_ = register_module("decoder", VaeDecoder(config_));
  if (config_.use_post_quant_conv) post_quant_conv_ = register_module("post_quant_conv", Conv2d(c, c, 1));
}

int64_t VaeImpl::spatial_scale() const {
  return int64_t{1} << (config_.block_out_channels.size() - 1);
}

VaeTiling VaeImpl::default_tiling() const {
  VaeTiling t;
  t.tile_sample_min_size = config_.sample_size;
  // int(sample_size / 2 ** (len(block_out_channels) - 1)): float division, truncated.
  t.tile_latent_min_size =
      static_cast<int64_t>(static_cast<double>(config_.sample_size) / static_cast<double>(spatial_scale()));
  t.tile_overlap_factor = 0.25;
  return t;
}

at::ScalarType VaeImpl::dtype() const {
  return decoder_->parameters().front().scalar_type();
}
at::Device VaeImpl::device() const {
  return decoder_->parameters().front().device();
}

at::Tensor VaeImpl::unscale(const at::Tensor& latents) const {
  TORCH_CHECK(latents.dim() == 4 && latents.size(1) == config_.latent_channels, "VAE expects latents [B, ",
              config_.latent_channels, ", h, w], got ", latents.sizes());
  // Upcast first, then unscale: the SDXL pipeline's order when force_upcast applies.
  at::Tensor z = latents.to(device(), dtype());
  if (!config_.latents_mean.empty() && !config_.latents_std.empty()) {
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    const int64_t c = config_.latent_channels;
    // torch.tensor(list of floats) is float32 before .to(latents.dtype); do the same.
    at::Tensor mean = at::tensor(config_.latents_mean, opts)
                          .to(at::kFloat)
                          .view({1, c, 1, 1})
                          .to(z.device(), z.scalar_type());
    at::Tensor std = at::tensor(config_.latents_std, opts)
                         .to(at::kFloat)
                         .view({1, c, 1, 1})
                         .to(z.device(), z.scalar_type());
    z = z * std / config_.scaling_factor + mean;
  } else {
    z = z / config_.scaling_factor;
  }
  if (config_.shift_factor) z = z + *config_.shift_factor;
  return z;
}

at::Tensor VaeImpl::decode_raw(const at::Tensor& z) {
  at::Tensor x = post_quant_conv_ ? post_quant_conv_(z) : z;
  return decoder_(x);
}

at::Tensor VaeImpl::decode(const at::Tensor& latents) {
  c10::InferenceMode guard;
  return decode_raw(unscale(latents));
}

at::Tensor VaeImpl::decode_sliced(const at::Tensor& latents) {
  c10::InferenceMode guard;
  at::Tensor z = unscale(latents);
  if (z.size(0) <= 1) return decode_raw(z);
  std::vector<at::Tensor> out;
  for (const at::Tensor& one : z.split(1)) out.push_back(decode_raw(one));
  return at::cat(out);
}

at::Tensor VaeImpl::decode_tiled(const at::Tensor& latents, const std::optional<VaeTiling>& tiling) {
  c10::InferenceMode guard;
  const VaeTiling t = tiling.value_or(default_tiling());
  TORCH_CHECK(t.tile_latent_min_size > 0 && t.tile_sample_min_size > 0 && t.tile_overlap_factor >= 0 &&
                  t.tile_overlap_factor < 1,
              "VAE tiling needs positive tile sizes and an overlap factor in [0, 1)");
  at::Tensor z = unscale(latents);
  // AutoencoderKL._decode tiles only latents larger than one tile.
  if (z.size(-1) > t.tile_latent_min_size || z.size(-2) > t.tile_latent_min_size)
    return tiled_decode_raw(z, t);
  return decode_raw(z);
}

namespace {

// AutoencoderKL.blend_v / blend_h: write into b's first rows/columns, in place, as diffusers does (the
// blended tile is the same object later blended into its right and lower neighbours).
void blend(const at::Tensor& a, at::Tensor& b, int64_t extent, int64_t dim) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  for (int64_t y = 0; y < extent; ++y) {
    const double wb = static_cast<double>(y) / static_cast<double>(extent);
    b.select(dim, y).copy_(a.select(dim, a.size(dim) - extent + y) * (1 - wb) + b.select(dim, y) * wb);
  }
}

}  // namespace

at::Tensor VaeImpl::tiled_decode_raw(const at::Tensor& z, const VaeTiling& t) {
  const int64_t overlap_size =
      static_cast<int64_t>(static_cast<double>(t.tile_latent_min_size) * (1 - t.tile_overlap_factor));
  const int64_t blend_extent =
      static_cast<int64_t>(static_cast<double>(t.tile_sample_min_size) * t.tile_overlap_factor);
  const int64_t row_limit = t.tile_sample_min_size - blend_extent;
  TORCH_CHECK(overlap_size > 0, "VAE tiling: tile_latent_min_size ", t.tile_latent_min_size, " with overlap ",
              t.tile_overlap_factor, " leaves no stride between tiles");
  std::vector<std::vector<at::Tensor>> rows;
  for (int64_t i = 0; i < z.size(2); i += overlap_size) {
    std::vector<at::Tensor> row;
    for (int64_t j = 0; j < z.size(3); j += overlap_size) {
      at::Tensor tile = z.slice(2, i, i + t.tile_latent_min_size).slice(3, j, j + t.tile_latent_min_size);
      row.push_back(decode_raw(tile));
    }
    rows.push_back(std::move(row));
  }
  std::vector<at::Tensor> result_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<at::Tensor> result_row;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      at::Tensor& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, blend_extent, 2);
      if (j > 0) blend(rows[i][j - 1], tile, blend_extent, 3);
      result_row.push_back(tile.slice(2, 0, row_limit).slice(3, 0, row_limit));
    }
    result_rows.push_back(at::cat(result_row, 3));
  }
  return at::cat(result_rows, 2);
}

at::Tensor VaeImpl::encode(const at::Tensor& images) {
  c10::InferenceMode guard;
  TORCH_CHECK(encoder_, "this VAE was loaded without its encoder (VaeLoadOptions::with_encoder)");
  TORCH_CHECK(images.dim() == 4 && images.size(1) == config_.in_channels, "VAE encode expects images [B, ",
              config_.in_channels, ", H, W], got ", images.sizes());
  at::Tensor x = encoder_(images.to(device(), dtype()));
  return quant_conv_ ? quant_conv_(x) : x;
}

// --- loading and checked entry points
// -----------------------------------------------------------------------

StatusOr<Vae> load_vae(const ModelFolder& folder, const std::string& variant, at::ScalarType dtype,
                       at::Device device, const VaeLoadOptions& options, const std::string& component) {
  const std::string dir = folder.component_dir(component);
  SDXLB_ASSIGN_OR_RETURN(nlohmann::json json, folder.component_config(component));
  SDXLB_ASSIGN_OR_RETURN(WeightSet weights, folder.component_weights(component, variant));
  return load_vae(json, dir + "/config.json", weights, dtype, device, options);
}

StatusOr<Vae> load_vae(const nlohmann::json& json, const std::string& config_path, const WeightSet& weights,
                       at::ScalarType dtype, at::Device device, const VaeLoadOptions& options) {
  SDXLB_ASSIGN_OR_RETURN(VaeConfig config, VaeConfig::from_json(json, config_path));
  // StableDiffusionXLPipeline upcasts a float16 VAE whose config says force_upcast (bfloat16 is left alone).
  const at::ScalarType compute = options.dtype ? *options.dtype
                                 : (dtype == at::kHalf && config.force_upcast && options.honor_force_upcast)
                                     ? at::kFloat
                                     : dtype;
  try {
    Vae vae(config, options.with_encoder);
    LoadOptions load;
    load.dtype = compute;
    load.device = device;
    if (!options.with_encoder)
      for (const auto& name : weights.names())
        if (starts_with(name, "encoder.") || starts_with(name, "quant_conv."))
          load.optional_keys.push_back(name);
    SDXLB_RETURN_IF_ERROR(load_module_weights(*vae, weights, "VAE weights", load));
    // On the GPU the decoder's upsamplers run as phase convolutions (resnet_block.h): 16 instead of 36
    // multiply-adds per pixel and channel in its three largest convolutions' place.
    if (device.is_cuda()) (void)use_phase_upsamplers(*vae);
    vae->eval();
    return vae;
  } catch (const c10::Error& e) {
    return internal_error("building the VAE from " + weights.describe() +
                          " failed: " + e.what_without_backtrace());
  }
}

Status check_latents(const at::Tensor& latents, int64_t channels, const std::string& what) {
  if (!latents.defined() || latents.dim() != 4 || latents.size(1) != channels)
    return invalid_argument(
        what + ": latents must be [batch, " + std::to_string(channels) + ", height/8, width/8], got " +
        (latents.defined() ? c10::str(latents.sizes()) : std::string("an undefined tensor")));
  return check_finite(latents, what + ": input latents");
}

StatusOr<at::Tensor> decode_checked(Vae& vae, const at::Tensor& latents, VaeDecodeMode mode,
                                    const std::string& what, const std::optional<VaeTiling>& tiling) {
  SDXLB_RETURN_IF_ERROR(check_latents(latents, vae->config().latent_channels, what));
  try {
    at::Tensor images;
    switch (mode) {
      case VaeDecodeMode::kFull:
        images = vae->decode(latents);
        break;
      case VaeDecodeMode::kSliced:
        images = vae->decode_sliced(latents);
        break;
      case VaeDecodeMode::kTiled:
        images = vae->decode_tiled(latents, tiling);
        break;
    }
    SDXLB_RETURN_IF_ERROR(check_finite(images, what + ": decoded images"));
    return images;
  } catch (const c10::OutOfMemoryError& e) {
    return Status(
        StatusCode::kResourceExhausted,
        what + ": out of memory decoding latents " + c10::str(latents.sizes()) +
            "; decode fewer images at once (sliced) or use tiled decode: " + e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return internal_error(what + " failed on latents " + c10::str(latents.sizes()) + ": " +
                          e.what_without_backtrace());
  }
}

Status check_finite(const at::Tensor& t, const std::string& what) {
  try {
    if (!t.defined()) return invalid_argument(what + ": tensor is undefined");
    if (!at::isFloatingType(t.scalar_type())) return Status::ok();
    c10::InferenceMode guard;
    const at::Tensor bad = t.isfinite().logical_not();
    if (!bad.any().item<bool>()) return Status::ok();
    const int64_t nans = t.isnan().sum().item<int64_t>();
    const int64_t total_bad = bad.sum().item<int64_t>();
    std::string items;
    if (t.dim() >= 1) {
      const at::Tensor per_item = bad.reshape({t.size(0), -1}).any(1).cpu();
      for (int64_t i = 0; i < per_item.size(0); ++i)
        if (per_item[i].item<bool>()) items += (items.empty() ? "" : ", ") + std::to_string(i);
    }
    return data_loss(what + " hold " + std::to_string(nans) + " NaN and " + std::to_string(total_bad - nans) +
                     " infinite values (" + c10::toString(t.scalar_type()) + ", batch items " + items +
                     "); the SDXL VAE overflows in float16: run it in float32 (force_upcast) or use "
                     "fp16-fix weights, and check the sampler settings if the latents themselves are bad");
  } catch (const c10::Error& e) {
    return internal_error(what + ": finiteness check failed: " + e.what_without_backtrace());
  }
}

StatusOr<at::Tensor> images_to_uint8(const at::Tensor& images) {
  if (!images.defined() || images.dim() != 4 || !at::isFloatingType(images.scalar_type()))
    return invalid_argument("images_to_uint8 needs floating-point images [B, C, H, W], got " +
                            (images.defined() ? c10::str(images.sizes(), " ", images.scalar_type())
                                              : std::string("an undefined tensor")));
  try {
    c10::InferenceMode guard;
    // VaeImageProcessor: denormalize in the tensor's dtype, pt_to_numpy (.cpu().permute().float()), then
    // numpy_to_pil's (x * 255).round().astype(uint8) on float32 (round half to even, like torch.round). The
    // same elementwise IEEE operations on the images' device (the GPU rounds them as the CPU does), and a
    // quarter of the bytes cross to the host: the conversion on the host cost about 10 ms per 1024² image.
    at::Tensor x = (images * 0.5 + 0.5).clamp(0, 1);
    x = (x.to(at::kFloat) * 255).round().to(at::kByte);
    return x.permute({0, 2, 3, 1}).contiguous().cpu();
  } catch (const c10::Error& e) {
    return internal_error(std::string("images_to_uint8 failed: ") + e.what_without_backtrace());
  }
}

}  // namespace sdxlb
