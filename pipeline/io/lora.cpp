// Reading a LoRA is three steps: split its keys into modules (format by format, to one (component, module
// name) each), match the names against the model's weight headers (kohya names through a table of the
// model's own module names with "_" for "."), then check shapes and alphas. Fusing is one matmul per module.
#include "pipeline/io/lora.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <regex>
#include <set>
#include <utility>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

constexpr size_t kShowMax = 20;  // entries listed in one error before eliding

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < kShowMax; ++i) out += "\n    " + items[i];
  if (items.size() > kShowMax) out += "\n    ... and " + std::to_string(items.size() - kShowMax) + " more";
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string flat(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

bool is_text_encoder(const std::string& component) {
  return component == "text_encoder" || component == "text_encoder_2";
}

// The text encoders' module names as ClipTextModel registers them: under "text_model." (transformers 5
// writes a plain CLIPTextModel, and PEFT names its modules, without it), text_projection at the top.
std::string canonical(const std::string& component, const std::string& module) {
  if (!is_text_encoder(component) || starts_with(module, "text_model.") ||
      starts_with(module, "text_projection"))
    return module;
  return "text_model." + module;
}

// A component's modules that a LoRA can change (a 2-D or 4-D ".weight"), from its weight headers.
struct ModuleTable {
  std::map<std::string, std::vector<int64_t>> shapes;  // canonical module name -> weight shape
  std::map<std::string, std::string> by_flat;          // "_" for "." -> module name ("" when ambiguous)
  int64_t layers_per_block = 0;                        // UNet: resnets per down block
  std::set<int64_t> up_blocks_with_attention;          // UNet

  static ModuleTable build(const std::string& component, const WeightSet& weights) {
    ModuleTable t;
    for (const auto& name : weights.names()) {
      const TensorInfo* info = weights.find(name);
      if (!ends_with(name, ".weight") || !info || (info->shape.size() != 2 && info->shape.size() != 4))
        continue;
      const std::string module = canonical(component, name.substr(0, name.size() - 7));
      t.shapes[module] = info->shape;
      const std::string f = flat(module);
      auto [it, fresh] = t.by_flat.emplace(f, module);
      if (!fresh && it->second != module) it->second.clear();
      static const std::regex down_resnet(R"(^down_blocks\.0\.resnets\.(\d+)\.)"),
          up_attention(R"(^up_blocks\.(\d+)\.attentions\.)");
      std::smatch m;
      if (std::regex_search(module, m, down_resnet))
        t.layers_per_block = std::max<int64_t>(t.layers_per_block, std::stoll(m[1]) + 1);
      if (std::regex_search(module, m, up_attention)) t.up_blocks_with_attention.insert(std::stoll(m[1]));
    }
    return t;
  }

  // The module a kohya name (after its lora_unet_/lora_te*_ prefix) stands for, or "".
  std::string find_kohya(const std::string& component, const std::string& name) const {
    std::string key = name;
    if (component == "unet") key = sgm_to_diffusers(name);
    auto it = by_flat.find(key);
    if (it == by_flat.end() && is_text_encoder(component)) it = by_flat.find("text_model_" + key);
    return it == by_flat.end() ? "" : it->second;
  }

  // kohya's SDXL UNet names (the sgm/LDM UNet) in diffusers' spelling, "_"-joined; other names unchanged.
  // input_blocks.0.0 is conv_in; input block i >= 1 is down block (i-1)/(L+1), its layer (i-1)%(L+1) (the
  // last one its downsampler, "op"); output block i is up block i/(L+1), layer i%(L+1), whose part 1 is
  // its attention when the block has attention, else its upsampler, and part 2 the upsampler; the middle
  // block's parts are resnet 0, attention 0, resnet 1. Inside a resnet: in_layers_2 = conv1, out_layers_3 =
  // conv2, emb_layers_1 = time_emb_proj, skip_connection = conv_shortcut.
  std::string sgm_to_diffusers(const std::string& name) const {
    static const std::map<std::string, std::string> fixed = {{"input_blocks_0_0", "conv_in"},
                                                             {"out_2", "conv_out"},
                                                             {"time_embed_0", "time_embedding_linear_1"},
                                                             {"time_embed_2", "time_embedding_linear_2"},
                                                             {"label_emb_0_0", "add_embedding_linear_1"},
                                                             {"label_emb_0_2", "add_embedding_linear_2"}};
    if (auto it = fixed.find(name); it != fixed.end()) return it->second;
    static const std::regex input(R"(^input_blocks_(\d+)_(\d+)_(.+)$)"),
        middle(R"(^middle_block_(\d+)_(.+)$)"), output(R"(^output_blocks_(\d+)_(\d+)_(.+)$)");
    auto resnet_part = [](const std::string& rest) -> std::string {
      static const std::map<std::string, std::string> parts = {{"in_layers_2", "conv1"},
                                                               {"out_layers_3", "conv2"},
                                                               {"emb_layers_1", "time_emb_proj"},
                                                               {"skip_connection", "conv_shortcut"}};
      auto it = parts.find(rest);
      return it == parts.end() ? rest : it->second;
    };
    const int64_t L = layers_per_block;
    std::smatch m;
    if (L > 0 && std::regex_match(name, m, input)) {
      const int64_t i = std::stoll(m[1]), part = std::stoll(m[2]);
      const std::string rest = m[3];
      if (i < 1) return name;
      const int64_t b = (i - 1) / (L + 1), l = (i - 1) % (L + 1);
      const std::string block = "down_blocks_" + std::to_string(b) + "_";
      if (l == L) return block + "downsamplers_0_" + (rest == "op" ? "conv" : rest);
      if (part == 0) return block + "resnets_" + std::to_string(l) + "_" + resnet_part(rest);
      return block + "attentions_" + std::to_string(l) + "_" + rest;
    }
    if (std::regex_match(name, m, middle)) {
      const int64_t part = std::stoll(m[1]);
      const std::string rest = m[2];
      if (part == 1) return "mid_block_attentions_0_" + rest;
      return "mid_block_resnets_" + std::to_string(part == 0 ? 0 : 1) + "_" + resnet_part(rest);
    }
    if (L > 0 && std::regex_match(name, m, output)) {
      const int64_t i = std::stoll(m[1]), part = std::stoll(m[2]);
      const std::string rest = m[3];
      const int64_t b = i / (L + 1), l = i % (L + 1);
      const std::string block = "up_blocks_" + std::to_string(b) + "_";
      const bool attention = up_blocks_with_attention.count(b) > 0;
      if (part == 0) return block + "resnets_" + std::to_string(l) + "_" + resnet_part(rest);
      if (part == 1 && attention) return block + "attentions_" + std::to_string(l) + "_" + rest;
      return block + "upsamplers_0_" + rest;
    }
    return name;
  }
};

// One module's tensors as the file names them.
struct RawModule {
  std::string component;
  std::string name;  // as written (kohya: flattened; diffusers: dotted, without the component prefix)
  bool kohya = false;
  const TensorInfo* down = nullptr;
  const TensorInfo* up = nullptr;
  const TensorInfo* alpha = nullptr;
};

// diffusers' older names for a module's LoRA: "<m>.processor.to_q_lora" (UNet attention), "<m>.to_q_lora"
// (text encoder attention), "<m>.lora_linear_layer", "<m>.lora". Returns the module, or "" for none.
std::string old_diffusers_module(const std::string& component, const std::string& stem) {
  if (ends_with(stem, ".lora_linear_layer")) return stem.substr(0, stem.size() - 18);
  if (ends_with(stem, ".lora")) return stem.substr(0, stem.size() - 5);
  static const std::regex processor(R"(^(.*?)(\.processor)?\.to_(q|k|v|out)_lora$)");
  std::smatch m;
  if (!std::regex_match(stem, m, processor)) return "";
  const std::string which = m[3];
  if (is_text_encoder(component)) return m[1].str() + "." + (which == "out" ? "out_proj" : which + "_proj");
  return m[1].str() + ".to_" + (which == "out" ? "out.0" : which);
}

// PEFT's get_pattern_key: the first pattern p with re.match(rf"(.*\.)?({p})$", module).
const nlohmann::json* pattern_value(const nlohmann::json& patterns, const std::string& module,
                                    std::string* error) {
  if (!patterns.is_object()) return nullptr;
  for (auto it = patterns.begin(); it != patterns.end(); ++it) {
    try {
      if (std::regex_match(module, std::regex("(.*\\.)?(" + it.key() + ")"))) return &it.value();
    } catch (const std::regex_error&) {
      *error = "pattern \"" + it.key() + "\" of its lora_adapter_metadata is not a regular expression";
      return nullptr;
    }
  }
  return nullptr;
}

StatusOr<double> scalar_of(const SafetensorsFile& file, const TensorInfo& info) {
  if (info.numel() != 1)
    return invalid_argument(info.name + " has shape " + shape_str(info.shape) + ", not one number");
  SDXLB_ASSIGN_OR_RETURN(at::Tensor t, file.tensor(info));
  return t.to(at::kDouble).item<double>();
}

}  // namespace

