#include "pipeline/nn/attention.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/nn/modules/container/modulelist.h>

#include "pipeline/nn/fused_ops.h"

namespace sdxlb {

namespace {

// The widest head the fused attention kernels take (flash attention and cuDNN's: 256). Wider ones (the VAE's
// single 512-wide head) fall to PyTorch's memory-efficient kernel, which ran at 149 TFLOP/s on the H200 (a
// dense fp16 GEMM: 722).
constexpr int64_t kFusedMaxHeadDim = 256;
// Float32 scores held at once by the wide-head path: 16 Mi (64 MiB, and half that for the probabilities), so
// its transient memory stays small beside a decode's activations.
constexpr int64_t kScoreChunkElements = int64_t{1} << 24;

bool takes_wide_head_path(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  const auto dt = q.scalar_type();
  return q.is_cuda() && !causal && q.dim() == 4 && k.dim() == 4 && v.dim() == 4 &&
         q.size(-1) > kFusedMaxHeadDim && (dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat) &&
         k.scalar_type() == dt && v.scalar_type() == dt && q.size(0) == k.size(0) && q.size(1) == k.size(1) &&
         fused_kernels_available() && fusion_enabled(Fusion::kWideAttention);
}

// Lets cuBLAS run float32 products in TF32 while it lives (PyTorch's allow_tf32 flag, which is process-wide:
// the GPU work of a worker runs on one thread). cuDNN already runs the float32 VAE's convolutions in TF32
// (PyTorch's default); without it the attention of the SDXL VAE under force_upcast ran at float32 SIMT speed.
class Tf32Products {
 public:
  Tf32Products() : was_(at::globalContext().allowTF32CuBLAS()) {
    at::globalContext().setAllowTF32CuBLAS(true);
  }
  ~Tf32Products() { at::globalContext().setAllowTF32CuBLAS(was_); }
  Tf32Products(const Tf32Products&) = delete;
  Tf32Products& operator=(const Tf32Products&) = delete;

 private:
  bool was_;
};

// softmax(q kᵀ · scale) v as the two GEMMs and the softmax in between, over chunks of queries: the scores in
// float32 (cuBLAS, float32 accumulation and output), their softmax in float32 rounded to q's dtype (as flash
// attention rounds its probabilities before the second product), then the product with v, float32
// accumulation. The same method; only the rounding differs from the fused kernels. float32 inputs multiply
// in TF32 (Tf32Products).
at::Tensor attend_wide_heads(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  std::optional<Tf32Products> tf32;
  if (q.scalar_type() == at::kFloat) tf32.emplace();
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2), d = q.size(3), m = k.size(2), dv = v.size(3);
  const at::Tensor q3 = q.reshape({b * h, n, d});
  const at::Tensor kt = k.reshape({b * h, m, d}).transpose(1, 2);
  const at::Tensor v3 = v.reshape({b * h, m, dv});
  at::Tensor out = at::empty({n, b * h, dv}, q.options());  // chunks of queries are contiguous slices
  const int64_t rows = std::max<int64_t>(1, kScoreChunkElements / std::max<int64_t>(1, b * h * m));
  for (int64_t i = 0; i < n; i += rows) {
    const int64_t r = std::min(rows, n - i);
    const at::Tensor qc = q3.narrow(1, i, r);
    const at::Tensor scores = qc.scalar_type() == at::kFloat ? at::bmm(qc, kt) : at::bmm(qc, kt, at::kFloat);
    const at::Tensor p = scaled_softmax(scores, scale, q.scalar_type());
    out.narrow(0, i, r).copy_(at::bmm(p, v3).transpose(0, 1));
  }
  return out.permute({1, 0, 2}).reshape({b, h, n, dv});
}

}  // namespace

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                  std::optional<double> scale) {
  if (takes_wide_head_path(q, k, v, causal))
    return attend_wide_heads(q, k, v, scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1)))));
  if (!causal) return short_attention(q, k, v, scale);
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

void AttentionImpl::project_context(const at::Tensor& context, ContextProjections& out) {
  std::pair<at::Tensor, at::Tensor> kv = project_context(context);
  if (to_out_->is_fp8() && kv.second.is_cuda() && fusion_enabled(Fusion::kFp8CrossOut))
    out.value_scale[this] = context_value_scale(kv.second);
  out.kv[this] = std::move(kv);
}

