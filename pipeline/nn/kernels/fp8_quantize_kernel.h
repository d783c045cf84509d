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

/// Per-sample dynamic e4m3 quantisation of x [samples, n] (dtype code 1 __half, 2 __nv_bfloat16; contiguous,
/// n % 8 == 0, x 16-byte and q 8-byte aligned): the row quantisation above with one row per sample (the same
/// numbers as launch_quantize_rows_e4m3 on [samples, n]), for the FP8 convolution's activations. Writes q and
/// the sample's scale `pixels` times per sample into pixel_scale [samples, pixels] (the convolution's
/// per-output-pixel scale). amax_bits: `samples` unsigned ints of workspace. Three launches (a memset, the
/// largest magnitude of each sample over many blocks, the conversion).
cudaError_t launch_quantize_samples_e4m3(int dtype, const void* x, int64_t samples, int64_t n, void* q,
                                         float* pixel_scale, int64_t pixels, unsigned* amax_bits,
                                         cudaStream_t stream);

}  // namespace sdxlb::kernels