struct LoraSet::Target {
  std::string component;
  std::string weight;  // the module's parameter, e.g. "down_blocks.1.attentions.0.proj_in.weight"
  const TensorInfo* down = nullptr;
  const TensorInfo* up = nullptr;
  double factor = 1.0;  // alpha / r (or alpha / sqrt(r)) times the entry's scale
};

struct LoraSet::Lora {
  LoraEntry entry;
  std::shared_ptr<const SafetensorsFile> file;
  std::vector<Target> targets;
};

const std::vector<std::string>& LoraSet::components() {
  static const std::vector<std::string> all = {"unet", "text_encoder", "text_encoder_2"};
  return all;
}

StatusOr<LoraSet> LoraSet::open(const std::vector<LoraEntry>& entries, const ModelSource& source,
                                const std::string& variant) {
  LoraSet set;
  if (entries.empty()) return set;
  std::map<std::string, ModuleTable> tables;
  for (const auto& c : components()) {
    SDXLB_ASSIGN_OR_RETURN(auto weights, source.weights(c, variant));
    tables[c] = ModuleTable::build(c, weights);
  }
  for (const LoraEntry& entry : entries) {
    const std::string who = (entry.where.empty() ? "" : entry.where + ": ") + "LoRA " + entry.path;
    if (!std::isfinite(entry.scale))
      return invalid_argument(who + ": scale " + std::to_string(entry.scale) +
                              " is not a finite number; use e.g. 1.0 (the LoRA as trained) or 0.5");
    auto file = open_weights_file(source.file_opener(), entry.path);
    if (!file.is_ok()) return Status(file.status().code(), who + ": " + file.status().message());
    auto lora = std::make_shared<Lora>();
    lora->entry = entry;
    lora->file = *file;
    const SafetensorsFile& f = **file;

    // 1. Keys to modules.
    std::map<std::pair<std::string, std::string>, RawModule> raw;
    std::vector<std::string> unknown;
    bool kohya_seen = false, diffusers_seen = false;
    for (const TensorInfo& t : f.tensors()) {
      const std::string& key = t.name;
      std::string component, stem, role;
      bool kohya = false;
      static const std::vector<std::pair<std::string, std::string>> kohya_prefixes = {
          {"lora_unet_", "unet"},
          {"lora_te1_", "text_encoder"},
          {"lora_te_", "text_encoder"},
          {"lora_te2_", "text_encoder_2"}};
      for (const auto& [prefix, c] : kohya_prefixes) {
        if (!starts_with(key, prefix)) continue;
        const size_t dot = key.find('.');
        if (dot == std::string::npos) break;
        const std::string suffix = key.substr(dot);
        role = suffix == ".lora_down.weight" ? "down"
               : suffix == ".lora_up.weight" ? "up"
               : suffix == ".alpha"          ? "alpha"
                                             : "";
        component = c;
        stem = key.substr(prefix.size(), dot - prefix.size());
        kohya = true;
        break;
      }
      if (!kohya) {
        for (const auto& c :
             {std::string("text_encoder_2"), std::string("text_encoder"), std::string("unet")}) {
          if (!starts_with(key, c + ".")) continue;
          component = c;
          const std::string rest = key.substr(c.size() + 1);
          static const std::vector<std::pair<std::string, std::string>> suffixes = {
              {".lora_A.weight", "down"},
              {".lora_B.weight", "up"},
              {".down.weight", "down"},
              {".up.weight", "up"},
              {".alpha", "alpha"}};
          for (const auto& [suffix, r] : suffixes) {
            if (!ends_with(rest, suffix)) continue;
            stem = rest.substr(0, rest.size() - suffix.size());
            role = r;
            if (suffix == ".down.weight" || suffix == ".up.weight") {
              stem = old_diffusers_module(c, stem);
              if (stem.empty()) role.clear();
            }
            break;
          }
          break;
        }
      }
      if (component.empty() || role.empty() || stem.empty()) {
        unknown.push_back(key + " " + shape_str(t.shape));
        continue;
      }
      (kohya ? kohya_seen : diffusers_seen) = true;
      RawModule& m = raw[{component, stem}];
      m.component = component;
      m.name = stem;
      m.kohya = kohya;
      (role == "down" ? m.down : role == "up" ? m.up : m.alpha) = &t;
    }
    if (raw.empty())
      return invalid_argument(
          who + " holds no LoRA weights this port reads (first keys:" + list(unknown) +
          "); it reads kohya-ss LoRAs (lora_unet_*/lora_te1_*/lora_te2_* with .lora_down.weight, "
          ".lora_up.weight, .alpha) and diffusers/PEFT ones (unet.*/text_encoder.*/text_encoder_2.* with "
          ".lora_A.weight and .lora_B.weight)");
    if (!unknown.empty())
      return invalid_argument(who + " has " + std::to_string(unknown.size()) +
                              " keys of no LoRA form this port fuses (DoRA magnitudes, LoHa/LoKr, biases or "
                              "another trainer's names):" +
                              list(unknown) + "\n  only plain LoRA (down/up pairs with alpha) is supported");
    if (kohya_seen && diffusers_seen)
      return invalid_argument(who +
                              " mixes kohya-ss keys (lora_unet_...) with diffusers keys (unet....); "
                              "write it in one format");

    // The PEFT adapter metadata (diffusers' save_lora_weights): per component r, lora_alpha, alpha_pattern.
    nlohmann::json meta;
    if (auto it = f.metadata().find("lora_adapter_metadata"); it != f.metadata().end()) {
      meta = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
      if (!meta.is_object())
        return invalid_argument(who +
                                ": its lora_adapter_metadata is not a JSON object; rewrite it with "
                                "diffusers' save_lora_weights, or remove it (alpha then = rank)");
    }

    // 2. Names to the model's modules, 3. shapes and alphas.
    std::vector<std::string> unmatched, mismatched, incomplete, with_alpha, without_alpha, bad;
    for (const auto& [k, m] : raw) {
      const ModuleTable& table = tables.at(m.component);
      const std::string module =
          m.kohya ? table.find_kohya(m.component, m.name) : canonical(m.component, m.name);
      const std::string shown = (m.kohya ? "" : m.component + ".") + m.name;
      if (!m.down || !m.up) {
        incomplete.push_back(shown + (m.down ? " (no up weight)" : " (no down weight)"));
        continue;
      }
      auto shape_it = module.empty() ? table.shapes.end() : table.shapes.find(module);
      if (shape_it == table.shapes.end()) {
        unmatched.push_back(shown);
        continue;
      }
      const std::vector<int64_t>& w = shape_it->second;
      const std::vector<int64_t>&d = m.down->shape, &u = m.up->shape;
      const int64_t rank = d.empty() ? 0 : d[0];
      bool fits = rank > 0 && d.size() == w.size() && u.size() == w.size() && u[0] == w[0] && u[1] == rank &&
                  d[1] == w[1];
      if (fits && w.size() == 4) fits = d[2] == w[2] && d[3] == w[3] && u[2] == 1 && u[3] == 1;
      if (!fits) {
        mismatched.push_back(m.component + "." + module + ": weight " + shape_str(w) + ", LoRA down " +
                             shape_str(d) + " up " + shape_str(u));
        continue;
      }
      double alpha = static_cast<double>(rank);
      bool rslora = false;
      if (m.alpha) {
        auto a = scalar_of(f, *m.alpha);
        if (!a.is_ok()) return invalid_argument(who + ": " + a.status().message());
        alpha = *a;
        with_alpha.push_back(shown);
      } else if (!m.kohya && meta.contains(m.component + ".lora_alpha")) {
        const nlohmann::json& la = meta[m.component + ".lora_alpha"];
        std::string error;
        const nlohmann::json* p = meta.contains(m.component + ".alpha_pattern")
                                      ? pattern_value(meta[m.component + ".alpha_pattern"], m.name, &error)
                                      : nullptr;
        if (!error.empty()) return invalid_argument(who + ": " + error);
        const nlohmann::json& value = p ? *p : la;
        if (!value.is_number())
          return invalid_argument(who + ": lora_alpha in its lora_adapter_metadata is not a number");
        alpha = value.get<double>();
        const std::string rs = m.component + ".use_rslora";
        rslora = meta.contains(rs) && meta[rs].is_boolean() && meta[rs].get<bool>();
        with_alpha.push_back(shown);
      } else {
        without_alpha.push_back(shown);
      }
      if (!std::isfinite(alpha)) {
        bad.push_back(shown + ": alpha is not finite");
        continue;
      }
      Target t;
      t.component = m.component;
      t.weight = module + ".weight";
      t.down = m.down;
      t.up = m.up;
      // PEFT: scaling = lora_alpha / r (/ sqrt(r) with rslora), then scale_layer(lora_scale) multiplies it.
      t.factor = (rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank)) *
                 entry.scale;
      lora->targets.push_back(t);
    }
    if (!incomplete.empty())
      return invalid_argument(who + " has modules without their pair of weights:" + list(incomplete) +
                              "\n  is the file truncated? export it again");
    if (!mismatched.empty())
      return invalid_argument(
          who + " does not fit this model: " + std::to_string(mismatched.size()) +
          " modules have other shapes:" + list(mismatched) +
          "\n  is it a LoRA for another architecture (e.g. SD 1.5 or SD 2)? use a LoRA trained for SDXL");
    if (!unmatched.empty())
      return invalid_argument(
          who +
          (unmatched.size() == raw.size() ? " matches nothing in this model"
                                          : " has modules that match nothing in this model") +
          " (" + std::to_string(unmatched.size()) + " of " + std::to_string(raw.size()) +
          "):" + list(unmatched) +
          "\n  is it a LoRA for another architecture (e.g. SD 1.5, whose blocks SDXL does not have)? use a "
          "LoRA trained for SDXL");
    if (!with_alpha.empty() && !without_alpha.empty())
      return invalid_argument(
          who + " has alphas for " + std::to_string(with_alpha.size()) + " modules but none for " +
          std::to_string(without_alpha.size()) + ":" + list(without_alpha) +
          "\n  kohya would use alpha = rank for those, diffusers the file's most common alpha; add the "
          "missing .alpha keys (alpha = rank keeps the update as trained)");
    if (!bad.empty()) return invalid_argument(who + ":" + list(bad));
    set.loras_.push_back(std::move(lora));
  }
  return set;
}

