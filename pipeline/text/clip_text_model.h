// ClipTextModel: transformers' CLIPTextModel and CLIPTextModelWithProjection, SDXL's two text encoders.
//
// The same ops in the same order as transformers 5.x with its default "sdpa" attention: token + position
// embeddings, pre-LayerNorm encoder layers with causal self-attention (no padding mask), a final LayerNorm,
// pooling at the EOS position and, for the projection model, a bias-free text_projection.
//
// Parameter names are the checkpoint's: "text_model.embeddings.token_embedding.weight", ...,
// "text_projection.weight". transformers 5 saves a plain CLIPTextModel without the "text_model." prefix
// (older versions, and so the published SDXL folders, keep it); load_clip_text_model accepts both.
//
// A loaded model is read-only during encode() and may be shared between threads that each encode on it.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/nn/layers.h"

namespace sdxlb {

/// The fields of a transformers CLIPTextConfig (a text encoder's config.json) that change the computation.
struct ClipTextConfig {
  enum class Activation { kQuickGelu, kGelu };

  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  Activation hidden_act = Activation::kQuickGelu;
  double layer_norm_eps = 1e-5;
  /// Width of text_projection's output; only used when with_projection.
  int64_t projection_dim = 512;
  /// Picks the pooling rule: 2 (old configs) -> argmax of the ids, else the first position equal to it.
  int64_t eos_token_id = 49407;
  /// True for "CLIPTextModelWithProjection" in `architectures`.
  bool with_projection = false;
  /// False when config.json has no `architectures`: the loader then decides with_projection from the weights.
  bool architecture_known = true;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  /// Reads a text encoder's config.json; absent keys take transformers' CLIPTextConfig defaults.
  /// Errors (kDataLoss, naming `source` and the key): a wrong type, a non-positive size, hidden_size not a
  /// multiple of num_attention_heads, an unsupported hidden_act or architecture, a list eos_token_id.
  static StatusOr<ClipTextConfig> from_json(const nlohmann::json& json, const std::string& source);
};

/// A lookup table (torch.nn.Embedding without padding_idx) with an uninitialised "weight" [num, dim], like
/// the layers of layers.h: load_module_weights fills it.
class ClipEmbeddingTableImpl : public torch::nn::Module {
 public:
  ClipEmbeddingTableImpl(int64_t num_embeddings, int64_t dim);
  /// Integer ids of any shape -> [..., dim].
  at::Tensor forward(const at::Tensor& ids);

  at::Tensor weight;  ///< [num_embeddings, dim]
};
TORCH_MODULE(ClipEmbeddingTable);

/// transformers' CLIPTextEmbeddings: token embedding plus learned absolute position embedding.
class ClipTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit ClipTextEmbeddingsImpl(const ClipTextConfig& config);
  /// ids int64 [B, S] -> [B, S, hidden].
  at::Tensor forward(const at::Tensor& ids);

  ClipEmbeddingTable token_embedding{nullptr};
  ClipEmbeddingTable position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

/// transformers' CLIPAttention run through SDPA with is_causal, as its "sdpa" implementation does.
class ClipAttentionImpl : public torch::nn::Module {
 public:
  explicit ClipAttentionImpl(const ClipTextConfig& config);
  /// [B, S, hidden] -> [B, S, hidden], causal.
  at::Tensor forward(const at::Tensor& x);

  Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t head_dim_;
  double scale_;
};
TORCH_MODULE(ClipAttention);

/// transformers' CLIPMLP: fc1, activation, fc2.
class ClipMlpImpl : public torch::nn::Module {
 public:
  explicit ClipMlpImpl(const ClipTextConfig& config);
  at::Tensor forward(const at::Tensor& x);

  Linear fc1{nullptr}, fc2{nullptr};

