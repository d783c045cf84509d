// FP8 (e4m3) linear layers for the UNet's transformer blocks: the opt-in `unet_precision: fp8` (issue 17).
//
// Scales: each weight row (output channel) has its own float32 scale, computed once at load; each activation
// row (token) gets its own scale on every call, from that row's largest magnitude (dynamic, per token), so
// there is no calibration pass and a token's numbers depend only on that token: images stay bit-identical
// across batch sizes and rank counts within the FP8 path. The products accumulate in float32 with the
// model's dtype as output, in at::_scaled_mm (cuBLASLt on Hopper), or with SDXLB_INVARIANT_KERNELS=1
// (gpu_numerics.h) in our CUTLASS GEMM (kernels/fp8_gemm_kernel.h) on Hopper.
//
// Which layers: every Linear inside the UNet's Transformer2DModels (proj_in, proj_out, and in each
// transformer block attn1's to_q/to_k/to_v/to_out, attn2's to_q/to_out, and the feed-forward's two) except
// attn2's to_k and to_v, whose input is the prompt (77 tokens, projected once per batch). They stay in the
// model's dtype, as do the normalisations, the time embeddings and attention itself.
//
// Convolutions (use_fp8_convolutions: the opt-in `convolution_precision: fp8` on top): the 3x3 convolutions
// of the UNet's resnets and upsamplers run as e4m3 implicit GEMMs (CUTLASS, Hopper). Their activations are
// quantised per sample (one scale per image of the batch, from its largest magnitude: a convolution mixes
// neighbouring pixels, so a per-pixel scale cannot be factored out of its sums), their weights per output
// channel. conv_in, conv_out, the downsamplers (stride 2) and the 1x1 shortcuts stay in the model's dtype.
//
// FP8 GEMMs need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper); elsewhere the key is refused,
// never silently run in fp16. The quantisation math itself runs anywhere (the CPU reference of the tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

namespace sdxlb {

/// Whether FP8 GEMMs run on `device`. When not, `why` (if given) says why in a sentence for an error message.
bool fp8_supported(const c10::Device& device, std::string* why = nullptr);

/// The e4m3 scale of values whose largest magnitude is amax (any shape, any floating type): max(amax / 448,
/// 2^-24) in float32, the scale every per-row, per-sample and per-image quantisation of ours uses.
at::Tensor e4m3_scale_of(const at::Tensor& amax);

/// Per-row e4m3 quantisation of x [rows, cols]: {q [rows, cols] float8_e4m3fn, scale [rows, 1] float32} with
/// scale = max(amax(|row|) / 448, 2^-24) and q = round-to-nearest-even(row · (1 / scale)), computed in
/// float32 (the reciprocal rounded to float32 once per row, as the kernels multiply by it). ATen ops on any
/// device: the reference.
std::pair<at::Tensor, at::Tensor> quantize_rows_reference(const at::Tensor& x);
/// The same numbers; one CUDA kernel for contiguous fp16/bf16 CUDA input, else the reference.
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x);

/// A Linear layer's weight [out, in] in e4m3, with per-output-channel scales [1, out] (float32): the
/// per-row quantisation of the weight.
struct Fp8Weight {
  at::Tensor q;
  at::Tensor scale;
  /// cuBLASLt's fast accumulation (CUBLASLT_MATMUL_DESC_FAST_ACCUM: the tensor cores' own accumulator, not
  /// promoted to a float32 sum every few steps of K, as TensorRT's FP8 GEMMs run); false: float32 throughout.
  bool fast_accum = false;
};
Fp8Weight quantize_weight(const at::Tensor& weight);

/// An activation x [..., in] quantised per token for fp8_linear: q [rows, in] e4m3 and scale [rows, 1]
/// float32, with x's shape and dtype (the output's). Quantise once when several layers take the same input.
struct Fp8Activation {
  at::Tensor q;
  at::Tensor scale;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kHalf;
};
Fp8Activation quantize_activation(const at::Tensor& x);
/// An activation quantised ahead by a fused kernel (fused_ops.h: layer_norm_e4m3, geglu_e4m3): its rows
/// q [rows, in] and scale [rows, 1], for an input that had `shape` and `dtype`.
Fp8Activation make_activation(at::Tensor q, at::Tensor scale, std::vector<int64_t> shape,
                              at::ScalarType dtype);
/// fp8_linear below on an input quantised ahead.
at::Tensor fp8_linear(const Fp8Activation& x, const Fp8Weight& w, const at::Tensor& bias);
/// Whether our CUTLASS GEMMs (kernels/fp8_gemm_kernel.h) may take x Wᵀ: a CUDA fp16 input on a Hopper GPU
/// (compute capability 9.0), fast accumulation, a contiguous weight, and a build with the kernels. The
/// launchers may still refuse the shape (cudaErrorNotSupported); callers then fall back to cuBLASLt.
bool our_fp8_gemm_takes(const Fp8Activation& x, const Fp8Weight& w);

/// y = x Wᵀ + b for x [..., in] with x quantised per token and W per output channel: e4m3 products with
/// float32 accumulation, output and bias in x's dtype. On CUDA (compute capability 8.9+) one e4m3 GEMM:
/// cuBLASLt's, or with place_invariant_kernels() ours on Hopper for fp16 with fast accumulation where in is
/// a multiple of 128 (the header above); in and out must be multiples of 16. On the CPU (tests) the same
/// product of the dequantised operands in float32.
at::Tensor fp8_linear(const at::Tensor& x, const Fp8Weight& w, const at::Tensor& bias);

