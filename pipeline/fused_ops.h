// Fused operations with a CUDA kernel where one exists and the plain LibTorch ops everywhere else (CPU,
// fp32), so that the CPU oracle path stays op-for-op identical to diffusers.
#pragma once

#include <ATen/core/Tensor.h>

namespace sdxlb {

/// diffusers' GEGLU activation on the projection output [..., 2F]: value * gelu(gate) with value, gate =
/// chunk(2, -1). One fused kernel on CUDA for fp16/bf16 (bit-identical to the unfused ops), else the ops.
at::Tensor geglu(const at::Tensor& proj);

/// GroupNorm of x [N, C, H, W] (then SiLU when `silu`). On CUDA, for fp16/bf16 channels-last tensors with C a
/// multiple of 8, one deterministic kernel pipeline that keeps the channels-last layout (LibTorch's own
/// kernel converts to NCHW and back); elsewhere at::group_norm (+ at::silu), op for op as diffusers.
at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                      double eps, bool silu);

/// Whether fused CUDA kernels are compiled in (a CUDA build).
bool fused_kernels_available();

}  // namespace sdxlb
