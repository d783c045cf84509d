#include "pipeline/models/unet.h"

#include <algorithm>
#include <sstream>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/container/modulelist.h>

#include "pipeline/io/config_reader.h"
#include "pipeline/io/weights.h"
#include "pipeline/nn/attention.h"
#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/gpu_numerics.h"
#include "pipeline/nn/transformer_2d.h"

namespace sdxlb {
namespace {

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

// Checks of config values this UNet does not implement. Each failure names the key, its value and what is
// supported; the first one is kept.
class SupportCheck {
 public:
  SupportCheck(const nlohmann::json& json, std::string source) : json_(json), source_(std::move(source)) {}

  /// The key must be absent or null.
  void null(const std::string& key, const std::string& why = "") {
    if (present(key)) fail(key, "null", why);
  }
  /// The key, when present and not null, must equal `expected`.
  void equals(const std::string& key, const nlohmann::json& expected, const std::string& why = "") {
    if (present(key) && json_.at(key) != expected) fail(key, expected.dump(), why);
  }
  /// The key, when present and not null, must be one of `allowed`.
  void one_of(const std::string& key, const std::vector<std::string>& allowed) {
    if (!present(key)) return;
    const auto& v = json_.at(key);
    if (v.is_string() && std::find(allowed.begin(), allowed.end(), v.get<std::string>()) != allowed.end())
      return;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
    fail(key, list, "");
  }
  void fail(const std::string& key, const std::string& supported, const std::string& why) {
    if (!status_.is_ok()) return;
    const std::string value = json_.contains(key) ? json_.at(key).dump() : "absent";
    status_ = unimplemented(source_ + ": key \"" + key + "\" is " + value +
                            ", which this UNet does not implement (supported: " + supported + ")" +
                            (why.empty() ? "" : ". " + why));
  }
  Status status() const { return status_; }

 private:
  bool present(const std::string& key) const { return json_.contains(key) && !json_.at(key).is_null(); }

  const nlohmann::json& json_;
  std::string source_;
  Status status_;
};

StatusOr<std::vector<UNetConfig::BlockKind>> parse_block_types(const std::vector<std::string>& types,
                                                               const std::string& key,
                                                               const std::string& plain,
                                                               const std::string& cross,
                                                               const std::string& source) {
  std::vector<UNetConfig::BlockKind> kinds;
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] == plain) {
      kinds.push_back(UNetConfig::BlockKind::kPlain);
    } else if (types[i] == cross) {
      kinds.push_back(UNetConfig::BlockKind::kCrossAttn);
    } else {
      return unimplemented(source + ": key \"" + key + "\"[" + std::to_string(i) + "] is \"" + types[i] +
                           "\", a block type this UNet does not implement (supported: \"" + plain + "\", \"" +
                           cross + "\")");
    }
  }
  return kinds;
}

}  // namespace

