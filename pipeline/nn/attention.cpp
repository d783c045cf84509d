#include "pipeline/nn/attention.h"

#include <tuple>

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

namespace sdxlb {

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                  std::optional<double> scale) {
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, causal, scale);
}

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

std::pair<at::Tensor, at::Tensor> AttentionImpl::project_context(const at::Tensor& context) {
  return {to_k_(context), to_v_(context)};
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context, const BlockTokens* tokens,
                                  const ContextProjections* projected) {
  const at::Tensor kv_input =
      context.defined() ? context : (tokens != nullptr ? downsample_tokens(x, *tokens) : x);
  const int64_t batch = kv_input.size(0);
  const int64_t heads = options_.heads();
  at::Tensor query, key, value;
  if (to_q_->is_fp8() && to_k_->is_fp8() && to_v_->is_fp8() && !context.defined() && kv_input.is_same(x)) {
    // FP8 self-attention: x quantised once for the three projections.
    const Fp8Activation a = quantize_activation(x);
    query = to_q_->forward_fp8(a);
    key = to_k_->forward_fp8(a);
    value = to_v_->forward_fp8(a);
  } else {
    query = to_q_(x);
  }
  if (projected != nullptr && context.defined()) {
    if (auto it = projected->kv.find(this); it != projected->kv.end()) std::tie(key, value) = it->second;
  }
  if (!key.defined()) {
    key = to_k_(kv_input);
    value = to_v_(kv_input);
  }
  const int64_t head_dim = key.size(-1) / heads;
  query = query.view({batch, -1, heads, head_dim}).transpose(1, 2);
  key = key.view({batch, -1, heads, head_dim}).transpose(1, 2);
  value = value.view({batch, -1, heads, head_dim}).transpose(1, 2);
  at::Tensor h = attend(query, key, value);
  h = h.transpose(1, 2).reshape({batch, -1, heads * head_dim}).to(query.scalar_type());
  return to_out_(h);
}

}  // namespace sdxlb