/// A 3x3 (or 2x2) convolution's weight [out, in, k, k] in e4m3 for fp8_conv: q [out, k, k, in] (the kernel's
/// channels-last filter layout) with per-output-channel scales [out] (float32): the per-row quantisation
/// (quantize_rows) of the weight's [out, k · k · in] rows in that order.
struct Fp8ConvWeight {
  at::Tensor q;
  at::Tensor scale;
};
Fp8ConvWeight quantize_conv_weight(const at::Tensor& weight);

/// Per-sample e4m3 quantisation of activations x [N, C, H, W] (any memory format): {q [N, H, W, C] e4m3,
/// scale [N, 1] float32}, quantize_rows_reference of x's channels-last rows [N, H · W · C]. ATen ops: the
/// reference.
std::pair<at::Tensor, at::Tensor> quantize_samples_reference(const at::Tensor& x);
/// The same numbers; for fp16/bf16 CUDA input two CUDA kernels (each image's largest magnitude, then the
/// conversion), else the reference.
std::pair<at::Tensor, at::Tensor> quantize_samples(const at::Tensor& x);

/// Whether fp8_conv has its kernel on `device`: a GPU of compute capability 9.0 (Hopper) and a build with
/// CUTLASS. When not, `why` (if given) says why in a sentence.
bool fp8_conv_supported(const c10::Device& device, std::string* why = nullptr);

/// conv2d(x, W, stride 1, padding 1) of a 3x3 weight (or a 2x2 one: an upsampler's phase convolution,
/// resnet_block.h, whose output is [N, out, H + 1, W + 1]), with x quantised per sample and W per output
/// channel: e4m3 products accumulated in float32 (on the GPU the tensor cores' own accumulator, as
/// fast_accum), the two scales applied to the sums, the output in x's dtype. On CUDA
/// (fp8_conv_supported, fp16 input) quantize_samples' kernels and CUTLASS's implicit-GEMM kernel, the output
/// channels-last; elsewhere the same product of the dequantised operands in float32 (the CPU reference of the
/// tests).
at::Tensor fp8_conv(const at::Tensor& x, const Fp8ConvWeight& w);
/// The same on an input quantised ahead (fused_ops.h, group_norm_act_e4m3): q [N, H, W, C] e4m3 and each
/// sample's scale once per pixel, pixel_scale [N, H · W] float32; the output in `dtype` (fp16 on the GPU).
at::Tensor fp8_conv(const at::Tensor& q, const at::Tensor& pixel_scale, const Fp8ConvWeight& w,
                    at::ScalarType dtype);

/// Which of the layers listed above use_fp8_linears switches, and how their GEMMs accumulate; the defaults
/// are what `unet_precision: fp8` runs (measured on the H200, bench/results/2026-12-03-h200-fp8.md: fast
/// accumulation is 1.06x faster per UNet call at batch 4 and moves its error against diffusers' fp16 from
/// 3.07e-2 to 3.13e-2). The benchmark (bench/unet_parity) varies them to measure what each group is worth.
struct Fp8Layers {
  bool attention = true;     ///< attn1's to_q/to_k/to_v/to_out, attn2's to_q/to_out
  bool feed_forward = true;  ///< ff.net.0.proj and ff.net.2
  bool projections = true;   ///< each Transformer2DModel's proj_in and proj_out
  bool fast_accum = true;    ///< Fp8Weight::fast_accum
  /// The resnets' and upsamplers' 3x3 convolutions (use_fp8_convolutions, where fp8_conv_supported): what
  /// `convolution_precision: fp8` adds; off by default, as that key is.
  bool convolutions = false;
};

/// Switches the UNet's transformer linears listed above (those `which` selects) to FP8: each keeps its e4m3
/// weight and scales (as module buffers, layers.h: they move with the UNet and its weight streamer) and
/// releases its fp16/bf16 weight (half the bytes). Call on a loaded UNet, after LoRA, for a device where
/// fp8_supported(). A self-attention whose to_q, to_k and to_v all switched runs them as one GEMM
/// (Attention::fuse_fp8_projections). The e4m3 weights stay where the UNet's weights are; `quantize_on`
/// (default: there) is where they are quantised, one layer at a time: a streamed UNet, loaded in host
/// memory, is quantised on its GPU so that its numbers are the resident UNet's bit for bit. Returns how
/// many layers it switched.
int64_t use_fp8_linears(torch::nn::Module& unet, const Fp8Layers& which = {},
                        const std::optional<c10::Device>& quantize_on = std::nullopt);

/// Switches the 3x3, stride-1 convolutions of the UNet's resnets and upsamplers, and the upsamplers' 2x2
/// phase convolutions (use_phase_upsamplers, resnet_block.h), to FP8 (fp8_conv): each keeps its e4m3 weight
/// and scales (module buffers) and releases its fp16 weight. Call on a loaded fp16 UNet, after LoRA and
/// use_phase_upsamplers; `quantize_on` as for use_fp8_linears. Returns how many it switched.
int64_t use_fp8_convolutions(torch::nn::Module& unet,
                             const std::optional<c10::Device>& quantize_on = std::nullopt);

}  // namespace sdxlb