StatusOr<UNetConfig> UNetConfig::from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) return data_loss(source + ": expected a JSON object (a diffusers unet/config.json)");
  ConfigReader r(json, source);
  UNetConfig c;

  c.in_channels = r.get<int64_t>("in_channels", 4);
  c.out_channels = r.get<int64_t>("out_channels", 4);
  c.center_input_sample = r.get<bool>("center_input_sample", false);
  c.flip_sin_to_cos = r.get<bool>("flip_sin_to_cos", true);
  c.freq_shift = r.get<double>("freq_shift", 0.0);
  const auto down_types = r.require<std::vector<std::string>>("down_block_types");
  const auto up_types = r.require<std::vector<std::string>>("up_block_types");
  c.block_out_channels = r.require<std::vector<int64_t>>("block_out_channels");
  c.downsample_padding = r.get<int64_t>("downsample_padding", 1);
  c.mid_block_scale_factor = r.get<double>("mid_block_scale_factor", 1.0);
  c.norm_num_groups = r.require<int64_t>("norm_num_groups");
  c.norm_eps = r.get<double>("norm_eps", 1e-5);
  c.use_linear_projection = r.get<bool>("use_linear_projection", false);
  c.conv_in_kernel = r.get<int64_t>("conv_in_kernel", 3);
  c.conv_out_kernel = r.get<int64_t>("conv_out_kernel", 3);
  c.addition_time_embed_dim = r.require<int64_t>("addition_time_embed_dim");
  c.projection_class_embeddings_input_dim = r.require<int64_t>("projection_class_embeddings_input_dim");
  SDXLB_RETURN_IF_ERROR(r.status());

  const size_t n = c.block_out_channels.size();
  if (n == 0) return data_loss(source + ": key \"block_out_channels\" is empty");
  if (down_types.size() != n || up_types.size() != n) {
    return data_loss(source + ": \"down_block_types\" (" + std::to_string(down_types.size()) +
                     "), \"up_block_types\" (" + std::to_string(up_types.size()) +
                     ") and \"block_out_channels\" (" + std::to_string(n) + ") must have the same length");
  }
  c.layers_per_block = r.get_per_level("layers_per_block", n, 2);
  c.cross_attention_dim = r.get_per_level("cross_attention_dim", n, 1280);
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim, and it refuses a non-null
  // num_attention_heads, so for every loadable config the heads come from "attention_head_dim".
  c.num_attention_heads = r.get_per_level("attention_head_dim", n, 8);
  if (r.has("transformer_layers_per_block") && json.at("transformer_layers_per_block").is_array()) {
    for (const auto& v : json.at("transformer_layers_per_block")) {
      if (v.is_array()) {
        return unimplemented(source + ": key \"transformer_layers_per_block\" holds per-layer lists (an " +
                             "asymmetric UNet), which this UNet does not implement (supported: an integer " +
                             "or one integer per level)");
      }
    }
  }
  c.transformer_layers_per_block = r.get_per_level("transformer_layers_per_block", n, 1);
  c.time_embed_dim = r.get<int64_t>("time_embedding_dim", 4 * c.block_out_channels[0]);
  SDXLB_RETURN_IF_ERROR(r.status());

  SupportCheck s(json, source);
  s.equals("_class_name", "UNet2DConditionModel");
  s.null(
      "num_attention_heads",
      "diffusers refuses it too: \"attention_head_dim\" holds the number of heads in UNet2DConditionModel");
  s.one_of("mid_block_type", {"UNetMidBlock2DCrossAttn"});
  if (json.contains("mid_block_type") && json.at("mid_block_type").is_null())
    s.fail("mid_block_type", "\"UNetMidBlock2DCrossAttn\"", "");
  s.one_of("act_fn", {"silu", "swish"});
  s.one_of("addition_embed_type", {"text_time"});
  if (!r.has("addition_embed_type"))
    s.fail("addition_embed_type", "\"text_time\"", "SDXL's added conditioning");
  s.one_of("time_embedding_type", {"positional"});
  s.one_of("resnet_time_scale_shift", {"default"});
  s.one_of("attention_type", {"default"});
  s.equals("upcast_attention", false);
  s.equals("dual_cross_attention", false);
  s.equals("class_embeddings_concat", false);
  s.equals("mid_block_only_cross_attention", false);
  if (json.contains("only_cross_attention")) {
    const auto& v = json.at("only_cross_attention");
    const bool all_false = v.is_boolean() ? !v.get<bool>()
                           : v.is_array()
                               ? std::all_of(v.begin(), v.end(), [](const auto& x) { return x == false; })
                               : v.is_null();
    if (!all_false) s.fail("only_cross_attention", "false", "");
  }
  for (const char* key : {"class_embed_type", "num_class_embeds", "encoder_hid_dim", "encoder_hid_dim_type",
                          "time_cond_proj_dim", "time_embedding_act_fn", "timestep_post_act",
                          "reverse_transformer_layers_per_block", "cross_attention_norm"}) {
    s.null(key);
  }
  SDXLB_RETURN_IF_ERROR(s.status());

  SDXLB_ASSIGN_OR_RETURN(c.down_blocks, parse_block_types(down_types, "down_block_types", "DownBlock2D",
                                                          "CrossAttnDownBlock2D", source));
  SDXLB_ASSIGN_OR_RETURN(
      c.up_blocks, parse_block_types(up_types, "up_block_types", "UpBlock2D", "CrossAttnUpBlock2D", source));

  // Sizes that would only fail deep inside a forward pass (or divide by zero) are refused here.
  auto positive = [&](const std::string& key, int64_t v, const std::string& where = "") -> Status {
    if (v > 0) return Status::ok();
    return data_loss(source + ": key \"" + key + "\" must be positive" + (where.empty() ? "" : " " + where) +
                     ", got " + std::to_string(v));
  };
  SDXLB_RETURN_IF_ERROR(positive("in_channels", c.in_channels));
  SDXLB_RETURN_IF_ERROR(positive("out_channels", c.out_channels));
  SDXLB_RETURN_IF_ERROR(positive("norm_num_groups", c.norm_num_groups));
  SDXLB_RETURN_IF_ERROR(positive("addition_time_embed_dim", c.addition_time_embed_dim));
  SDXLB_RETURN_IF_ERROR(
      positive("projection_class_embeddings_input_dim", c.projection_class_embeddings_input_dim));
  // The channels first: time_embedding_dim defaults to 4 x block_out_channels[0], and a message about the
  // derived key hid the one the file got wrong.
  for (size_t i = 0; i < n; ++i)
    SDXLB_RETURN_IF_ERROR(positive("block_out_channels", c.block_out_channels[i]));
  SDXLB_RETURN_IF_ERROR(positive("time_embedding_dim", c.time_embed_dim));
  // The attention settings of a level matter only where a block has attention: its down block, the up block
  // that mirrors it, or (the last level) the mid block. Elsewhere diffusers ignores them, and so do we: the
  // SDXL paper writes the depths as [0, 2, 10], and configs with a 0 on the first level render in diffusers.
  auto has_attention = [&](size_t level) {
    return level + 1 == n || c.down_blocks[level] == UNetConfig::BlockKind::kCrossAttn ||
           c.up_blocks[n - 1 - level] == UNetConfig::BlockKind::kCrossAttn;
  };
  for (size_t i = 0; i < n; ++i) {
    SDXLB_RETURN_IF_ERROR(positive("layers_per_block", c.layers_per_block[i]));
    if (has_attention(i)) {
      const std::string where = "on level " + std::to_string(i) + ", which has attention";
      SDXLB_RETURN_IF_ERROR(positive("attention_head_dim", c.num_attention_heads[i], where));
      SDXLB_RETURN_IF_ERROR(positive("cross_attention_dim", c.cross_attention_dim[i], where));
      SDXLB_RETURN_IF_ERROR(
          positive("transformer_layers_per_block", c.transformer_layers_per_block[i], where));
    }
    if (c.block_out_channels[i] % c.norm_num_groups != 0) {
      return data_loss(source + ": block_out_channels[" + std::to_string(i) +
                       "] = " + std::to_string(c.block_out_channels[i]) +
                       " is not divisible by norm_num_groups = " + std::to_string(c.norm_num_groups));
    }
  }
  if (c.conv_in_kernel % 2 == 0 || c.conv_out_kernel % 2 == 0 || c.conv_in_kernel < 1 ||
      c.conv_out_kernel < 1) {
    return data_loss(source + ": \"conv_in_kernel\" and \"conv_out_kernel\" must be odd and positive");
  }
  if (c.downsample_padding < 0) return data_loss(source + ": \"downsample_padding\" must be >= 0");
  return c;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& c) : config_(c) {
  const size_t n = c.num_levels();
  const int64_t c0 = c.block_out_channels[0];
  conv_in_ =
      register_module("conv_in", Conv2d(c.in_channels, c0, c.conv_in_kernel, 1, (c.conv_in_kernel - 1) / 2));
  time_proj_ = register_module("time_proj", Timesteps(c0, c.flip_sin_to_cos, c.freq_shift));
  time_embedding_ = register_module("time_embedding", TimestepEmbedding(c0, c.time_embed_dim));
  add_time_proj_ =
      register_module("add_time_proj", Timesteps(c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift));
  add_embedding_ = register_module(
      "add_embedding", TimestepEmbedding(c.projection_class_embeddings_input_dim, c.time_embed_dim));

  // Settings of level `i` (in down-path order) for a block of kind `kind`.
  auto level = [&](size_t i, UNetConfig::BlockKind kind) {
    return UNetBlockOptions()
        .temb_channels(c.time_embed_dim)
        .resnet_groups(c.norm_num_groups)
        .resnet_eps(c.norm_eps)
        .cross_attention(kind == UNetConfig::BlockKind::kCrossAttn)
        .transformer_layers(c.transformer_layers_per_block[i])
        .num_attention_heads(c.num_attention_heads[i])
        .cross_attention_dim(c.cross_attention_dim[i])
        .use_linear_projection(c.use_linear_projection);
  };

  auto down_list = register_module("down_blocks", torch::nn::ModuleList());
  int64_t output_channels = c0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t input_channels = output_channels;
    output_channels = c.block_out_channels[i];
    down_blocks_.push_back(UNetDownBlock(level(i, c.down_blocks[i]), input_channels, output_channels,
                                         c.layers_per_block[i], /*add_downsample=*/i + 1 < n,
                                         c.downsample_padding));
    down_list->push_back(down_blocks_.back());
  }

  mid_block_ =
      register_module("mid_block", UNetMidBlock(level(n - 1, UNetConfig::BlockKind::kCrossAttn)
                                                    .resnet_output_scale_factor(c.mid_block_scale_factor),
                                                c.block_out_channels[n - 1]));

  auto up_list = register_module("up_blocks", torch::nn::ModuleList());
  output_channels = c.block_out_channels[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const size_t rev = n - 1 - i;  // the level this up block mirrors
    const int64_t prev_output_channels = output_channels;
    output_channels = c.block_out_channels[rev];
    const int64_t input_channels = c.block_out_channels[rev == 0 ? 0 : rev - 1];
    up_blocks_.push_back(UNetUpBlock(level(rev, c.up_blocks[i]), input_channels, prev_output_channels,
                                     output_channels, c.layers_per_block[rev] + 1,
                                     /*add_upsample=*/i + 1 < n));
    up_list->push_back(up_blocks_.back());
  }

  conv_norm_out_ = register_module("conv_norm_out", GroupNorm(c.norm_num_groups, c0, c.norm_eps));
  conv_out_ = register_module("conv_out",
                              Conv2d(c0, c.out_channels, c.conv_out_kernel, 1, (c.conv_out_kernel - 1) / 2));
}

