// Launchers of our FP8 GEMMs (pipeline/nn/kernels/fp8_gemm_kernel.cu, CUTLASS, sm_90a): the FP8 linear with
// an fp16 output (pipeline/nn/fp8.cpp's fp8_linear), and the FP8 self-attention's fused query/key/value
// projection written straight in the e4m3 that cuDNN's FP8 attention reads (pipeline/nn/fp8_attention.cpp).
// Raw pointers only. Each output tile is computed by one CTA over the whole of K: an output row depends only
// on its own input row, the same bits whatever M and wherever the row sits.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Whether this build holds the kernels (CUTLASS found at configure time); when not, the launchers return
/// cudaErrorNotSupported.
bool fp8_gemm_compiled();

/// y[m, n] = fp16(acc[m, n] · w_scale[n] · x_scale[m] + bias[n]), rounded to nearest, where acc is the e4m3
/// product of x [M, K] (row-major, one float32 scale per row) and w [N, K] (row-major, one float32 scale per
/// row), accumulated in the tensor cores' own accumulator (fast accumulation). bias [N] fp16, or null for
/// none; y [M, N] fp16, row-major. Needs K a multiple of 128, N a multiple of 16 and 16-byte aligned
/// pointers (cudaErrorNotSupported, launching nothing, otherwise).
cudaError_t launch_fp8_gemm(const void* x, const void* w, const float* x_scale, const float* w_scale,
                            const void* bias, void* y, int64_t m, int64_t k, int64_t n, cudaStream_t stream);

/// q[m, n] = e4m3(float(fp16(acc[m, n] · w_scale[n] · x_scale[m])) · inverse), saturated to ±448 and rounded
/// to nearest even, where acc is the e4m3 product of x [M, K] (row-major, one float32 scale per row) and
/// w [N, K] (row-major, one float32 scale per row), accumulated in the tensor cores' own accumulator (as the
/// FP8 linears' fast accumulation): the numbers of the FP8 linear rounded to fp16 and then quantised at a
/// fixed scale (fp8_attention.h's quantize_fixed), without the fp16 tensor in memory. q [M, N] e4m3,
/// row-major. Needs K a multiple of 128, N a multiple of 16 and 16-byte aligned pointers
/// (cudaErrorNotSupported, launching nothing, otherwise).
cudaError_t launch_fp8_gemm_e4m3(const void* x, const void* w, const float* x_scale, const float* w_scale,
                                 float inverse, void* q, int64_t m, int64_t k, int64_t n,
                                 cudaStream_t stream);

}  // namespace sdxlb::kernels
