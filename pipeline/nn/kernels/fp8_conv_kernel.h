// Launcher of the FP8 (e4m3) 3x3 and 2x2 convolutions (pipeline/nn/kernels/fp8_conv_kernel.cu): CUTLASS's
// Hopper implicit-GEMM convolution (TMA im2col loads, WGMMA e4m3 products), with the two scales applied in
// its epilogue. Raw pointers only, so that callers need neither LibTorch nor CUTLASS headers.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Whether this build has the kernel (CUTLASS found at configure time, compiled for sm_90a).
bool fp8_conv_compiled();

/// y[n, h, w, k] = fp16(Σ x[n, h+r-1, w+s-1, c] · f[k, r, s, c] · channel_scale[k] · pixel_scale[n·Ho·Wo +
/// h·Wo + w]) over r, s in 0..size-1 and c, with zero padding of 1 and stride 1: a size×size convolution
/// (size 3, or 2 for the upsamplers' phase convolutions) of e4m3 activations x [N, H, W, C] and e4m3 filters
/// f [K, size, size, C] (both channels-last, contiguous) into y [N, Ho, Wo, K] with Ho = H + 3 - size,
/// Wo = W + 3 - size; the products accumulated in the tensor cores' own float32 accumulator (no promotion
/// every few steps of K: the same as cuBLASLt's fast accumulation), then multiplied by the output channel's
/// scale and the output pixel's scale in float32, rounded to fp16 once. C and K must be multiples of 16. On
/// an sm_90 GPU only. Returns cudaErrorNotSupported where the kernel cannot run the problem (or was not
/// compiled), with nothing launched.
cudaError_t launch_fp8_conv(const void* x, const void* f, const float* pixel_scale,
                            const float* channel_scale, void* y, int n, int h, int w, int c, int k, int size,
                            cudaStream_t stream);

}  // namespace sdxlb::kernels
