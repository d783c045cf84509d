// The GPU's numerical choices that every process of a job must share: which algorithms cuDNN and cuBLAS run
// for the products of the UNet and the VAE. An image's pixels depend on them (another algorithm rounds
// differently), so they are made the same in every process, and independent of where an image's rows sit in
// a UNet call (docs/job-file.md, "Images per UNet call").
//
// Why the last part needs work of its own: for a shape whose output tiles do not fill the GPU evenly,
// cuBLAS(Lt) may pick a kernel that splits the dot products of some tiles along K (split-K, stream-K). A
// row's sum then depends on its tile, that is on its place in the call: session 18 measured images at the
// second place of a two-image call (images_per_unet_call: 2) whose bits differed from the same images at the
// first place, on the H200, in fp16 and in FP8. Three changes remove every product whose kernel the
// libraries choose by shape from the UNet's call:
// - fp16/bf16 GEMMs (at::linear, at::mm) run in cuBLASLt with its reduction-scheme mask set to "none": each
//   dot product in one sequence (LibTorch's own switch for batch invariance,
//   allow_fp16_reduced_precision_reduction = (False, False));
// - the 1x1 convolutions (the resnets' shortcuts) run as those GEMMs on the channels-last rows, where cuDNN
//   ran them as cuBLASLt GEMMs of its own choosing (layers.h, Conv2d);
// - the FP8 linears run in our CUTLASS GEMM, whose tiles are each computed by one CTA over the whole of K
//   (fp8.h, fp8_linear), where at::_scaled_mm takes no such mask.
// Thread-safety: call use_reproducible_gpu_numerics() once, before the GPU's first product.
#pragma once

namespace sdxlb {

/// Whether the GPU's products run the place-invariant way above: yes unless the environment variable
/// SDXLB_BATCH_INVARIANT is "0", which leaves the libraries' own choices (to measure what invariance
/// costs; images may then depend on batch_size at images_per_unet_call > 1). Read once; a value other than
/// "0" or "1" throws, naming the variable.
bool batch_invariant_products();

/// Sets LibTorch's process-wide GPU choices: cuDNN's algorithms by heuristics (benchmark mode off; its
/// timings vary between runs and processes) and deterministic, and, where batch_invariant_products(),
/// cuBLASLt as the BLAS backend with split-K reductions excluded for fp16 and bf16. Idempotent; harmless in
/// a build or on a machine without CUDA (the settings then govern nothing).
void use_reproducible_gpu_numerics();

}  // namespace sdxlb
