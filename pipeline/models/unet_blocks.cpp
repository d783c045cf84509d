#include "pipeline/models/unet_blocks.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/container/modulelist.h>

#include "pipeline/nn/fused_ops.h"

namespace sdxlb {
namespace {

constexpr double kMaxPeriod = 10000.0;

ResnetBlock2D make_resnet(const UNetBlockOptions& o, int64_t in_channels, int64_t out_channels) {
  return ResnetBlock2D(ResnetBlock2DOptions(in_channels, out_channels)
                           .temb_channels(o.temb_channels())
                           .groups(o.resnet_groups())
                           .eps(o.resnet_eps())
                           .output_scale_factor(o.resnet_output_scale_factor()));
}

// diffusers passes num_attention_heads and a head width of channels // heads to every Transformer2DModel.
Transformer2DModel make_transformer(const UNetBlockOptions& o, int64_t channels) {
  const int64_t heads = o.num_attention_heads();
  return Transformer2DModel(Transformer2DModelOptions(heads, channels / heads, channels)
                                .num_layers(o.transformer_layers())
                                .cross_attention_dim(o.cross_attention_dim())
                                .norm_num_groups(o.resnet_groups())
                                .use_linear_projection(o.use_linear_projection()));
}

}  // namespace

TimestepsImpl::TimestepsImpl(int64_t num_channels, bool flip_sin_to_cos, double downscale_freq_shift)
    : num_channels_(num_channels), flip_sin_to_cos_(flip_sin_to_cos), shift_(downscale_freq_shift) {
  build_table(c10::Device(c10::kCPU));
}

void TimestepsImpl::build_table(c10::Device device) {
  // The same ops, in the same order, as diffusers' get_timestep_embedding, on the device it will run on.
  const int64_t half = num_channels_ / 2;
  at::Tensor exponent =
      at::arange(0, half, at::TensorOptions().dtype(at::kFloat).device(device)) * (-std::log(kMaxPeriod));
  exponent = exponent / (static_cast<double>(half) - shift_);
  freqs_ = at::exp(exponent);
}

void TimestepsImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  build_table(device);  // the table stays float32 whatever the model dtype
}

void TimestepsImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
}

void TimestepsImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  build_table(device);
}

at::Tensor TimestepsImpl::forward(const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 1, "Timesteps should be a 1-D tensor, got shape ", t.sizes());
  at::Tensor emb = t.unsqueeze(1).to(at::kFloat) * freqs_.unsqueeze(0);
  at::Tensor sin = at::sin(emb);
  at::Tensor cos = at::cos(emb);
  // diffusers concatenates [sin, cos] and then swaps the halves; concatenating [cos, sin] directly copies the
  // same values.
  emb = flip_sin_to_cos_ ? at::cat({cos, sin}, -1) : at::cat({sin, cos}, -1);
  if (num_channels_ % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1, 0, 0}, 0);
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim) {
  linear_1_ = register_module("linear_1", Linear(in_channels, time_embed_dim));
  linear_2_ = register_module("linear_2", Linear(time_embed_dim, time_embed_dim));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x) {
  return linear_2_(at::silu(linear_1_(x)));
}

UNetDownBlockImpl::UNetDownBlockImpl(const UNetBlockOptions& o, int64_t in_channels, int64_t out_channels,
                                     int64_t num_layers, bool add_downsample, int64_t downsample_padding) {
  auto resnets = register_module("resnets", torch::nn::ModuleList());
  torch::nn::ModuleList attentions{nullptr};
  if (o.cross_attention()) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) {
    resnets_.push_back(make_resnet(o, i == 0 ? in_channels : out_channels, out_channels));
    resnets->push_back(resnets_.back());
    if (o.cross_attention()) {
      attentions_.push_back(make_transformer(o, out_channels));
      attentions->push_back(attentions_.back());
    }
  }
  if (add_downsample) {
    auto downsamplers = register_module("downsamplers", torch::nn::ModuleList());
    downsampler_ = Downsample2D(Downsample2DOptions(out_channels)
                                    .use_conv(true)
                                    .out_channels(out_channels)
                                    .padding(downsample_padding));
    downsamplers->push_back(downsampler_);
  }
}