bool AttentionImpl::takes_fp8() const {
  return to_q_->is_fp8() &&
         (options_.cross_attention_dim().has_value() || (to_k_->is_fp8() && to_v_->is_fp8()));
}

std::pair<at::Tensor, at::Tensor> AttentionImpl::context_kv(const at::Tensor& context,
                                                            const ContextProjections* projected,
                                                            int64_t first, int64_t count) {
  if (projected != nullptr) {
    if (auto it = projected->kv.find(this); it != projected->kv.end()) {
      const auto& [key, value] = it->second;
      if (first == 0 && key.size(0) == count) return it->second;
      TORCH_CHECK(first >= 0 && first + count <= key.size(0), "Attention: samples ", first, " .. ",
                  first + count, " of a call whose projected context has ", key.size(0));
      return {key.narrow(0, first, count), value.narrow(0, first, count)};
    }
  }
  return project_context(context);
}

void AttentionImpl::fill_zero_context_output(at::Tensor out) const {
  TORCH_CHECK(options_.cross_attention_dim().has_value(),
              "Attention::fill_zero_context_output on a self-attention");
  if (to_out_->bias.defined()) {
    out.copy_(to_out_->bias.expand_as(out));
  } else {
    out.zero_();
  }
}

at::Tensor AttentionImpl::project_out(const at::Tensor& h, const at::Tensor& out) {
  if (!out.defined()) return to_out_(h);
  TORCH_CHECK(out.is_contiguous() && out.numel() / std::max<int64_t>(1, out.size(-1)) ==
                                         h.numel() / std::max<int64_t>(1, h.size(-1)),
              "Attention: to_out's output buffer must be contiguous, one row per input row; got ",
              out.sizes(), " for an input ", h.sizes());
  if (to_out_->is_fp8()) return out.copy_(to_out_(h));
  // at::linear's own product for a contiguous input: addmm on the rows (mm without a bias), here into out.
  const at::Tensor rows = h.reshape({-1, h.size(-1)});
  at::Tensor dst = out.view({-1, out.size(-1)});
  if (to_out_->bias.defined()) {
    at::addmm_out(dst, to_out_->bias, rows, to_out_->weight.t());
  } else {
    at::mm_out(dst, rows, to_out_->weight.t());
  }
  return out;
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context, const BlockTokens* tokens,
                                  const ContextProjections* projected, const CrossRows& rows) {
  const at::Tensor kv_input =
      context.defined() ? context : (tokens != nullptr ? downsample_tokens(x, *tokens) : x);
  at::Tensor query, key, value;
  if (to_q_->is_fp8() && to_k_->is_fp8() && to_v_->is_fp8() && !context.defined() && kv_input.is_same(x)) {
    // FP8 self-attention: x quantised once for the three projections.
    std::tie(query, key, value) = project_fp8(quantize_activation(x));
  } else if (qkv_weight_.defined() && kv_input.is_same(x)) {
    // Fused projections: one GEMM, its column slices the query, keys and values.
    const at::Tensor y = at::linear(x, qkv_weight_, qkv_bias_);
    const int64_t inner = y.size(-1) / 3;
    query = y.narrow(-1, 0, inner);
    key = y.narrow(-1, inner, inner);
    value = y.narrow(-1, 2 * inner, inner);
  } else {
    query = project(0, x);
    if (context.defined()) {
      std::tie(key, value) = context_kv(context, projected, rows.first_sample, x.size(0));
    } else {
      key = project(1, kv_input);
      value = project(2, kv_input);
    }
  }
  return attend_heads(query, key, value, kv_input.size(0), rows.out);
}

at::Tensor AttentionImpl::project(int64_t i, const at::Tensor& x) {
  if (!qkv_weight_.defined()) return (i == 0 ? to_q_ : i == 1 ? to_k_ : to_v_)->forward(x);
  const int64_t inner = qkv_weight_.size(0) / 3;
  return at::linear(x, qkv_weight_.narrow(0, i * inner, inner),
                    qkv_bias_.defined() ? qkv_bias_.narrow(0, i * inner, inner) : at::Tensor());
}

