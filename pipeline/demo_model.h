// Writing random-weight SDXL-architecture models in diffusers format, without Python.
//
// `tiny` is the built-in demo model: every structural feature of SDXL (two text encoders with projection,
// text_time conditioning, a UNet level without attention and one with two transformer layers, a 4-level VAE
// with its 8x scale, and a TAESD-style tiny VAE) at widths that render 128x128 in seconds on a CPU.
// `full` has SDXL base's exact configs (2.6 B UNet parameters) for benchmarks. Weights are random (PyTorch's
// default initialisation), so images are noise: the model exercises the whole product, not image quality.
// The tokenizers get a small byte-level vocabulary with letter-pair merges, which tokenizes any text.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

#include "common/status.h"

namespace sdxlb {

enum class DemoModelSize { kTiny, kFull };

struct DemoModelOptions {
  DemoModelSize size = DemoModelSize::kTiny;
  at::ScalarType dtype = at::kFloat;  ///< dtype of the saved weights (fp16 halves the full model's 7 GB)
  uint64_t seed = 0;
  bool with_tiny_vae = true;  ///< also write an AutoencoderTiny folder at `<dir>/tiny_vae`
};

/// Writes a diffusers StableDiffusionXLPipeline folder at `dir` (created; must not exist or be empty), plus a
/// TAESD-style AutoencoderTiny folder at `<dir>/tiny_vae` when asked. Errors: kFailedPrecondition when `dir`
/// exists and is not empty, kIoError naming the file that could not be written.
Status write_demo_model(const std::string& dir, const DemoModelOptions& options);

}  // namespace sdxlb
