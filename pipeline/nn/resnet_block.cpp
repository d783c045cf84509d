#include "pipeline/nn/resnet_block.h"

#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/fused_ops.h"

namespace sdxlb {

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& options) : options_(options) {
  const int64_t in = options.in_channels();
  const int64_t out = options.out_channels();
  const int64_t groups_out = options.groups_out().value_or(options.groups());
  norm1_ = register_module("norm1", GroupNorm(options.groups(), in, options.eps()));
  conv1_ = register_module("conv1", Conv2d(in, out, 3, 1, 1));
  if (options.temb_channels()) {
    time_emb_proj_ = register_module("time_emb_proj", Linear(*options.temb_channels(), out));
  }
  norm2_ = register_module("norm2", GroupNorm(groups_out, out, options.eps()));
  conv2_ = register_module("conv2", Conv2d(out, out, 3, 1, 1));
  if (in != out) conv_shortcut_ = register_module("conv_shortcut", Conv2d(in, out, 1, 1, 0));
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  run_unit_hook();
  if (fused_group_norm_applies(x)) return forward_fused(x, temb);
  at::Tensor h = at::silu(norm1_(x));
  h = conv1_(h);
  if (time_emb_proj_) h = h + time_projection(temb).unsqueeze(-1).unsqueeze(-1);
  h = at::silu(norm2_(h));
  h = conv2_(h);
  at::Tensor shortcut = conv_shortcut_ ? conv_shortcut_(x) : x;
  at::Tensor out = shortcut + h;
  // x / 1.0 is exact, so the common case skips a kernel without changing a bit.
  if (options_.output_scale_factor() != 1.0) out = out / options_.output_scale_factor();
  return out;
}

at::Tensor ResnetBlock2DImpl::time_projection(const at::Tensor& temb) {
  TORCH_CHECK(temb.defined(), "ResnetBlock2D with temb_channels=", *options_.temb_channels(),
              " needs a time embedding");
  if (time_offset_ >= 0) {
    TORCH_CHECK(temb.dim() == 2 && temb.size(1) >= time_offset_ + options_.out_channels(),
                "ResnetBlock2D: the joint time projection [B, total] must hold channels ", time_offset_,
                " to ", time_offset_ + options_.out_channels(), ", got ", temb.sizes());
    return temb.narrow(1, time_offset_, options_.out_channels());
  }
  // diffusers applies the nonlinearity inside every resnet (skip_time_act false), then adds per channel.
  return time_emb_proj_(at::silu(temb));
}

bool ResnetBlock2DImpl::can_hand_over_time_projection() const {
  return time_emb_proj_ && time_offset_ < 0 && !time_emb_proj_->is_fp8() && time_emb_proj_->bias.defined();
}

std::optional<std::pair<at::Tensor, at::Tensor>> ResnetBlock2DImpl::hand_over_time_projection(
    int64_t offset) {
  if (!can_hand_over_time_projection() || offset < 0) return std::nullopt;
  at::NoGradGuard no_grad;
  // detach() keeps the storage that set_data below takes from the layer.
  std::pair<at::Tensor, at::Tensor> wb{time_emb_proj_->weight.detach(), time_emb_proj_->bias.detach()};
  time_emb_proj_->weight.set_data(at::empty({0}, wb.first.options()));
  time_emb_proj_->bias.set_data(at::empty({0}, wb.second.options()));
  time_offset_ = offset;
  return wb;
}

// The same computation on the GPU in fewer passes over memory: conv1's bias and the time embedding are added
// inside norm2's kernel, and conv2's and the shortcut convolution's biases with the skip connection in one
// more.
namespace {

// conv(silu(norm(x + add_c + add_nc))) without the convolution's bias, the GroupNorm fused. An FP8
// convolution takes its input quantised by the GroupNorm kernel (the same bits as quantising the GroupNorm's
// output, without writing that output).
at::Tensor norm_silu_conv(GroupNormImpl& norm, Conv2dImpl& conv, const at::Tensor& x,
                          const at::Tensor& add_c = {}, const at::Tensor& add_nc = {}) {
  if (conv.is_fp8())
    return conv.forward_without_bias(norm.forward_act_e4m3(x, /*silu=*/true, add_c, add_nc), x.scalar_type());
  return conv.forward_without_bias(norm.forward_act(x, /*silu=*/true, add_c, add_nc));
}

}  // namespace

at::Tensor ResnetBlock2DImpl::forward_fused(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = norm_silu_conv(*norm1_, *conv1_, x);
  const at::Tensor temb_out = time_emb_proj_ ? time_projection(temb) : at::Tensor();
  h = norm_silu_conv(*norm2_, *conv2_, h, conv1_->bias, temb_out);
  at::Tensor out =
      conv_shortcut_
          ? add_bias_residual(h, conv2_->bias, conv_shortcut_->forward_without_bias(x), conv_shortcut_->bias)
          : add_bias_residual(h, conv2_->bias, x);
  if (options_.output_scale_factor() != 1.0) out = out / options_.output_scale_factor();
  return out;
}

