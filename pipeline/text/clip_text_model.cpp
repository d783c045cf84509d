#include "pipeline/text/clip_text_model.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include "pipeline/io/config_reader.h"
#include "pipeline/io/weights.h"
#include "pipeline/nn/attention.h"

namespace sdxlb {
namespace {

// transformers pools with argmax(ids) when eos_token_id is 2 (configs written before transformers PR #24773,
// such as SDXL's text_encoder_2), and with the first position equal to eos_token_id otherwise.
constexpr int64_t kLegacyEosTokenId = 2;

LayerNorm make_layer_norm(const ClipTextConfig& c) {
  return LayerNorm(c.hidden_size, c.layer_norm_eps);
}

}  // namespace

StatusOr<ClipTextConfig> ClipTextConfig::from_json(const nlohmann::json& json, const std::string& source) {
  ConfigReader r(json, source);
  ClipTextConfig c;
  c.vocab_size = r.get<int64_t>("vocab_size", c.vocab_size);
  c.hidden_size = r.get<int64_t>("hidden_size", c.hidden_size);
  c.intermediate_size = r.get<int64_t>("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = r.get<int64_t>("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get<int64_t>("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = r.get<int64_t>("max_position_embeddings", c.max_position_embeddings);
  c.layer_norm_eps = r.get<double>("layer_norm_eps", c.layer_norm_eps);
  c.projection_dim = r.get<int64_t>("projection_dim", c.projection_dim);

  const std::string act = r.get<std::string>("hidden_act", "quick_gelu");
  if (act == "quick_gelu") {
    c.hidden_act = Activation::kQuickGelu;
  } else if (act == "gelu") {
    c.hidden_act = Activation::kGelu;
  } else {
    r.fail("hidden_act", "is \"" + act +
                             "\"; only \"quick_gelu\" (CLIP ViT-L) and \"gelu\" (OpenCLIP bigG) are "
                             "supported, the activations of SDXL's text encoders");
  }

  if (r.has("eos_token_id") && json.at("eos_token_id").is_array()) {
    r.fail("eos_token_id", "is a list; a CLIP text encoder needs a single end-of-text id (49407 for SDXL)");
  } else {
    c.eos_token_id = r.get<int64_t>("eos_token_id", c.eos_token_id);
  }

  c.architecture_known = r.has("architectures");
  if (c.architecture_known) {
    const auto archs = r.get<std::vector<std::string>>("architectures", {});
    if (archs.size() != 1 || (archs[0] != "CLIPTextModel" && archs[0] != "CLIPTextModelWithProjection")) {
      std::string got;
      for (const auto& a : archs) got += (got.empty() ? "" : ", ") + a;
      r.fail("architectures",
             "is [" + got + "]; expected [\"CLIPTextModel\"] or [\"CLIPTextModelWithProjection\"]");
    } else {
      c.with_projection = archs[0] == "CLIPTextModelWithProjection";
    }
  }
  SDXLB_RETURN_IF_ERROR(r.status());

  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"max_position_embeddings", c.max_position_embeddings},
      {"projection_dim", c.projection_dim},
  };
  for (const auto& [key, value] : sizes)
    if (value <= 0) r.fail(key, "is " + std::to_string(value) + "; it must be positive");
  if (c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads != 0)
    r.fail("hidden_size", "(" + std::to_string(c.hidden_size) +
                              ") is not a multiple of num_attention_heads (" +
                              std::to_string(c.num_attention_heads) + ")");
  if (!(c.layer_norm_eps > 0)) r.fail("layer_norm_eps", "must be positive");
  SDXLB_RETURN_IF_ERROR(r.status());
  return c;
}

ClipEmbeddingTableImpl::ClipEmbeddingTableImpl(int64_t num_embeddings, int64_t dim) {
  // Uninitialised and without grad, like layers.h: the checkpoint overwrites it (49408 x 1280 for bigG).
  weight = register_parameter("weight", at::empty({num_embeddings, dim}), /*requires_grad=*/false);
}

// torch.nn.Embedding's F.embedding(ids, weight) with padding_idx None is this call.
at::Tensor ClipEmbeddingTableImpl::forward(const at::Tensor& ids) {
  return at::embedding(weight, ids, /*padding_idx=*/-1, /*scale_grad_by_freq=*/false, /*sparse=*/false);
}

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(const ClipTextConfig& c) {
  token_embedding = register_module("token_embedding", ClipEmbeddingTable(c.vocab_size, c.hidden_size));
  position_embedding =
      register_module("position_embedding", ClipEmbeddingTable(c.max_position_embeddings, c.hidden_size));
}

at::Tensor ClipTextEmbeddingsImpl::forward(const at::Tensor& ids) {
  const int64_t seq = ids.size(-1);
  const int64_t max_pos = position_embedding->weight.size(0);
  TORCH_CHECK(seq <= max_pos, "sequence length ", seq, " exceeds max_position_embeddings ", max_pos);
  // transformers' (non-persistent) position_ids buffer: arange(max_pos)[None, :seq].
  const at::Tensor position_ids =
      at::arange(max_pos, ids.options().dtype(at::kLong)).unsqueeze(0).slice(1, 0, seq);
  return token_embedding(ids) + position_embedding(position_ids);
}

ClipAttentionImpl::ClipAttentionImpl(const ClipTextConfig& c)
    : head_dim_(c.head_dim()), scale_(std::pow(static_cast<double>(c.head_dim()), -0.5)) {
  k_proj = register_module("k_proj", Linear(c.hidden_size, c.hidden_size));
  v_proj = register_module("v_proj", Linear(c.hidden_size, c.hidden_size));
  q_proj = register_module("q_proj", Linear(c.hidden_size, c.hidden_size));
  out_proj = register_module("out_proj", Linear(c.hidden_size, c.hidden_size));
}

at::Tensor ClipAttentionImpl::forward(const at::Tensor& x) {
  const int64_t batch = x.size(0);
  const int64_t seq = x.size(1);
  // Same views and strides as transformers, so SDPA picks the same kernel on the same memory layout.
  const at::Tensor q = q_proj(x).view({batch, seq, -1, head_dim_}).transpose(1, 2);
  const at::Tensor k = k_proj(x).view({batch, seq, -1, head_dim_}).transpose(1, 2);
  const at::Tensor v = v_proj(x).view({batch, seq, -1, head_dim_}).transpose(1, 2);
  // transformers' sdpa path passes no mask and is_causal=True (CLIP text has no padding mask), with an
  // explicit scale of head_dim**-0.5.
  at::Tensor o = attend(q, k, v, /*causal=*/seq > 1, scale_);
  o = o.transpose(1, 2).contiguous().reshape({batch, seq, -1}).contiguous();
  return out_proj(o);
}

ClipMlpImpl::ClipMlpImpl(const ClipTextConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", Linear(c.hidden_size, c.intermediate_size));
  fc2 = register_module("fc2", Linear(c.intermediate_size, c.hidden_size));
}

at::Tensor ClipMlpImpl::forward(const at::Tensor& x) {
  at::Tensor h = fc1(x);
  // quick_gelu is transformers' QuickGELUActivation: x * sigmoid(1.702 * x); gelu is the exact (erf) GELU.
  h = act_ == ClipTextConfig::Activation::kQuickGelu ? h * at::sigmoid(h * 1.702) : at::gelu(h);
  return fc2(h);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c) {
  self_attn = register_module("self_attn", ClipAttention(c));
  layer_norm1 = register_module("layer_norm1", make_layer_norm(c));
  mlp = register_module("mlp", ClipMlp(c));
  layer_norm2 = register_module("layer_norm2", make_layer_norm(c));
}

at::Tensor ClipEncoderLayerImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + self_attn(layer_norm1(x));
  return h + mlp(layer_norm2(h));
}

