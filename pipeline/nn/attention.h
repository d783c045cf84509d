// Attention: the one place where the UNet, the VAE and the text encoders reach the attention kernel, and
// diffusers' multi-head Attention module (to_q/to_k/to_v → attention → to_out.0).
//
// `attend` is the seam: every attention in the product goes through it, so a kernel
// choice (flash, cuDNN, memory-efficient) or a precision change is made here once. Token merging (ToMe) and
// token downsampling (ToDo) plug into the Attention module and the transformer block (see
// token_merging.h, token_downsampling.h). Modules are immutable after loading and safe to call from several
// threads.
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "pipeline/nn/fp8_attention.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/token_merging.h"

namespace sdxlb {

/// softmax(q kᵀ · scale) v over [B, heads, N, D] queries and [B, heads, M, D] keys/values → [B, heads, N, D]
/// (at::scaled_dot_product_attention: the kernel PyTorch picks for the device, dtype and layout). `causal`
/// masks keys after each query; `scale` nullopt: 1/sqrt(D). On CUDA, heads wider than 256 (the VAE's single
/// 512-wide head, which no fused kernel takes) run as two cuBLAS GEMMs with a float32 softmax between them,
/// over chunks of queries (at most 64 MiB of scores at once), float32 inputs in TF32 as cuDNN runs the
/// float32 VAE's convolutions; fusion "wideattention" (fused_ops.h) switches that off. Heads 64 wide over at
/// most 96 keys (the UNet's cross-attention) run our short_attention kernel (fused_ops.h; fusion
/// "crossattention").
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal = false,
                  std::optional<double> scale = std::nullopt);

/// Options of Attention (diffusers' Attention constructor arguments).
struct AttentionOptions {
  AttentionOptions(int64_t query_dim, int64_t heads, int64_t dim_head)
      : query_dim_(query_dim), heads_(heads), dim_head_(dim_head) {}
  TORCH_ARG(int64_t, query_dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, dim_head);
  /// Width of the context for cross-attention; nullopt: self-attention (keys from the query input).
  TORCH_ARG(std::optional<int64_t>, cross_attention_dim) = std::nullopt;
  /// Bias of to_q/to_k/to_v (false in SD/SDXL transformer blocks).
  TORCH_ARG(bool, bias) = false;
  /// Bias of to_out.0.
  TORCH_ARG(bool, out_bias) = true;
};

class AttentionImpl;

/// Where a cross-attention's input sits in its UNet call, and where its output goes (Attention::forward).
struct CrossRows {
  /// x and context are the call's samples [first_sample, first_sample + B); `projected` holds the whole
  /// call's keys and values, of which the attention takes those samples'.
  int64_t first_sample = 0;
  /// Defined: to_out writes the output here ([B, N, query_dim], contiguous; for a layer in the model's dtype
  /// the same GEMM as forward()'s own output, else a copy of it) and forward returns it.
  at::Tensor out;
};

/// Cross-attention keys and values projected ahead of a UNet call, per Attention module. They depend only on
/// the prompt, which is the same at every step of a batch: the denoise loop projects them once per batch
/// instead of once per step (issue 16), with the same projections of the same input, so the same bits.
struct ContextProjections {
  /// to_k(context), to_v(context) [B, M, heads · dim_head] of each cross-attention module.
  std::unordered_map<const AttentionImpl*, std::pair<at::Tensor, at::Tensor>> kv;
  /// context_value_scale of the values, for the FP8 cross-attentions whose output goes to e4m3 at that scale
  /// (fused_ops.h, short_attention_e4m3): [B] float32.
  std::unordered_map<const AttentionImpl*, at::Tensor> value_scale;
};

