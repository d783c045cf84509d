// Fused operations with CUDA kernels where they apply (fp16/bf16 on the GPU; float32 too for GroupNorm, the
// bias+residual add and upsampling, which the float32 VAE runs; channels-last where it says so) and the plain
// LibTorch ops everywhere else (the CPU), so that the CPU oracle path stays op-for-op identical to diffusers.
// Each function states the unfused ops it stands for.
#pragma once

#include <optional>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace sdxlb {

/// The fusions that can be switched off one by one, to measure what each one is worth and to rule them out
/// when a result looks wrong. All are on unless the environment variable SDXLB_DISABLE_FUSION lists them
/// (comma-separated names below, or "all").
enum class Fusion {
  kGeglu,          ///< "geglu": GEGLU activation in one kernel
  kGroupNorm,      ///< "groupnorm": channels-last GroupNorm (+ SiLU, + the preceding bias adds) in one pass
  kLayerNorm,      ///< "layernorm": LayerNorm (+ the residual add before it) with one warp per row
  kUpsample,       ///< "upsample": nearest-neighbour ×2 upsampling of channels-last tensors as a plain copy
  kWideAttention,  ///< "wideattention": heads wider than 256 as two GEMMs and a softmax kernel (attention.h)
  kFp8Qkv,         ///< "fp8qkv": FP8 attention's query/key/value GEMM writes e4m3 itself (fp8_attention.h)
  kProgrammaticLaunch,  ///< "pdl": our kernels start while the kernel before them ends, on sm_90 and later
                        ///< (kernels/programmatic_launch.cuh; the kernels read this switch themselves)
  kCrossAttention,      ///< "crossattention": attention over at most 96 keys (the UNet's cross-attention to
                        ///< the prompt's 77 tokens) in a kernel of our own instead of PyTorch's SDPA
  kGeluTable,           ///< "gelutable": GEGLU's GELU looked up in a table of its 65536 16-bit values (the
                        ///< same bits) instead of computed with erf in the kernel, in fp16 and in the FP8
                        ///< feed-forward (whose GEGLU quantises its rows)
  kGegluGemm,           ///< "geglugemm": the fp16 feed-forward's first linear and its GEGLU in one GEMM
                        ///< (linear_geglu), the projection never written (Hopper)
  kQkv,                 ///< "qkv": a self-attention's query, key and value projections as one GEMM
                        ///< (attention.h, fuse_attention_projections; read when the UNet is readied)
  kMemsetKernels,       ///< "memsetkernels": the memset nodes of our CUDA graphs (the libraries' workspace
                        ///< zeroing) rewritten as kernel nodes that write the same bytes
                        ///< (pipeline/runtime/graph_memsets.h)
  kUpsampleConv,        ///< "upsampleconv": an upsampler's nearest ×2 and 3×3 convolution as one 2×2
                        ///< convolution of the low-resolution image into four phases (resnet_block.h,
                        ///< use_phase_upsamplers; read when the model is readied)
  kFp8CrossOut,         ///< "fp8crossout": the FP8 cross-attention writes its output in e4m3 at a scale
                        ///< per image from the context's values (short_attention_e4m3), instead of fp16
                        ///< quantised per row by its own kernel
  kGroupNormBound,      ///< "gnbound": the GroupNorm kernel that writes e4m3 for an FP8 convolution takes its
                        ///< per-sample scale from a bound its statistics pass finds (each group's value
                        ///< range), instead of a pass of its own over the sample's outputs
                        ///< (group_norm_act_e4m3)
  kConcat,              ///< "concat": the UNet's skip connections (cat along channels of channels-last
                        ///< tensors) as a copy kernel of our own instead of PyTorch's cat (the same bits)
  kTimeProjections,     ///< "timeproj": every resnet's time_emb_proj(silu(temb)) as one GEMM and one SiLU per
                        ///< UNet call instead of one each (UNet2DConditionModel::fuse_time_projections; read
                        ///< when the model is readied)
  kFillChains,     ///< "fillchains": memsets in a row of a CUDA graph, with disjoint regions, as one fill
                   ///< kernel node of up to four (pipeline/runtime/graph_memsets.h), instead of one node
                   ///< each; only with "memsetkernels" on
  kZeroNegatives,  ///< "zeronegatives": in a job whose negative prompts are all empty (zero conditioning),
                   ///< the negatives' cross-attention outputs filled in with to_out's bias instead of
                   ///< computed (RenderSettings::zero_negatives; read when a batch is denoised)
  kCount,          ///< the number of fusions above (not a fusion): add new ones before it
};
bool fusion_enabled(Fusion fusion);

/// diffusers' GEGLU activation on the projection output [..., 2F]: value * gelu(gate) with value, gate =
/// chunk(2, -1). One fused kernel on CUDA for fp16/bf16 (bit-identical to the unfused ops; the GELU looked up
/// in a table of all 16-bit inputs unless the fusion "gelutable" is off), else the ops.
at::Tensor geglu(const at::Tensor& proj);

