// FP8 (e4m3) convolutions for the UNet's resnets: part of `unet_precision: fp8` (issue 17), beside the FP8
// linear layers of fp8.h.
//
// Which convolutions: conv1 and conv2 of every ResnetBlock2D inside the UNet. conv_in, conv_out, the 1×1
// conv_shortcut of a resnet, and the convolutions of the down- and upsamplers stay in the model's dtype (the
// list MLPerf's FP8 submissions kept in fp16 has conv_in, conv_out and some shortcuts; the resamplers are
// 6 of the UNet's 50 3×3 convolutions).
//
// Scales. The weight has one float32 scale per output channel, computed at load. The input (a GroupNorm +
// SiLU output) has one scale per image, from that image's largest magnitude on every call: an image's
// numbers depend on that image only, so images stay bit-identical across batch sizes and rank counts within
// the FP8 path. The product runs in cuDNN's e4m3 convolution (Hopper) with float32 accumulation, both
// scales applied in its epilogue, and the model's dtype out. On the CPU (tests only; the pipeline refuses
// FP8 there) the same product of the dequantised operands runs in float32.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

namespace sdxlb {

/// Whether cuDNN's FP8 convolution runs on `device` (a Hopper GPU or newer and a build with cuDNN's
/// frontend); when not, `why` (if given) says why in a sentence.
bool fp8_conv_supported(const c10::Device& device, std::string* why = nullptr);

/// A convolution's weight [out, in, k, k] in e4m3 (channels-last memory, as cuDNN's FP8 kernels read it)
/// with per-output-channel scales [out] (float32): scale = max(amax(|W[o]|) / 448, 2^-24).
struct Fp8ConvWeight {
  at::Tensor q;
  at::Tensor scale;
};
Fp8ConvWeight quantize_conv_weight(const at::Tensor& weight);

/// Images x [N, C, H, W] in e4m3 (x's memory layout) with one scale per image [N] (float32), scale =
/// max(amax(|x[n]|) / 448, 2^-24) and q = e4m3(x · (1 / scale)) rounded to nearest even: fp8.h's per-row
/// rule with an image as the row.
struct Fp8Images {
  at::Tensor q;
  at::Tensor scale;
};
/// ATen ops on any device: the reference.
Fp8Images quantize_images_reference(const at::Tensor& x);
/// The same numbers; two CUDA kernels for fp16/bf16 CUDA input that is contiguous or channels-last, else
/// the reference.
Fp8Images quantize_images(const at::Tensor& x);

/// conv2d(x, W) (zero padding, square stride and padding, no bias) of e4m3 operands with float32
/// accumulation, dequantised by both scales, as `out_dtype` in channels-last memory. CUDA: one cuDNN graph
/// per shape (built on first use, before a CUDA graph captures it), on a device where fp8_conv_supported().
/// CPU: the reference, float32 convolution of the dequantised operands.
at::Tensor fp8_conv2d(const Fp8Images& x, const Fp8ConvWeight& w, int64_t stride, int64_t padding,
                      at::ScalarType out_dtype);
at::Tensor fp8_conv2d_reference(const Fp8Images& x, const Fp8ConvWeight& w, int64_t stride, int64_t padding,
                                at::ScalarType out_dtype);

/// Switches conv1 and conv2 of every ResnetBlock2D in `unet` to FP8: each keeps its e4m3 weight and scales
/// and releases its fp16/bf16 weight. Call on a loaded UNet, after LoRA, on a device where
/// fp8_conv_supported() (or the CPU, in tests). Returns how many convolutions it switched.
int64_t use_fp8_convs(torch::nn::Module& unet);

}  // namespace sdxlb
