// Fused operations with a CUDA kernel where one exists and the plain LibTorch ops everywhere else (CPU,
// fp32), so that the CPU oracle path stays op-for-op identical to diffusers.
#pragma once

#include <ATen/core/Tensor.h>

namespace sdxlb {

/// diffusers' GEGLU activation on the projection output [..., 2F]: value * gelu(gate) with value, gate =
/// chunk(2, -1). One fused kernel on CUDA for fp16/bf16 (bit-identical to the unfused ops), else the ops.
at::Tensor geglu(const at::Tensor& proj);

/// Whether fused CUDA kernels are compiled in (a CUDA build).
bool fused_kernels_available();

}  // namespace sdxlb
