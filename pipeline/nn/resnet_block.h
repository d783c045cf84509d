// ResnetBlock2D, Downsample2D and Upsample2D: the convolutional building blocks shared by the UNet and the
// VAE, mirroring diffusers (models/resnet.py, downsampling.py, upsampling.py) op for op.
//
// Submodule names are diffusers' state-dict names (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut;
// conv for the resamplers), so load_module_weights() fills them by lookup. Only the variants SDXL's UNet and
// VAE use are built: "default" time-embedding norm, SiLU, no up/down inside the resnet, no FIR kernels.
// Modules are immutable after loading and safe to call from several threads; they follow the dtype and
// device of their parameters.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "pipeline/nn/layers.h"
#include "pipeline/nn/unit_hook.h"

namespace sdxlb {

/// Options of ResnetBlock2D (diffusers' constructor arguments of the same names).
struct ResnetBlock2DOptions {
  ResnetBlock2DOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Width of the time embedding; nullopt (VAE blocks) means no time_emb_proj and no temb input.
  TORCH_ARG(std::optional<int64_t>, temb_channels) = std::nullopt;
  /// GroupNorm groups of norm1; norm2 uses groups_out, or groups when that is unset.
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(std::optional<int64_t>, groups_out) = std::nullopt;
  /// GroupNorm epsilon of both norms (the UNet passes norm_eps; the VAE uses 1e-6).
  TORCH_ARG(double, eps) = 1e-6;
  /// The output is (shortcut + residual) / output_scale_factor.
  TORCH_ARG(double, output_scale_factor) = 1.0;
};

/// norm1 → SiLU → conv1 (+ time_emb_proj(SiLU(temb)) per channel) → norm2 → SiLU → conv2, plus a shortcut
/// (a 1×1 conv_shortcut when the channel count changes).
class ResnetBlock2DImpl : public torch::nn::Module, public HookedUnit {
 public:
  explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& options);
  /// x [B, in, H, W], temb [B, temb_channels] (required when temb_channels is set, ignored otherwise)
  /// → [B, out, H, W]. After hand_over_time_projection, temb is instead the projection of every resnet that
  /// handed its time_emb_proj over, [B, total], of which this block reads its out channels from its offset.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb = {});

  /// Hands time_emb_proj's weight and bias over to one projection of the time embedding for every resnet
  /// (UNet2DConditionModel's fuse_time_projections), whose outputs start at `offset` for this block: returns
  /// them and leaves the layer empty. Nothing (std::nullopt) without a time_emb_proj, with one in FP8 or
  /// without a bias, or when handed over already.
  std::optional<std::pair<at::Tensor, at::Tensor>> hand_over_time_projection(int64_t offset);
  /// Whether hand_over_time_projection would hand anything over.
  bool can_hand_over_time_projection() const;

  const ResnetBlock2DOptions& options() const { return options_; }

 private:
  at::Tensor forward_fused(const at::Tensor& x, const at::Tensor& temb);
  // time_emb_proj(silu(temb)) [B, out], or its columns of the joint projection after a hand-over.
  at::Tensor time_projection(const at::Tensor& temb);

  ResnetBlock2DOptions options_;
  GroupNorm norm1_{nullptr};
  Conv2d conv1_{nullptr};
  Linear time_emb_proj_{nullptr};
  GroupNorm norm2_{nullptr};
  Conv2d conv2_{nullptr};
  Conv2d conv_shortcut_{nullptr};
  int64_t time_offset_ = -1;  // set by hand_over_time_projection; -1: time_emb_proj is this block's own
};
TORCH_MODULE(ResnetBlock2D);

/// Options of Downsample2D.
struct Downsample2DOptions {
  explicit Downsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// A strided 3×3 conv (true: UNet and VAE) or a 2×2 average pool (false).
  TORCH_ARG(bool, use_conv) = false;
  /// Output channels of the conv; nullopt: same as channels.
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;
  /// Conv padding. 0 means diffusers' asymmetric (0, 1, 0, 1) zero pad before an unpadded conv (VAE).
  TORCH_ARG(int64_t, padding) = 1;
  TORCH_ARG(int64_t, kernel_size) = 3;
};

