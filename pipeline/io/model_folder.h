// ModelFolder and WeightSet: a diffusers-format model folder as users have it on disk.
//
// ModelFolder reads model_index.json and each component's config.json. WeightSet is the weights of one
// component: a single .safetensors file, its ".<variant>" sibling (e.g. fp16), or the shards listed in a
// "*.safetensors.index[.<variant>].json", or (WeightSet::derived) the tensors of one component of a
// single-file checkpoint under their diffusers names, some as views (slices, transposes) of the stored
// tensors. Both are immutable after opening and safe to share between threads.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "pipeline/io/file_opener.h"
#include "pipeline/io/safetensors.h"

namespace sdxlb {

/// How a WeightSet tensor is made from the stored tensor: as stored, or a zero-copy view of it (the
/// conversions single-file checkpoints need: OpenCLIP's fused q/k/v rows, its transposed projection, the LDM
/// VAE's 1x1 convolutions used as linear weights).
struct TensorView {
  enum class Op {
    kAsStored,      ///< the stored tensor
    kRows,          ///< rows [begin, begin + count) of the first axis
    kTranspose,     ///< a 2-D tensor transposed
    kDropUnitTail,  ///< trailing axes of size 1 dropped ([C, C, 1, 1] -> [C, C])
  };
  Op op = Op::kAsStored;
  int64_t begin = 0, count = 0;  ///< kRows only
};

/// One tensor of a derived WeightSet: its name in the set, and where its data lies in the file.
struct DerivedTensor {
  std::string name;
  const TensorInfo* stored = nullptr;  ///< an entry of the file the set is derived from
  TensorView view;
};

class WeightSet {
 public:
  WeightSet() = default;
  /// Opens the weights of the component in `dir` whose files are named `<stem>[.<variant>].safetensors`
  /// (or sharded through `<stem>.safetensors.index[.<variant>].json`). `variant` may be empty.
  /// Errors: kNotFound naming the files looked for (and the variants that do exist), kDataLoss for a
  /// corrupt file or index, or a shard named by the index that is missing. The files are opened through
  /// `opener` (empty: from disk).
  static StatusOr<WeightSet> open(const std::string& dir, const std::string& stem, const std::string& variant,
                                  const FileOpener& opener = {});
  /// One plain .safetensors file, opened through `opener` (empty: from disk).
  static StatusOr<WeightSet> open_file(const std::string& path, const FileOpener& opener = {});
  /// The tensors `tensors` of `file` under their new names. Shapes follow the views; a view that does not
  /// fit its stored tensor (rows out of range, a transpose of a non-2-D tensor) is kDataLoss naming both.
  /// `describe` says where the set comes from in messages (e.g. "x.safetensors (model.diffusion_model.*)").
  static StatusOr<WeightSet> derived(std::shared_ptr<const SafetensorsFile> file,
                                     const std::vector<DerivedTensor>& tensors, const std::string& describe);

  /// Every tensor name across all files, sorted.
  std::vector<std::string> names() const;
  /// The entry for `name` (its name, dtype and shape in this set), or nullptr.
  const TensorInfo* find(const std::string& name) const;
  /// The stored entry `name` is made from (the same as find() unless the set is derived), or nullptr.
  const TensorInfo* stored(const std::string& name) const;
  /// True for a set made by derived().
  bool is_derived() const { return !description_.empty(); }
  /// The tensor (zero-copy view of the file). Errors: kNotFound naming the component files.
  StatusOr<at::Tensor> get(const std::string& name) const;
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
  /// Human-readable description of where the weights come from (first file, plus shard count).
  std::string describe() const;

 private:
  struct Entry {
    size_t file = 0;
    const TensorInfo* stored = nullptr;
    TensorInfo info;  // the name, dtype and shape in this set
    TensorView view;
  };
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, Entry> index_;
  std::string description_;  // derived sets only
};

class ModelFolder {
 public:
  /// Reads `<root>/model_index.json`. Errors: kNotFound (no folder or no model_index.json, with a hint that
  /// the path must be a diffusers folder), kDataLoss (bad JSON, naming line and column). Weight files are
  /// opened through `opener` (empty: from disk); configs are read from disk.
  static StatusOr<ModelFolder> open(const std::string& root, FileOpener opener = {});
  /// A single-component folder (e.g. TAESDXL): config.json + weights, no model_index.json.
  static StatusOr<ModelFolder> open_component_folder(const std::string& root, FileOpener opener = {});

  const std::string& root() const { return root_; }
  /// "_class_name" of model_index.json (e.g. StableDiffusionXLPipeline); empty for component folders.
  const std::string& pipeline_class() const { return pipeline_class_; }
  const nlohmann::json& model_index() const { return index_; }
  /// True when model_index.json lists the component (with a non-null entry) and its folder exists.
  bool has_component(const std::string& name) const;
  /// Folder of a component ("" for a component folder opened with open_component_folder).
  std::string component_dir(const std::string& name) const;
  /// Parses `<component>/<file>`. Errors: kNotFound, kDataLoss (bad JSON with line/column).
  StatusOr<nlohmann::json> component_config(const std::string& name,
                                            const std::string& file = "config.json") const;
  /// The component's weights: stem "model" for transformers classes, "diffusion_pytorch_model" otherwise.
  StatusOr<WeightSet> component_weights(const std::string& name, const std::string& variant) const;

 private:
  std::string root_;
  std::string pipeline_class_;
  nlohmann::json index_;
  bool single_component_ = false;
  FileOpener opener_;
};

/// Reads and parses a JSON file. Errors: kNotFound, kIoError, kDataLoss naming file, line and column.
StatusOr<nlohmann::json> read_json_file(const std::string& path);

}  // namespace sdxlb