/// Multi-head attention: to_q/to_k/to_v → SDPA over `heads` heads of width dim_head → to_out.0.
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  /// x [B, N, query_dim]; context [B, M, cross_attention_dim] for cross-attention (undefined: self-attention)
  /// → [B, N, query_dim]. `tokens` (self-attention only): ToDo's downsampled keys and values when it says so.
  /// `projected` (cross-attention only; nullptr: none): keys and values projected ahead, used instead of
  /// projecting `context` when they hold this module's.
  /// `rows`: for cross-attention, which samples of the call x holds and where the output goes.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {}, const BlockTokens* tokens = nullptr,
                     const ContextProjections* projected = nullptr, const CrossRows& rows = {});
  /// forward() on an input quantised ahead (a LayerNorm's e4m3 rows, layers.h), without token reduction: for
  /// a module whose to_q (and for self-attention to_k and to_v) are FP8 (takes_fp8()).
  at::Tensor forward_fp8(const Fp8Activation& x, const at::Tensor& context = {},
                         const ContextProjections* projected = nullptr, const CrossRows& rows = {});
  /// Writes what this cross-attention returns for samples whose context is all zeros into `out`
  /// ([B, N, query_dim]): their keys and values are zero, so the attention's output is zero and to_out's is
  /// its bias (zero without one), in every row.
  void fill_zero_context_output(at::Tensor out) const;
  /// Whether forward_fp8 takes this module's input: to_q in FP8, and to_k and to_v too for self-attention.
  bool takes_fp8() const;
  /// Switches forward_fp8 of this self-attention (takes_fp8()) to cuDNN's FP8 attention (fp8_attention.h),
  /// with the static scales of inputs whose rows have Euclidean norm at most `input_radius` (its LayerNorm's
  /// layer_norm_radius). Call after use_fp8_linears, on a device where fp8_attention_supported().
  void use_fp8_attention(double input_radius);
  /// Whether forward_fp8 runs the FP8 attention.
  bool runs_fp8_attention() const { return fp8_attention_.device.defined(); }
  /// For a self-attention whose to_q, to_k and to_v are FP8 without bias: one e4m3 weight [3·inner, dim] for
  /// the three (they hand theirs over; it is this module's buffer "fp8_qkv_weight", its scales
  /// "fp8_qkv_scale"), so that they run as one GEMM (issue 17: the three
  /// small GEMMs of the deepest level ran at half the e4m3 rate). The same products, now in one call.
  /// use_fp8_linears (fp8.h) calls it. Returns whether it fused.
  bool fuse_fp8_projections();
  /// For a self-attention whose to_q, to_k and to_v are in the model's dtype (not FP8), all with a bias or
  /// all without: one weight [3·inner, dim] for the three (this module's buffer "qkv_weight", with
  /// "qkv_bias"; the layers' own are emptied), so that forward() projects x in one GEMM whose column slices
  /// are the query, keys and values (cuBLASLt ran each of the deepest level's three 2048x1280x1280 products
  /// at 545 TFLOP/s on an H100). Keys and values of downsampled tokens (token downsampling, ToDo) take their
  /// rows of it. Returns whether it fused.
  bool fuse_projections();
  /// to_k(context), to_v(context): what forward() projects from a cross-attention context.
  std::pair<at::Tensor, at::Tensor> project_context(const at::Tensor& context);
  /// The same into out.kv[this], and, where to_out is FP8 on a GPU and the fusion "fp8crossout" is on, the
  /// values' context_value_scale into out.value_scale[this], so that forward_fp8 need not take it from the
  /// values at every call (it writes e4m3 at that scale either way).
  void project_context(const at::Tensor& context, ContextProjections& out);

 private:
  // The keys and values of a cross-attention context: projected ahead when `projected` holds them (their
  // samples [first, first + count)), else now.
  std::pair<at::Tensor, at::Tensor> context_kv(const at::Tensor& context, const ContextProjections* projected,
                                               int64_t first, int64_t count);
  // The e4m3 weight of to_q (0), to_k (1) or to_v (2): its rows of the fused weight when fused.
  Fp8Weight projection_fp8(int64_t i) const;
  // to_q, to_k, to_v of one quantised input: views of one fused GEMM's output when fused, else three GEMMs.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project_fp8(const Fp8Activation& x);
  // to_q (0), to_k (1) or to_v (2) of x: the layer, or its rows of the fused weight (fuse_projections).
  at::Tensor project(int64_t i, const at::Tensor& x);
  // SDPA over the heads of the projected query, keys and values, then to_out (into `out` when defined).
  at::Tensor attend_heads(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                          int64_t batch, const at::Tensor& out = {});
  // to_out of h, written into `out` when defined (and returned).
  at::Tensor project_out(const at::Tensor& h, const at::Tensor& out);

  AttentionOptions options_;
  // Set by use_fp8_attention (its device tensor a buffer); device undefined: the model's-dtype kernel.
  Fp8AttentionScales fp8_attention_;
  Fp8Weight fp8_qkv_;                 // set by fuse_fp8_projections (buffers); undefined: separate GEMMs
  at::Tensor qkv_weight_, qkv_bias_;  // set by fuse_projections (buffers); undefined: separate GEMMs
  Linear to_q_{nullptr};
  Linear to_k_{nullptr};
  Linear to_v_{nullptr};
  Linear to_out_{nullptr};
};
TORCH_MODULE(Attention);

/// Fuses the projections of every self-attention in `model` whose projections are in the model's dtype
/// (Attention::fuse_projections), unless SDXLB_DISABLE_FUSION lists "qkv". Call after use_fp8_linears.
/// Returns how many it fused.
int64_t fuse_attention_projections(torch::nn::Module& model);

}  // namespace sdxlb
