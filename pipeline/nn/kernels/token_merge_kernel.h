// Launchers of the token-merging CUDA kernels (pipeline/nn/kernels/token_merge_kernel.cu). Raw pointers only,
// so that the .cu file needs no LibTorch headers; pipeline/nn/token_merging.cpp wraps them for tensors.
//
// `dtype` codes: 0 float, 1 __half, 2 __nv_bfloat16. Token tensors are contiguous [B, rows, C]; index tensors
// are contiguous int64 [B, M] (or [1, M] shared by the batch: pass a batch stride of 0).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// out[b, m, :] = x[b, rows[b · rows_batch_stride + m], :] for x [B, N, C], out [B, M, C]: one kernel for
/// what the reference does with gathers, zero-filled buffers and scatters (ToMe's split and unmerge).
cudaError_t launch_gather_rows(int dtype, const void* x, const int64_t* rows, int64_t rows_batch_stride,
                               void* out, int64_t batch, int64_t n, int64_t m, int64_t channels,
                               cudaStream_t stream);

/// ToMe's merge in one kernel, without atomics (every run gives the same bits), for x [B, N, C] and out
/// [B, U + nd, C]:
///   out[b, t]      = x[b, unm[b, t]]                                    t < U (the unmerged sources)
///   out[b, U + j]  = (x[b, dst[j]] + Σ_{k < count[b, j]} x[b, src[b, start[b, j] + k]]) / (1 + count[b, j])
/// summed in float in increasing k, as PyTorch's CPU `scatter_reduce_(..., reduce="mean")` sums when each
/// destination's sources are listed in their original order. dst is shared by the batch ([nd]).
cudaError_t launch_merge_rows_mean(int dtype, const void* x, const int64_t* unm, const int64_t* dst,
                                   const int64_t* src, const int64_t* start, const int64_t* count, void* out,
                                   int64_t batch, int64_t n, int64_t u, int64_t nd, int64_t r,
                                   int64_t channels, cudaStream_t stream);

/// ToMe's random destination cell positions: out[i] = hash(*seed, *step, ordinal, i) mod cells for i < count,
/// the same integer function as token_merging.cpp's ATen version (SplitMix64 finalisers).
cudaError_t launch_cell_hash(const int64_t* seed, const int64_t* step, int64_t ordinal, int64_t cells,
                             int64_t* out, int64_t count, cudaStream_t stream);

}  // namespace sdxlb::kernels
