// UNet2DConditionModel: SDXL's denoiser, built from a diffusers unet/config.json and loaded from its
// safetensors (single file, fp16 variant or shards).
//
// The model mirrors diffusers 0.42 op for op, so fp32 CPU results match it to float rounding of the same
// kernels. It supports the UNet family SDXL belongs to (DownBlock2D / CrossAttnDownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D / CrossAttnUpBlock2D, "text_time" added conditioning); any other config
// value is refused by UNetConfig::from_json with an error naming the key, never run approximately.
//
// forward() makes no host synchronisation and allocates no constants per call, so one denoising step can be
// captured in a CUDA graph. A loaded model is immutable and safe to call from several threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/models/unet_blocks.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/token_merging.h"
#include "pipeline/nn/unit_hook.h"

namespace sdxlb {

/// The settings of unet/config.json that shape the model, expanded to one entry per level.
struct UNetConfig {
  enum class BlockKind { kPlain, kCrossAttn };  ///< DownBlock2D/UpBlock2D, or their CrossAttn variants

  int64_t in_channels = 4;
  int64_t out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<BlockKind> down_blocks;  ///< down_block_types
  std::vector<BlockKind> up_blocks;    ///< up_block_types
  std::vector<int64_t> block_out_channels;
  std::vector<int64_t> layers_per_block;
  std::vector<int64_t> transformer_layers_per_block;
  /// Heads per level. diffusers' config key attention_head_dim holds the NUMBER of heads (its historic
  /// misnomer); num_attention_heads must be null. Each head is block_out_channels[i] / heads wide.
  std::vector<int64_t> num_attention_heads;
  std::vector<int64_t> cross_attention_dim;
  int64_t downsample_padding = 1;
  /// Output scale of the mid block's resnets. (resnet_out_scale_factor and resnet_skip_time_act do not reach
  /// the block types built here in diffusers either, so they are accepted and ignored.)
  double mid_block_scale_factor = 1.0;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool use_linear_projection = false;
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  int64_t time_embed_dim = 0;  ///< time_embedding_dim, or 4 × block_out_channels[0]
  int64_t addition_time_embed_dim = 0;
  int64_t projection_class_embeddings_input_dim = 0;

  size_t num_levels() const { return block_out_channels.size(); }

  /// Parses and validates a diffusers UNet2DConditionModel config. `source` (the file path) prefixes every
  /// error. Errors: kDataLoss for a missing required key or a value of the wrong type or size,
  /// kUnimplemented for a valid diffusers setting this UNet does not implement (naming the key and value).
  static StatusOr<UNetConfig> from_json(const nlohmann::json& json, const std::string& source);
};

/// DeepCache (Ma et al. 2024, the `deepcache` package's DeepCacheSDHelper) in one UNet call. The branch is
/// DeepCache's cache_branch_id: level `block` = id / 3, layer `layer` = id % 3. A full call runs the whole
/// UNet and stores the features entering up layer (layers_per_block − layer) of that level's up block (its
/// input before the skip is concatenated); a shallow call runs only the blocks outside the branch: the down
/// path to the branch's first `layer` layers, then that up block from the stored features on, then the rest
/// of the up path. It equals DeepCacheSDHelper's module-by-module replay of cached outputs.
struct DeepCacheCall {
  int64_t block = 0;
  int64_t layer = 0;
  bool full = true;
  /// The image's features (undefined until the first full call allocates them; later calls copy into the
  /// same storage, so a CUDA graph can capture both calls). Must be set.
  at::Tensor* features = nullptr;
};

/// Whether DeepCache's cache_branch_id names a branch of a UNet with `config` (level id / 3 must exist).
/// Error: kInvalidArgument saying the valid range, prefixed by `where` (the job file's location).
Status check_deep_cache_branch(const UNetConfig& config, int64_t cache_branch_id, const std::string& where);

/// What one UNet call may change besides its inputs (all off by default: the exact model).
struct UNetCall {
  TokenReduction* tokens = nullptr;     ///< ToMe / ToDo in the transformer blocks
  DeepCacheCall* deep_cache = nullptr;  ///< step caching
  /// Cross-attention keys and values of this call's encoder_hidden_states, from project_context() (nullptr:
  /// projected in the call). Only an optimisation: the output is the same bits either way.
  const ContextProjections* projected = nullptr;
  /// The first n samples' encoder_hidden_states are all zeros (with CFG in the denoise loop: each image's
  /// empty negative prompt under force_zeros_for_empty_prompt). Their cross-attentions' keys and values are
  /// then zero, so each cross-attention's output is to_out's bias, exactly what computing it gives; those
  /// rows are filled with it and only the other samples' cross-attention runs. The caller guarantees the
  /// zeros (nothing checks them here). 0: every sample's cross-attention runs.
  int64_t zero_context_samples = 0;
};

/// diffusers' UNet2DConditionModel for the config family described above.
class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  /// Builds the module tree with uninitialised parameters (see layers.h); load weights before use.
  explicit UNet2DConditionModelImpl(const UNetConfig& config);