bool AttentionImpl::fuse_projections() {
  const bool biases = to_q_->bias.defined();
  if (options_.cross_attention_dim().has_value() || qkv_weight_.defined() || to_q_->is_fp8() ||
      to_k_->is_fp8() || to_v_->is_fp8() || to_k_->bias.defined() != biases ||
      to_v_->bias.defined() != biases)
    return false;
  at::NoGradGuard no_grad;
  qkv_weight_ = hold_buffer(*this, "qkv_weight", at::cat({to_q_->weight, to_k_->weight, to_v_->weight}, 0));
  if (biases) qkv_bias_ = hold_buffer(*this, "qkv_bias", at::cat({to_q_->bias, to_k_->bias, to_v_->bias}, 0));
  for (Linear* layer : {&to_q_, &to_k_, &to_v_}) {
    (*layer)->weight.set_data(at::empty({0}, (*layer)->weight.options()));
    if (biases) (*layer)->bias.set_data(at::empty({0}, (*layer)->bias.options()));
  }
  return true;
}

int64_t fuse_attention_projections(torch::nn::Module& model) {
  if (!fusion_enabled(Fusion::kQkv)) return 0;
  int64_t fused = 0;
  for (const auto& item : model.modules())
    if (auto* attention = item->as<AttentionImpl>(); attention != nullptr && attention->fuse_projections())
      ++fused;
  return fused;
}

bool AttentionImpl::fuse_fp8_projections() {
  if (options_.cross_attention_dim().has_value() || !to_q_->is_fp8() || !to_k_->is_fp8() ||
      !to_v_->is_fp8() || fp8_qkv_.q.defined() || to_q_->bias.defined() || to_k_->bias.defined() ||
      to_v_->bias.defined() || to_q_->fp8().fast_accum != to_k_->fp8().fast_accum ||
      to_q_->fp8().fast_accum != to_v_->fp8().fast_accum)
    return false;
  at::NoGradGuard no_grad;
  // The three layers hand their weights over: one copy in memory, held by this module.
  const Fp8Weight q = to_q_->hand_over_fp8(), k = to_k_->hand_over_fp8(), v = to_v_->hand_over_fp8();
  fp8_qkv_.q = hold_buffer(*this, "fp8_qkv_weight", at::cat({q.q, k.q, v.q}, 0));
  fp8_qkv_.scale = hold_buffer(*this, "fp8_qkv_scale", at::cat({q.scale, k.scale, v.scale}, 1).contiguous());
  fp8_qkv_.fast_accum = q.fast_accum;
  return true;
}

