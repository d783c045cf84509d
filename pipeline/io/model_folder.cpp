#include "pipeline/io/model_folder.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <ATen/ATen.h>

#include "common/json_depth.h"

namespace sdxlb {
namespace {

bool is_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

// Line and column of a byte offset, for JSON error messages.
std::string line_col(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < text.size() && i + 1 < byte; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

}  // namespace

StatusOr<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!is_file(path)) return not_found(path + " does not exist");
    return io_error("cannot read " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  if (const size_t depth = json_nesting_depth(text); depth > kMaxJsonDepth) {
    return data_loss(path + ": JSON nested " + std::to_string(depth) + " levels deep (the limit is " +
                     std::to_string(kMaxJsonDepth) + "); this is not a model config, restore the file");
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return data_loss(path + ":" + line_col(text, e.byte) + ": invalid JSON (" + e.what() + ")");
  } catch (const nlohmann::json::exception& e) {  // out_of_range 406: a number past double's range (1e400)
    return data_loss(path + ": invalid JSON (" + e.what() + ")");
  }
}

// ---------------------------------------------------------------------------------------------------------
// WeightSet

StatusOr<WeightSet> WeightSet::open_file(const std::string& path, const FileOpener& opener) {
  SDXLB_ASSIGN_OR_RETURN(auto file, open_weights_file(opener, path));
  WeightSet ws;
  ws.files_.push_back(file);
  for (const auto& t : file->tensors()) ws.index_[t.name] = {0, &t, t, {}};
  return ws;
}

StatusOr<WeightSet> WeightSet::derived(std::shared_ptr<const SafetensorsFile> file,
                                       const std::vector<DerivedTensor>& tensors,
                                       const std::string& describe) {
  WeightSet ws;
  ws.files_.push_back(file);
  ws.description_ = describe;
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  };
  for (const auto& t : tensors) {
    Entry e{0, t.stored, *t.stored, t.view};
    e.info.name = t.name;
    std::vector<int64_t>& shape = e.info.shape;
    bool fits = true;
    switch (t.view.op) {
      case TensorView::Op::kAsStored:
        break;
      case TensorView::Op::kRows:
        fits = !shape.empty() && t.view.begin >= 0 && t.view.count >= 0 &&
               t.view.begin + t.view.count <= shape[0];
        if (fits) shape[0] = t.view.count;
        break;
      case TensorView::Op::kTranspose:
        fits = shape.size() == 2;
        if (fits) std::swap(shape[0], shape[1]);
        break;
      case TensorView::Op::kDropUnitTail:
        while (shape.size() > 2 && shape.back() == 1) shape.pop_back();
        break;
    }
    if (!fits)
      return data_loss(file->path() + ": tensor \"" + t.stored->name + "\" of shape " +
                       shape_str(t.stored->shape) + " cannot be converted to \"" + t.name +
                       "\" (the checkpoint is not in the layout its names say)");
    if (!ws.index_.emplace(t.name, std::move(e)).second)
      return data_loss(file->path() + ": two tensors convert to \"" + t.name + "\" (one is \"" +
                       t.stored->name + "\"); the checkpoint mixes two layouts");
  }
  return ws;
}

StatusOr<WeightSet> WeightSet::open(const std::string& dir, const std::string& stem,
                                    const std::string& variant, const FileOpener& opener) {
  const std::string v = variant.empty() ? "" : "." + variant;
  const std::string single = join(dir, stem + v + ".safetensors");
  const std::string index = join(dir, stem + ".safetensors.index" + v + ".json");
  if (is_file(single)) return open_file(single, opener);
  if (!is_file(index)) {
    std::string msg = "no weights in " + dir + ": looked for " + stem + v + ".safetensors and " + stem +
                      ".safetensors.index" + v + ".json";
    if (!variant.empty() &&
        (is_file(join(dir, stem + ".safetensors")) || is_file(join(dir, stem + ".safetensors.index.json"))))
      msg += "; the folder has weights without the \"" + variant +
             "\" variant (set variant to empty to use them)";
    else if (variant.empty())
      msg += " (if the folder holds only .fp16 files, set the variant to fp16)";
    return not_found(msg);
  }
  SDXLB_ASSIGN_OR_RETURN(auto json, read_json_file(index));
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
    return data_loss(index + ": no \"weight_map\" object; the shard index is corrupt");
  std::map<std::string, std::vector<std::string>> by_file;  // shard -> names the index assigns to it
  for (auto it = json["weight_map"].begin(); it != json["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      return data_loss(index + ": weight_map entry \"" + it.key() + "\" is not a string");
    const std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..")
      return data_loss(index + ": shard name \"" + shard + "\" must be a file in the same folder");
    by_file[shard].push_back(it.key());
  }
  WeightSet ws;
  for (const auto& [shard, names] : by_file) {
    const std::string path = join(dir, shard);
    if (!is_file(path))
      return data_loss(index + " names shard " + shard + " (holding \"" + names.front() + "\" and " +
                       std::to_string(names.size() - 1) + " more tensors), but " + path +
                       " is missing; re-download the model");
    SDXLB_ASSIGN_OR_RETURN(auto file, open_weights_file(opener, path));
    const size_t fi = ws.files_.size();
    ws.files_.push_back(file);
    for (const auto& name : names) {
      const TensorInfo* t = file->find(name);
      if (!t) return data_loss(index + " says \"" + name + "\" is in " + shard + ", but that shard lacks it");
      ws.index_[name] = {fi, t, *t, {}};
    }
    for (const auto& t : file->tensors())
      if (!ws.index_.count(t.name))
        return data_loss(path + " holds \"" + t.name + "\", which " + index + " does not list");
  }
  return ws;
}

