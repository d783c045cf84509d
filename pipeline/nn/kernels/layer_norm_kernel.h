// Launchers of the LayerNorm kernel (pipeline/nn/kernels/layer_norm_kernel.cu). Raw pointers only, so that
// the .cu file needs no LibTorch headers; pipeline/nn/fused_ops.cpp wraps them for tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// y[r, :] = (v[r, :] - mean) / sqrt(var + eps) * gamma + beta for each of `rows` contiguous rows of width d,
/// where v = x, or v = x + residual (rounded to the type, and written to `sum`) when residual and sum are
/// given. One warp per row with the row held in registers (statistics in float32, two passes over the
/// registers). Needs d % 8 == 0, d <= 2048 and 16-byte aligned pointers; returns cudaErrorInvalidValue
/// (launching nothing) otherwise.
cudaError_t launch_layer_norm_f16(const void* x, const void* residual, void* sum, const void* gamma,
                                  const void* beta, void* y, int64_t rows, int64_t d, float eps,
                                  cudaStream_t stream);
cudaError_t launch_layer_norm_bf16(const void* x, const void* residual, void* sum, const void* gamma,
                                   const void* beta, void* y, int64_t rows, int64_t d, float eps,
                                   cudaStream_t stream);

}  // namespace sdxlb::kernels
