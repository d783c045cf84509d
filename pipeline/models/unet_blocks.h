// The parts of diffusers' UNet2DConditionModel between its input conv and output conv: timestep embeddings
// (Timesteps, TimestepEmbedding) and the down, mid and up blocks.
//
// One class covers a block with and without cross-attention (DownBlock2D / CrossAttnDownBlock2D,
// UpBlock2D / CrossAttnUpBlock2D): the attention-free variant simply has no "attentions" list. Names and op
// order are diffusers' (models/unets/unet_2d_blocks.py, models/embeddings.py). Modules are immutable after
// loading and safe to call from several threads.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/transformer_2d.h"

namespace sdxlb {

/// Sinusoidal embedding of (possibly fractional) timesteps, diffusers' Timesteps / get_timestep_embedding
/// with max_period 10000 and scale 1. Always computes and returns float32.
///
/// The frequency table is a cached constant, not a parameter or buffer (it is not in checkpoints). It is
/// recomputed on the device whenever the module moves (to(device)), with the same ops diffusers runs there,
/// and stays float32 under to(dtype).
class TimestepsImpl : public torch::nn::Module {
 public:
  TimestepsImpl(int64_t num_channels, bool flip_sin_to_cos, double downscale_freq_shift);
  /// t [N] of any real or integer dtype → [N, num_channels] float32 (on t's device; the table must be there).
  at::Tensor forward(const at::Tensor& t);

  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

 private:
  void build_table(c10::Device device);

  int64_t num_channels_;
  bool flip_sin_to_cos_;
  double shift_;
  at::Tensor freqs_;  // [num_channels / 2] float32: exp(-ln(10000) * i / (half - shift))
};
TORCH_MODULE(Timesteps);

/// linear_1 → SiLU → linear_2 (diffusers TimestepEmbedding without cond_proj or post_act).
class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim);
  /// x [B, in_channels] → [B, time_embed_dim].
  at::Tensor forward(const at::Tensor& x);

 private:
  Linear linear_1_{nullptr};
  Linear linear_2_{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

/// Settings every resnet and transformer of a UNet level shares.
struct UNetBlockOptions {
  TORCH_ARG(int64_t, temb_channels) = 0;
  TORCH_ARG(int64_t, resnet_groups) = 32;
  TORCH_ARG(double, resnet_eps) = 1e-5;
  TORCH_ARG(double, resnet_output_scale_factor) = 1.0;
  /// false: a plain resnet block (DownBlock2D / UpBlock2D); true: a Transformer2DModel after each resnet.
  TORCH_ARG(bool, cross_attention) = false;
  TORCH_ARG(int64_t, transformer_layers) = 1;
  TORCH_ARG(int64_t, num_attention_heads) = 1;
  TORCH_ARG(int64_t, cross_attention_dim) = 0;
  TORCH_ARG(bool, use_linear_projection) = false;
};

/// DownBlock2D / CrossAttnDownBlock2D: num_layers × (resnet [+ transformer]), then an optional strided conv.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  UNetDownBlockImpl(const UNetBlockOptions& options, int64_t in_channels, int64_t out_channels,
                    int64_t num_layers, bool add_downsample, int64_t downsample_padding);
  /// Runs the block and appends every intermediate output (the skip connections) to `skips`. `num_layers`
  /// >= 0 runs only the first layers and no downsampler (DeepCache's shallow step); `call`: what the
  /// transformers get besides the context (token reduction, projected keys and values; nullptr: none).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                     std::vector<at::Tensor>& skips, const TransformerCall* call = nullptr,
                     int64_t num_layers = -1);
  int64_t num_layers() const { return static_cast<int64_t>(resnets_.size()); }

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(UNetDownBlock);

/// UNetMidBlock2DCrossAttn: resnet, then num_layers × (transformer, resnet).
class UNetMidBlockImpl : public torch::nn::Module {
 public:
  UNetMidBlockImpl(const UNetBlockOptions& options, int64_t channels, int64_t num_layers = 1);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                     const TransformerCall* call = nullptr);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
};
TORCH_MODULE(UNetMidBlock);

/// UpBlock2D / CrossAttnUpBlock2D: num_layers × (concat skip, resnet [+ transformer]), then an optional
/// nearest ×2 upsample and conv.
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  UNetUpBlockImpl(const UNetBlockOptions& options, int64_t in_channels, int64_t prev_output_channels,
                  int64_t out_channels, int64_t num_layers, bool add_upsample);
  /// Number of skip connections the block consumes (its resnet count).
  int64_t num_skips() const { return static_cast<int64_t>(resnets_.size()); }
  /// `skips` holds the skip connections of the layers that run (num_skips() − first_layer), in the order the
  /// down path produced them; they are consumed from the back. `upsample_size` (empty: ×2) forces the
  /// upsampler's output size. DeepCache: `first_layer` > 0 starts at that layer with x as its input (the
  /// cached features); `store_layer` >= 0 writes the input of that layer (before its skip is concatenated)
  /// into *stored (allocated on first use, then copied into).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                     const std::vector<at::Tensor>& skips, at::IntArrayRef upsample_size = {},
                     const TransformerCall* call = nullptr, int64_t first_layer = 0, int64_t store_layer = -1,
                     at::Tensor* stored = nullptr);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UNetUpBlock);

}  // namespace sdxlb
