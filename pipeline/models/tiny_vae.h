// TinyVae: diffusers' AutoencoderTiny (TAESD / TAESDXL) decoder in LibTorch.
//
// The decoder is plain 3x3 convolutions: tanh(x/3)*3 to soft-clamp the latents, then per level
// AutoencoderTinyBlocks (conv-act-conv-act-conv plus skip, fused by ReLU), x2 nearest upsampling and a conv.
// Its output is mapped from [0, 1] to [-1, 1] like AutoencoderTiny.decode returns it, so the pipeline treats
// it exactly like the full VAE's output. Parameter names are the diffusers state-dict names
// ("decoder.layers.N..."), so loading is a lookup; the encoder's weights in the file are not loaded.
//
// Thread-safety: after loading the module is read-only; concurrent decode() calls on one instance are safe
// (each runs under InferenceMode and keeps no state).
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/nn/layers.h"

namespace sdxlb {

/// AutoencoderTiny's config.json (decoder side).
struct TinyVaeConfig {
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> decoder_block_out_channels{64, 64, 64, 64};
  std::vector<int64_t> num_decoder_blocks{3, 3, 3, 1};
  int64_t upsampling_scaling_factor = 2;
  std::string act_fn = "relu";          ///< relu, silu/swish, gelu or mish (diffusers' get_activation)
  std::string upsample_fn = "nearest";  ///< only "nearest" (TAESD's) is supported
  double latent_magnitude = 3.0;        ///< used by TAESD's latent (de)quantisation, not by decode
  double latent_shift = 0.5;
  double scaling_factor = 1.0;  ///< the pipeline divides latents by this before decode (1.0 for TAESD)
  double shift_factor = 0.0;

  /// Parses and validates; `source` (the file path) heads every error, which names the offending key.
  static StatusOr<TinyVaeConfig> from_json(const nlohmann::json& json, const std::string& source);
};

/// Activation by diffusers name; a module so that nn.Sequential indices match the checkpoint's.
class TinyActivationImpl : public torch::nn::Module {
 public:
  explicit TinyActivationImpl(std::string kind) : kind_(std::move(kind)) {}
  at::Tensor forward(const at::Tensor& x);

 private:
  std::string kind_;
};
TORCH_MODULE(TinyActivation);

/// nn.Upsample(scale_factor, mode="nearest").
class TinyUpsampleImpl : public torch::nn::Module {
 public:
  explicit TinyUpsampleImpl(double scale) : scale_(scale) {}
  at::Tensor forward(const at::Tensor& x);

 private:
  double scale_;
};
TORCH_MODULE(TinyUpsample);

/// diffusers' AutoencoderTinyBlock: fuse(conv(x) + skip(x)) with fuse = ReLU whatever act_fn is.
class TinyBlockImpl : public torch::nn::Module {
 public:
  TinyBlockImpl(int64_t in_channels, int64_t out_channels, const std::string& act_fn);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Sequential conv_{nullptr};
  Conv2d skip_{nullptr};  ///< 1x1, only when the widths differ
};
TORCH_MODULE(TinyBlock);

/// diffusers' DecoderTiny: registered as "layers" with the same Sequential indices.
class TinyDecoderImpl : public torch::nn::Module {
 public:
  explicit TinyDecoderImpl(const TinyVaeConfig& config);
  /// Raw (unscaled) latents [B, C, h, w] -> images [B, 3, h*f, w*f] in [-1, 1] (unclamped).
  at::Tensor forward(const at::Tensor& latents);

 private:
  torch::nn::Sequential layers_{nullptr};
};
TORCH_MODULE(TinyDecoder);

/// AutoencoderTiny with its decoder only.
class TinyVaeImpl : public torch::nn::Module {
 public:
  explicit TinyVaeImpl(TinyVaeConfig config);

  /// Pipeline latents [B, C, h, w] -> images [B, 3, H, W] in about [-1, 1], as the SDXL pipeline gets them:
  /// latents / scaling_factor (+ shift_factor when non-zero), then AutoencoderTiny.decode. The latents are
  /// moved to the module's device and dtype first. Throws c10::Error on bad shapes (see decode_checked).
  at::Tensor decode(const at::Tensor& latents);
  /// decode() one image at a time (lower peak memory); the same result up to kernel choice.
  at::Tensor decode_sliced(const at::Tensor& latents);

  const TinyVaeConfig& config() const { return config_; }
  /// Pixels per latent along each side (upsampling_scaling_factor ^ (levels - 1)).
  int64_t spatial_scale() const;
  at::ScalarType dtype() const;
  at::Device device() const;

 private:
  TinyVaeConfig config_;
  TinyDecoder decoder_{nullptr};
};
TORCH_MODULE(TinyVae);

/// Loads an AutoencoderTiny folder (config.json + diffusion_pytorch_model[.<variant>].safetensors), e.g.
/// TAESDXL, with parameters converted to `dtype` on `device`.
/// Errors: kNotFound (folder/files), kDataLoss (config key or weights that do not match, named).
StatusOr<TinyVae> load_tiny_vae(const std::string& folder, const std::string& variant, at::ScalarType dtype,
                                at::Device device);
/// The same for component `component` of a pipeline folder (a pipeline whose "vae" is an AutoencoderTiny).
StatusOr<TinyVae> load_tiny_vae(const ModelFolder& folder, const std::string& component,
                                const std::string& variant, at::ScalarType dtype, at::Device device);

/// decode() (or decode_sliced()) behind a Status: checks the latents' shape and that they are finite, turns
/// LibTorch errors into a Status, and checks the images are finite (kDataLoss naming `what` otherwise).
StatusOr<at::Tensor> decode_checked(TinyVae& vae, const at::Tensor& latents, bool sliced = false,
                                    const std::string& what = "tiny VAE decode");

}  // namespace sdxlb
