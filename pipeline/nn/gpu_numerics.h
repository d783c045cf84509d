// The GPU's numerical choices that every process of a job must share: which algorithms cuDNN and cuBLAS run
// for the products of the UNet and the VAE. An image's pixels depend on them (another algorithm rounds
// differently), so they are made the same in every process.
//
// Place in a UNet call (images_per_unet_call k > 1): for a shape whose output tiles do not fill the GPU
// evenly, cuBLAS(Lt) may pick a kernel that splits the dot products of some tiles along K (split-K,
// stream-K), and a row's sum then depends on its tile, that is on its image's place in the call (session 18
// measured such a dependence on the H200, in fp16 and in FP8). The product does not rely on the kernels for
// this: worker/call_layout.h puts each image at the same place of its call whatever its batch. The opt-in
// below instead keeps the UNet's products to kernels that compute each output tile over the whole of K, to
// find out which products depend on the place (tests/batch_invariance_test.cpp) and what such kernels cost:
// - fp16/bf16 GEMMs (at::linear, at::mm) in cuBLASLt with its reduction-scheme mask set to "none": each dot
//   product in one sequence (LibTorch's own switch for batch invariance,
//   allow_fp16_reduced_precision_reduction = (False, False));
// - the 1x1 convolutions (the resnets' shortcuts) as those GEMMs on the channels-last rows, where cuDNN
//   runs them as cuBLASLt GEMMs of its own choosing (layers.h, Conv2d);
// - the FP8 linears in our CUTLASS GEMM, whose tiles are each computed by one CTA over the whole of K
//   (fp8.h, fp8_linear), where at::_scaled_mm takes no such mask.
// Thread-safety: call use_reproducible_gpu_numerics() once, before the GPU's first product.
#pragma once

namespace sdxlb {

/// Whether the GPU's products run the place-invariant kernels above: only when the environment variable
/// SDXLB_INVARIANT_KERNELS is "1" (unset or "0": the libraries' own choices, as measured in
/// bench/results/). Read once; another value throws, naming the variable.
bool place_invariant_kernels();

/// Sets LibTorch's process-wide GPU choices: cuDNN's algorithms by heuristics (benchmark mode off; its
/// timings vary between runs and processes) and deterministic, and, where place_invariant_kernels(),
/// cuBLASLt as the BLAS backend with split-K reductions excluded for fp16 and bf16. Idempotent; harmless in
/// a build or on a machine without CUDA (the settings then govern nothing).
void use_reproducible_gpu_numerics();

}  // namespace sdxlb