/// The rows of a GEGLU projection's weight [2F, ...] or bias [2F] in the order linear_geglu takes
/// ("interleaved GEGLU order", kernels/geglu_gemm_kernel.h): rows 16j … 16j+7 are the value rows 8j … 8j+7,
/// rows 16j+8 … 16j+15 the gate rows F+8j … F+8j+7. A new contiguous tensor; 2F must be a multiple of 16.
at::Tensor interleave_geglu(const at::Tensor& t);

/// geglu(linear(x, w, b)) for the weight w [2F, K] and bias b [2F] (may be undefined) of diffusers' GEGLU
/// projection with their rows in interleaved GEGLU order (interleave_geglu). Where geglu_gemm_supported for
/// x's device and dtype and the kernel takes the shape: one GEMM with GEGLU in its epilogue
/// (kernels/geglu_gemm_kernel.h), the same roundings as the ops (the linear's output rounded to fp16, then
/// GEGLU's) and each row independent of the others; its products round like cuBLASLt's but need not match
/// them bit for bit. Else at::linear on the interleaved rows, then geglu() of the columns put back in order.
at::Tensor linear_geglu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

/// Whether linear_geglu's fused GEMM takes a projection of 2F outputs from K inputs: 2F in whole tiles of
/// 128 columns, K a multiple of 8 (SDXL's 10240 × 1280 and 5120 × 640 do). use_geglu_gemms reorders only
/// those.
bool geglu_gemm_takes(int64_t two_f, int64_t k);

/// Whether linear_geglu runs its fused GEMM on `device` for `dtype`: a CUDA build with CUTLASS, an sm_90
/// GPU (Hopper), fp16, and the fusion "geglugemm" on.
bool geglu_gemm_supported(const c10::Device& device, at::ScalarType dtype);

/// Whether `group_norm_act` (and add_bias_residual) runs its fused kernel for this input: a CUDA fp16, bf16
/// or float32 (the SDXL VAE under force_upcast) [N, C, H, W] tensor in channels-last layout with C a multiple
/// of 8, and the fusion on.
bool fused_group_norm_applies(const at::Tensor& x);

/// silu?(group_norm(v, groups, weight, bias, eps)) with v = x + add_c[c] + add_nc[n, c] (per channel of
/// [N, C, H, W]; either may be undefined; add_nc's rows may lie apart, as in a slice of a wider tensor). The
/// fused kernel reads x twice and writes y once, in x's layout; otherwise the same ops unfused.
at::Tensor group_norm_act(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                          const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c = {},
                          const at::Tensor& add_nc = {});

/// (residual + residual_bias[c]) + (x + bias[c]) over [N, C, H, W]: a convolution's output without its bias,
/// plus a skip connection that may itself be a convolution without its bias. Either bias may be undefined.
/// One kernel for channels-last CUDA fp16/bf16/fp32, bit-identical to the ops.
at::Tensor add_bias_residual(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                             const at::Tensor& residual_bias = {});

/// x += bias[c] over [N, C, H, W], in place, and returns x: what PyTorch does after a cuDNN convolution
/// without fusing the bias. One vectorised kernel for channels-last CUDA fp16/bf16/fp32 with C a multiple of
/// 8 (PyTorch's broadcast add took 4-8x a copy's time in the VAE), bit-identical to the op; else the op.
at::Tensor add_channel_bias_(at::Tensor& x, const at::Tensor& bias);

/// layer_norm(x, {x.size(-1)}, weight, bias, eps). One kernel (a warp per row) for contiguous CUDA fp16/bf16
/// rows up to 2048 wide; statistics in float32 like PyTorch's, in another order (differences of about one
/// unit in the last place); else the op.
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

/// {h, layer_norm(h)} with h = x + residual: a transformer block's residual add and the LayerNorm after it,
/// in one kernel where layer_norm has one (h is the same bits as the add's).
std::pair<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                 const at::Tensor& weight, const at::Tensor& bias,
                                                 double eps);

/// Rows quantised to e4m3 as fp8.h's quantize_rows gives them: q [rows, d] float8_e4m3fn and scale [rows, 1]
/// float32 (the FP8 UNet's activations, issue 17).
struct E4m3Rows {
  at::Tensor q;
  at::Tensor scale;
};

/// quantize_rows of add_layer_norm's normalised rows (its sum into *sum), or of layer_norm's when residual is
/// undefined (sum then nullptr). Where the LayerNorm kernel runs, it quantises the rows itself and never
/// writes them in x's dtype: the same bits, one pass less.
E4m3Rows layer_norm_e4m3(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                         const at::Tensor& bias, double eps, at::Tensor* sum);

/// Activations quantised per sample to e4m3 for fp8_conv (fp8.h): q [N, H, W, C] float8_e4m3fn
/// (channels-last order) and each sample's scale once per pixel, pixel_scale [N, H · W] float32.
struct E4m3Samples {
  at::Tensor q;
  at::Tensor pixel_scale;
};

