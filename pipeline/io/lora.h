// LoraSet: LoRA files read, matched against an SDXL model's weights and fused into its modules at load
// (issue #15).
//
// Formats (one file may hold UNet and text-encoder parts):
//  - kohya-ss: `lora_unet_<module>`, `lora_te1_<module>` (also `lora_te_`), `lora_te2_<module>`, each with
//    `.lora_down.weight`, `.lora_up.weight` and optionally `.alpha`; <module> is the module's name with "_"
//    for ".", in diffusers' spelling (down_blocks_1_attentions_0_...) or, as sd-scripts writes SDXL LoRAs, in
//    the sgm/LDM UNet's (input_blocks_4_1_..., middle_block_1_..., output_blocks_2_2_conv, in_layers_2 for a
//    resnet's conv1: the mapping of diffusers' _maybe_map_sgm_blocks_to_diffusers, from the UNet's own block
//    layout).
//  - diffusers/PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (also the older `.lora.down.weight` /
//    `.lora.up.weight`, `.lora_linear_layer.down.weight` and attention-processor `to_q_lora.down.weight`
//    names), `text_encoder.<module>...`, `text_encoder_2.<module>...`; alpha from the file's PEFT adapter
//    metadata (`lora_adapter_metadata`: lora_alpha, alpha_pattern, use_rslora) or `.alpha` keys.
// The update of a module is up @ down (a 3x3 conv's down [r, in, 3, 3] with up [out, r, 1, 1]), times
// alpha / r (alpha / sqrt(r) with use_rslora) times the job's scale, as PEFT's merge computes it.
//
// Alpha: a file without any alpha (no `.alpha` keys, no metadata) uses alpha = rank (scale 1), as kohya's
// sd-scripts and diffusers do. A file with alphas for some modules and not for others is refused: kohya
// gives the others alpha = rank, diffusers the most common alpha of the file, so no reading is the one users
// expect.
//
// Errors (each names the LoRA file and the job file's entry, with a fix): a key of no known form (DoRA,
// LoHa/LoKr, biases), a module that matches nothing in this model (all of them listed; an SD 1.5 LoRA lands
// here or on shapes), a shape that does not fit the module (another architecture), partial alphas,
// non-finite values.
//
// Thread-safety: a LoraSet is immutable after open(); apply() writes only the module it is given.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "common/fingerprint.h"
#include "common/status.h"
#include "jobs/loras.h"
#include "pipeline/io/model_source.h"

namespace sdxlb {

class LoraSet {
 public:
  /// The components a LoRA may change.
  static const std::vector<std::string>& components();

  /// Reads every LoRA of `loras` and matches its modules against the weight headers of `source`'s unet,
  /// text_encoder and text_encoder_2 (no weights are loaded). The LoRA files are opened as `source` opens its
  /// weights (ModelSource::file_opener). Errors: kNotFound (no file), kDataLoss (corrupt file),
  /// kInvalidArgument (a LoRA that does not fit this model, as above).
  static StatusOr<LoraSet> open(const std::vector<LoraEntry>& loras, const ModelSource& source,
                                const std::string& variant);

  bool empty() const { return loras_.empty(); }
  /// Whether some LoRA changes `component`.
  bool touches(const std::string& component) const;
  /// Mixes into `fp` the identity of every LoRA that changes one of `components`: its header, a sample of
  /// its content and its scale (in order).
  void add_identity(Fingerprint& fp, const std::vector<std::string>& components) const;
  /// Adds every LoRA's update of `component` to `module`'s weights (module names as in the weight files;
  /// text encoders with the "text_model." prefix): W += scale * (alpha / r) * up @ down, computed in float32
  /// on the weight's device and stored in the weight's dtype. Errors: kInvalidArgument when a weight is
  /// missing from the module, kResourceExhausted when the device runs out of memory.
  Status apply(torch::nn::Module& module, const std::string& component) const;
  /// One line for logs, e.g. "2 LoRAs: a.safetensors (scale 0.5; unet 18 modules, text_encoder 3), ...".
  std::string describe() const;

 private:
  struct Target;
  struct Lora;
  std::vector<std::shared_ptr<const Lora>> loras_;
};

}  // namespace sdxlb