at::ScalarType UNet2DConditionModelImpl::dtype() const {
  return conv_in_->weight.scalar_type();
}

c10::Device UNet2DConditionModelImpl::device() const {
  return conv_in_->weight.device();
}

Status check_deep_cache_branch(const UNetConfig& config, int64_t cache_branch_id, const std::string& where) {
  const auto levels = static_cast<int64_t>(config.num_levels());
  if (cache_branch_id >= 0 && cache_branch_id / 3 < levels) return Status::ok();
  return invalid_argument((where.empty() ? std::string() : where + ": ") + "deep_cache.cache_branch_id: " +
                          std::to_string(cache_branch_id) + " is beyond this UNet's " +
                          std::to_string(levels) + " levels (branch id / 3 is the level); use 0 to " +
                          std::to_string(3 * levels - 1) + ", where 0 caches the most and runs the least");
}

void UNet2DConditionModelImpl::project_context(const at::Tensor& encoder_hidden_states,
                                               ContextProjections& out) {
  out.kv.clear();
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* t = dynamic_cast<Transformer2DModelImpl*>(m.get()))
      t->project_context(encoder_hidden_states, out);
}

at::Tensor UNet2DConditionModelImpl::forward(const at::Tensor& sample, const at::Tensor& timestep,
                                             const at::Tensor& encoder_hidden_states,
                                             const at::Tensor& text_embeds, const at::Tensor& time_ids,
                                             const UNetCall& call) {
  const auto& c = config_;
  if (forward_hook_) forward_hook_->begin_forward();
  const int64_t batch = sample.size(0);
  // When h or w is not a multiple of the total downsampling, each upsampler is told the size of the skip
  // connection it must match (diffusers' forward_upsample_size).
  const int64_t up_factor = int64_t{1} << (c.num_levels() - 1);
  const bool forward_upsample_size = sample.size(-2) % up_factor != 0 || sample.size(-1) % up_factor != 0;
  TransformerCall blocks;
  blocks.tokens = call.tokens != nullptr && call.tokens->active() ? call.tokens : nullptr;
  blocks.projected = call.projected;
  TORCH_CHECK(call.zero_context_samples >= 0 && call.zero_context_samples <= batch,
              "UNet: zero_context_samples ", call.zero_context_samples, " outside 0 .. ", batch);
  blocks.zero_context_samples = call.zero_context_samples;
  if (blocks.tokens != nullptr) {
    blocks.tokens->height = sample.size(-2);
    blocks.tokens->width = sample.size(-1);
    blocks.tokens->next_block = 0;
  }
  const TransformerCall* transformers = &blocks;
  // DeepCache: the branch's level, how many of its down layers a shallow call runs, and the up layer whose
  // input is cached (DeepCache's up-layer numbering runs backwards: layer_num - layer_i - 1).
  DeepCacheCall* dc = call.deep_cache;
  int64_t dc_level = -1, dc_down_layers = 0, dc_up_layer = 0;
  if (dc != nullptr) {
    TORCH_CHECK(dc->features != nullptr && dc->block >= 0 && dc->block < static_cast<int64_t>(c.num_levels()),
                "DeepCache: bad branch (level ", dc->block, ")");
    dc_level = dc->block;
    const int64_t layers = down_blocks_[static_cast<size_t>(dc_level)]->num_layers();
    dc_down_layers = std::min(dc->layer, layers);
    dc_up_layer = layers - dc_down_layers;
    TORCH_CHECK(dc->full || dc->features->defined(), "DeepCache: a shallow step before any full step");
  }
  const bool shallow = dc != nullptr && !dc->full;

  at::Tensor x = sample;
  if (c.center_input_sample) x = x * 2 - 1.0;

  // 1. Time and added (pooled text + size) conditioning. The sinusoidal tables run in float32 and are cast to
  // the model dtype afterwards, as diffusers does.
  at::Tensor t = timestep.dim() == 0 ? timestep.unsqueeze(0) : timestep;
  t = t.to(x.device()).expand({batch});
  at::Tensor emb = time_embedding_(time_proj_(t).to(x.scalar_type()));
  at::Tensor time_embeds = add_time_proj_(time_ids.flatten()).reshape({text_embeds.size(0), -1});
  at::Tensor add_embeds = at::cat({text_embeds, time_embeds}, -1).to(emb.scalar_type());
  emb = emb + add_embedding_(add_embeds);
  // With the resnets' projections joined, what they take is all of them at once (ResnetBlock2D::forward).
  if (time_proj_weight_.defined()) emb = at::linear(at::silu(emb), time_proj_weight_, time_proj_bias_);

  // 2.-3. Input conv and down path; every intermediate is kept as a skip connection. A shallow call stops at
  // the branch's first layers.
  x = conv_in_(x);
  std::vector<at::Tensor> skips{x};
  for (size_t i = 0; i < down_blocks_.size(); ++i) {
    if (shallow && static_cast<int64_t>(i) == dc_level) {
      x = down_blocks_[i]->forward(x, emb, encoder_hidden_states, skips, transformers, dc_down_layers);
      break;
    }
    x = down_blocks_[i]->forward(x, emb, encoder_hidden_states, skips, transformers);
  }

  // 4. Middle (cached in a shallow call).
  if (!shallow) x = mid_block_->forward(x, emb, encoder_hidden_states, transformers);

  // 5. Up path: each block takes the last num_skips() skip connections (a shallow call skips the blocks
  // below the branch, and the branch's block starts from the cached features).
  std::vector<int64_t> upsample_size;
  for (size_t i = 0; i < up_blocks_.size(); ++i) {
    const auto level = static_cast<int64_t>(up_blocks_.size() - 1 - i);
    if (shallow && level > dc_level) continue;
    auto& block = up_blocks_[i];
    int64_t first = 0, store = -1;
    at::Tensor* stored = nullptr;
    if (level == dc_level) {
      if (shallow) {
        first = dc_up_layer;
        x = *dc->features;
      } else {
        store = dc_up_layer;
        stored = dc->features;
      }
    }
    const auto n = static_cast<size_t>(block->num_skips() - first);
    std::vector<at::Tensor> block_skips(skips.end() - static_cast<std::ptrdiff_t>(n), skips.end());
    skips.resize(skips.size() - n);
    if (i + 1 < up_blocks_.size() && forward_upsample_size)
      upsample_size = skips.back().sizes().slice(2).vec();
    x = block->forward(x, emb, encoder_hidden_states, block_skips, upsample_size, transformers, first, store,
                       stored);
  }

  // 6. Output.
  return conv_out_(conv_norm_out_->forward_act(x, /*silu=*/true));
}