std::vector<std::string> WeightSet::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

const TensorInfo* WeightSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second.info;
}

const TensorInfo* WeightSet::stored(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.stored;
}

StatusOr<at::Tensor> WeightSet::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return not_found("tensor \"" + name + "\" is not in " + describe());
  const Entry& e = it->second;
  SDXLB_ASSIGN_OR_RETURN(at::Tensor t, files_[e.file]->tensor(*e.stored));
  // Views of the mapping: nothing is copied until a module takes the tensor (load_module_weights copies).
  switch (e.view.op) {
    case TensorView::Op::kAsStored:
      return t;
    case TensorView::Op::kRows:
      return t.narrow(0, e.view.begin, e.view.count);
    case TensorView::Op::kTranspose:
      return t.t();
    case TensorView::Op::kDropUnitTail:
      return t.view(e.info.shape);
  }
  return t;
}

std::string WeightSet::describe() const {
  if (!description_.empty()) return description_;
  if (files_.empty()) return "(no weights)";
  if (files_.size() == 1) return files_[0]->path();
  return files_[0]->path() + " and " + std::to_string(files_.size() - 1) + " more shards";
}

// ---------------------------------------------------------------------------------------------------------
// ModelFolder

StatusOr<ModelFolder> ModelFolder::open(const std::string& root, FileOpener opener) {
  if (!is_dir(root))
    return not_found("model folder " + root + " does not exist; set `model:` to a diffusers SDXL folder");
  const std::string index_path = join(root, "model_index.json");
  if (!is_file(index_path))
    return not_found(
        root +
        " has no model_index.json, so it is not a diffusers pipeline folder (save one with "
        "StableDiffusionXLPipeline.save_pretrained, or point at the folder that holds unet/, vae/, ...)");
  SDXLB_ASSIGN_OR_RETURN(auto index, read_json_file(index_path));
  if (!index.is_object()) return data_loss(index_path + ": the top level must be a JSON object");
  ModelFolder f;
  f.root_ = root;
  f.index_ = std::move(index);
  f.opener_ = std::move(opener);
  if (f.index_.contains("_class_name") && f.index_["_class_name"].is_string())
    f.pipeline_class_ = f.index_["_class_name"].get<std::string>();
  return f;
}

StatusOr<ModelFolder> ModelFolder::open_component_folder(const std::string& root, FileOpener opener) {
  if (!is_dir(root)) return not_found("model folder " + root + " does not exist");
  if (!is_file(join(root, "config.json")))
    return not_found(root + " has no config.json, so it is not a diffusers model folder");
  ModelFolder f;
  f.root_ = root;
  f.single_component_ = true;
  f.opener_ = std::move(opener);
  return f;
}

bool ModelFolder::has_component(const std::string& name) const {
  if (single_component_) return true;
  if (!index_.contains(name)) return false;
  const auto& v = index_[name];
  if (v.is_null() || (v.is_array() && (v.empty() || v[0].is_null()))) return false;
  return is_dir(join(root_, name));
}

std::string ModelFolder::component_dir(const std::string& name) const {
  return single_component_ ? root_ : join(root_, name);
}

StatusOr<nlohmann::json> ModelFolder::component_config(const std::string& name,
                                                       const std::string& file) const {
  if (!single_component_ && !is_dir(component_dir(name)))
    return not_found("model folder " + root_ + " has no " + name + "/ component; the SDXL pipeline needs it");
  return read_json_file(join(component_dir(name), file));
}

StatusOr<WeightSet> ModelFolder::component_weights(const std::string& name,
                                                   const std::string& variant) const {
  const std::string dir = component_dir(name);
  if (!is_dir(dir))
    return not_found("model folder " + root_ + " has no " + name + "/ component; the SDXL pipeline needs it");
  // transformers models are saved as model.safetensors, diffusers models as
  // diffusion_pytorch_model.safetensors.
  std::string stem = "diffusion_pytorch_model";
  if (!single_component_ && index_.contains(name) && index_[name].is_array() && !index_[name].empty() &&
      index_[name][0] == "transformers")
    stem = "model";
  return WeightSet::open(dir, stem, variant, opener_);
}

}  // namespace sdxlb
