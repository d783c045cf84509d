// Launchers of the fused GEGLU CUDA kernel (pipeline/nn/kernels/geglu_kernel.cu). Raw pointers only, so that
// the .cu file needs no LibTorch headers; pipeline/nn/fused_ops.cpp wraps them for tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// out[r, c] = h * gelu(g) with h = in[r, c], g = in[r, f + c], for an input [rows, 2f] and output [rows, f],
/// both contiguous. The arithmetic and roundings are those of PyTorch's `h * F.gelu(g)` (erf GELU in float,
/// rounded to the storage type, then the product rounded), so the result is bit-identical to the unfused ops.
cudaError_t launch_geglu_f16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream);
cudaError_t launch_geglu_bf16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream);

/// The same GEGLU, bit for bit (dtype code 1 __half, 2 __nv_bfloat16), with gelu(g) looked up in a table of
/// all 65536 16-bit inputs that the GPU fills with the same float arithmetic on first use: the erf kernel
/// above is bound by erf's instructions, this one by memory. One block per SM with the table in 128 KiB of
/// shared memory. cudaErrorInvalidValue, launching nothing, where it does not run: f % 8 != 0, pointers not
/// 16-byte aligned, 2^32 input elements or more, a GPU without that much shared memory per block, or the
/// first call on a device made while its stream is being captured into a CUDA graph (the table is filled, and
/// waited for, outside capture).
cudaError_t launch_geglu_table(int dtype, const void* in, void* out, int64_t rows, int64_t f,
                               cudaStream_t stream);

/// The same GEGLU (dtype code 1 __half, 2 __nv_bfloat16) with each output row quantised to e4m3 instead of
/// written: q [rows, f] e4m3 and scale [rows] float32, the bits launch_quantize_rows_e4m3
/// (fp8_quantize_kernel.h) gives for the output the other launchers write. One block per row; needs f % 8 ==
/// 0, f <= 8192, `in` 16-byte and q 8-byte aligned (cudaErrorInvalidValue, launching nothing, otherwise). For
/// the FP8 UNet's feed-forward, whose second linear is FP8.
cudaError_t launch_geglu_e4m3(int dtype, const void* in, void* q, float* scale, int64_t rows, int64_t f,
                              cudaStream_t stream);

/// launch_geglu_e4m3's bits with gelu looked up in launch_geglu_table's table: one block per SM holding it,
/// each group of 128 threads quantising one row at a time. cudaErrorInvalidValue, launching nothing, where
/// it does not run: f % 8 != 0, f > 5120, `in` not 16-byte or q not 8-byte aligned, 2^32 input elements or
/// more, or where launch_geglu_table would not run.
cudaError_t launch_geglu_table_e4m3(int dtype, const void* in, void* q, float* scale, int64_t rows, int64_t f,
                                    cudaStream_t stream);

}  // namespace sdxlb::kernels
