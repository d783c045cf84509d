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

/// The same LayerNorm (dtype code 1 __half, 2 __nv_bfloat16) with its output rows quantised to e4m3 instead
/// of written: q [rows, d] e4m3 and scale [rows] float32 as launch_quantize_rows_e4m3 (fp8_quantize_kernel.h)
/// gives for the output the other launchers write, bit for bit. For the FP8 UNet's transformer blocks, whose
/// normalised rows feed only FP8 linears.
cudaError_t launch_layer_norm_e4m3(int dtype, const void* x, const void* residual, void* sum,
                                   const void* gamma, const void* beta, void* q, float* scale, int64_t rows,
                                   int64_t d, float eps, cudaStream_t stream);

}  // namespace sdxlb::kernels