ClipEncoderImpl::ClipEncoderImpl(const ClipTextConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(c));
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& c) {
  embeddings = register_module("embeddings", ClipTextEmbeddings(c));
  encoder = register_module("encoder", ClipEncoder(c));
  final_layer_norm = register_module("final_layer_norm", make_layer_norm(c));
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : config_(c) {
  text_model = register_module("text_model", ClipTextTransformer(c));
  if (c.with_projection)
    text_projection =
        register_module("text_projection", Linear(c.hidden_size, c.projection_dim, /*bias=*/false));
}

ClipTextOutput ClipTextModelImpl::forward(const at::Tensor& ids, bool run_last_layer) {
  TORCH_CHECK(ids.dim() == 2, "token ids must be [batch, sequence], got ", ids.sizes());
  ClipTextOutput out;
  at::Tensor h = text_model->embeddings(ids);
  auto& layers = *text_model->encoder->layers;
  const int64_t n = static_cast<int64_t>(layers.size());
  // hidden_states = [embeddings, layer 0, ..., layer n-1]; hidden_states[-2] is the output of layer n-2.
  if (n == 1) out.penultimate = h;
  const int64_t run = run_last_layer ? n : n - 1;
  for (int64_t i = 0; i < run; ++i) {
    h = layers[i]->as<ClipEncoderLayerImpl>()->forward(h);
    if (i == n - 2) out.penultimate = h;
  }
  if (!run_last_layer) return out;

  out.last_hidden_state = text_model->final_layer_norm(h);
  const at::Tensor ids32 = ids.to(at::kInt);
  const at::Tensor eos_pos = config_.eos_token_id == kLegacyEosTokenId
                                 ? ids32.argmax(-1)
                                 : ids32.eq(config_.eos_token_id).to(at::kInt).argmax(-1);
  const int64_t batch = ids.size(0);
  const int64_t seq = ids.size(1);
  // Row b of the pooled output is last_hidden_state[b, eos_pos[b]]: a gather of whole rows, so exact.
  const at::Tensor flat_index = at::arange(batch, eos_pos.options()) * seq + eos_pos;
  out.pooled = out.last_hidden_state.reshape({batch * seq, -1}).index_select(0, flat_index);
  if (text_projection) out.pooled = text_projection(out.pooled);
  return out;
}

StatusOr<ClipTextOutput> ClipTextModelImpl::encode(const at::Tensor& ids, bool run_last_layer) {
  if (!ids.defined()) return invalid_argument("CLIP text encoder: token ids tensor is undefined");
  if (ids.scalar_type() != at::kLong && ids.scalar_type() != at::kInt)
    return invalid_argument(std::string("CLIP text encoder: token ids must be int64 (or int32), got ") +
                            c10::toString(ids.scalar_type()));
  if (ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1 || ids.size(1) > config_.max_position_embeddings)
    return invalid_argument("CLIP text encoder: token ids must be [batch, sequence] with 1 <= sequence <= " +
                            std::to_string(config_.max_position_embeddings) +
                            " (max_position_embeddings), got " + c10::str(ids.sizes()));
  try {
    c10::InferenceMode guard;
    // An out-of-range id would be a device-side assert on CUDA; check it here and name the offending value.
    const int64_t lo = ids.min().item<int64_t>();
    const int64_t hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      return invalid_argument("CLIP text encoder: token id " + std::to_string(lo < 0 ? lo : hi) +
                              " is outside the vocabulary [0, " + std::to_string(config_.vocab_size) +
                              "); are the ids from the matching tokenizer?");
    const at::Device device = text_model->embeddings->token_embedding->weight.device();
    return forward(ids.to(device, at::kLong), run_last_layer);
  } catch (const c10::Error& e) {
    return internal_error(std::string("CLIP text encoder forward failed: ") + e.what_without_backtrace());
  }
}

StatusOr<ClipTextModel> load_clip_text_model(const ModelFolder& folder, const std::string& component,
                                             const std::string& variant, at::ScalarType dtype,
                                             at::Device device) {
  SDXLB_ASSIGN_OR_RETURN(nlohmann::json json, folder.component_config(component));
  const std::string config_path = folder.component_dir(component) + "/config.json";
  SDXLB_ASSIGN_OR_RETURN(WeightSet weights, folder.component_weights(component, variant));
  return load_clip_text_model(json, config_path, weights, component, dtype, device);
}

StatusOr<ClipTextModel> load_clip_text_model(const nlohmann::json& json, const std::string& config_path,
                                             const WeightSet& weights, const std::string& component,
                                             at::ScalarType dtype, at::Device device) {
  SDXLB_ASSIGN_OR_RETURN(ClipTextConfig config, ClipTextConfig::from_json(json, config_path));

  if (!config.architecture_known) config.with_projection = weights.find("text_projection.weight") != nullptr;
  // transformers >= 5 saves a plain CLIPTextModel without the "text_model." prefix; earlier versions (and
  // CLIPTextModelWithProjection always) keep it. The prefix-free file is then a lookup in the text_model
  // subtree.
  bool prefixed = config.with_projection;
  for (const auto& name : weights.names())
    if (name.rfind("text_model.", 0) == 0) prefixed = true;

  try {
    ClipTextModel model(config);
    LoadOptions options;
    options.dtype = dtype;
    options.device = device;
    const std::string what = component + " weights";
    if (prefixed) {
      // Checkpoints from transformers < 4.31 store the position_ids buffer; it is always arange, so ignore
      // it.
      options.optional_keys = {"text_model.embeddings.position_ids"};
      SDXLB_RETURN_IF_ERROR(load_module_weights(*model, weights, what, options));
    } else {
      options.optional_keys = {"embeddings.position_ids"};
      SDXLB_RETURN_IF_ERROR(load_module_weights(*model->text_model, weights, what, options));
    }
    model->eval();
    return model;
  } catch (const c10::Error& e) {
    return internal_error("building " + component + " from " + weights.describe() +
                          " failed: " + e.what_without_backtrace());
  }
}

}  // namespace sdxlb
