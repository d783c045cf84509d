#include "pipeline/nn/transformer_2d.h"

#include "pipeline/nn/fused_ops.h"

#include <algorithm>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/container/modulelist.h>

namespace sdxlb {

namespace {

// Samples [first, B) of an activation quantised ahead (its rows sample-major, shape [B, ...]).
Fp8Activation sample_rows(const Fp8Activation& x, int64_t first) {
  const int64_t samples = x.shape.front(), per_sample = x.q.size(0) / samples;
  std::vector<int64_t> shape = x.shape;
  shape.front() = samples - first;
  return make_activation(x.q.narrow(0, first * per_sample, (samples - first) * per_sample),
                         x.scale.narrow(0, first * per_sample, (samples - first) * per_sample), shape,
                         x.dtype);
}

}  // namespace

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  // diffusers: net = [GEGLU (with .proj), Dropout, Linear]; names "net.0.proj" and "net.2".
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  auto geglu = net->register_module("0", std::make_shared<torch::nn::Module>());
  proj_ = geglu->register_module("proj", Linear(dim, inner * 2));
  out_ = net->register_module("2", Linear(inner, dim));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  if (interleaved_) return out_(linear_geglu(x, proj_->weight, proj_->bias));
  return out_(geglu(proj_(x)));
}

bool FeedForwardImpl::interleave_geglu() {
  if (interleaved_ || takes_fp8() || !geglu_gemm_takes(proj_->weight.size(0), proj_->weight.size(1)))
    return false;
  at::NoGradGuard no_grad;
  proj_->weight.set_data(sdxlb::interleave_geglu(proj_->weight));
  if (proj_->bias.defined()) proj_->bias.set_data(sdxlb::interleave_geglu(proj_->bias));
  interleaved_ = true;
  return true;
}

bool FeedForwardImpl::takes_fp8() const {
  return proj_->is_fp8();
}

