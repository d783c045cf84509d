#include "pipeline/nn/layers.h"

#include <ATen/ATen.h>

#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/gpu_numerics.h"

namespace sdxlb {
namespace {

// Registers an uninitialised inference parameter (see the header for why it is not initialised).
at::Tensor empty_parameter(torch::nn::Module& m, const char* name, at::IntArrayRef shape) {
  return m.register_parameter(name, at::empty(shape), /*requires_grad=*/false);
}

// An empty tensor like t (a released weight's placeholder: it keeps its dtype and device).
at::Tensor emptied(const at::Tensor& t) {
  return at::empty({0}, t.options());
}

}  // namespace

at::Tensor hold_buffer(torch::nn::Module& m, const std::string& name, const at::Tensor& t) {
  if (at::Tensor* held = m.named_buffers(/*recurse=*/false).find(name); held != nullptr) {
    at::NoGradGuard no_grad;
    held->set_data(t);
    return *held;
  }
  return m.register_buffer(name, t);
}

std::vector<at::Tensor> weights_and_buffers(const torch::nn::Module& m) {
  std::vector<at::Tensor> tensors = m.parameters();
  for (const auto& b : m.buffers()) tensors.push_back(b);
  return tensors;
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = empty_parameter(*this, "weight", {out_features, in_features});
  if (with_bias) bias = empty_parameter(*this, "bias", {out_features});
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  if (is_fp8()) return forward_fp8(quantize_activation(x));
  return at::linear(x, weight, bias);
}

at::Tensor LinearImpl::forward_fp8(const Fp8Activation& x) {
  TORCH_CHECK(is_fp8(), "Linear::forward: an FP8 activation for a layer that is not FP8");
  TORCH_CHECK(fp8_.q.numel() > 0, "Linear::forward: this layer's FP8 weight was handed to a fused GEMM");
  return fp8_linear(x, fp8_, bias);
}

void LinearImpl::use_fp8(const Fp8Weight& w) {
  at::NoGradGuard no_grad;
  fp8_.q = hold_buffer(*this, "fp8_weight", w.q);
  fp8_.scale = hold_buffer(*this, "fp8_scale", w.scale);
  fp8_.fast_accum = w.fast_accum;
  weight.set_data(emptied(weight));
}

Fp8Weight LinearImpl::hand_over_fp8() {
  TORCH_CHECK(is_fp8(), "Linear::hand_over_fp8 on a layer that is not FP8");
  at::NoGradGuard no_grad;
  // Handles of their own on the same storage, before the buffers let go of it.
  Fp8Weight w{fp8_.q.detach(), fp8_.scale.detach(), fp8_.fast_accum};
  fp8_.q.set_data(emptied(fp8_.q));
  fp8_.scale.set_data(emptied(fp8_.scale));
  return w;
}

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
                       int64_t padding, bool with_bias)
    : kernel_size_(kernel_size), stride_(stride), padding_(padding) {
  weight = empty_parameter(*this, "weight", {out_channels, in_channels, kernel_size, kernel_size});
  if (with_bias) bias = empty_parameter(*this, "bias", {out_channels});
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  if (bias.defined() && (x.is_cuda() || is_fp8())) {
    // What at::conv2d does on cuDNN (the convolution, then the bias added in place), with the add in our
    // vectorised kernel where it takes the output: the same bits.
    at::Tensor y = forward_without_bias(x);
    return add_channel_bias_(y, bias);
  }
  return at::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
}

at::Tensor Conv2dImpl::forward_without_bias(const at::Tensor& x) {
  if (is_fp8()) return fp8_conv(x, fp8_);
  if (kernel_size_ == 1 && stride_ == 1 && padding_ == 0 && x.is_cuda() && x.dim() == 4 &&
      (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) && place_invariant_kernels()) {
    // A 1x1 convolution is a GEMM on the channels-last rows [N·H·W, C]: run as the linears run
    // (gpu_numerics.h), each pixel's sum does not depend on its place, where cuDNN chooses a cuBLASLt
    // kernel of its own by shape.
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), out = weight.size(0);
    const at::Tensor rows =
        x.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({-1, c});
    return at::mm(rows, weight.reshape({out, c}).t()).view({n, h, w, out}).permute({0, 3, 1, 2});
  }
  return at::conv2d(x, weight, {}, {stride_, stride_}, {padding_, padding_});
}

