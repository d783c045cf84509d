#include "pipeline/models/tiny_vae.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "pipeline/io/config_reader.h"
#include "pipeline/io/weights.h"
#include "pipeline/models/vae.h"

namespace sdxlb {
namespace {

std::string list_str(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

bool is_supported_activation(const std::string& name) {
  return name == "relu" || name == "silu" || name == "swish" || name == "gelu" || name == "mish";
}

Conv2d conv3x3(int64_t in, int64_t out, bool bias) {
  return Conv2d(in, out, 3, 1, 1, bias);
}

}  // namespace

StatusOr<TinyVaeConfig> TinyVaeConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader r(json, source);
  TinyVaeConfig c;
  const std::string cls = r.get<std::string>("_class_name", "AutoencoderTiny");
  if (cls != "AutoencoderTiny")
    r.fail("_class_name",
           "is \"" + cls + "\", not \"AutoencoderTiny\": this is not a tiny autoencoder folder");
  c.out_channels = r.get<int64_t>("out_channels", c.out_channels);
  c.latent_channels = r.get<int64_t>("latent_channels", c.latent_channels);
  c.decoder_block_out_channels =
      r.get<std::vector<int64_t>>("decoder_block_out_channels", c.decoder_block_out_channels);
  c.num_decoder_blocks = r.get<std::vector<int64_t>>("num_decoder_blocks", c.num_decoder_blocks);
  c.upsampling_scaling_factor = r.get<int64_t>("upsampling_scaling_factor", c.upsampling_scaling_factor);
  c.act_fn = r.get<std::string>("act_fn", c.act_fn);
  c.upsample_fn = r.get<std::string>("upsample_fn", c.upsample_fn);
  c.latent_magnitude = r.get<double>("latent_magnitude", c.latent_magnitude);
  c.latent_shift = r.get<double>("latent_shift", c.latent_shift);
  c.scaling_factor = r.get<double>("scaling_factor", c.scaling_factor);
  c.shift_factor = r.get<double>("shift_factor", c.shift_factor);
  SDXLB_RETURN_IF_ERROR(r.status());

