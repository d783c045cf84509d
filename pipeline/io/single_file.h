// SingleFileCheckpoint: an SDXL checkpoint as one .safetensors file in the original (SGM/LDM) layout, such as
// sd_xl_base_1.0.safetensors, read as four diffusers components.
//
// open() maps the file and tells its architecture from the tensor names: SDXL base (model.diffusion_model.*,
// first_stage_model.*, conditioner.embedders.0.transformer.* and conditioner.embedders.1.model.*) is
// accepted; anything else (SD 1.x/2.x, the SDXL refiner, a diffusers component file, an unknown layout) is an
// error naming what was found. component() renames one component's tensors to its diffusers/transformers
// state-dict names, so that load_module_weights() is the same lookup as for a diffusers folder; the renaming
// is the one table-driven place for these names (single_file.cpp), with the facts of diffusers'
// loaders/single_file_utils.py (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
// convert_ldm_clip_checkpoint, convert_open_clip_checkpoint). Tensors are views of the mapping (OpenCLIP's
// fused q/k/v as row slices, its text_projection transposed, the VAE attention's 1x1 convolutions with their
// unit axes dropped): nothing is copied before a module takes them.
//
// A name under a component's prefix that the table does not know keeps its full original name, so the load
// lists it as unexpected; tensors outside the four prefixes (EMA copies, training state) are ignored, as
// diffusers does.
//
// Immutable after open(); safe to share between threads.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/io/safetensors.h"

namespace sdxlb {

/// What the converter needs from the configs: layouts the LDM names encode by position.
struct SingleFileLayout {
  int64_t unet_layers_per_block = 2;  ///< UNet config's layers_per_block
  int64_t vae_levels = 4;             ///< VAE config's number of up (= down) blocks
};

class SingleFileCheckpoint {
 public:
  /// Components, in diffusers' folder names.
  static constexpr const char* kComponents[] = {"unet", "vae", "text_encoder", "text_encoder_2"};

  /// Maps `path` and detects its architecture. Errors: those of SafetensorsFile::open (kNotFound, kIoError,
  /// kDataLoss for a truncated or corrupt file); kInvalidArgument when the file is not an SDXL base
  /// checkpoint in the original layout, naming what it looks like instead. The file is opened through
  /// `opener` (empty: from disk).
  static StatusOr<SingleFileCheckpoint> open(const std::string& path, const FileOpener& opener = {});

  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<const SafetensorsFile>& file() const { return file_; }
  /// The original prefix of `component` (e.g. "model.diffusion_model." for "unet").
  static std::string prefix_of(const std::string& component);
  /// True when the file holds tensors of `component`.
  bool has_component(const std::string& component) const;

  /// `component`'s tensors under their diffusers names. Errors: kNotFound when the file has none of them
  /// (naming the prefix), kDataLoss for a tensor whose shape does not fit its conversion.
  StatusOr<WeightSet> component(const std::string& component, const SingleFileLayout& layout) const;

  /// True when the SDXL base shapes (the built-in configs) fit the file: the widths and depths the built-in
  /// configs assume. `why` receives the first difference otherwise.
  bool matches_sdxl_base(std::string* why) const;

 private:
  std::shared_ptr<const SafetensorsFile> file_;
};

/// A VAE-only file (the job's `vae:`), in diffusers names (decoder.up_blocks.*) or the original layout
/// (decoder.up.*, with or without the first_stage_model. prefix). Errors: those of SafetensorsFile::open;
/// kInvalidArgument when the file holds no AutoencoderKL decoder (naming what it has), or a decoder for
/// latents of another width than `latent_channels` (the VAE of another architecture, e.g. SD3/FLUX's 16).
/// The file is opened through `opener` (empty: from disk).
StatusOr<WeightSet> open_vae_file(const std::string& path, int64_t vae_levels, int64_t latent_channels,
                                  const FileOpener& opener = {});

/// Built-in diffusers configs of stabilityai/stable-diffusion-xl-base-1.0: "unet", "vae", "text_encoder",
/// "text_encoder_2" (config.json), "scheduler" (scheduler_config.json) and "model_index" (model_index.json).
/// Empty string for another name.
const std::string& sdxl_base_config_text(const std::string& name);

}  // namespace sdxlb
