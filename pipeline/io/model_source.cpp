#include "pipeline/io/model_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

namespace sdxlb {
namespace {

// The weights' content, sampled: 64 blocks of 64 KiB spread evenly over each file's data (4 MiB a file, a few
// milliseconds even for SDXL's 5 GB UNet). Another checkpoint of the same architecture differs in every
// block; what goes unnoticed is an in-place edit confined to the bytes between the blocks (say, one small
// tensor). The trade-off, against reading all 7 GB of an SDXL model on rank 0 at every start, is documented
// in docs/output-format.md (model identity).
constexpr uint64_t kIdentityBlocks = 64;
constexpr uint64_t kIdentityBlockBytes = 64 * 1024;

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

// The same sample as add_content_sample, over the bytes of some tensors of a file (one component of a single
// file): their byte ranges, in file order, as if concatenated.
void add_ranges_sample(Fingerprint& fp, const SafetensorsFile& file,
                       std::vector<std::pair<uint64_t, uint64_t>> ranges) {
  std::sort(ranges.begin(), ranges.end());
  ranges.erase(std::unique(ranges.begin(), ranges.end()), ranges.end());
  uint64_t total = 0;
  for (const auto& [b, e] : ranges) total += e - b;
  fp.add(std::to_string(total));
  auto read = [&](uint64_t offset, uint64_t n) {  // `n` bytes from `offset` of the concatenation
    for (const auto& [b, e] : ranges) {
      if (n == 0) break;
      const uint64_t len = e - b;
      if (offset >= len) {
        offset -= len;
        continue;
      }
      const uint64_t take = std::min(n, len - offset);
      fp.add(file.data_bytes(b + offset, take));
      n -= take;
      offset = 0;
    }
  };
  if (total <= kIdentityBlocks * kIdentityBlockBytes) {
    read(0, total);
    return;
  }
  const uint64_t span = total - kIdentityBlockBytes;
  for (uint64_t i = 0; i < kIdentityBlocks; ++i) read(span * i / (kIdentityBlocks - 1), kIdentityBlockBytes);
}

}  // namespace

void add_content_sample(Fingerprint& fp, const SafetensorsFile& file) {
  const uint64_t size = file.data_size();
  fp.add(std::to_string(size));
  if (size <= kIdentityBlocks * kIdentityBlockBytes) {
    fp.add(file.data_bytes(0, size));
    return;
  }
  const uint64_t span = size - kIdentityBlockBytes;
  for (uint64_t i = 0; i < kIdentityBlocks; ++i)
    fp.add(file.data_bytes(span * i / (kIdentityBlocks - 1), kIdentityBlockBytes));
}

StatusOr<ModelSource> ModelSource::open(const std::string& model, const std::string& config_dir,
                                        const std::string& vae_file, FileOpener opener) {
  ModelSource s;
  s.path_ = model;
  s.vae_file_ = vae_file;
  s.opener_ = std::move(opener);
  if (is_dir(model)) {
    if (!config_dir.empty())
      return invalid_argument("model_config is set, but model " + model +
                              " is a diffusers folder with its own configs; remove model_config (it is for "
                              "single-file checkpoints)");
    SDXLB_ASSIGN_OR_RETURN(auto folder, ModelFolder::open(model, s.opener_));
    s.folder_ = std::move(folder);
    return s;
  }
  SDXLB_ASSIGN_OR_RETURN(auto checkpoint, SingleFileCheckpoint::open(model, s.opener_));
  s.checkpoint_ = std::move(checkpoint);
  if (!config_dir.empty()) {
    auto configs = ModelFolder::open(config_dir);
    if (!configs.is_ok())
      return Status(
          configs.status().code(),
          "model_config: " + configs.status().message() +
              " (model_config names a diffusers SDXL folder whose configs and tokenizers the single "
              "file uses; its weights are not read)");
    s.configs_ = *std::move(configs);
    return s;
  }
  std::string why;
  if (!s.checkpoint_->matches_sdxl_base(&why))
    return invalid_argument(model + " has the SDXL layout but not SDXL base's sizes (" + why +
                            "), so the built-in SDXL base configs do not fit it; set model_config: to a "
                            "diffusers folder with the configs of its architecture");
  return s;
}

bool ModelSource::has_component(const std::string& component) const {
  if (folder_) return folder_->has_component(component);
  if (component == "vae" && !vae_file_.empty()) return true;
  if (component == "unet" || component == "vae" || component == "text_encoder" ||
      component == "text_encoder_2")
    return checkpoint_->has_component(component);
  if (component == "scheduler") return true;  // the config folder's, or the built-in one
  return configs_ && configs_->has_component(component);
}

StatusOr<nlohmann::json> ModelSource::config(const std::string& component, const std::string& file) const {
  if (folder_) return folder_->component_config(component, file);
  if (configs_) return configs_->component_config(component, file);
  const std::string& text = sdxl_base_config_text(component);
  if (text.empty()) return not_found("no built-in SDXL base config for " + component);
  return nlohmann::json::parse(text);
}

std::string ModelSource::config_path(const std::string& component, const std::string& file) const {
  if (folder_) return folder_->component_dir(component) + "/" + file;
  if (configs_) return configs_->component_dir(component) + "/" + file;
  return "the built-in SDXL base " + component + " config";
}

StatusOr<std::string> ModelSource::scheduler_text() const {
  if (folder_ || configs_) {
    const std::string path = config_path("scheduler", "scheduler_config.json");
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      auto named = config("scheduler", "scheduler_config.json");  // its message names the fix
      return named.is_ok() ? io_error("cannot read " + path) : named.status();
    }
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return sdxl_base_config_text("scheduler");
}

bool ModelSource::force_zeros_for_empty_prompt() const {
  const nlohmann::json* index = folder_    ? &folder_->model_index()
                                : configs_ ? &configs_->model_index()
                                           : nullptr;
  if (index && index->contains("force_zeros_for_empty_prompt") &&
      (*index)["force_zeros_for_empty_prompt"].is_boolean())
    return (*index)["force_zeros_for_empty_prompt"].get<bool>();
  return true;
}

StatusOr<WeightSet> ModelSource::weights(const std::string& component, const std::string& variant) const {
  if (component == "vae" && !vae_file_.empty()) {
    SDXLB_ASSIGN_OR_RETURN(auto vae, config("vae"));
    const int64_t levels =
        vae.contains("up_block_types") && vae["up_block_types"].is_array() ? vae["up_block_types"].size() : 4;
    const int64_t latent = vae.value("latent_channels", int64_t{4});
    return open_vae_file(vae_file_, levels, latent, opener_);
  }
  if (folder_) return folder_->component_weights(component, variant);
  SingleFileLayout layout;
  if (component == "unet") {
    SDXLB_ASSIGN_OR_RETURN(auto unet, config("unet"));
    if (!unet.contains("layers_per_block") || !unet["layers_per_block"].is_number_integer())
      return data_loss(
          config_path("unet") +
          ": layers_per_block must be one integer to read a single-file UNet (the original layout "
          "numbers its blocks by it)");
    layout.unet_layers_per_block = unet["layers_per_block"].get<int64_t>();
  } else if (component == "vae") {
    SDXLB_ASSIGN_OR_RETURN(auto vae, config("vae"));
    if (!vae.contains("up_block_types") || !vae["up_block_types"].is_array())
      return data_loss(config_path("vae") + ": up_block_types must be a list");
    layout.vae_levels = static_cast<int64_t>(vae["up_block_types"].size());
  }
  return checkpoint_->component(component, layout);
}

StatusOr<std::string> ModelSource::tokenizer_dir(const std::string& which) const {
  if (folder_) return folder_->component_dir(which);
  if (configs_) {
    if (!configs_->has_component(which))
      return not_found("model_config folder " + configs_->root() + " has no " + which +
                       "/; a single-file model takes its tokenizers from there (copy them from "
                       "stabilityai/stable-diffusion-xl-base-1.0)");
    return configs_->component_dir(which);
  }
  return failed_precondition(
      "the single-file model " + path_ +
      " holds no tokenizers; set model_config: to a diffusers SDXL folder that has tokenizer/ and "
      "tokenizer_2/ (stabilityai/stable-diffusion-xl-base-1.0 without its weights is enough: only configs "
      "and "
      "tokenizers are read)");
}

Status ModelSource::add_identity(Fingerprint& fp, const std::string& component,
                                 const std::string& variant) const {
  SDXLB_ASSIGN_OR_RETURN(auto cfg, config(component));
  fp.add(component).add(cfg.dump());
  SDXLB_ASSIGN_OR_RETURN(auto weights, this->weights(component, variant));
  if (!weights.is_derived()) {  // a folder's files, as every earlier version hashed them
    for (const auto& f : weights.files()) {
      fp.add(f->header_json());
      add_content_sample(fp, *f);
    }
    return Status::ok();
  }
  // One component of a file: what it takes from the file, under the names it gets.
  fp.add("derived");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& name : weights.names()) {
    const TensorInfo* info = weights.find(name);
    const TensorInfo* stored = weights.stored(name);
    fp.add(name).add(stored->name).add(info->dtype).add(shape_str(info->shape));
    fp.add(std::to_string(stored->begin) + "-" + std::to_string(stored->end));
    ranges.emplace_back(stored->begin, stored->end);
  }
  add_ranges_sample(fp, *weights.files().front(), std::move(ranges));
  return Status::ok();
}

void ModelSource::add_tokenizer_identity(Fingerprint& fp) const {
  for (const char* tok : {"tokenizer", "tokenizer_2"}) {
    auto dir = tokenizer_dir(tok);
    if (!dir.is_ok()) continue;  // a single file without tokenizers: nothing to hash, and nothing encodes
    auto cfg = read_json_file(*dir + "/tokenizer_config.json");
    if (cfg.is_ok()) fp.add(cfg->dump());
    // The vocabulary and merges decide the token ids, so they are part of what the embeddings depend on
    // (a changed vocab.json reused the cached embeddings of the old one). Small files: hashed whole.
    for (const char* name : {"vocab.json", "merges.txt", "special_tokens_map.json"}) {
      std::ifstream in(*dir + "/" + name, std::ios::binary);
      std::ostringstream bytes;
      if (in) bytes << in.rdbuf();
      fp.add(std::string(tok) + "/" + name).add(bytes.str());
    }
  }
}

}  // namespace sdxlb