  const auto& ch = c.decoder_block_out_channels;
  if (ch.empty() || ch.size() != c.num_decoder_blocks.size())
    r.fail("decoder_block_out_channels",
           "has " + std::to_string(ch.size()) + " entries but num_decoder_blocks has " +
               std::to_string(c.num_decoder_blocks.size()) + "; they must be non-empty and of equal length");
  for (size_t i = 0; i < ch.size(); ++i) {
    if (ch[i] <= 0) r.fail("decoder_block_out_channels", "must hold positive widths, not " + list_str(ch));
    // DecoderTiny feeds level i-1's conv output (width ch[i-1]) straight into level i's first block, which
    // expects ch[i] and has no projection: diffusers itself fails on such a checkpoint at the first decode.
    if (i > 0 && ch[i] != ch[i - 1])
      r.fail("decoder_block_out_channels",
             "is " + list_str(ch) +
                 ": diffusers' DecoderTiny needs every level to have the same width (level " +
                 std::to_string(i) + " receives " + std::to_string(ch[i - 1]) + " channels but expects " +
                 std::to_string(ch[i]) + "), so this checkpoint cannot decode in diffusers either");
  }
  for (int64_t n : c.num_decoder_blocks)
    if (n < 0)
      r.fail("num_decoder_blocks", "must hold non-negative counts, not " + list_str(c.num_decoder_blocks));
  if (c.latent_channels <= 0) r.fail("latent_channels", "must be positive");
  if (c.out_channels <= 0) r.fail("out_channels", "must be positive");
  if (c.upsampling_scaling_factor < 1)
    r.fail("upsampling_scaling_factor",
           "must be a positive integer, not " + std::to_string(c.upsampling_scaling_factor));
  if (!is_supported_activation(c.act_fn))
    r.fail("act_fn", "is \"" + c.act_fn + "\"; supported: relu, silu, swish, gelu, mish");
  if (c.upsample_fn != "nearest")
    r.fail("upsample_fn", "is \"" + c.upsample_fn + "\"; only \"nearest\" (TAESD's) is supported");
  if (!(c.scaling_factor != 0.0)) r.fail("scaling_factor", "must be non-zero");
  SDXLB_RETURN_IF_ERROR(r.status());
  return c;
}

at::Tensor TinyActivationImpl::forward(const at::Tensor& x) {
  if (kind_ == "relu") return at::relu(x);
  if (kind_ == "silu" || kind_ == "swish") return at::silu(x);
  if (kind_ == "gelu") return at::gelu(x);
  if (kind_ == "mish") return at::mish(x);
  TORCH_CHECK(false, "unsupported activation ", kind_);
}

at::Tensor TinyUpsampleImpl::forward(const at::Tensor& x) {
  // F.interpolate(scale_factor=s, mode="nearest") passes the scale factors themselves to the kernel.
  const std::vector<double> scales{scale_, scale_};
  return at::upsample_nearest2d(x, c10::nullopt, scales);
}

TinyBlockImpl::TinyBlockImpl(int64_t in_channels, int64_t out_channels, const std::string& act_fn) {
  conv_ = register_module(
      "conv", torch::nn::Sequential(conv3x3(in_channels, out_channels, true), TinyActivation(act_fn),
                                    conv3x3(out_channels, out_channels, true), TinyActivation(act_fn),
                                    conv3x3(out_channels, out_channels, true)));
  if (in_channels != out_channels)
    skip_ = register_module("skip", Conv2d(in_channels, out_channels, 1, 1, 0, /*bias=*/false));
}

at::Tensor TinyBlockImpl::forward(const at::Tensor& x) {
  at::Tensor skip = skip_ ? skip_->forward(x) : x;
  return at::relu(conv_->forward(x) + skip);
}

TinyDecoderImpl::TinyDecoderImpl(const TinyVaeConfig& config) {
  const auto& ch = config.decoder_block_out_channels;
  torch::nn::Sequential layers;
  layers->push_back(conv3x3(config.latent_channels, ch[0], true));
  layers->push_back(TinyActivation(config.act_fn));
  for (size_t i = 0; i < ch.size(); ++i) {
    const bool is_final = i + 1 == ch.size();
    for (int64_t b = 0; b < config.num_decoder_blocks[i]; ++b)
      layers->push_back(TinyBlock(ch[i], ch[i], config.act_fn));
    if (!is_final) layers->push_back(TinyUpsample(static_cast<double>(config.upsampling_scaling_factor)));
    layers->push_back(conv3x3(ch[i], is_final ? config.out_channels : ch[i], /*bias=*/is_final));
  }
  layers_ = register_module("layers", layers);
}

at::Tensor TinyDecoderImpl::forward(const at::Tensor& latents) {
  // Same ops and scalar types as DecoderTiny.forward: soft clamp, layers, [0, 1] -> [-1, 1].
  at::Tensor x = at::tanh(latents / 3) * 3;
  x = layers_->forward(x);
  return x.mul(2).sub(1);
}

TinyVaeImpl::TinyVaeImpl(TinyVaeConfig config) : config_(std::move(config)) {
  decoder_ = register_module("decoder", TinyDecoder(config_));
}

int64_t TinyVaeImpl::spatial_scale() const {
  int64_t s = 1;
  for (size_t i = 1; i < config_.decoder_block_out_channels.size(); ++i)
    s *= config_.upsampling_scaling_factor;
  return s;
}

at::ScalarType TinyVaeImpl::dtype() const {
  return parameters().front().scalar_type();
}
at::Device TinyVaeImpl::device() const {
  return parameters().front().device();
}

at::Tensor TinyVaeImpl::decode(const at::Tensor& latents) {
  c10::InferenceMode guard;
  TORCH_CHECK(latents.dim() == 4 && latents.size(1) == config_.latent_channels,
              "tiny VAE expects latents [B, ", config_.latent_channels, ", h, w], got ", latents.sizes());
  at::Tensor z = latents.to(device(), dtype());
  // The SDXL pipeline divides by vae.config.scaling_factor (1.0 for TAESD) before vae.decode.
  z = z / config_.scaling_factor;
  if (config_.shift_factor != 0.0) z = z + config_.shift_factor;
  return decoder_->forward(z);
}

at::Tensor TinyVaeImpl::decode_sliced(const at::Tensor& latents) {
  c10::InferenceMode guard;
  if (latents.dim() != 4 || latents.size(0) <= 1) return decode(latents);
  std::vector<at::Tensor> out;
  for (const at::Tensor& one : latents.split(1)) out.push_back(decode(one));
  return at::cat(out);
}

StatusOr<TinyVae> load_tiny_vae(const ModelFolder& folder, const std::string& component,
                                const std::string& variant, at::ScalarType dtype, at::Device device) {
  const std::string dir = folder.component_dir(component);
  SDXLB_ASSIGN_OR_RETURN(nlohmann::json json, folder.component_config(component));
  SDXLB_ASSIGN_OR_RETURN(TinyVaeConfig config, TinyVaeConfig::from_json(json, dir + "/config.json"));
  SDXLB_ASSIGN_OR_RETURN(WeightSet weights, folder.component_weights(component, variant));
  try {
    TinyVae vae(config);
    LoadOptions options;
    options.dtype = dtype;
    options.device = device;
    // The encoder is not built: its weights in the file are expected and ignored.
    for (const auto& name : weights.names())
      if (name.rfind("encoder.", 0) == 0) options.optional_keys.push_back(name);
    SDXLB_RETURN_IF_ERROR(load_module_weights(*vae, weights, "tiny VAE weights in " + dir, options));
    vae->eval();
    return vae;
  } catch (const c10::Error& e) {
    return internal_error("building the tiny VAE from " + dir + " failed: " + e.what_without_backtrace());
  }
}

StatusOr<TinyVae> load_tiny_vae(const std::string& folder, const std::string& variant, at::ScalarType dtype,
                                at::Device device) {
  SDXLB_ASSIGN_OR_RETURN(ModelFolder f, ModelFolder::open_component_folder(folder));
  return load_tiny_vae(f, "", variant, dtype, device);
}

StatusOr<at::Tensor> decode_checked(TinyVae& vae, const at::Tensor& latents, bool sliced,
                                    const std::string& what) {
  SDXLB_RETURN_IF_ERROR(check_latents(latents, vae->config().latent_channels, what));
  try {
    at::Tensor images = sliced ? vae->decode_sliced(latents) : vae->decode(latents);
    SDXLB_RETURN_IF_ERROR(check_finite(images, what + ": decoded images"));
    return images;
  } catch (const c10::Error& e) {
    return internal_error(what + " failed on latents " + c10::str(latents.sizes()) + ": " +
                          e.what_without_backtrace());
  }
}

}  // namespace sdxlb