at::Tensor Conv2dImpl::forward_without_bias(const E4m3Samples& x, at::ScalarType dtype) {
  TORCH_CHECK(is_fp8(), "Conv2d::forward_without_bias: an FP8 input for a convolution that is not FP8");
  return fp8_conv(x.q, x.pixel_scale, fp8_, dtype);
}

void Conv2dImpl::use_fp8(const Fp8ConvWeight& w) {
  TORCH_CHECK((kernel_size_ == 3 || kernel_size_ == 2) && stride_ == 1 && padding_ == 1,
              "Conv2d::use_fp8: FP8 runs 3x3 and 2x2 convolutions of stride 1 and padding 1 only");
  at::NoGradGuard no_grad;
  fp8_.q = hold_buffer(*this, "fp8_weight", w.q);
  fp8_.scale = hold_buffer(*this, "fp8_scale", w.scale);
  weight.set_data(emptied(weight));
}

at::Tensor Conv2dImpl::forward_fp8(const E4m3Samples& x, at::ScalarType dtype) {
  at::Tensor y = forward_without_bias(x, dtype);
  return bias.defined() ? add_channel_bias_(y, bias) : y;
}

GroupNormImpl::GroupNormImpl(int64_t num_groups, int64_t num_channels, double eps)
    : num_groups_(num_groups), eps_(eps) {
  weight = empty_parameter(*this, "weight", {num_channels});
  bias = empty_parameter(*this, "bias", {num_channels});
}

at::Tensor GroupNormImpl::forward(const at::Tensor& x) {
  return at::group_norm(x, num_groups_, weight, bias, eps_);
}

at::Tensor GroupNormImpl::forward_act(const at::Tensor& x, bool silu, const at::Tensor& add_c,
                                      const at::Tensor& add_nc) {
  return group_norm_act(x, num_groups_, weight, bias, eps_, silu, add_c, add_nc);
}

E4m3Samples GroupNormImpl::forward_act_e4m3(const at::Tensor& x, bool silu, const at::Tensor& add_c,
                                            const at::Tensor& add_nc) {
  return group_norm_act_e4m3(x, num_groups_, weight, bias, eps_, silu, add_c, add_nc);
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  weight = empty_parameter(*this, "weight", {dim});
  bias = empty_parameter(*this, "bias", {dim});
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  TORCH_CHECK(x.size(-1) == dim_, "LayerNorm over ", dim_, " features got input ", x.sizes());
  return sdxlb::layer_norm(x, weight, bias, eps_);
}

std::pair<at::Tensor, at::Tensor> LayerNormImpl::forward_add(const at::Tensor& x,
                                                             const at::Tensor& residual) {
  TORCH_CHECK(x.size(-1) == dim_, "LayerNorm over ", dim_, " features got input ", x.sizes());
  return add_layer_norm(x, residual, weight, bias, eps_);
}

Fp8Activation LayerNormImpl::forward_fp8(const at::Tensor& x) {
  TORCH_CHECK(x.size(-1) == dim_, "LayerNorm over ", dim_, " features got input ", x.sizes());
  E4m3Rows r = layer_norm_e4m3(x, {}, weight, bias, eps_, nullptr);
  return make_activation(r.q, r.scale, x.sizes().vec(), x.scalar_type());
}

std::pair<at::Tensor, Fp8Activation> LayerNormImpl::forward_add_fp8(const at::Tensor& x,
                                                                    const at::Tensor& residual) {
  TORCH_CHECK(x.size(-1) == dim_, "LayerNorm over ", dim_, " features got input ", x.sizes());
  at::Tensor sum;
  E4m3Rows r = layer_norm_e4m3(x, residual, weight, bias, eps_, &sum);
  return {sum, make_activation(r.q, r.scale, x.sizes().vec(), x.scalar_type())};
}

}  // namespace sdxlb