Status UNet2DConditionModelImpl::check_inputs(const at::Tensor& sample, const at::Tensor& timestep,
                                              const at::Tensor& encoder_hidden_states,
                                              const at::Tensor& text_embeds,
                                              const at::Tensor& time_ids) const {
  const auto& c = config_;
  const at::ScalarType dt = dtype();
  const c10::Device dev = device();
  auto bad = [](const std::string& what) { return invalid_argument("UNet input " + what); };
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"sample", sample},
                                {"timestep", timestep},
                                {"encoder_hidden_states", encoder_hidden_states},
                                {"text_embeds", text_embeds},
                                {"time_ids", time_ids}}) {
    if (!t.defined()) return bad(std::string(name) + " is missing (undefined tensor)");
    if (std::string(name) != "timestep" && t.device() != dev) {
      return bad(std::string(name) + " is on " + t.device().str() + " but the UNet is on " + dev.str() +
                 ": move the input to the model's device");
    }
  }
  if (sample.dim() != 4 || sample.size(1) != c.in_channels || sample.size(2) < 1 || sample.size(3) < 1) {
    return bad("sample must be [B, " + std::to_string(c.in_channels) + ", h, w], got " +
               shape_string(sample.sizes()));
  }
  const int64_t b = sample.size(0);
  if (sample.scalar_type() != dt || encoder_hidden_states.scalar_type() != dt) {
    return bad(std::string("sample and encoder_hidden_states must have the model's dtype ") +
               c10::toString(dt) + ", got " + c10::toString(sample.scalar_type()) + " and " +
               c10::toString(encoder_hidden_states.scalar_type()));
  }
  if (!(timestep.dim() == 0 || (timestep.dim() == 1 && (timestep.size(0) == 1 || timestep.size(0) == b)))) {
    return bad("timestep must be a scalar tensor or have shape [" + std::to_string(b) + "], got " +
               shape_string(timestep.sizes()));
  }
  int64_t context_dim = -1;
  for (size_t i = 0; i < c.num_levels(); ++i) {
    const bool used = c.down_blocks[i] == UNetConfig::BlockKind::kCrossAttn ||
                      c.up_blocks[c.num_levels() - 1 - i] == UNetConfig::BlockKind::kCrossAttn ||
                      i + 1 == c.num_levels();  // the mid block always attends
    if (!used) continue;
    if (context_dim >= 0 && context_dim != c.cross_attention_dim[i]) {
      return bad("encoder_hidden_states cannot serve levels with different cross_attention_dim");
    }
    context_dim = c.cross_attention_dim[i];
  }
  if (encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != b ||
      encoder_hidden_states.size(2) != context_dim) {
    return bad("encoder_hidden_states must be [" + std::to_string(b) + ", L, " + std::to_string(context_dim) +
               "], got " + shape_string(encoder_hidden_states.sizes()));
  }
  if (text_embeds.dim() != 2 || text_embeds.size(0) != b || time_ids.dim() != 2 || time_ids.size(0) != b ||
      text_embeds.size(1) + time_ids.size(1) * c.addition_time_embed_dim !=
          c.projection_class_embeddings_input_dim) {
    return bad("text_embeds [" + std::to_string(b) + ", P] and time_ids [" + std::to_string(b) +
               ", K] must satisfy P + K x " + std::to_string(c.addition_time_embed_dim) + " = " +
               std::to_string(c.projection_class_embeddings_input_dim) + ", got " +
               shape_string(text_embeds.sizes()) + " and " + shape_string(time_ids.sizes()));
  }
  if (!c10::isFloatingType(text_embeds.scalar_type())) return bad("text_embeds must be floating point");
  return Status::ok();
}

