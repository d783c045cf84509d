// ModelSource: where an SDXL model's configs, weights and tokenizers come from, whatever its form on disk.
//
//   - a diffusers folder (model_index.json, unet/, vae/, text_encoder/, ...): everything from the folder;
//   - a single .safetensors file in the original layout (SingleFileCheckpoint): the weights from the file;
//     the configs, scheduler and tokenizers from a config folder (a diffusers SDXL folder; its weights are
//     not read: diffusers' from_single_file(path, config=folder)), or without one the built-in SDXL base
//     configs, checked against the file's shapes (tokenizers then need the config folder);
//   - either, with a VAE file (the job's `vae:`) that replaces the model's VAE weights under its config.
//
// Each component's WeightSet has diffusers/transformers names, so the loaders are the same for every form.
// The identity of a component (config text, weight headers, sampled content) is computed here too, so that
// resume and the embedding cache tell apart two models of the same architecture in any form.
//
// Immutable after open(); safe to share between threads.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/fingerprint.h"
#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/io/single_file.h"

namespace sdxlb {

class ModelSource {
 public:
  /// `model` is a diffusers folder or a .safetensors file; `config_dir` ("" for none) a diffusers SDXL folder
  /// giving a single file its configs and tokenizers (refused with a folder model); `vae_file` ("" for none)
  /// a VAE .safetensors replacing the model's. Errors: those of ModelFolder::open and
  /// SingleFileCheckpoint::open; kInvalidArgument when a single file without `config_dir` is not SDXL base
  /// sized (naming the first difference and the fix). Every weight file (the model's, the VAE file's, and the
  /// LoRAs' that LoraSet::open reads for this source) is opened through `opener` (empty: from disk); configs
  /// and tokenizers are read from disk.
  static StatusOr<ModelSource> open(const std::string& model, const std::string& config_dir = "",
                                    const std::string& vae_file = "", FileOpener opener = {});

  bool is_single_file() const { return checkpoint_.has_value(); }
  const std::string& path() const { return path_; }
  /// How this source opens weight files (empty: from disk).
  const FileOpener& file_opener() const { return opener_; }
  /// True when the configs are the built-in SDXL base ones.
  bool builtin_configs() const { return is_single_file() && !configs_; }

  /// True when the model has `component` (for a single file: its tensors, or a config for tokenizers and the
  /// scheduler; "vae" also with a VAE file).
  bool has_component(const std::string& component) const;
  /// The component's parsed config (`file` e.g. "scheduler_config.json" for the scheduler).
  StatusOr<nlohmann::json> config(const std::string& component,
                                  const std::string& file = "config.json") const;
  /// Where that config comes from, for messages ("<folder>/unet/config.json", or "the built-in SDXL base
  /// unet config").
  std::string config_path(const std::string& component, const std::string& file = "config.json") const;
  /// The scheduler config's text (the caller parses it: Python writes -Infinity, which strict JSON refuses).
  StatusOr<std::string> scheduler_text() const;
  /// model_index.json's force_zeros_for_empty_prompt (true for SDXL base when nothing says otherwise).
  bool force_zeros_for_empty_prompt() const;
  /// The component's weights under diffusers names. Errors: those of the folder or file.
  StatusOr<WeightSet> weights(const std::string& component, const std::string& variant) const;
  /// Folder of "tokenizer" or "tokenizer_2". Errors: kFailedPrecondition for a single file without a config
  /// folder (naming the key to set).
  StatusOr<std::string> tokenizer_dir(const std::string& which) const;

  /// Mixes the identity of `component` into `fp`: its config, its weights' names, dtypes, shapes and byte
  /// ranges, and a sample of their content. For a folder this is the identity every earlier version computed.
  /// It depends on the weights' bytes only, not on where they came from: a source whose files were received
  /// from another rank (file_opener()) gives the identity of the same files read from disk.
  Status add_identity(Fingerprint& fp, const std::string& component, const std::string& variant) const;
  /// Mixes the tokenizers' files (tokenizer_config.json, vocab.json, merges.txt, special_tokens_map.json).
  void add_tokenizer_identity(Fingerprint& fp) const;

 private:
  std::string path_;
  std::optional<ModelFolder> folder_;               // a folder model
  std::optional<SingleFileCheckpoint> checkpoint_;  // a single-file model
  std::optional<ModelFolder> configs_;              // the config folder of a single file
  std::string vae_file_;
  FileOpener opener_;
};

/// Mixes a sample of `file`'s data area into `fp`: 64 blocks of 64 KiB spread evenly (the whole area when
/// smaller). See docs/output-format.md (model identity) for the trade-off.
void add_content_sample(Fingerprint& fp, const SafetensorsFile& file);

}  // namespace sdxlb
