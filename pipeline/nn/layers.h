// Leaf layers (Linear, Conv2d, GroupNorm, LayerNorm) whose parameters are allocated but never initialised.
//
// Why not torch::nn::Linear and friends: those fill every weight with Kaiming-uniform random numbers on
// construction. For the SDXL UNet that is 2.6 billion random draws and 10 GB of touched fp32 memory before
// the checkpoint overwrites all of it. Here parameters are `at::empty` (pages are not touched until written),
// and a model is only usable after load_module_weights() filled every parameter (it fails on any missing key,
// so uninitialised memory never reaches a forward pass).
//
// Parameter names are PyTorch's ("weight", "bias"), so checkpoint keys are a lookup. Parameters do not
// require grad: these modules are for inference. Forward calls are the same ATen ops as torch.nn.functional,
// so results match PyTorch bit for bit on the same device. Modules are immutable after loading and safe to
// call from several threads.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "pipeline/nn/fp8.h"
#include "pipeline/nn/fused_ops.h"

namespace sdxlb {

/// y = x W^T + b over the last axis (torch.nn.Linear). weight [out, in], bias [out].
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;  ///< [out_features, in_features]
  at::Tensor bias;    ///< [out_features], undefined without bias
  /// On an input quantised ahead (fp8.h); only for a layer switched to FP8.
  at::Tensor forward_fp8(const Fp8Activation& x);

  /// Switches this layer to FP8 (use_fp8_linears, fp8.h): forward() then runs fp8_linear with `w` (the
  /// weight in e4m3 with per-output-channel scales), and the weight's bytes are released (the parameter keeps
  /// its name, now empty). w's tensors become the layer's buffers "fp8_weight" and "fp8_scale", so that
  /// to(device) and the weight streamer move them with it.
  void use_fp8(const Fp8Weight& w);
  /// Hands the FP8 weight over to a fused GEMM (Attention::fuse_fp8_projections): returns it and leaves the
  /// layer's buffers empty. is_fp8() stays true; the layer's own forward calls are then an error.
  Fp8Weight hand_over_fp8();
  bool is_fp8() const { return fp8_.q.defined(); }
  /// The FP8 weight (use_fp8); undefined for a layer in the model's dtype, empty once handed over.
  const Fp8Weight& fp8() const { return fp8_; }

 private:
  Fp8Weight fp8_;
};
TORCH_MODULE(Linear);

/// 2-D convolution with zero padding (torch.nn.Conv2d, square kernel). weight [out, in, k, k], bias [out].
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
             int64_t padding = 0, bool bias = true);
  at::Tensor forward(const at::Tensor& x);
  /// The convolution without its bias (for a caller that adds the bias in a fused kernel of its own). With
  /// place_invariant_kernels() (gpu_numerics.h), a 1x1 convolution on the GPU in fp16/bf16 runs as a GEMM
  /// on the channels-last rows, its output channels-last.
  at::Tensor forward_without_bias(const at::Tensor& x);
  /// The same on an input quantised ahead (GroupNorm::forward_act_e4m3), the output in `dtype`; only for a
  /// convolution switched to FP8.
  at::Tensor forward_without_bias(const E4m3Samples& x, at::ScalarType dtype);
  /// forward() on an input quantised ahead (upsample_nearest2x_e4m3): the convolution, then its bias as
  /// forward() adds it to an FP8 convolution's output.
  at::Tensor forward_fp8(const E4m3Samples& x, at::ScalarType dtype);

  at::Tensor weight;  ///< [out_channels, in_channels, k, k]
  at::Tensor bias;    ///< [out_channels], undefined without bias

  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t padding() const { return padding_; }

  /// Switches a 3x3 (or 2x2), stride-1, padding-1 convolution to FP8 (use_fp8_convolutions, fp8.h): the
  /// forward calls then run fp8_conv with `w` (the weight in e4m3 with per-output-channel scales), and the
  /// weight's bytes are released. w's tensors become the buffers "fp8_weight" and "fp8_scale", so that
  /// to(device) and the weight streamer move them with the layer.
  void use_fp8(const Fp8ConvWeight& w);
  bool is_fp8() const { return fp8_.q.defined(); }
  /// The FP8 weight (use_fp8); undefined for a convolution in the model's dtype.
  const Fp8ConvWeight& fp8() const { return fp8_; }

 private:
  Fp8ConvWeight fp8_;
  int64_t kernel_size_;
  int64_t stride_;
  int64_t padding_;
};
TORCH_MODULE(Conv2d);

/// Registers `t` as `m`'s buffer `name`, or where `m` has that buffer already, points the buffer at t's data
/// (set_data: every handle of the buffer follows). Returns the buffer. What a module computes with beyond its
/// checkpoint's parameters (FP8 weights, their scales) is held this way, so that Module::to and the weight
/// streamer (runtime/weight_streamer.h), which re-point parameters and buffers, move it too.
at::Tensor hold_buffer(torch::nn::Module& m, const std::string& name, const at::Tensor& t);

/// Every tensor `m` (with its submodules) computes with: its parameters, then its buffers (hold_buffer).
/// What the weight streamer packs and moves for a unit.
std::vector<at::Tensor> weights_and_buffers(const torch::nn::Module& m);

/// Group normalisation over [B, C, ...] with a per-channel affine (torch.nn.GroupNorm, affine=True).
class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t num_groups, int64_t num_channels, double eps);
  at::Tensor forward(const at::Tensor& x);
  /// silu?(forward(x + add_c[c] + add_nc[n, c])), fused on the GPU where it can be (fused_ops.h,
  /// group_norm_act); add_c and add_nc may be undefined.
  at::Tensor forward_act(const at::Tensor& x, bool silu, const at::Tensor& add_c = {},
                         const at::Tensor& add_nc = {});
  /// forward_act's output quantised per sample to e4m3, in the GroupNorm kernel on the GPU (fused_ops.h,
  /// group_norm_act_e4m3: at a scale from a bound of the sample's largest output): for an output that only an
  /// FP8 convolution takes.
  E4m3Samples forward_act_e4m3(const at::Tensor& x, bool silu, const at::Tensor& add_c = {},
                               const at::Tensor& add_nc = {});

  at::Tensor weight;  ///< [num_channels]
  at::Tensor bias;    ///< [num_channels]

 private:
  int64_t num_groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

/// Layer normalisation over the last axis with an affine (torch.nn.LayerNorm(dim, eps)).
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  /// {h, forward(h)} with h = x + residual, in one kernel on the GPU (fused_ops.h, add_layer_norm).
  std::pair<at::Tensor, at::Tensor> forward_add(const at::Tensor& x, const at::Tensor& residual);
  /// quantize_activation(forward(x)), quantised in the LayerNorm kernel on the GPU (fused_ops.h,
  /// layer_norm_e4m3): for an output that only FP8 linears take.
  Fp8Activation forward_fp8(const at::Tensor& x);
  /// {h, quantize_activation(forward(h))} with h = x + residual, likewise.
  std::pair<at::Tensor, Fp8Activation> forward_add_fp8(const at::Tensor& x, const at::Tensor& residual);

  at::Tensor weight;  ///< [dim]
  at::Tensor bias;    ///< [dim]

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

}  // namespace sdxlb
