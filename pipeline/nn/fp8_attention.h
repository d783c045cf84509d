// FP8 self-attention: the opt-in `attention_precision: fp8` (issue 17's second switch, on top of
// `unet_precision: fp8`): cuDNN's FP8 flash attention (Hopper) for attn1 of the UNet's transformer blocks.
//
// Scales. cuDNN's FP8 attention takes one scale per tensor (Q, K, V, the softmax probabilities P, the output
// O). A scale read off the data (a tensor's largest magnitude) would mix the images of a batch: an image's
// pixels would depend on the other images beside it. The scales here are bounds known when the model loads
// instead. attn1's input rows are LayerNorm outputs (norm1, weight γ, bias β), whose Euclidean norm is at
// most R = max|γ|·sqrt(dim) + ‖β‖₂, so every query value obeys |q_j| ≤ ‖W_q[j]‖₂·R + |b_j|
// (Cauchy–Schwarz, with W_q the e4m3 weight the GEMM multiplies by) and the largest of these bounds maps to
// 448, e4m3's largest value; likewise K and V. P ≤ 1 takes the scale 448, and O, a convex combination of
// V's rows, takes V's scale. So no pass over the data finds scales, and an image's numbers depend on that
// image only: images stay bit-identical across batch sizes and rank counts. e4m3 is a floating-point
// format: a bound some tens of times loose costs range at the bottom (values under 2^-6 of the scaled
// range lose bits), not precision. The input rows are e4m3 themselves (rounded by at most 2^-4 of a value),
// so the radius is widened by that much, and every conversion saturates at ±448 all the same.
//
// Self-attention only: attn2's keys and values are the prompt's 77 tokens, a small share of the time.
// Blocks where token merging or downsampling changes attn1 keep the fp16 kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include "pipeline/nn/fp8.h"

namespace sdxlb {

/// Whether cuDNN's FP8 attention runs on `device` (a Hopper GPU or newer, cuDNN 9.1 or newer but not
/// 9.10.0, and a build with cuDNN's frontend); when not, `why` (if given) says why in a sentence.
bool fp8_attention_supported(const c10::Device& device, std::string* why = nullptr);

/// The largest Euclidean norm of a LayerNorm output row: max|weight|·sqrt(dim) + ‖bias‖₂ (bias may be
/// undefined). Computed on the CPU in double precision, so that a UNet gets the same number wherever its
/// weights are (resident, or in host memory for the weight streamer).
double layer_norm_radius(const at::Tensor& weight, const at::Tensor& bias);

/// The dequantisation scale of a projection's output for inputs of Euclidean norm at most `radius`:
/// max over output channels j of (‖W[j]‖₂·radius + |b_j|) / 448, W being the e4m3 weight times its
/// per-channel scales (bias may be undefined). On the CPU, as layer_norm_radius.
float fp8_projection_scale(const Fp8Weight& w, const at::Tensor& bias, double radius);

/// Fixed-scale e4m3 quantisation: e4m3(clamp(x · (1 / scale), ±448)), the reciprocal and the product in
/// float32, rounded to nearest even. ATen ops on any device: the reference.
at::Tensor quantize_fixed_reference(const at::Tensor& x, float scale);
/// The same for up to three tensors of one size and dtype; one CUDA kernel for contiguous fp16/bf16 CUDA
/// tensors, else the reference.
std::vector<at::Tensor> quantize_fixed(c10::ArrayRef<at::Tensor> xs, c10::ArrayRef<float> scales);

/// quantize_fixed({fp8_linear(x, w, {})}, {scale})[0]: the projection of x rounded to x's dtype, then to e4m3
/// at the fixed scale, for cuDNN's FP8 attention. On CUDA (a Hopper GPU, a build with CUTLASS, fp16, fast
/// accumulation, the fusion "fp8qkv" on: fused_ops.h) one GEMM whose epilogue writes the e4m3 values
/// (kernels/fp8_gemm_kernel.h), so the fp16 projection never goes to memory; its sums come from another
/// kernel than cuBLASLt's, so a value can round one e4m3 step apart (none did at the UNet's shapes,
/// measured). Elsewhere, and for shapes the kernel does not take, the two ops.
at::Tensor fp8_linear_e4m3(const Fp8Activation& x, const Fp8Weight& w, float scale);

/// The scales of one attention: dequantisation scales of the query, keys and values (the output has the
/// values'), and the same on the device as cuDNN reads them.
struct Fp8AttentionScales {
  float q = 1.f, k = 1.f, v = 1.f;
  /// [8] float32 on the attention's device: descale q, k, v, P; scale P, O; then cuDNN's amax outputs of P
  /// and O (written by every call, read by nobody).
  at::Tensor device;
};
Fp8AttentionScales make_fp8_attention_scales(float q, float k, float v, const c10::Device& device);

/// softmax(q kᵀ / sqrt(d)) v per head for e4m3 q, k, v [B, N, heads·d] (a token's heads side by side, as the
/// projections write them; rows contiguous, the three with the same strides: contiguous tensors, or the
/// thirds of a fused projection's output) with dequantisation scales `s` → e4m3 O [B, N, heads·d] with
/// scale s.v. On CUDA one cuDNN FP8 flash-attention call (fp8_attention_supported() devices; elsewhere an
/// error); the plan for each shape is built once per process and reused, also inside CUDA graphs. On the CPU
/// (tests; the pipeline refuses FP8 attention there) fp8_attention_reference.
at::Tensor fp8_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                         const Fp8AttentionScales& s);
/// The same math in float32 ATen ops (any device), for the tests: the dequantised operands, softmax
/// probabilities rounded to e4m3 at the scale 448, the product with V, the output quantised at s.v. cuDNN
/// rounds the unnormalised probabilities of its online softmax instead, so the two agree within e4m3's
/// rounding, not bit for bit.
at::Tensor fp8_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   int64_t heads, const Fp8AttentionScales& s);

}  // namespace sdxlb
