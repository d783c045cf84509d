#include "pipeline/nn/attention.h"

#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/SDPBackend.h>
#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>

#include "pipeline/nn/fused_ops.h"

namespace sdxlb {

namespace {

// SDXLB_ATTENTION=cudnn|flash|efficient|math puts that SDPA backend first in PyTorch's priority order (for
// measuring; unset: PyTorch's order). Read once; an unknown name is an error.
bool choose_backend() {
  const char* env = std::getenv("SDXLB_ATTENTION");
  if (env == nullptr || *env == 0) return false;
  const std::string name = env;
  const std::vector<std::pair<std::string, at::SDPBackend>> known = {
      {"cudnn", at::SDPBackend::cudnn_attention},
      {"flash", at::SDPBackend::flash_attention},
      {"efficient", at::SDPBackend::efficient_attention},
      {"math", at::SDPBackend::math}};
  std::vector<int64_t> order;
  for (const auto& [n, b] : known)
    if (n == name) order.push_back(static_cast<int64_t>(b));
  TORCH_CHECK(!order.empty(), "SDXLB_ATTENTION: unknown backend \"", name,
              "\" (known: cudnn, flash, efficient, math)");
  for (const auto& [n, b] : known)
    if (n != name) order.push_back(static_cast<int64_t>(b));
  order.push_back(static_cast<int64_t>(at::SDPBackend::overrideable));
  at::globalContext().setSDPPriorityOrder(order);
  return true;
}

}  // namespace

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                  std::optional<double> scale) {
  static const bool chosen = choose_backend();
  (void)chosen;
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

bool AttentionImpl::fuse_self_projections() {
  if (options_.cross_attention_dim() || options_.bias()) return false;
  if (qkv_weight_.defined()) return true;
  at::NoGradGuard no_grad;
  const at::Tensor fused = at::cat({to_q_->weight, to_k_->weight, to_v_->weight}, 0);
  const int64_t inner = to_q_->weight.size(0);
  int64_t i = 0;
  for (Linear* l : {&to_q_, &to_k_, &to_v_}) (*l)->weight.set_data(fused.narrow(0, inner * i++, inner));
  qkv_weight_ = fused;
  return true;
}

int64_t fuse_self_attention_projections(torch::nn::Module& root) {
  if (!fusion_enabled(Fusion::kQkv)) return 0;
  int64_t fused = 0;
  for (const auto& m : root.modules(/*include_self=*/true))
    if (auto* a = m->as<AttentionImpl>()) fused += a->fuse_self_projections() ? 1 : 0;
  return fused;
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context, const BlockTokens* tokens,
                                  const ContextProjections* projected) {
  const bool downsampled = tokens != nullptr && tokens->downsample;
  const at::Tensor kv_input = context.defined() ? context : (downsampled ? downsample_tokens(x, *tokens) : x);
  const int64_t batch = kv_input.size(0);
  const int64_t heads = options_.heads();
  at::Tensor query, key, value;
  if (qkv_weight_.defined() && !context.defined() && !downsampled) {
    // One GEMM for the three projections; q, k and v are column blocks of its output (SDPA takes the
    // strided views).
    const auto qkv = at::linear(x, qkv_weight_).chunk(3, -1);
    query = qkv[0];
    key = qkv[1];
    value = qkv[2];
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
