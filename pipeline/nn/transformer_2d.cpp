#include "pipeline/nn/transformer_2d.h"

#include "pipeline/nn/fused_ops.h"

#include <memory>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/container/modulelist.h>

namespace sdxlb {

AttentionImpl::AttentionImpl(const AttentionOptions& options) : options_(options) {
  const int64_t inner = options.heads() * options.dim_head();
  const int64_t kv_dim = options.cross_attention_dim().value_or(options.query_dim());
  to_q_ = register_module("to_q", Linear(options.query_dim(), inner, options.bias()));
  to_k_ = register_module("to_k", Linear(kv_dim, inner, options.bias()));
  to_v_ = register_module("to_v", Linear(kv_dim, inner, options.bias()));
  // to_out is [Linear, Dropout] in diffusers; the dropout has no weights, so only "0" is registered.
  auto to_out = register_module("to_out", torch::nn::ModuleList());
  to_out_ = Linear(inner, options.query_dim(), options.out_bias());
  to_out->push_back(to_out_);
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const at::Tensor& kv_input = context.defined() ? context : x;
  const int64_t batch = kv_input.size(0);
  const int64_t heads = options_.heads();
  at::Tensor query = to_q_(x);
  at::Tensor key = to_k_(kv_input);
  at::Tensor value = to_v_(kv_input);
  const int64_t head_dim = key.size(-1) / heads;
  query = query.view({batch, -1, heads, head_dim}).transpose(1, 2);
  key = key.view({batch, -1, heads, head_dim}).transpose(1, 2);
  value = value.view({batch, -1, heads, head_dim}).transpose(1, 2);
  at::Tensor h = at::scaled_dot_product_attention(query, key, value, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                  /*is_causal=*/false);
  h = h.transpose(1, 2).reshape({batch, -1, heads * head_dim}).to(query.scalar_type());
  return to_out_(h);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  // diffusers: net = [GEGLU (with .proj), Dropout, Linear]; names "net.0.proj" and "net.2".
  auto net = register_module("net", std::make_shared<torch::nn::Module>());
  auto geglu = net->register_module("0", std::make_shared<torch::nn::Module>());
  proj_ = geglu->register_module("proj", Linear(dim, inner * 2));
  out_ = net->register_module("2", Linear(inner, dim));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  return out_(geglu(proj_(x)));
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

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  run_unit_hook();
  // Each residual add and the LayerNorm after it are one kernel on the GPU (the same bits for the sum as the
  // add's); h is the running hidden state, a the branch output still to be added to it.
  at::Tensor a = attn1_(norm1_(x));
  at::Tensor h = x;
  if (attn2_) {
    TORCH_CHECK(context.defined(), "BasicTransformerBlock with cross-attention needs encoder_hidden_states");
    auto [sum, normed] = norm2_->forward_add(a, h);
    h = sum;
    a = attn2_(normed, context);
  }
  auto [sum, normed] = norm3_->forward_add(a, h);
  return ff_(normed) + sum;
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

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context) {
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
  for (auto& block : blocks_) h = block(h, context);
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