/// group_norm_act(...)'s output quantised per sample to e4m3 for fp8_conv. Where the GroupNorm kernel runs
/// (fp16/bf16) it quantises the output itself and never writes it in x's dtype, at a scale from a bound of
/// each sample's largest output magnitude that its statistics pass finds (kernels/group_norm_kernel.h: at
/// least quantize_samples' scale, and the output converted at it as quantize_samples converts), reading x
/// twice and writing q once, against x twice, y written once and read twice. With the fusion "gnbound" off,
/// a pass of its own finds each sample's largest output instead (x read three times): quantize_samples'
/// bits. Elsewhere quantize_samples (fp8.h) of the output.
E4m3Samples group_norm_act_e4m3(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                                const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c = {},
                                const at::Tensor& add_nc = {});

/// quantize_samples (fp8.h) of upsample_nearest2x(x) for fp16/bf16 x [N, C, H, W]: each sample's values are
/// the same set before and after, so on the GPU (channels-last, the upsample fusion on) it quantises x and
/// upsamples the e4m3 bytes (a quarter of the quantisation, a byte per element copied), with the same bits.
E4m3Samples upsample_nearest2x_e4m3(const at::Tensor& x);

/// quantize_rows of geglu(proj)'s rows; the GEGLU kernel quantises them itself where it runs (a row of at
/// most 8192), with the same bits.
E4m3Rows geglu_e4m3(const at::Tensor& proj);

/// upsample_nearest2d(x, scale 2) of [N, C, H, W]. One copy kernel for channels-last CUDA fp16/bf16/fp32 with
/// C a multiple of 8 (PyTorch's channels-last kernel measured 5-7x slower than a copy at the UNet's shapes),
/// the same bits; else the op.
at::Tensor upsample_nearest2x(const at::Tensor& x);

/// at::cat({a, b}, 1) of a [N, C1, H, W] and b [N, C2, H, W]. One copy kernel (kernels/concat_kernel.h) for
/// channels-last CUDA tensors of one dtype whose C1 and C2 channels are whole 16-byte vectors (the UNet's
/// skip connections), the output channels-last, the same bits; else the op.
at::Tensor concat_channels(const at::Tensor& a, const at::Tensor& b);

/// The upsampler's output [N, C, 2H, 2W] from its phase convolution's output y [N, 4C, H + 1, W + 1]
/// (resnet_block.h, upsample_conv_phase_weight): out[:, c, 2i + a, 2j + b] = y[:, (2a + b)·C + c, i + a,
/// j + b] + bias[c] (bias undefined: none), the bias added as PyTorch adds it (in float32 for 16-bit types,
/// rounded once).
/// One gather kernel for channels-last CUDA fp16/bf16/fp32 with C a multiple of 8, the same bits as the ops
/// it runs elsewhere; the output is channels-last where y is.
at::Tensor upsample_phases(const at::Tensor& y, const at::Tensor& bias);

/// softmax(scores · scale, -1) of float32 scores [..., M], rounded to `dtype` (fp16, bf16 or float32): the
/// attention probabilities of attend()'s wide-head path. One kernel (a block per row, float32 throughout) for
/// contiguous CUDA scores with M a multiple of 4; else the ops (softmax in float32, then the cast).
at::Tensor scaled_softmax(const at::Tensor& scores, double scale, at::ScalarType dtype);

/// at::scaled_dot_product_attention(q, k, v, no mask, no dropout, not causal, scale) of q [B, heads, N, D]
/// and k, v [B, heads, M, D]. One kernel of our own (kernels/short_attention_kernel.h: a block per 128
/// queries of a head, all keys in shared memory, the same method as flash attention, another rounding order)
/// for CUDA fp16/bf16 with D = 64 and M at most 96, the last dimension contiguous and the fusion
/// "crossattention" on: the cross-attention of the UNet, whose 77 keys left PyTorch's kernels memory-bound at
/// a third of the GPU's bandwidth. Its output is [B, N, heads, D] memory seen as [B, heads, N, D]. Else the
/// op.
at::Tensor short_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           std::optional<double> scale = std::nullopt);

/// short_attention's output in e4m3 for the FP8 cross-attention's output GEMM: {o as e4m3 [B, N, heads · D],
/// each row's scale [B · N, 1] float32}, o / out_scale[b] rounded to e4m3 (saturating), every row of item b
/// at scale out_scale[b] ([B] float32 on q's device). out_scale must bound each item's output (as
/// context_value_scale does); the kernel does not check. Where short_attention's kernel takes q, k and v and
/// the fusion "fp8crossout" is on; nothing otherwise.
std::optional<std::pair<at::Tensor, at::Tensor>> short_attention_e4m3(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out_scale,
    std::optional<double> scale = std::nullopt);

/// Each batch item's e4m3 scale for an attention over the values v [B, M, C]: max(max |v[b]| / 448, 2^-24) as
/// float32 [B]. Softmax weights are non-negative and sum to one, so every output row of item b is a convex
/// combination of its value rows and lies within that bound.
at::Tensor context_value_scale(const at::Tensor& v);

/// Whether fused CUDA kernels are compiled in (a CUDA build).
bool fused_kernels_available();

}  // namespace sdxlb
