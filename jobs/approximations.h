// Approximations: the opt-in speed-ups that change the image (issue #14), as a job's `token_merging`,
// `token_downsampling` and `deep_cache` keys ask for them.
//
// Each technique trades some fidelity to the exact UNet for speed, so none is on by default and each one a
// job turns on is part of its identity (JobSpec::identity): images rendered with and without it never share
// a dataset. The settings mirror the reference implementations' arguments (tomesd.apply_patch, ToDo's
// patch, DeepCache's DeepCacheSDHelper.set_params) so that a setting tried in Python reads the same here.
//
// Ranges: JobSpec's parser accepts only the values stated on each field (with a file:line:column error for
// any other), so code that takes an Approximations from a JobSpec may rely on them; code that fills one by
// hand must keep them. The one bound that depends on the model (DeepCache::cache_branch_id's largest value)
// is checked when the UNet loads, and DeepCache::where says where to point that error.
//
// Torch-free and YAML-free: job_spec.cpp reads the job file's keys into these structs, the pipeline applies
// them. All functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sdxlb {

/// ToMe (token merging, Bolya & Hoffman 2023), with tomesd.apply_patch's arguments and meaning: before a
/// transformer block's self-attention (and, if asked, its cross-attention and MLP) the most similar tokens
/// are merged into destination tokens on a strided grid, and unmerged after it.
struct TokenMerging {
  /// Fraction of a block's tokens merged, in [0, 1). tomesd merges at most the tokens outside the
  /// destination grid, 1 - 1/(sx*sy) of them (0.75 with the default strides), whatever the ratio.
  double ratio = 0.5;
  /// 1, 2, 4 or 8: merge only in the blocks whose latent is downsampled at most this much. tomesd's default
  /// is 1, which merges nothing in SDXL (its full-resolution level has no attention); ours is 2, SDXL's
  /// second level (64x64 tokens at 1024x1024). 4 adds the deepest level and the mid block; 8 is the same as
  /// 4 on SDXL.
  int64_t max_downsample = 2;
  /// Stride of the destination grid in x and in y, >= 1: one destination token per sx*sy tokens.
  int64_t sx = 2;
  int64_t sy = 2;
  /// Pick each destination token at a random place in its sx*sy cell, as tomesd does; false: the first
  /// (top-left) token of each cell.
  bool use_rand = true;
  /// Which parts of a block see the merged tokens.
  bool merge_attn = true;
  bool merge_crossattn = false;
  bool merge_mlp = false;

  bool operator==(const TokenMerging& other) const;
  bool operator!=(const TokenMerging& other) const { return !(*this == other); }
};

/// ToDo (token downsampling, Smith et al. 2024): self-attention's keys and values come from a downsampled
/// token grid; its queries, and every other part of the block, keep every token.
struct TokenDownsampling {
  /// How the key/value grid is downsampled.
  enum class Method { kNearest, kAverage };

  /// 2 or 4: the grid is divided by this in each direction (4x or 16x fewer keys and values).
  int64_t factor = 2;
  /// 1, 2, 4 or 8: downsample only in the blocks whose latent is downsampled at most this much (as
  /// TokenMerging::max_downsample; 1 changes nothing on SDXL).
  int64_t max_downsample = 2;
  Method method = Method::kNearest;

  bool operator==(const TokenDownsampling& other) const;
  bool operator!=(const TokenDownsampling& other) const { return !(*this == other); }
};

/// DeepCache (Ma et al. 2024, DeepCacheSDHelper in "uniform" mode): a full UNet step every cache_interval
/// steps; on the steps between, the features of the UNet's deep part are reused from the last full step and
/// only the shallow blocks above the chosen skip branch run.
struct DeepCache {
  /// >= 1: step s (0-based) runs the full UNet when s % cache_interval == 0. 1: every step is full (the
  /// exact image, at no speed-up).
  int64_t cache_interval = 3;
  /// >= 0, DeepCache's numbering: skip branch `cache_branch_id % 3` of block `cache_branch_id / 3`. 0 is the
  /// shallowest branch (the fastest, the furthest from exact). The largest valid id depends on the UNet and
  /// is checked when the model loads.
  int64_t cache_branch_id = 0;
  /// "<file>:<line>:<column>" of the job file's cache_branch_id value, or of the deep_cache key when the id
  /// is defaulted: where that later error points. Not part of equality or of to_json().
  std::string where;

  /// Compares the settings (not `where`).
  bool operator==(const DeepCache& other) const;
  bool operator!=(const DeepCache& other) const { return !(*this == other); }
};

/// The precision of the UNet's transformer linears (job key unet_precision, issue 17).
enum class UNetPrecision {
  kDefault,  ///< "fp16": the job's dtype (fp16 or bf16), as diffusers runs it
  kFp8,  ///< "fp8": e4m3 GEMMs with per-token activation and per-channel weight scales (pipeline/nn/fp8.h)
};

/// The precision of attn1's attention kernel (job key attention_precision, issue 17); fp8 needs
/// unet_precision fp8.
enum class AttentionPrecision {
  kDefault,  ///< "fp16": the job's dtype, PyTorch's SDPA kernel
  kFp8,      ///< "fp8": cuDNN's FP8 flash attention with static scales (pipeline/nn/fp8_attention.h)
};

/// The precision of the UNet's resnet and upsampler 3x3 convolutions (job key convolution_precision, issue
/// 17); fp8 needs unet_precision fp8.
enum class ConvolutionPrecision {
  kDefault,  ///< "fp16": the job's dtype, cuDNN's kernels
  kFp8,  ///< "fp8": e4m3 implicit GEMMs (CUTLASS, Hopper) with per-image activation and per-channel weight
         ///< scales
};

/// What a job asks for; every technique unset (the default): the exact computation. The parser refuses
/// token_merging together with token_downsampling (both change self-attention); either combines with
/// deep_cache.
struct Approximations {
  std::optional<TokenMerging> token_merging;
  std::optional<TokenDownsampling> token_downsampling;
  std::optional<DeepCache> deep_cache;
  UNetPrecision unet_precision = UNetPrecision::kDefault;
  AttentionPrecision attention_precision = AttentionPrecision::kDefault;
  ConvolutionPrecision convolution_precision = ConvolutionPrecision::kDefault;

  /// No technique set.
  bool empty() const;
  /// Compact JSON object with every setting of each technique that is set, keys sorted, e.g.
  /// {"deep_cache":{"cache_branch_id":0,"cache_interval":3}} or {"unet_precision":"fp8"}; "{}" when none is
  /// set. Stable across runs and
  /// machines (a number reads back as written: 0.5 is "0.5"). Item metadata and the resume identity use it.
  std::string to_json() const;
  /// One line for logs, e.g. "ToMe ratio 0.5 (max_downsample 2, sx 2, sy 2, use_rand true, merge_attn
  /// true, merge_crossattn false, merge_mlp false); DeepCache interval 3 (cache_branch_id 0)", or
  /// "exact (no approximation)" when none is set.
  std::string describe() const;

  bool operator==(const Approximations& other) const;
  bool operator!=(const Approximations& other) const { return !(*this == other); }
};

/// The job file's spelling of a method: "nearest" or "average".
const char* todo_method_name(TokenDownsampling::Method method);

}  // namespace sdxlb
