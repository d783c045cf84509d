// Launcher of the channels-last concatenation kernel (pipeline/nn/kernels/concat_kernel.cu): the UNet's skip
// connections, cat([h, skip], dim 1) of channels-last tensors. Raw pointers only, so that the .cu file needs
// no LibTorch headers; pipeline/nn/fused_ops.cpp wraps it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// out's row r = a's row r followed by b's row r, for `rows` rows of a_bytes and b_bytes: the channels-last
/// concatenation along channels of [n, C1, h, w] and [n, C2, h, w] (rows = n·h·w, a_bytes = C1 times the
/// element size). A copy, so PyTorch's cat bit for bit. a_bytes and b_bytes multiples of 16 and the three
/// pointers 16-byte aligned, else cudaErrorInvalidValue, launching nothing. Launched programmatically where
/// our kernels are (programmatic_launch.h).
cudaError_t launch_concat_rows(const void* a, const void* b, void* out, int64_t rows, int64_t a_bytes,
                               int64_t b_bytes, cudaStream_t stream);

}  // namespace sdxlb::kernels