StatusOr<at::Tensor> UNet2DConditionModelImpl::checked_forward(const at::Tensor& sample,
                                                               const at::Tensor& timestep,
                                                               const at::Tensor& encoder_hidden_states,
                                                               const at::Tensor& text_embeds,
                                                               const at::Tensor& time_ids) {
  SDXLB_RETURN_IF_ERROR(check_inputs(sample, timestep, encoder_hidden_states, text_embeds, time_ids));
  try {
    return forward(sample, timestep, encoder_hidden_states, text_embeds, time_ids);
  } catch (const c10::OutOfMemoryError& e) {
    return Status(StatusCode::kResourceExhausted, "UNet forward for sample " + shape_string(sample.sizes()) +
                                                      " ran out of memory (" + e.what_without_backtrace() +
                                                      "): use a smaller batch or resolution");
  } catch (const c10::Error& e) {
    return internal_error("UNet forward for sample " + shape_string(sample.sizes()) +
                          " failed: " + e.what_without_backtrace());
  }
}

StatusOr<UNet2DConditionModel> load_unet(const UNetConfig& config, const WeightSet& weights,
                                         const std::string& what, at::ScalarType dtype, c10::Device device) {
  try {
    UNet2DConditionModel model(config);
    LoadOptions options;
    options.dtype = dtype;
    options.device = device;
    SDXLB_RETURN_IF_ERROR(load_module_weights(*model, weights, what, options));
    // The weights are in place; this also moves the constants that are not in the checkpoint (the timestep
    // frequency tables) to the device.
    model->to(device);
    model->eval();
    return model;
  } catch (const c10::OutOfMemoryError& e) {
    return Status(StatusCode::kResourceExhausted, "loading " + what + " as " + c10::toString(dtype) + " on " +
                                                      device.str() +
                                                      " ran out of memory: " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted, "loading " + what + " ran out of host memory");
  } catch (const c10::Error& e) {
    return internal_error("loading " + what + " as " + c10::toString(dtype) + " on " + device.str() +
                          " failed: " + e.what_without_backtrace());
  }
}

