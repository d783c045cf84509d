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
/// the same integer function as token_merging.cpp's ATen version (SplitMix64 finalisers), read on the device
/// so that a CUDA graph replays it for each image and step.
cudaError_t launch_cell_hash(const int64_t* seed, const int64_t* step, int64_t ordinal, int64_t cells,
                             int64_t* out, int64_t count, cudaStream_t stream);

/// ToMe's split of an h×w token grid into destinations and sources, in one single-block kernel: each sy×sx
/// cell (of the h/sy by w/sx whole cells) has one destination, at position p = dy·sx + dx inside the cell
/// (cell_pos [h/sy · w/sx], or 0 everywhere when cell_pos is null: tomesd's no_rand); rows and columns past
/// the last whole cell are sources. b_idx [cells] lists the destinations' token indices in increasing order
/// and a_idx [h·w − cells] the sources': what a stable argsort of tomesd's −1/0 buffer lists.
cudaError_t launch_merge_split(const int64_t* cell_pos, int64_t h, int64_t w, int64_t sx, int64_t sy,
                               int64_t* a_idx, int64_t* b_idx, cudaStream_t stream);

/// The fused kernels' rows from a plan, one block per batch row, for S = N − nd sources and U = S − r:
///   edge [B, S]: source ordinals (into a_idx) by decreasing similarity, the first r merged;
///   dst_sorted [B, r]: the merged sources' destinations (ordinals into b_idx), sorted stably, as integers
///   of key_bytes bytes (2, 4 or 8: a narrower key sorts in fewer radix passes), and
///   by_dst [B, r]: their positions in edge's first r.
/// Writes unm_rows [B, U] = a_idx[edge[:, r:]], src_rows [B, r] = a_idx[edge[:, by_dst]], dst_start and
/// dst_count [B, nd] (a destination's sources are src_rows[start, start + count)), and source_row [B, N]: the
/// row of the merged tensor each token takes back in the unmerge.
cudaError_t launch_merge_plan_rows(const int64_t* edge, const void* dst_sorted, int key_bytes,
                                   const int64_t* by_dst, const int64_t* a_idx, const int64_t* b_idx,
                                   int64_t batch, int64_t n, int64_t nd, int64_t r, int64_t* unm_rows,
                                   int64_t* src_rows, int64_t* dst_start, int64_t* dst_count,
                                   int64_t* source_row, cudaStream_t stream);

/// The merge plan from the similarity's row maxima in one kernel (one block per batch row), for up to 4096
/// sources (S = N − nd) and nd < 65535 destinations, else cudaErrorInvalidValue before launching (the caller
/// then runs the ATen ops and launch_merge_plan_rows). node_max [B, S] (dtype code as above) and node_idx
/// [B, S] int64 are each source's best score and destination. Writes edge [B, S]: the source ordinals by
/// decreasing score, equal scores in increasing ordinal (ATen's stable descending argsort); dst_idx [B, r]:
/// node_idx at edge's first r; and unm_rows, src_rows, dst_start, dst_count and source_row as
/// launch_merge_plan_rows does from them.
cudaError_t launch_merge_plan(int dtype, const void* node_max, const int64_t* node_idx, const int64_t* a_idx,
                              const int64_t* b_idx, int64_t batch, int64_t n, int64_t nd, int64_t r,
                              int64_t* edge, int64_t* dst_idx, int64_t* unm_rows, int64_t* src_rows,
                              int64_t* dst_start, int64_t* dst_count, int64_t* source_row,
                              cudaStream_t stream);

/// out[b, m, :] = normalize(x[b, rows[b · rows_batch_stride + m], :]) with normalize(v) = v / ‖v‖₂ computed
/// as ATen's `v / v.norm(2, -1, keepdim=True)` in the tensors' dtype (the norm accumulated in float, rounded
/// to the dtype, the quotient rounded to the dtype): ToMe's cosine-similarity metric for the gathered sources
/// or destinations, one warp per row.
cudaError_t launch_gather_normalize_rows(int dtype, const void* x, const int64_t* rows,
                                         int64_t rows_batch_stride, void* out, int64_t batch, int64_t n,
                                         int64_t m, int64_t channels, cudaStream_t stream);

}  // namespace sdxlb::kernels