/// Halves H and W (rounding up for odd sizes with padding 1, as the stride-2 conv does).
class Downsample2DImpl : public torch::nn::Module {
 public:
  explicit Downsample2DImpl(const Downsample2DOptions& options);
  /// x [B, channels, H, W] → [B, out, H', W'].
  at::Tensor forward(const at::Tensor& x);

 private:
  Downsample2DOptions options_;
  Conv2d conv_{nullptr};
};
TORCH_MODULE(Downsample2D);

/// Options of Upsample2D.
struct Upsample2DOptions {
  explicit Upsample2DOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// A 3×3 conv after the nearest-neighbour ×2 (true: UNet and VAE).
  TORCH_ARG(bool, use_conv) = false;
  TORCH_ARG(std::optional<int64_t>, out_channels) = std::nullopt;
  TORCH_ARG(int64_t, kernel_size) = 3;
  TORCH_ARG(int64_t, padding) = 1;
};

/// Nearest-neighbour upsampling by 2 (or to an explicit size), then an optional conv.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(const Upsample2DOptions& options);
  /// x [B, channels, H, W] → [B, out, 2H, 2W], or [B, out, size[0], size[1]] when `output_size` is given
  /// (the UNet passes the skip connection's size when H or W is not a multiple of its total downsampling).
  at::Tensor forward(const at::Tensor& x, at::IntArrayRef output_size = {});

  /// For a 3×3 convolution of stride 1 and padding 1 not yet switched to FP8: computes the ×2 upsampling and
  /// the convolution from now on as one 2×2 convolution of the low-resolution image, with padding 1 and four
  /// output phases (the submodule "phase_conv", no bias, its weight upsample_conv_phase_weight of conv's),
  /// followed by a gather of the phases with conv's bias (fused_ops.h, upsample_phases): 16 instead of 36
  /// multiply-adds per input pixel and output channel, and the 4× larger upsampled image is never written.
  /// The same computation with other rounding (each phase weight is a sum of up to four weights, rounded
  /// once). use_fp8_convolutions, called after this, switches the phase convolution to FP8 too. The 3×3
  /// weight stays: an explicit output_size other than 2× runs the plain path. Returns whether it switched.
  bool use_phase_convolution();
  /// Whether forward() runs the phase convolution (use_phase_convolution).
  bool runs_phase_convolution() const { return !phase_conv_.is_empty(); }

 private:
  Upsample2DOptions options_;
  Conv2d conv_{nullptr};
  Conv2d phase_conv_{nullptr};  // [4·out, in, 2, 2], padding 1, set by use_phase_convolution
};
TORCH_MODULE(Upsample2D);

/// The weight of the phase convolution equal to nearest ×2 upsampling followed by the 3×3 convolution `w`
/// [O, I, 3, 3] with padding 1: [4·O, I, 2, 2], whose output channels [p·O, (p + 1)·O) hold phase p = 2a + b,
/// the output pixels (2i + a, 2j + b), at pixel (i + a, j + b) of the 2×2 convolution with padding 1 over the
/// low-resolution image. Along each axis, phase 0 reads rows i − 1 and i with taps (w₀, w₁ + w₂), phase 1
/// rows i and i + 1 with taps (w₀ + w₁, w₂). The sums are taken in float64 in a fixed order and rounded
/// once to w's dtype: the same bits on every device. Keeps w's memory format.
at::Tensor upsample_conv_phase_weight(const at::Tensor& w);

/// Switches every Upsample2D in `model` to its phase convolution (Upsample2D::use_phase_convolution), unless
/// SDXLB_DISABLE_FUSION lists "upsampleconv". For a model that runs on the GPU; call after LoRA and before
/// use_fp8_convolutions (an upsampler switched to FP8 first keeps its FP8 3×3 convolution). Returns how many
/// it switched.
int64_t use_phase_upsamplers(torch::nn::Module& model);

}  // namespace sdxlb