  /// One denoiser evaluation, in the dtype and on the device of the parameters.
  ///   sample                [B, in_channels, h, w]
  ///   timestep              a 0-dim tensor or [B] (any real/integer dtype; expanded to B). Pass it on the
  ///                         model's device: one on the CPU is copied over, a blocking copy that a CUDA graph
  ///                         cannot capture.
  ///   encoder_hidden_states [B, L, cross_attention_dim]
  ///   text_embeds           [B, P]  (pooled text embedding)
  ///   time_ids              [B, K]  with P + K × addition_time_embed_dim =
  ///   projection_class_embeddings_input_dim
  /// Returns the noise prediction [B, out_channels, h, w]. Throws c10::Error on bad input; use
  /// checked_forward() for a Status instead.
  /// `call` switches on token reduction and step caching.
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timestep,
                     const at::Tensor& encoder_hidden_states, const at::Tensor& text_embeds,
                     const at::Tensor& time_ids, const UNetCall& call = {});

  /// forward() after checking every input's rank, sizes, dtype and device against the model (host-side
  /// metadata only, no synchronisation). Errors: kInvalidArgument naming the input and the expected shape;
  /// kResourceExhausted for out-of-memory; kInternal for any other LibTorch failure.
  StatusOr<at::Tensor> checked_forward(const at::Tensor& sample, const at::Tensor& timestep,
                                       const at::Tensor& encoder_hidden_states, const at::Tensor& text_embeds,
                                       const at::Tensor& time_ids);

  /// Every cross-attention's keys and values of encoder_hidden_states [B, L, cross_attention_dim], into
  /// out.kv (replacing what it held), for UNetCall::projected: the prompt is the same at every step, so a
  /// denoise loop projects once per batch what each step would project again.
  void project_context(const at::Tensor& encoder_hidden_states, ContextProjections& out);

  /// Every resnet's time_emb_proj as rows of one linear held by this module (the resnets hand their weights
  /// over, ResnetBlock2D::hand_over_time_projection): forward then runs one SiLU of the time embedding and
  /// one GEMM for all of them (SDXL: 17 resnets, 13760 outputs) instead of one of each per resnet. The
  /// results are the same computation, rounded as one GEMM rounds it. All or none: returns how many resnets
  /// joined (0: none has a time projection, one cannot hand it over, or they joined already).
  int64_t fuse_time_projections();

  const UNetConfig& config() const { return config_; }
  /// Runs hook->begin_forward() at the start of every forward (nullptr: none). See unit_hook.h.
  void set_forward_hook(UnitHook* hook) { forward_hook_ = hook; }
  /// Dtype and device of the parameters.
  at::ScalarType dtype() const;
  c10::Device device() const;

 private:
  Status check_inputs(const at::Tensor& sample, const at::Tensor& timestep,
                      const at::Tensor& encoder_hidden_states, const at::Tensor& text_embeds,
                      const at::Tensor& time_ids) const;

  UNetConfig config_;
  UnitHook* forward_hook_ = nullptr;
  Conv2d conv_in_{nullptr};
  Timesteps time_proj_{nullptr};
  TimestepEmbedding time_embedding_{nullptr};
  Timesteps add_time_proj_{nullptr};
  TimestepEmbedding add_embedding_{nullptr};
  std::vector<UNetDownBlock> down_blocks_;
  UNetMidBlock mid_block_{nullptr};
  std::vector<UNetUpBlock> up_blocks_;
  GroupNorm conv_norm_out_{nullptr};
  Conv2d conv_out_{nullptr};
  at::Tensor time_proj_weight_, time_proj_bias_;  // fuse_time_projections' (buffers); undefined: per resnet
};
TORCH_MODULE(UNet2DConditionModel);

/// Builds the UNet from `config` and loads `weights` into it as `dtype` on `device`. `what` names the weights
/// in errors (e.g. "unet weights"; the files are appended). Errors: kDataLoss listing every missing,
/// unexpected or mis-shaped tensor (with both shapes); kResourceExhausted when the weights do not fit.
StatusOr<UNet2DConditionModel> load_unet(const UNetConfig& config, const WeightSet& weights,
                                         const std::string& what, at::ScalarType dtype, c10::Device device);

/// Reads `<folder>/unet/config.json` and the unet weights of `variant` ("" or e.g. "fp16"; sharded weights
/// are found through their index), and loads them as `dtype` on `device`. Errors: those of
/// ModelFolder::component_config / component_weights, UNetConfig::from_json and the overload above.
StatusOr<UNet2DConditionModel> load_unet(const ModelFolder& folder, const std::string& variant,
                                         at::ScalarType dtype, c10::Device device);

/// Readies a loaded UNet for a GPU the way the product runs it there in `dtype`: the GPU's numerical choices
/// (use_reproducible_gpu_numerics, gpu_numerics.h), the 4-D weights channels-last (the fastest layout for
/// SDXL's convolutions on tensor cores), the self-attentions' query, key and value projections fused into one
/// GEMM (fuse_attention_projections, attention.h), the resnets' time-embedding projections as one
/// (fuse_time_projections, unless SDXLB_DISABLE_FUSION lists "timeproj"), and the feed-forwards' projections
/// reordered for the GEGLU GEMM where geglu_gemm_supported(device, dtype) (use_geglu_gemms,
/// transformer_2d.h). The weights stay where they are (a streamed UNet's in host memory). Call after LoRA,
/// use_phase_upsamplers (resnet_block.h, which must come before FP8), use_fp8_linears and
/// use_fp8_convolutions. Returns how many feed-forwards it reordered.
int64_t prepare_unet_for_gpu(torch::nn::Module& unet, const c10::Device& device, at::ScalarType dtype);

}  // namespace sdxlb
