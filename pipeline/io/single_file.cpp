#include "pipeline/io/single_file.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>
#include <utility>

namespace sdxlb {
namespace {

// ---------------------------------------------------------------------------------------------------------
// The conversion tables. Every fact comes from diffusers/loaders/single_file_utils.py (0.3x-0.4x); each table
// names the function it mirrors. A name goes through at most one structural rule, then its string tables.

struct Rename {
  const char* from;
  const char* to;
};

// Component prefixes of the SGM layout (LDM_UNET_KEY, LDM_VAE_KEYS[0], LDM_CLIP_PREFIX_TO_REMOVE[1], and
// convert_open_clip_checkpoint's prefix in the SDXL branch of create_diffusers_clip_model_from_ldm).
constexpr Rename kPrefixes[] = {
    {"unet", "model.diffusion_model."},
    {"vae", "first_stage_model."},
    {"text_encoder", "conditioner.embedders.0.transformer."},
    {"text_encoder_2", "conditioner.embedders.1.model."},
};

// convert_ldm_unet_checkpoint: DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"] and ["addition_embed_type"]
// (text_time), as prefix renames.
constexpr Rename kUnetFixed[] = {
    {"time_embed.0.", "time_embedding.linear_1."},
    {"time_embed.2.", "time_embedding.linear_2."},
    {"input_blocks.0.0.", "conv_in."},
    {"out.0.", "conv_norm_out."},
    {"out.2.", "conv_out."},
    {"label_emb.0.0.", "add_embedding.linear_1."},
    {"label_emb.0.2.", "add_embedding.linear_2."},
};
// update_unet_resnet_ldm_to_diffusers.
constexpr Rename kUnetResnet[] = {
    {"in_layers.0.", "norm1."},  {"in_layers.2.", "conv1."},          {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."}, {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."},
};

// convert_ldm_vae_checkpoint: DIFFUSERS_TO_LDM_MAPPING["vae"].
constexpr Rename kVaeFixed[] = {
    {"encoder.conv_in.", "encoder.conv_in."},
    {"encoder.conv_out.", "encoder.conv_out."},
    {"encoder.norm_out.", "encoder.conv_norm_out."},
    {"decoder.conv_in.", "decoder.conv_in."},
    {"decoder.conv_out.", "decoder.conv_out."},
    {"decoder.norm_out.", "decoder.conv_norm_out."},
    {"quant_conv.", "quant_conv."},
    {"post_quant_conv.", "post_quant_conv."},
};
// update_vae_resnet_ldm_to_diffusers.
constexpr Rename kVaeResnet[] = {{"nin_shortcut.", "conv_shortcut."}};
// update_vae_attentions_ldm_to_diffusers (the 1x1 convolutions lose their unit axes: [C, C, 1, 1] -> [C, C]).
constexpr Rename kVaeAttention[] = {
    {"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."},
};

// convert_open_clip_checkpoint: DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"] (text_projection is stored
// [hidden, projection] and transposed).
constexpr Rename kOpenClipFixed[] = {
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
    {"text_projection", "text_projection.weight"},
};
// ...["openclip"]["transformer"], inside transformer.resblocks.N. (-> text_model.encoder.layers.N.).
constexpr Rename kOpenClipLayer[] = {
    {"ln_1.", "layer_norm1."},
    {"ln_2.", "layer_norm2."},
    {"mlp.c_fc.", "mlp.fc1."},
    {"mlp.c_proj.", "mlp.fc2."},
    {"attn.out_proj.", "self_attn.out_proj."},
};
// OpenCLIP tensors that are not part of the text model (the contrastive temperature): ignored, as diffusers
// does (its loop only visits the mapped keys and transformer.*).
constexpr const char* kOpenClipIgnored[] = {"logit_scale"};

bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

// Applies the first rule whose `from` is a prefix of `name`.
std::optional<std::string> rename_prefix(const std::string& name, const Rename* begin, const Rename* end) {
  for (const Rename* r = begin; r != end; ++r)
    if (starts_with(name, r->from)) return std::string(r->to) + name.substr(std::string(r->from).size());
  return std::nullopt;
}
template <size_t N>
std::optional<std::string> rename_prefix(const std::string& name, const Rename (&table)[N]) {
  return rename_prefix(name, table, table + N);
}
template <size_t N>
std::string rename_or_keep(const std::string& name, const Rename (&table)[N]) {
  auto r = rename_prefix(name, table);
  return r ? *r : name;
}

// Splits "a.b.rest" into its first `n` dot-separated fields and the rest; nullopt when there are fewer.
std::optional<std::pair<std::vector<std::string>, std::string>> split_fields(const std::string& name,
                                                                             size_t n) {
  std::vector<std::string> fields;
  size_t pos = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t dot = name.find('.', pos);
    if (dot == std::string::npos) return std::nullopt;
    fields.push_back(name.substr(pos, dot - pos));
    pos = dot + 1;
  }
  return std::make_pair(fields, name.substr(pos));
}

std::optional<int64_t> to_index(const std::string& s) {
  if (s.empty() || s.size() > 6 ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::strtoll(s.c_str(), nullptr, 10);
}

using Converted = std::vector<std::pair<std::string, TensorView>>;
Converted one(std::string name, TensorView view = {}) {
  return {{std::move(name), view}};
}

// convert_ldm_unet_checkpoint for the names after "model.diffusion_model.".
std::optional<std::string> convert_unet(const std::string& n, int64_t layers_per_block) {
  if (auto r = rename_prefix(n, kUnetFixed)) return r;
  const int64_t per_level_down = layers_per_block + 1;  // resnets + a downsampler (input_blocks)
  const int64_t per_level_up = layers_per_block + 1;    // resnets (output_blocks)
  if (auto f = split_fields(n, 3); f && (f->first[0] == "input_blocks" || f->first[0] == "output_blocks")) {
    const auto& [fields, rest] = *f;
    const auto i = to_index(fields[1]);
    const auto j = to_index(fields[2]);
    if (!i || !j) return std::nullopt;
    if (fields[0] == "input_blocks" && *i >= 1) {
      const std::string level = std::to_string((*i - 1) / per_level_down);
      const std::string layer = std::to_string((*i - 1) % per_level_down);
      if (*j == 0 && starts_with(rest, "op."))
        return "down_blocks." + level + ".downsamplers.0.conv." + rest.substr(3);
      if (*j == 0)
        return "down_blocks." + level + ".resnets." + layer + "." + rename_or_keep(rest, kUnetResnet);
      if (*j == 1) return "down_blocks." + level + ".attentions." + layer + "." + rest;
    } else if (fields[0] == "output_blocks") {
      const std::string level = std::to_string(*i / per_level_up);
      const std::string layer = std::to_string(*i % per_level_up);
      if (*j == 0)
        return "up_blocks." + level + ".resnets." + layer + "." + rename_or_keep(rest, kUnetResnet);
      if ((*j == 1 || *j == 2) && starts_with(rest, "conv."))
        return "up_blocks." + level + ".upsamplers.0.conv." + rest.substr(5);
      if (*j == 1) return "up_blocks." + level + ".attentions." + layer + "." + rest;
    }
  }
  if (auto f = split_fields(n, 2); f && f->first[0] == "middle_block") {
    const auto& [fields, rest] = *f;
    const auto k = to_index(fields[1]);
    if (!k) return std::nullopt;
    if (*k == 0 || *k == 2)
      return "mid_block.resnets." + std::to_string(*k / 2) + "." + rename_or_keep(rest, kUnetResnet);
    if (*k == 1) return "mid_block.attentions.0." + rest;
  }
  return std::nullopt;
}

// convert_ldm_vae_checkpoint for the names after "first_stage_model." (or of a VAE-only file).
std::optional<Converted> convert_vae(const std::string& n, int64_t levels, const TensorInfo& info) {
  if (auto r = rename_prefix(n, kVaeFixed)) return one(*r);
  for (const std::string side : {"encoder", "decoder"}) {
    if (!starts_with(n, side + ".")) continue;
    const std::string s = n.substr(side.size() + 1);
    if (starts_with(s, "mid.block_")) {
      auto f = split_fields(s, 2);  // "mid", "block_K"
      if (!f) return std::nullopt;
      const auto k = to_index(f->first[1].substr(6));
      if (!k || *k < 1 || *k > 2) return std::nullopt;
      return one(side + ".mid_block.resnets." + std::to_string(*k - 1) + "." +
                 rename_or_keep(f->second, kVaeResnet));
    }
    if (starts_with(s, "mid.attn_1.")) {
      auto r = rename_prefix(s.substr(11), kVaeAttention);
      if (!r) return std::nullopt;
      TensorView view;
      if (info.shape.size() > 2) view.op = TensorView::Op::kDropUnitTail;
      return one(side + ".mid_block.attentions.0." + *r, view);
    }
    auto f = split_fields(s, 3);  // down|up, I, block|downsample|upsample
    if (!f) return std::nullopt;
    const auto& [fields, rest] = *f;
    const auto i = to_index(fields[1]);
    if (!i || *i >= levels) return std::nullopt;
    if (side == "encoder" && fields[0] == "down") {
      const std::string level = std::to_string(*i);
      if (fields[2] == "downsample" && starts_with(rest, "conv."))
        return one("encoder.down_blocks." + level + ".downsamplers.0.conv." + rest.substr(5));
      if (fields[2] == "block") {
        auto g = split_fields(rest, 1);
        if (!g || !to_index(g->first[0])) return std::nullopt;
        return one("encoder.down_blocks." + level + ".resnets." + g->first[0] + "." +
                   rename_or_keep(g->second, kVaeResnet));
      }
    }
    if (side == "decoder" && fields[0] == "up") {
      const std::string level = std::to_string(levels - 1 - *i);  // the LDM decoder counts up from the bottom
      if (fields[2] == "upsample" && starts_with(rest, "conv."))
        return one("decoder.up_blocks." + level + ".upsamplers.0.conv." + rest.substr(5));
      if (fields[2] == "block") {
        auto g = split_fields(rest, 1);
        if (!g || !to_index(g->first[0])) return std::nullopt;
        return one("decoder.up_blocks." + level + ".resnets." + g->first[0] + "." +
                   rename_or_keep(g->second, kVaeResnet));
      }
    }
  }
  return std::nullopt;
}

// convert_open_clip_checkpoint for the names after "conditioner.embedders.1.model.". An empty result means
// "ignored".
std::optional<Converted> convert_open_clip(const std::string& n, const TensorInfo& info) {
  for (const char* ignored : kOpenClipIgnored)
    if (n == ignored) return Converted{};
  for (const Rename& r : kOpenClipFixed) {
    if (n != r.from) continue;
    TensorView view;
    if (n == "text_projection") view.op = TensorView::Op::kTranspose;
    return one(r.to, view);
  }
  auto f = split_fields(n, 3);  // transformer, resblocks, N
  if (!f || f->first[0] != "transformer" || f->first[1] != "resblocks" || !to_index(f->first[2]))
    return std::nullopt;
  const std::string layer = "text_model.encoder.layers." + f->first[2] + ".";
  const std::string& rest = f->second;
  for (const std::string kind : {"weight", "bias"}) {
    if (rest != "attn.in_proj_" + kind) continue;
    // The fused projection holds q, k and v as three equal blocks of rows.
    if (info.shape.empty() || info.shape[0] % 3 != 0) return std::nullopt;
    const int64_t width = info.shape[0] / 3;
    Converted out;
    const char* parts[] = {"q", "k", "v"};
    for (int64_t p = 0; p < 3; ++p) {
      TensorView view;
      view.op = TensorView::Op::kRows;
      view.begin = p * width;
      view.count = width;
      out.emplace_back(layer + "self_attn." + parts[p] + "_proj." + kind, view);
    }
    return out;
  }
  if (auto r = rename_prefix(rest, kOpenClipLayer)) return one(layer + *r);
  return std::nullopt;
}

// Builds a derived WeightSet from a file's tensors under `prefix`, through `convert` (nullopt: keep the full
// original name, which the load then reports as unexpected).
template <typename Convert>
StatusOr<WeightSet> derive(const std::shared_ptr<const SafetensorsFile>& file, const std::string& prefix,
                           const std::string& describe, Convert convert) {
  std::vector<DerivedTensor> out;
  for (const TensorInfo& t : file->tensors()) {
    if (!starts_with(t.name, prefix)) continue;
    std::optional<Converted> c = convert(t.name.substr(prefix.size()), t);
    if (!c) {
      out.push_back({t.name, &t, {}});
      continue;
    }
    for (auto& [name, view] : *c) out.push_back({name, &t, view});
  }
  if (out.empty()) return not_found(file->path() + " holds no " + prefix + "* tensors");
  return WeightSet::derived(file, out, describe);
}

std::string list_prefixes(const SafetensorsFile& file) {
  std::map<std::string, size_t> counts;  // first two name fields -> tensors
  for (const auto& t : file.tensors()) {
    const size_t a = t.name.find('.');
    const size_t b = a == std::string::npos ? a : t.name.find('.', a + 1);
    counts[t.name.substr(0, b == std::string::npos ? a : b)]++;
  }
  std::string out;
  size_t shown = 0;
  for (const auto& [p, n] : counts) {
    if (shown++ == 8) {
      out += ", ...";
      break;
    }
    out += (out.empty() ? "" : ", ") + p + ".* (" + std::to_string(n) + ")";
  }
  return out.empty() ? "no tensors" : out;
}

bool any_prefix(const SafetensorsFile& file, const std::string& prefix) {
  const auto& ts = file.tensors();  // sorted by name
  auto it = std::lower_bound(ts.begin(), ts.end(), prefix,
                             [](const TensorInfo& t, const std::string& p) { return t.name < p; });
  return it != ts.end() && starts_with(it->name, prefix);
}

}  // namespace

std::string SingleFileCheckpoint::prefix_of(const std::string& component) {
  for (const Rename& r : kPrefixes)
    if (component == r.from) return r.to;
  return "";
}

StatusOr<SingleFileCheckpoint> SingleFileCheckpoint::open(const std::string& path, const FileOpener& opener) {
  SDXLB_ASSIGN_OR_RETURN(auto file, open_weights_file(opener, path));
  const SafetensorsFile& f = *file;
  auto has = [&](const char* name) { return f.find(name) != nullptr; };
  auto refuse = [&](const std::string& what) -> Status {
    return invalid_argument(path + " is " + what + ", not an SDXL base checkpoint (found " +
                            list_prefixes(f) +
                            "); `model:` takes an SDXL base .safetensors in the original layout "
                            "(model.diffusion_model.*, conditioner.embedders.*, first_stage_model.*) or a "
                            "diffusers SDXL folder");
  };
  // Detection keys: diffusers' CHECKPOINT_KEY_NAMES and infer_diffusers_model_type.
  const bool unet = any_prefix(f, "model.diffusion_model.");
  if (any_prefix(f, "cond_stage_model.transformer.") ||
      has("model.diffusion_model.output_blocks.11.0.skip_connection.weight"))
    return refuse(
        "a Stable Diffusion 1.x checkpoint (CLIP ViT-L text encoder in cond_stage_model.transformer.*)");
  if (any_prefix(f, "cond_stage_model.model."))
    return refuse(
        "a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder in cond_stage_model.model.*)");
  if (any_prefix(f, "conditioner.embedders.0.model.") && !any_prefix(f, "conditioner.embedders.1."))
    return refuse(
        "an SDXL refiner checkpoint (one OpenCLIP text encoder in conditioner.embedders.0.model.*), which "
        "this renderer does not run");
  if (!unet && (any_prefix(f, "down_blocks.") || any_prefix(f, "conv_in.")))
    return refuse(
        "a diffusers UNet file (down_blocks.*, conv_in.*): point `model:` at the diffusers folder it "
        "belongs to");
  if (!unet && (any_prefix(f, "decoder.") || any_prefix(f, "first_stage_model.")))
    return refuse("a VAE file: set it as `vae:` next to an SDXL `model:`");
  if (!unet || !any_prefix(f, "conditioner.embedders.1.model.transformer.resblocks.") ||
      !any_prefix(f, "conditioner.embedders.0.transformer.") ||
      !has("model.diffusion_model.label_emb.0.0.weight"))
    return refuse("in an unknown layout");
  SingleFileCheckpoint c;
  c.file_ = std::move(file);
  return c;
}

bool SingleFileCheckpoint::has_component(const std::string& component) const {
  const std::string p = prefix_of(component);
  return !p.empty() && any_prefix(*file_, p);
}

StatusOr<WeightSet> SingleFileCheckpoint::component(const std::string& component,
                                                    const SingleFileLayout& layout) const {
  const std::string prefix = prefix_of(component);
  if (prefix.empty()) return invalid_argument("no component \"" + component + "\" in an SDXL single file");
  const std::string describe = path() + " (" + component + ": " + prefix + "*)";
  StatusOr<WeightSet> ws = [&]() -> StatusOr<WeightSet> {
    if (component == "unet")
      return derive(file_, prefix, describe,
                    [&](const std::string& n, const TensorInfo&) -> std::optional<Converted> {
                      auto r = convert_unet(n, layout.unet_layers_per_block);
                      if (!r) return std::nullopt;
                      return one(*r);
                    });
    if (component == "vae")
      return derive(file_, prefix, describe, [&](const std::string& n, const TensorInfo& t) {
        return convert_vae(n, layout.vae_levels, t);
      });
    if (component == "text_encoder")  // convert_ldm_clip_checkpoint: transformers names after the prefix
      return derive(
          file_, prefix, describe,
          [](const std::string& n, const TensorInfo&) -> std::optional<Converted> { return one(n); });
    return derive(file_, prefix, describe, convert_open_clip);
  }();
  if (!ws.is_ok() && ws.status().code() == StatusCode::kNotFound) {
    const char* fix = component == "vae" ? "; set `vae:` to a VAE file (e.g. sdxl-vae-fp16-fix)" : "";
    return not_found(path() + " has no " + component + " (no " + prefix + "* tensors)" + fix);
  }
  return ws;
}

bool SingleFileCheckpoint::matches_sdxl_base(std::string* why) const {
  struct Expect {
    const char* name;
    std::vector<int64_t> shape;
  };
  // One tensor per config value the built-in configs fix: UNet widths, in/out channels, the 10-deep
  // transformers of the last level, cross-attention width, text_time input; VAE widths and latent channels;
  // CLIP-L and OpenCLIP bigG widths, depths and vocabularies.
  const Expect expects[] = {
      {"model.diffusion_model.input_blocks.0.0.weight", {320, 4, 3, 3}},
      {"model.diffusion_model.out.2.weight", {4, 320, 3, 3}},
      {"model.diffusion_model.label_emb.0.0.weight", {1280, 2816}},
      {"model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight", {1280, 2048}},
      {"model.diffusion_model.output_blocks.8.0.in_layers.0.weight", {640}},
      {"first_stage_model.decoder.conv_in.weight", {512, 4, 3, 3}},
      {"first_stage_model.decoder.up.0.block.0.conv1.weight", {128, 256, 3, 3}},
      {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", {49408, 768}},
      {"conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight", {3072, 768}},
      {"conditioner.embedders.1.model.token_embedding.weight", {49408, 1280}},
      {"conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight", {5120, 1280}},
      {"conditioner.embedders.1.model.text_projection", {1280, 1280}},
  };
  for (const auto& e : expects) {
    const TensorInfo* t = file_->find(e.name);
    if (!t || t->shape != e.shape) {
      if (why) *why = std::string(e.name) + (t ? " has another shape than SDXL base's" : " is missing");
      return false;
    }
  }
  for (const char* deeper :
       {"model.diffusion_model.input_blocks.9.",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.10.",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.12.",
        "conditioner.embedders.1.model.transformer.resblocks.32.", "first_stage_model.decoder.up.4."}) {
    if (any_prefix(*file_, deeper)) {
      if (why) *why = std::string("the file has ") + deeper + "* tensors, deeper than SDXL base";
      return false;
    }
  }
  return true;
}

StatusOr<WeightSet> open_vae_file(const std::string& path, int64_t vae_levels, int64_t latent_channels,
                                  const FileOpener& opener) {
  SDXLB_ASSIGN_OR_RETURN(auto file, open_weights_file(opener, path));
  const SafetensorsFile& f = *file;
  // A whole checkpoint's VAE, or a VAE saved on its own in either naming.
  const std::string prefix = any_prefix(f, "first_stage_model.") ? "first_stage_model." : "";
  const bool diffusers_names = any_prefix(f, prefix + "decoder.up_blocks.");
  const bool ldm_names = any_prefix(f, prefix + "decoder.up.");
  const TensorInfo* conv_in = f.find(prefix + "decoder.conv_in.weight");
  if ((!diffusers_names && !ldm_names) || !conv_in || conv_in->shape.size() != 4)
    return invalid_argument(path +
                            " is not an AutoencoderKL VAE (no decoder.conv_in / decoder.up_blocks or "
                            "decoder.up tensors; found " +
                            list_prefixes(f) +
                            "); `vae:` takes a VAE .safetensors such as sdxl-vae-fp16-fix's");
  if (conv_in->shape[1] != latent_channels)
    return invalid_argument(path + ": its decoder takes " + std::to_string(conv_in->shape[1]) +
                            "-channel latents, but this model's latents have " +
                            std::to_string(latent_channels) +
                            " channels: it is the VAE of another architecture (SD3 and FLUX VAEs take 16); "
                            "use an SDXL VAE");
  const std::string describe = path + " (VAE, " + (diffusers_names ? "diffusers" : "original") + " names)";
  if (diffusers_names)
    return derive(file, prefix, describe,
                  [](const std::string& n, const TensorInfo&) -> std::optional<Converted> { return one(n); });
  return derive(file, prefix, describe,
                [&](const std::string& n, const TensorInfo& t) { return convert_vae(n, vae_levels, t); });
}

}  // namespace sdxlb