 private:
  ClipTextConfig::Activation act_;
};
TORCH_MODULE(ClipMlp);

/// transformers' CLIPEncoderLayer: x + attn(ln1(x)), then x + mlp(ln2(x)).
class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipTextConfig& config);
  at::Tensor forward(const at::Tensor& x);

  ClipAttention self_attn{nullptr};
  LayerNorm layer_norm1{nullptr};
  ClipMlp mlp{nullptr};
  LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

/// Holds "layers" (numbered ClipEncoderLayer), as transformers' CLIPEncoder.
class ClipEncoderImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderImpl(const ClipTextConfig& config);

  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

/// The "text_model" subtree: embeddings, encoder, final_layer_norm. Its parameter names are those of a
/// transformers-5 CLIPTextModel file (no prefix).
class ClipTextTransformerImpl : public torch::nn::Module {
 public:
  explicit ClipTextTransformerImpl(const ClipTextConfig& config);

  ClipTextEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

/// What encode() returns. Tensors are on the model's device in the model's dtype.
struct ClipTextOutput {
  /// hidden_states[-2]: the output of the second-to-last layer (the embeddings for a 1-layer model), before
  /// the final LayerNorm. [B, S, hidden]. This is what SDXL concatenates into prompt_embeds.
  at::Tensor penultimate;
  /// The final-LayerNormed output of the last layer, [B, S, hidden]. Undefined when the last layer was
  /// skipped.
  at::Tensor last_hidden_state;
  /// last_hidden_state at the EOS position ([B, hidden]), times text_projection for the projection model
  /// ([B, projection_dim]): transformers' pooler_output / text_embeds. Undefined when the last layer was
  /// skipped.
  at::Tensor pooled;
};

/// The whole text encoder: "text_model" plus, for CLIPTextModelWithProjection, "text_projection".
class ClipTextModelImpl : public torch::nn::Module {
 public:
  /// Builds the module tree with uninitialised parameters (see layers.h); load weights before use.
  explicit ClipTextModelImpl(const ClipTextConfig& config);

  /// ids int64 [B, S] (S <= max_position_embeddings) on the model's device. With `run_last_layer` false the
  /// last encoder layer, the final LayerNorm and pooling are skipped (penultimate is unchanged), which is all
  /// SDXL needs from text_encoder. Throws c10::Error on bad input; encode() is the checked entry point.
  ClipTextOutput forward(const at::Tensor& ids, bool run_last_layer = true);

  /// Checks `ids` (int64, 2-D, length and id range), moves them to the model's device and runs forward()
  /// in inference mode. Errors: kInvalidArgument for bad ids, kInternal for a LibTorch failure (with its
  /// text).
  StatusOr<ClipTextOutput> encode(const at::Tensor& ids, bool run_last_layer = true);

  const ClipTextConfig& config() const { return config_; }

  ClipTextTransformer text_model{nullptr};
  /// Null for a plain CLIPTextModel.
  Linear text_projection{nullptr};

 private:
  ClipTextConfig config_;
};
TORCH_MODULE(ClipTextModel);

/// Builds the text encoder `component` (e.g. "text_encoder_2") of `folder` from its config.json and loads its
/// weights (`variant` may be empty, or e.g. "fp16"), converted to `dtype` on `device`. A stored
/// "text_model.embeddings.position_ids" is accepted and ignored. The model is returned in eval mode.
/// Errors: those of the config and weight files; kDataLoss listing every missing, unexpected or mis-shaped
/// tensor; kInternal for a LibTorch failure.
StatusOr<ClipTextModel> load_clip_text_model(const ModelFolder& folder, const std::string& component,
                                             const std::string& variant, at::ScalarType dtype,
                                             at::Device device);
/// The same from a parsed config (`config_path` names it in errors) and weights under transformers names (a
/// folder's, or a single file's converted ones); `what` names the weights in errors (e.g. "text_encoder").
StatusOr<ClipTextModel> load_clip_text_model(const nlohmann::json& config_json,
                                             const std::string& config_path, const WeightSet& weights,
                                             const std::string& what, at::ScalarType dtype,
                                             at::Device device);

}  // namespace sdxlb