at::Tensor FeedForwardImpl::forward_fp8(const Fp8Activation& x) {
  TORCH_CHECK(!interleaved_,
              "FeedForward::forward_fp8: the projection is in interleaved GEGLU order, not FP8");
  const at::Tensor p = proj_->forward_fp8(x);
  if (!out_->is_fp8()) return out_(geglu(p));
  std::vector<int64_t> shape = p.sizes().vec();
  shape.back() /= 2;
  E4m3Rows g = geglu_e4m3(p);
  return out_->forward_fp8(make_activation(g.q, g.scale, shape, p.scalar_type()));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(const BasicTransformerBlockOptions& o) {
  norm1_ = register_module("norm1", LayerNorm(o.dim(), o.norm_eps()));
  attn1_ = register_module("attn1", Attention(AttentionOptions(o.dim(), o.heads(), o.dim_head())));
  if (o.cross_attention_dim()) {
    norm2_ = register_module("norm2", LayerNorm(o.dim(), o.norm_eps()));
    attn2_ = register_module(
        "attn2",
        Attention(
            AttentionOptions(o.dim(), o.heads(), o.dim_head()).cross_attention_dim(o.cross_attention_dim())));
  }
  norm3_ = register_module("norm3", LayerNorm(o.dim(), o.norm_eps()));
  ff_ = register_module("ff", FeedForward(o.dim()));
}

void BasicTransformerBlockImpl::project_context(const at::Tensor& context, ContextProjections& out) {
  if (attn2_) attn2_->project_context(context, out);
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context,
                                              const TransformerCall* call) {
  auto [h, a] = forward_deferred(x, at::Tensor(), context, call);
  return a + h;
}

std::pair<at::Tensor, at::Tensor> BasicTransformerBlockImpl::forward_deferred(const at::Tensor& x_in,
                                                                              const at::Tensor& pending,
                                                                              const at::Tensor& context,
                                                                              const TransformerCall* call) {
  run_unit_hook();
  TokenReduction* reduction = call != nullptr ? call->tokens : nullptr;
  // ToMe and ToDo look at the whole hidden state before the block: add the pending branch first for them.
  const bool defer = pending.defined() && reduction == nullptr;
  const at::Tensor x = pending.defined() && !defer ? pending + x_in : x_in;
  BlockTokens tokens;
  if (reduction != nullptr) tokens = block_tokens(*reduction, x);
  // ToMe (tomesd's patched block): merge a layer's normalised input, unmerge its output before the residual
  // add, for the layers the settings name; with nothing merged these are the identity.
  const TokenMerging* tome = reduction != nullptr ? reduction->merging : nullptr;
  const TokenMerge& m = tokens.merge;
  const bool attn = tome != nullptr && tome->merge_attn, cross = tome != nullptr && tome->merge_crossattn,
             mlp = tome != nullptr && tome->merge_mlp;
  // Each residual add and the LayerNorm after it are one kernel on the GPU (the same bits for the sum as the
  // add's); h is the running hidden state, a the branch output still to be added to it. A layer whose
  // linears are FP8 takes its LayerNorm's output as e4m3 rows that the LayerNorm kernel quantised itself (the
  // same bits as quantising it after), unless ToMe or ToDo change its tokens at this block.
  const bool whole = !m.active() && !tokens.downsample;
  // With a pending branch, norm1 adds it to x as norm2 and norm3 add theirs (the previous block's last
  // residual add, one kernel less per block).
  at::Tensor a, h = x;
  if (whole && attn1_->takes_fp8()) {
    if (defer) {
      auto [sum, normed] = norm1_->forward_add_fp8(pending, x);
      h = sum;
      a = attn1_->forward_fp8(normed);
    } else {
      a = attn1_->forward_fp8(norm1_->forward_fp8(x));
    }
  } else {
    at::Tensor n1;
    if (defer) {
      std::tie(h, n1) = norm1_->forward_add(pending, x);
    } else {
      n1 = norm1_(x);
    }
    a = attn1_->forward(attn ? m.merge(n1) : n1, at::Tensor(), &tokens);
    if (attn) a = m.unmerge(a);
  }
  const ContextProjections* projected = call != nullptr ? call->projected : nullptr;
  if (attn2_) {
    TORCH_CHECK(context.defined(), "BasicTransformerBlock with cross-attention needs encoder_hidden_states");
    // Samples [0, zero) have an all-zero context: their cross-attention output is to_out's bias
    // (TransformerCall::zero_context_samples), filled in; the other samples' is computed into the rest of
    // the same tensor.
    const int64_t samples = h.size(0);
    const int64_t zero = call != nullptr && !cross ? std::min(call->zero_context_samples, samples) : 0;
    const auto start_branch = [&] {
      at::Tensor out = at::empty_like(h, at::MemoryFormat::Contiguous);
      attn2_->fill_zero_context_output(out.narrow(0, 0, zero));
      return out;
    };
    if (whole && attn2_->takes_fp8()) {
      auto [sum, normed] = norm2_->forward_add_fp8(a, h);
      h = sum;
      if (zero == 0) {
        a = attn2_->forward_fp8(normed, context, projected);
      } else {
        a = start_branch();
        if (zero < samples)
          attn2_->forward_fp8(sample_rows(normed, zero), context.narrow(0, zero, samples - zero), projected,
                              {zero, a.narrow(0, zero, samples - zero)});
      }
    } else {
      auto [sum, normed] = norm2_->forward_add(a, h);
      h = sum;
      if (zero == 0) {
        a = attn2_->forward(cross ? m.merge(normed) : normed, context, nullptr, projected);
        if (cross) a = m.unmerge(a);
      } else {
        a = start_branch();
        if (zero < samples)
          attn2_->forward(normed.narrow(0, zero, samples - zero), context.narrow(0, zero, samples - zero),
                          nullptr, projected, {zero, a.narrow(0, zero, samples - zero)});
      }
    }
  }
  if (whole && ff_->takes_fp8()) {
    auto [sum, normed] = norm3_->forward_add_fp8(a, h);
    return {sum, ff_->forward_fp8(normed)};
  }
  auto [sum, normed] = norm3_->forward_add(a, h);
  at::Tensor f = ff_(mlp ? m.merge(normed) : normed);
  if (mlp) f = m.unmerge(f);
  return {sum, f};
}

bool BasicTransformerBlockImpl::use_fp8_attention() {
  if (!attn1_->takes_fp8()) return false;
  attn1_->use_fp8_attention(layer_norm_radius(norm1_->weight, norm1_->bias));
  return true;
}

int64_t use_fp8_attention(torch::nn::Module& unet) {
  at::NoGradGuard no_grad;
  int64_t switched = 0;
  for (const auto& item : unet.modules())
    if (auto* block = item->as<BasicTransformerBlockImpl>(); block != nullptr && block->use_fp8_attention())
      ++switched;
  return switched;
}

int64_t use_geglu_gemms(torch::nn::Module& model) {
  int64_t reordered = 0;
  for (const auto& item : model.modules())
    if (auto* ff = item->as<FeedForwardImpl>(); ff != nullptr && ff->interleave_geglu()) ++reordered;
  return reordered;
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DModelOptions& o) : options_(o) {
  const int64_t inner = o.heads() * o.dim_head();
  norm_ = register_module("norm", GroupNorm(o.norm_num_groups(), o.in_channels(), 1e-6));
  if (o.use_linear_projection()) {
    proj_in_linear_ = register_module("proj_in", Linear(o.in_channels(), inner));
  } else {
    proj_in_conv_ = register_module("proj_in", Conv2d(o.in_channels(), inner, 1));
  }
  auto list = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers(); ++i) {
    blocks_.push_back(BasicTransformerBlock(BasicTransformerBlockOptions(inner, o.heads(), o.dim_head())
                                                .cross_attention_dim(o.cross_attention_dim())
                                                .norm_eps(o.norm_eps())));
    list->push_back(blocks_.back());
  }
  if (o.use_linear_projection()) {
    proj_out_linear_ = register_module("proj_out", Linear(inner, o.in_channels()));
  } else {
    proj_out_conv_ = register_module("proj_out", Conv2d(inner, o.in_channels(), 1));
  }
}

