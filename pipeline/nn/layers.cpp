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

}  // namespace

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = empty_parameter(*this, "weight", {out_features, in_features});
  if (with_bias) bias = empty_parameter(*this, "bias", {out_features});
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  if (is_fp8()) return fp8_linear(x, fp8, bias);
  return at::linear(x, weight, bias);
}

at::Tensor LinearImpl::forward_fp8(const Fp8Activation& x) {
  TORCH_CHECK(is_fp8(), "Linear::forward: an FP8 activation for a layer that is not FP8");
  return fp8_linear(x, fp8, bias);
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
  if (is_fp8()) return fp8_conv3x3(x, fp8);
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
  return fp8_conv3x3(x.q, x.pixel_scale, fp8, dtype);
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
