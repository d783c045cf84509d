// Launcher of the deterministic token-merge kernel (pipeline/nn/kernels/token_merge_kernel.cu). Raw pointers
// only, so that the .cu file needs no LibTorch headers; pipeline/nn/token_merging.cpp wraps it for tensors.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// The "mean" scatter-reduce of token merging without atomics, so that every run gives the same bits:
///   out[b, j, c] = (dst[b, j, c] + Σ_{k in [start[b, j], start[b, j] + count[b, j])} src[b, k, c]) / (1 +
///   count)
/// summed in float in increasing k, as PyTorch's CPU `scatter_reduce_(..., reduce="mean")` sums when the
/// sources of each destination are listed in their original order (`src` sorted stably by destination).
/// dst/out [B, nd, C], src [B, r, C] contiguous, of type T (float, __half or __nv_bfloat16 by `dtype`: 0, 1,
/// 2); start/count int64 [B, nd]. out may alias dst.
cudaError_t launch_token_merge_mean(int dtype, const void* dst, const void* src, const int64_t* start,
                                    const int64_t* count, void* out, int64_t batch, int64_t nd, int64_t r,
                                    int64_t channels, cudaStream_t stream);

}  // namespace sdxlb::kernels
