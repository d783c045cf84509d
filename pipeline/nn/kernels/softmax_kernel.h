// Launcher of the row softmax kernel (pipeline/nn/kernels/softmax_kernel.cu): the softmax of attention scores
// that a GEMM wrote in float32, for attention heads wider than the fused attention kernels take (the VAE's
// single 512-wide head). Raw pointers only, so that the .cu file needs no LibTorch headers.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// y[r, :] = softmax(x[r, :] · scale) for float32 rows x [rows, cols], computed in float32 (the row's maximum
/// subtracted before exp) and stored rounded to nearest even in y's type: dtype 1 fp16, 2 bf16, 3 float32.
/// cols a multiple of 4, x and y 16-byte aligned (8 for a 16-bit y); one block per row, two reads of the row
/// and one write.
cudaError_t launch_softmax_rows(int dtype, const float* x, void* y, int64_t rows, int64_t cols, float scale,
                                cudaStream_t stream);

}  // namespace sdxlb::kernels
