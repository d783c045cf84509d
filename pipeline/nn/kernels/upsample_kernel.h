// Launcher of the nearest-neighbour ×2 upsampling kernel (pipeline/nn/kernels/upsample_kernel.cu). Raw
// pointers only, so that the .cu file needs no LibTorch headers; pipeline/nn/fused_ops.cpp wraps it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// y [n, 2h, 2w, c] = x [n, h, w, c] repeated 2×2 (nearest-neighbour, a channels-last [n, c, h, w] tensor):
/// PyTorch's upsample_nearest2d with scale 2, bit for bit (a copy). `pixel_bytes` is the bytes of one pixel
/// (c times the element size), a multiple of 16, and both pointers 16-byte aligned; one 16-byte load and four
/// 16-byte stores per thread and step.
cudaError_t launch_upsample_nearest2x(const void* x, void* y, int64_t n, int64_t h, int64_t w,
                                      int64_t pixel_bytes, cudaStream_t stream);

/// The upsampler's output from its phase convolution (pipeline/nn/resnet_block.h,
/// upsample_conv_phase_weight): out [n, 2h, 2w, c] with out[·, 2i + a, 2j + b, ·] = y[·, i + a, j + b, (2a +
/// b)·c + ·] + bias, where y is [n, h + 1, w + 1, 4c] (both channels-last [n, c', h', w'] tensors). The bias
/// (c values, or null for none) is added in float32 and the sum rounded once, as PyTorch adds it. `dtype` 0
/// float32, 1 fp16, 2 bf16; c a multiple of 16 bytes' elements and both tensors 16-byte aligned, else
/// cudaErrorInvalidValue.
cudaError_t launch_upsample_phases(int dtype, const void* y, const void* bias, void* out, int64_t n,
                                   int64_t h, int64_t w, int64_t c, cudaStream_t stream);

}  // namespace sdxlb::kernels
