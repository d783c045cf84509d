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

}  // namespace sdxlb::kernels