bool LoraSet::touches(const std::string& component) const {
  for (const auto& l : loras_)
    for (const auto& t : l->targets)
      if (t.component == component) return true;
  return false;
}

void LoraSet::add_identity(Fingerprint& fp, const std::vector<std::string>& components) const {
  // As the model's weights (model_source.h's add_content_sample, docs/output-format.md): the header and 64
  // blocks of 64 KiB spread over the data, so that another LoRA with the same names is another identity.
  for (const auto& l : loras_) {
    bool relevant = false;
    for (const auto& t : l->targets)
      relevant = relevant || std::find(components.begin(), components.end(), t.component) != components.end();
    if (!relevant) continue;
    const SafetensorsFile& f = *l->file;
    char scale[40];
    std::snprintf(scale, sizeof scale, "%.17g", l->entry.scale);
    fp.add("lora").add(scale).add(f.header_json());
    add_content_sample(fp, f);
  }
}

Status LoraSet::apply(torch::nn::Module& module, const std::string& component) const {
  if (!touches(component)) return Status::ok();
  std::map<std::string, at::Tensor> params;
  for (const auto& kv : module.named_parameters(/*recurse=*/true)) params[kv.key()] = kv.value();
  for (const auto& l : loras_) {
    for (const auto& t : l->targets) {
      if (t.component != component) continue;
      auto it = params.find(t.weight);
      if (it == params.end())
        return invalid_argument("LoRA " + l->entry.path + ": the " + component + " has no weight " +
                                t.weight);
      try {
        at::NoGradGuard no_grad;
        at::Tensor& w = it->second;
        SDXLB_ASSIGN_OR_RETURN(at::Tensor down, l->file->tensor(*t.down));
        SDXLB_ASSIGN_OR_RETURN(at::Tensor up, l->file->tensor(*t.up));
        const auto fp32 = at::TensorOptions().device(w.device()).dtype(at::kFloat);
        down = down.to(fp32);
        up = up.to(fp32);
        // PEFT's get_delta_weight, (B @ A) * scaling, then merge: W += delta. A conv with a larger kernel
        // than 1x1 composes as PEFT does it, conv2d(A^T, B)^T (kohya's formula): the same sums as a matmul
        // over the rank, in the reference's order, so the fused weights are the reference's bits.
        at::Tensor product;
        if (w.dim() == 4 && (w.size(2) != 1 || w.size(3) != 1)) {
          product = at::conv2d(down.transpose(0, 1), up).transpose(0, 1);
        } else {
          product = at::mm(up.reshape({up.size(0), -1}), down.reshape({down.size(0), -1})).reshape(w.sizes());
        }
        const at::Tensor delta = product * t.factor;
        if (!at::isfinite(delta).all().item<bool>())
          return invalid_argument("LoRA " + l->entry.path + ": the update of " + component + "." + t.weight +
                                  " is not finite (inf or NaN in the file); use another file");
        w.copy_((w.to(at::kFloat) + delta).to(w.scalar_type()));
      } catch (const c10::Error& e) {
        return Status(StatusCode::kResourceExhausted, "LoRA " + l->entry.path + ": fusing into " + component +
                                                          "." + t.weight +
                                                          " failed: " + e.what_without_backtrace());
      }
    }
  }
  return Status::ok();
}

std::string LoraSet::describe() const {
  if (loras_.empty()) return "no LoRA";
  std::string out = std::to_string(loras_.size()) + (loras_.size() == 1 ? " LoRA: " : " LoRAs: ");
  for (size_t i = 0; i < loras_.size(); ++i) {
    const Lora& l = *loras_[i];
    std::map<std::string, int> count;
    for (const auto& t : l.targets) ++count[t.component];
    char scale[40];
    std::snprintf(scale, sizeof scale, "%g", l.entry.scale);
    out += (i ? "; " : "") + l.entry.path + " (scale " + scale;
    for (const auto& [c, n] : count) out += ", " + c + " " + std::to_string(n) + " modules";
    out += ")";
  }
  return out;
}

}  // namespace sdxlb
