// Token merging for Stable Diffusion (ToMe, Bolya & Hoffman 2023) as tomesd 0.1.3 computes it, and token
// downsampling (ToDo, Smith et al. 2024): the per-call state the transformer blocks read to reduce tokens.
//
// ToMe: before a transformer block's self-attention (and, if asked, its cross-attention and MLP), the block's
// tokens are split into destinations (one per sy×sx cell of the token grid) and sources; the r = ratio × N
// sources most similar (cosine) to a destination are averaged into it; after the layer every merged token
// takes its destination's output again. `TokenMerge::plan`, `merge` and `unmerge` are tomesd's
// bipartite_soft_matching_random2d, op for op on the CPU (float32 results equal to tomesd's). On CUDA the
// mean runs in a kernel without atomics, so that the same input always gives the same bits.
//
// Random destinations (use_rand): tomesd draws the destination of each cell from a generator shared by the
// whole process. Ours are a pure function of (the image's seed, the step, the block's ordinal in the UNet
// call, the cell): a counter-based hash computed on the device inside the CUDA graph, so every image gets the
// same merges whatever the batch, the rank count or a resume. Both halves of a CFG pair share them, as they
// share tomesd's draw.
//
// ToDo: self-attention's keys and values come from the token grid downsampled by a factor (queries keep every
// token), at the levels max_downsample allows.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "jobs/approximations.h"

namespace sdxlb {

/// One block call's merge: which tokens merge into which. A default-constructed TokenMerge merges nothing
/// (merge and unmerge return their input).
class TokenMerge {
 public:
  TokenMerge() = default;
  /// tomesd's bipartite_soft_matching_random2d. metric [B, N, C]: the block's input tokens, an h×w grid in
  /// row-major order; sx, sy: the destination stride; r: tokens to remove (clamped to the source count);
  /// rand_idx int64 [h/sy, w/sx, 1] in [0, sx·sy): the destination of each cell (undefined: the first cell
  /// position, tomesd's no_rand).
  static TokenMerge plan(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy, int64_t r,
                         const at::Tensor& rand_idx);
  /// plan() as tomesd's ATen ops on any device (what the CPU runs; on CUDA the reference the plan's kernels
  /// are tested against). Its merge and unmerge run the ATen ops too.
  static TokenMerge plan_reference(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy,
                                   int64_t r, const at::Tensor& rand_idx);

  bool active() const { return r_ > 0; }
  /// x [B, N, C] → [B, N − r, C]: unmerged sources, then destinations with their merged sources averaged.
  at::Tensor merge(const at::Tensor& x) const;
  /// x [B, N − r, C] → [B, N, C]: every token back in place, merged sources taking their destination's value.
  at::Tensor unmerge(const at::Tensor& x) const;
  /// merge and unmerge as tomesd's ATen ops, on any device: what the CPU runs, and on CUDA the reference the
  /// fused kernels are tested against.
  at::Tensor merge_reference(const at::Tensor& x) const;
  at::Tensor unmerge_reference(const at::Tensor& x) const;
  /// The bipartite split: token indices of the sources [N − num_dst] and of the destinations [num_dst], each
  /// in ascending order (undefined when inactive).
  at::Tensor sources() const { return a_idx_.defined() ? a_idx_.view({-1}) : at::Tensor(); }
  at::Tensor destinations() const { return b_idx_.defined() ? b_idx_.view({-1}) : at::Tensor(); }

 private:
  static TokenMerge plan_with(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy,
                              int64_t r, const at::Tensor& rand_idx, bool kernels);

  int64_t batch_ = 0, tokens_ = 0, num_dst_ = 0, r_ = 0;
  at::Tensor a_idx_, b_idx_;                // [1, N − num_dst, 1] sources, [1, num_dst, 1] destinations
  at::Tensor unm_idx_, src_idx_, dst_idx_;  // [B, ., 1]
  // CUDA only (built by one kernel from the plan): token rows of x for the fused kernels: the unmerged
  // sources [B, U], the destinations [nd], the merged sources listed by destination (stable) [B, r] with each
  // destination's start and count [B, nd], and for the unmerge the row of the merged tensor every token takes
  // [B, N].
  at::Tensor unm_rows_, dst_rows_, src_rows_, dst_start_, dst_count_, source_row_;
};

/// What one UNet call's transformer blocks need to merge (ToMe) or downsample (ToDo) tokens. Made by the
/// caller for each call (a CUDA graph captures the call once; the tensors are then static buffers).
struct TokenReduction {
  const TokenMerging* merging = nullptr;            ///< ToMe settings; nullptr: off
  const TokenDownsampling* downsampling = nullptr;  ///< ToDo settings; nullptr: off
  int64_t height = 0, width = 0;                    ///< the UNet input's latent size
  at::Tensor seed;         ///< int64 [] on the model's device: the image's seed (ToMe use_rand only)
  at::Tensor step;         ///< int64 [] on the model's device: the step's index (ToMe use_rand only)
  int64_t next_block = 0;  ///< the ordinal of the next transformer block call (the UNet resets it per call)

  bool active() const { return merging != nullptr || downsampling != nullptr; }
};

/// A transformer block's view of a TokenReduction: the merge for its input (ToMe) and the grid its
/// self-attention downsamples (ToDo).
struct BlockTokens {
  TokenMerge merge;  ///< inactive unless ToMe applies at this block
  /// ToDo at this block: keys/values from the grid grid_h × grid_w downsampled to new_h × new_w.
  bool downsample = false;
  int64_t grid_h = 0, grid_w = 0, new_h = 0, new_w = 0, factor = 1;
  TokenDownsampling::Method method = TokenDownsampling::Method::kNearest;
};
/// tomesd's compute_merge (and ToDo's level choice) for a block whose input is x [B, N, C]; takes the
/// block's ordinal (reduction.next_block) and advances it.
BlockTokens block_tokens(TokenReduction& reduction, const at::Tensor& x);

/// ToDo's downsampling of self-attention's key/value input: x [B, grid_h·grid_w, C] → [B, new_h·new_w, C],
/// with new = floor(grid / factor). kNearest: F.interpolate(mode="nearest-exact") (the ToDo code's default;
/// output row i reads row floor((i + 0.5)·h/new_h)); kAverage: F.avg_pool2d(kernel = stride = factor), which
/// leaves the last grid mod factor rows and columns unread.
at::Tensor downsample_tokens(const at::Tensor& x, const BlockTokens& block);

}  // namespace sdxlb
