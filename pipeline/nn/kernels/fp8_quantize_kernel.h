// Launcher of the FP8 row-quantisation kernel (pipeline/nn/kernels/fp8_quantize_kernel.cu). Raw pointers
// only, so that the .cu file needs no LibTorch headers; pipeline/nn/fp8.cpp wraps it for tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Per-row (per-token) dynamic e4m3 quantisation of x [rows, cols] (dtype code 1 __half, 2 __nv_bfloat16;
/// contiguous): scale[r] = max(amax(|x[r, :]|) / 448, 2^-24) in float32, and q[r, c] = e4m3(x[r, c] ·
/// (1 / scale[r])) with the reciprocal and the product rounded to float32, then to e4m3 to nearest even
/// (|x| / scale <= 448 by construction). One warp per
/// row, which reads it twice (once for the scale, then from cache to convert); 16-byte loads when cols % 8 ==
/// 0 and x is 16-byte aligned. The same numbers as fp8.h's ATen reference (quantize_rows_reference).
cudaError_t launch_quantize_rows_e4m3(int dtype, const void* x, int64_t rows, int64_t cols, void* q,
                                      float* scale, cudaStream_t stream);

/// Fixed-scale e4m3 quantisation of `count` (1 to 3) tensors of n elements each, in one launch: q[t][i] =
/// e4m3(x[t][i] · inverse[t]) with the product rounded to float32 and then to e4m3 to nearest even, clamped
/// to ±448 (dtype code 1 __half, 2 __nv_bfloat16; contiguous). 16-byte loads when n % 8 == 0 and every
/// pointer is aligned. The same numbers as fp8_attention.h's ATen reference (quantize_fixed_reference).
cudaError_t launch_quantize_fixed_e4m3(int dtype, int count, const void* const* x, void* const* q,
                                       const float* inverse, int64_t n, cudaStream_t stream);

}  // namespace sdxlb::kernels