void Transformer2DModelImpl::project_context(const at::Tensor& context, ContextProjections& out) {
  for (auto& block : blocks_) block->project_context(context, out);
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context,
                                           const TransformerCall* call) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(), "Transformer2DModel expects [B, ",
              options_.in_channels(), ", H, W], got ", x.sizes());
  const int64_t batch = x.size(0), height = x.size(2), width = x.size(3);
  at::Tensor h = norm_->forward_act(x, /*silu=*/false);
  int64_t inner = 0;
  if (proj_in_linear_) {
    inner = h.size(1);
    h = proj_in_linear_(h.permute({0, 2, 3, 1}).reshape({batch, height * width, inner}));
  } else {
    h = proj_in_conv_(h);
    inner = h.size(1);
    h = h.permute({0, 2, 3, 1}).reshape({batch, height * width, inner});
  }
  // Each block's last residual add is left to the next block's norm1 (forward_deferred); the last one here.
  at::Tensor pending;
  for (auto& block : blocks_) std::tie(h, pending) = block->forward_deferred(h, pending, context, call);
  if (pending.defined()) h = pending + h;
  if (proj_out_linear_) {
    h = proj_out_linear_(h);
    // The permuted view is channels-last already: keep it when the input is (no copy), else copy to NCHW.
    h = h.reshape({batch, height, width, inner}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format());
  } else {
    h = h.reshape({batch, height, width, inner}).permute({0, 3, 1, 2}).contiguous();
    h = proj_out_conv_(h);
  }
  return h + x;
}

}  // namespace sdxlb
