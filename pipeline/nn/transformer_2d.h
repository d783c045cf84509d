// Transformer2DModel and its parts (Attention, GEGLU FeedForward, BasicTransformerBlock) as diffusers' UNet
// uses them for continuous latents: GroupNorm → proj_in → transformer blocks → proj_out → + residual.
//
// Mirrors diffusers' models/transformers/transformer_2d.py, attention.py and attention_processor.py
// (AttnProcessor2_0) op for op; attention runs through the seam in attention.h. Submodule names are
// diffusers' state-dict names (norm, proj_in, transformer_blocks.N.{norm1,attn1,norm2,attn2,norm3,ff},
// attn.to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, proj_out). Only the "layer_norm" block with the
// default attention and GEGLU is built (what SD/SDXL use). Modules are immutable after loading and safe to
// call from several threads.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "pipeline/nn/attention.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/token_merging.h"
#include "pipeline/nn/unit_hook.h"

namespace sdxlb {

/// GEGLU feed-forward: net.0.proj to 2×inner, value × gelu(gate), net.2 back to dim (diffusers FeedForward
/// with activation_fn "geglu"; net.1 is a dropout without weights).
class FeedForwardImpl : public torch::nn::Module {
 public:
  /// inner = dim × mult.
  FeedForwardImpl(int64_t dim, int64_t mult = 4);
  /// x [..., dim] → [..., dim].
  at::Tensor forward(const at::Tensor& x);
  /// forward() on an input quantised ahead (takes_fp8()); with net.2 in FP8 too, the GEGLU kernel quantises
  /// its output for it (fused_ops.h, geglu_e4m3).
  at::Tensor forward_fp8(const Fp8Activation& x);
  /// Whether net.0.proj is FP8.
  bool takes_fp8() const;
  /// Puts net.0.proj's weight and bias in interleaved GEGLU order (fused_ops.h, interleave_geglu), in place,
  /// so that forward() runs linear_geglu: the projection and its GEGLU in one GEMM where
  /// geglu_gemm_supported. Only for a feed-forward whose net.0.proj is not FP8 and whose shape the GEMM takes
  /// (geglu_gemm_takes), once (later calls do nothing). Returns whether it reordered.
  bool interleave_geglu();

 private:
  bool interleaved_ = false;  // set by interleave_geglu
  Linear proj_{nullptr};      // net.0.proj
  Linear out_{nullptr};       // net.2
};
TORCH_MODULE(FeedForward);

/// Options of BasicTransformerBlock.
struct BasicTransformerBlockOptions {
  BasicTransformerBlockOptions(int64_t dim, int64_t heads, int64_t dim_head)
      : dim_(dim), heads_(heads), dim_head_(dim_head) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, dim_head);
  /// Context width of attn2; nullopt: the block has no cross-attention (no norm2/attn2).
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  /// LayerNorm epsilon of norm1/norm2/norm3.
  TORCH_ARG(double, norm_eps) = 1e-5;
};

/// What a UNet call hands its transformer blocks besides the hidden states and the context (all optional).
struct TransformerCall {
  TokenReduction* tokens = nullptr;               ///< ToMe / ToDo (token_merging.h); nullptr: none
  const ContextProjections* projected = nullptr;  ///< cross-attention keys/values projected ahead
  /// Samples [0, n) have an all-zero context: their cross-attention outputs are to_out's bias, filled in
  /// instead of computed (UNetCall::zero_context_samples).
  int64_t zero_context_samples = 0;
};

/// Pre-norm block: x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x).
class BasicTransformerBlockImpl : public torch::nn::Module, public HookedUnit {
 public:
  explicit BasicTransformerBlockImpl(const BasicTransformerBlockOptions& options);
  /// x [B, N, dim], context [B, M, cross_attention_dim] (needed when the block has attn2) → [B, N, dim].
  /// `call` (nullptr: none): ToMe merges around the layers tomesd's settings name, ToDo downsamples
  /// attn1's keys and values (token_merging.h); attn2 uses the projected keys and values it holds.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {},
                     const TransformerCall* call = nullptr);
  /// forward(pending + x) without its last residual add: returns {h, branch} with forward's output
  /// branch + h, so that the next block's norm1 adds it in its LayerNorm kernel (the same bits as the add).
  /// `pending` undefined: forward(x)'s halves.
  std::pair<at::Tensor, at::Tensor> forward_deferred(const at::Tensor& x, const at::Tensor& pending,
                                                     const at::Tensor& context = {},
                                                     const TransformerCall* call = nullptr);
  /// attn2's to_k/to_v of `context` into out.kv (nothing for a block without cross-attention).
  void project_context(const at::Tensor& context, ContextProjections& out);
  /// attn1 in FP8 attention (fp8_attention.h), scaled for norm1's outputs, when its projections are FP8;
  /// returns whether it switched.
  bool use_fp8_attention();

 private:
  LayerNorm norm1_{nullptr};
  Attention attn1_{nullptr};
  LayerNorm norm2_{nullptr};
  Attention attn2_{nullptr};
  LayerNorm norm3_{nullptr};
  FeedForward ff_{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

/// Options of Transformer2DModel (continuous input).
struct Transformer2DModelOptions {
  Transformer2DModelOptions(int64_t heads, int64_t dim_head, int64_t in_channels)
      : heads_(heads), dim_head_(dim_head), in_channels_(in_channels) {}
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, dim_head);
  TORCH_ARG(int64_t, in_channels);
  /// Number of BasicTransformerBlocks (transformer_layers_per_block).
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  /// Groups of the input GroupNorm (its epsilon is fixed at 1e-6 by diffusers).
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  /// proj_in/proj_out as Linear over tokens (SDXL) instead of 1×1 convs.
  TORCH_ARG(bool, use_linear_projection) = false;
  /// LayerNorm epsilon inside the blocks.
  TORCH_ARG(double, norm_eps) = 1e-5;
};

/// Spatial transformer: [B, C, H, W] → tokens → blocks → [B, C, H, W] + residual.
class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(const Transformer2DModelOptions& options);
  /// x [B, in_channels, H, W], context [B, M, cross_attention_dim] → [B, in_channels, H, W]; `call` is
  /// passed to every block.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {},
                     const TransformerCall* call = nullptr);
  /// Every block's cross-attention keys and values of `context` into out.kv.
  void project_context(const at::Tensor& context, ContextProjections& out);

 private:
  Transformer2DModelOptions options_;
  GroupNorm norm_{nullptr};
  Linear proj_in_linear_{nullptr};
  Conv2d proj_in_conv_{nullptr};
  std::vector<BasicTransformerBlock> blocks_;
  Linear proj_out_linear_{nullptr};
  Conv2d proj_out_conv_{nullptr};
};
TORCH_MODULE(Transformer2DModel);

/// Switches attn1 of every transformer block in `model` whose projections are FP8 (use_fp8_linears, fp8.h)
/// to cuDNN's FP8 attention (`attention_precision: fp8`, fp8_attention.h). Call after use_fp8_linears, on a
/// device where fp8_attention_supported(). Returns how many attentions it switched.
int64_t use_fp8_attention(torch::nn::Module& model);

/// Reorders the GEGLU projection of every feed-forward in `model` whose projection is not FP8
/// (FeedForward::interleave_geglu), so that each runs as one GEMM with GEGLU in its epilogue. Call after
/// use_fp8_linears, where geglu_gemm_supported(device, dtype) holds for the device and dtype the model runs
/// in (elsewhere the reordered feed-forward is correct but slower). Returns how many it reordered.
int64_t use_geglu_gemms(torch::nn::Module& model);

}  // namespace sdxlb