Fp8Weight AttentionImpl::projection_fp8(int64_t i) const {
  if (!fp8_qkv_.q.defined()) return (i == 0 ? to_q_ : i == 1 ? to_k_ : to_v_)->fp8();
  const int64_t inner = fp8_qkv_.q.size(0) / 3;
  return {fp8_qkv_.q.narrow(0, i * inner, inner), fp8_qkv_.scale.narrow(1, i * inner, inner),
          fp8_qkv_.fast_accum};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AttentionImpl::project_fp8(const Fp8Activation& x) {
  if (!fp8_qkv_.q.defined()) return {to_q_->forward_fp8(x), to_k_->forward_fp8(x), to_v_->forward_fp8(x)};
  const at::Tensor y = fp8_linear(x, fp8_qkv_, {});
  const int64_t inner = y.size(-1) / 3;
  return {y.narrow(-1, 0, inner), y.narrow(-1, inner, inner), y.narrow(-1, 2 * inner, inner)};
}

void AttentionImpl::use_fp8_attention(double input_radius) {
  TORCH_CHECK(takes_fp8() && !options_.cross_attention_dim().has_value(),
              "Attention::use_fp8_attention needs a self-attention whose projections are FP8");
  // With the projections fused, the query, keys and values are one tensor and take one scale: the largest.
  float q = fp8_projection_scale(projection_fp8(0), to_q_->bias, input_radius),
        k = fp8_projection_scale(projection_fp8(1), to_k_->bias, input_radius),
        v = fp8_projection_scale(projection_fp8(2), to_v_->bias, input_radius);
  if (fp8_qkv_.q.defined()) q = k = v = std::max({q, k, v});
  // On the weights' device; a buffer, so that it moves with the module (and its weight streamer).
  fp8_attention_ = make_fp8_attention_scales(q, k, v, projection_fp8(0).q.device());
  fp8_attention_.device = hold_buffer(*this, "fp8_attention_scales", fp8_attention_.device);
}

at::Tensor AttentionImpl::forward_fp8(const Fp8Activation& x, const at::Tensor& context,
                                      const ContextProjections* projected, const CrossRows& rows) {
  TORCH_CHECK(takes_fp8(), "Attention::forward_fp8 on a module whose projections are not FP8");
  at::Tensor query, key, value;
  if (context.defined()) {
    query = to_q_->forward_fp8(x);
    const int64_t samples = x.shape.front();
    std::tie(key, value) = context_kv(context, projected, rows.first_sample, samples);
    // FP8 to_out: the attention writes e4m3 at the image's values' scale, projected ahead with them or taken
    // now from the same values (the same scale, so every placement gives the same bits).
    if (to_out_->is_fp8() && value.is_cuda() && fusion_enabled(Fusion::kFp8CrossOut)) {
      at::Tensor out_scale;
      if (projected != nullptr)
        if (auto it = projected->value_scale.find(this); it != projected->value_scale.end())
          out_scale = it->second.narrow(0, rows.first_sample, samples);
      if (!out_scale.defined()) out_scale = context_value_scale(value);
      const int64_t batch = samples, heads = options_.heads(), head_dim = key.size(-1) / heads;
      const auto split = [&](const at::Tensor& t) {
        return t.view({batch, -1, heads, head_dim}).transpose(1, 2);
      };
      if (auto o = short_attention_e4m3(split(query), split(key), split(value), out_scale)) {
        at::Tensor y = to_out_->forward_fp8(make_activation(o->first.view({-1, o->first.size(-1)}), o->second,
                                                            o->first.sizes().vec(), x.dtype));
        return rows.out.defined() ? rows.out.copy_(y) : y;
      }
    }
    return attend_heads(query, key, value, samples, rows.out);
  }
  if (runs_fp8_attention()) {
    // e4m3 query, keys and values at their static scales → cuDNN's FP8 attention → its e4m3 output, at the
    // values' scale, straight into to_out's e4m3 GEMM. Fused projections: one tensor, one pass to e4m3.
    const Fp8AttentionScales& s = fp8_attention_;
    at::Tensor q8, k8, v8;
    if (fp8_qkv_.q.defined()) {
      const at::Tensor y = fp8_linear_e4m3(x, fp8_qkv_, s.q);
      const int64_t inner = y.size(-1) / 3;
      q8 = y.narrow(-1, 0, inner);
      k8 = y.narrow(-1, inner, inner);
      v8 = y.narrow(-1, 2 * inner, inner);
    } else {
      const std::vector<at::Tensor> qkv = quantize_fixed(
          {to_q_->forward_fp8(x), to_k_->forward_fp8(x), to_v_->forward_fp8(x)}, {s.q, s.k, s.v});
      q8 = qkv[0];
      k8 = qkv[1];
      v8 = qkv[2];
    }
    const at::Tensor o = fp8_attention(q8, k8, v8, options_.heads(), s);
    const int64_t rows = o.numel() / o.size(-1);
    const at::Tensor scale = at::full({rows, 1}, s.v, o.options().dtype(at::kFloat));
    return to_out_->forward_fp8(make_activation(o.view({rows, o.size(-1)}), scale, o.sizes().vec(), x.dtype));
  }
  std::tie(query, key, value) = project_fp8(x);
  return attend_heads(query, key, value, x.shape.front());
}

at::Tensor AttentionImpl::attend_heads(const at::Tensor& query, const at::Tensor& key,
                                       const at::Tensor& value, int64_t batch, const at::Tensor& out) {
  const int64_t heads = options_.heads();
  const int64_t head_dim = key.size(-1) / heads;
  at::Tensor h = attend(query.view({batch, -1, heads, head_dim}).transpose(1, 2),
                        key.view({batch, -1, heads, head_dim}).transpose(1, 2),
                        value.view({batch, -1, heads, head_dim}).transpose(1, 2));
  h = h.transpose(1, 2).reshape({batch, -1, heads * head_dim}).to(query.scalar_type());
  return project_out(h, out);
}

}  // namespace sdxlb