Downsample2DImpl::Downsample2DImpl(const Downsample2DOptions& options) : options_(options) {
  const int64_t out = options.out_channels().value_or(options.channels());
  if (options.use_conv()) {
    conv_ =
        register_module("conv", Conv2d(options.channels(), out, options.kernel_size(), 2, options.padding()));
  } else {
    TORCH_CHECK(out == options.channels(), "Downsample2D without conv cannot change channels (",
                options.channels(), " -> ", out, ")");
  }
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.channels(), "Downsample2D expects [B, ",
              options_.channels(), ", H, W], got ", x.sizes());
  if (!conv_) return at::avg_pool2d(x, {2, 2}, {2, 2});
  if (options_.padding() == 0) return conv_(at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  return conv_(x);
}

Upsample2DImpl::Upsample2DImpl(const Upsample2DOptions& options) : options_(options) {
  const int64_t out = options.out_channels().value_or(options.channels());
  if (options.use_conv()) {
    conv_ =
        register_module("conv", Conv2d(options.channels(), out, options.kernel_size(), 1, options.padding()));
  }
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, at::IntArrayRef output_size) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.channels(), "Upsample2D expects [B, ",
              options_.channels(), ", H, W], got ", x.sizes());
  // F.interpolate(mode="nearest") calls upsample_nearest2d with either the scale factors or the size.
  at::Tensor h;
  if (output_size.empty() ||
      (output_size.size() == 2 && output_size[0] == 2 * x.size(2) && output_size[1] == 2 * x.size(3))) {
    // Scale 2, or the size it gives: the same source pixels (floor(dst / 2)) either way. The phase
    // convolution (in FP8 too where use_fp8_convolutions switched it: it quantises x per sample) needs no
    // upsampled image. An FP8 3×3 convolution takes the upsampled image quantised (the bits of quantising it
    // after upsampling, for a quarter of the work on the GPU).
    if (phase_conv_) return upsample_phases(phase_conv_->forward_without_bias(x), conv_->bias);
    if (conv_ && conv_->is_fp8()) return conv_->forward_fp8(upsample_nearest2x_e4m3(x), x.scalar_type());
    h = upsample_nearest2x(x);
  } else {
    TORCH_CHECK(output_size.size() == 2, "Upsample2D output_size must be (H, W), got ", output_size);
    h = at::upsample_nearest2d(x, at::OptionalIntArrayRef(output_size), std::nullopt);
  }
  return conv_ ? conv_(h) : h;
}

bool Upsample2DImpl::use_phase_convolution() {
  if (!conv_ || conv_->is_fp8() || phase_conv_ || conv_->kernel_size() != 3 || conv_->stride() != 1 ||
      conv_->padding() != 1)
    return false;
  at::NoGradGuard no_grad;
  const at::Tensor& w = conv_->weight;
  Conv2d phase(w.size(1), 4 * w.size(0), /*kernel_size=*/2, /*stride=*/1, /*padding=*/1, /*bias=*/false);
  phase->weight.set_data(upsample_conv_phase_weight(w));
  phase_conv_ = register_module("phase_conv", phase);
  return true;
}

at::Tensor upsample_conv_phase_weight(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3,
              "upsample_conv_phase_weight takes a 3x3 convolution's weight [O, I, 3, 3], got ", w.sizes());
  const at::Tensor k = w.to(at::kDouble);
  // The two taps of phase `a` along dimension `dim` (2: rows, 3: columns) of a [.., 3, ..] weight.
  const auto taps = [](const at::Tensor& t, int64_t dim, int64_t a) {
    const at::Tensor t0 = t.select(dim, 0), t1 = t.select(dim, 1), t2 = t.select(dim, 2);
    return a == 0 ? at::stack({t0, t1 + t2}, dim) : at::stack({t0 + t1, t2}, dim);
  };
  std::vector<at::Tensor> phases;
  for (int64_t a = 0; a < 2; ++a) {
    const at::Tensor rows = taps(k, 2, a);  // [O, I, 2, 3]
    for (int64_t b = 0; b < 2; ++b) phases.push_back(taps(rows, 3, b));
  }
  return at::cat(phases, 0).to(w.scalar_type()).contiguous(w.suggest_memory_format());
}

int64_t use_phase_upsamplers(torch::nn::Module& model) {
  if (!fusion_enabled(Fusion::kUpsampleConv)) return 0;
  int64_t switched = 0;
  for (const auto& item : model.modules())
    if (auto* up = item->as<Upsample2DImpl>(); up != nullptr && up->use_phase_convolution()) ++switched;
  return switched;
}

}  // namespace sdxlb