StatusOr<UNet2DConditionModel> load_unet(const ModelFolder& folder, const std::string& variant,
                                         at::ScalarType dtype, c10::Device device) {
  SDXLB_ASSIGN_OR_RETURN(nlohmann::json json, folder.component_config("unet"));
  const std::string source = folder.component_dir("unet") + "/config.json";
  SDXLB_ASSIGN_OR_RETURN(UNetConfig config, UNetConfig::from_json(json, source));
  SDXLB_ASSIGN_OR_RETURN(WeightSet weights, folder.component_weights("unet", variant));
  return load_unet(config, weights, "unet weights", dtype, device);
}

int64_t UNet2DConditionModelImpl::fuse_time_projections() {
  if (time_proj_weight_.defined()) return 0;
  // In the order the modules were registered: the same offsets in every process. All or none: once joined,
  // every resnet that projects the time embedding is handed the joint projection instead.
  std::vector<ResnetBlock2DImpl*> resnets;
  for (const auto& item : modules(/*include_self=*/false)) {
    auto* resnet = item->as<ResnetBlock2DImpl>();
    if (resnet == nullptr || resnet->options().temb_channels() == std::nullopt) continue;
    if (!resnet->can_hand_over_time_projection()) return 0;
    resnets.push_back(resnet);
  }
  std::vector<at::Tensor> weights, biases;
  int64_t offset = 0;
  for (ResnetBlock2DImpl* resnet : resnets) {
    auto wb = resnet->hand_over_time_projection(offset);
    TORCH_INTERNAL_ASSERT(wb.has_value(), "a resnet that could hand its time projection over did not");
    offset += wb->first.size(0);
    weights.push_back(std::move(wb->first));
    biases.push_back(std::move(wb->second));
  }
  if (weights.empty()) return 0;
  at::NoGradGuard no_grad;
  time_proj_weight_ = hold_buffer(*this, "time_proj_weight", at::cat(weights, 0));
  time_proj_bias_ = hold_buffer(*this, "time_proj_bias", at::cat(biases, 0));
  return static_cast<int64_t>(weights.size());
}

int64_t prepare_unet_for_gpu(torch::nn::Module& unet, const c10::Device& device, at::ScalarType dtype) {
  use_reproducible_gpu_numerics();
  at::NoGradGuard no_grad;
  for (auto& p : unet.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  (void)fuse_attention_projections(unet);
  if (auto* model = unet.as<UNet2DConditionModelImpl>();
      model != nullptr && fusion_enabled(Fusion::kTimeProjections))
    (void)model->fuse_time_projections();
  return geglu_gemm_supported(device, dtype) ? use_geglu_gemms(unet) : 0;
}

}  // namespace sdxlb