at::Tensor UNetDownBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                                      std::vector<at::Tensor>& skips, const TransformerCall* call,
                                      int64_t num_layers) {
  at::Tensor h = x;
  const size_t layers = num_layers < 0 ? resnets_.size() : static_cast<size_t>(num_layers);
  for (size_t i = 0; i < layers && i < resnets_.size(); ++i) {
    h = resnets_[i](h, temb);
    if (!attentions_.empty()) h = attentions_[i]->forward(h, context, call);
    skips.push_back(h);
  }
  if (downsampler_ && num_layers < 0) {
    h = downsampler_(h);
    skips.push_back(h);
  }
  return h;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetBlockOptions& o, int64_t channels, int64_t num_layers) {
  TORCH_CHECK(o.cross_attention(), "UNetMidBlock2DCrossAttn needs cross-attention settings");
  auto resnets = register_module("resnets", torch::nn::ModuleList());
  auto attentions = register_module("attentions", torch::nn::ModuleList());
  resnets_.push_back(make_resnet(o, channels, channels));
  resnets->push_back(resnets_.back());
  for (int64_t i = 0; i < num_layers; ++i) {
    attentions_.push_back(make_transformer(o, channels));
    attentions->push_back(attentions_.back());
    resnets_.push_back(make_resnet(o, channels, channels));
    resnets->push_back(resnets_.back());
  }
}

at::Tensor UNetMidBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                                     const TransformerCall* call) {
  at::Tensor h = resnets_[0](x, temb);
  for (size_t i = 0; i < attentions_.size(); ++i) {
    h = attentions_[i]->forward(h, context, call);
    h = resnets_[i + 1](h, temb);
  }
  return h;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetBlockOptions& o, int64_t in_channels, int64_t prev_output_channels,
                                 int64_t out_channels, int64_t num_layers, bool add_upsample) {
  auto resnets = register_module("resnets", torch::nn::ModuleList());
  torch::nn::ModuleList attentions{nullptr};
  if (o.cross_attention()) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_layers; ++i) {
    const int64_t skip_channels = i == num_layers - 1 ? in_channels : out_channels;
    const int64_t resnet_in = i == 0 ? prev_output_channels : out_channels;
    resnets_.push_back(make_resnet(o, resnet_in + skip_channels, out_channels));
    resnets->push_back(resnets_.back());
    if (o.cross_attention()) {
      attentions_.push_back(make_transformer(o, out_channels));
      attentions->push_back(attentions_.back());
    }
  }
  if (add_upsample) {
    auto upsamplers = register_module("upsamplers", torch::nn::ModuleList());
    upsampler_ = Upsample2D(Upsample2DOptions(out_channels).use_conv(true).out_channels(out_channels));
    upsamplers->push_back(upsampler_);
  }
}

at::Tensor UNetUpBlockImpl::forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                                    const std::vector<at::Tensor>& skips, at::IntArrayRef upsample_size,
                                    const TransformerCall* call, int64_t first_layer, int64_t store_layer,
                                    at::Tensor* stored) {
  const auto first = static_cast<size_t>(first_layer);
  TORCH_CHECK(first < resnets_.size() && skips.size() == resnets_.size() - first, "UNet up block from layer ",
              first, " needs ", resnets_.size() - std::min(first, resnets_.size()), " skip connections, got ",
              skips.size());
  at::Tensor h = x;
  for (size_t i = first; i < resnets_.size(); ++i) {
    if (stored != nullptr && static_cast<int64_t>(i) == store_layer) {
      if (stored->defined()) {
        stored->copy_(h);
      } else {
        *stored = h.clone();
      }
    }
    h = concat_channels(h, skips[skips.size() - 1 - (i - first)]);
    h = resnets_[i](h, temb);
    if (!attentions_.empty()) h = attentions_[i]->forward(h, context, call);
  }
  if (upsampler_) h = upsampler_(h, upsample_size);
  return h;
}

}  // namespace sdxlb
