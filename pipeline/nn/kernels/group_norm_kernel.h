// Launchers of the channels-last GroupNorm kernels (pipeline/nn/kernels/group_norm_kernel.cu). Raw pointers
// only, so that the .cu file needs no LibTorch headers; pipeline/nn/fused_ops.cpp wraps them for tensors.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Shape and inputs of a GroupNorm over an NHWC tensor x [n, hw, c] (a channels-last [n, c, h, w]).
struct GroupNormArgs {
  const void* x = nullptr;      ///< [n, hw, c], 16-byte aligned
  void* y = nullptr;            ///< [n, hw, c] output, 16-byte aligned
  const void* gamma = nullptr;  ///< [c], same type as x
  const void* beta = nullptr;   ///< [c], same type as x
  const void* add_c =
      nullptr;  ///< optional [c]: added to x first (a convolution's bias), rounded to the type
  const void* add_nc = nullptr;  ///< optional [n, c]: added next (a time embedding), rounded to the type
  int64_t add_nc_stride = 0;     ///< elements from one row of add_nc to the next, at least c (0: c)
  int64_t n = 0, hw = 0, c = 0, groups = 0;
  float eps = 1e-5f;
  bool silu = false;  ///< y = silu(GroupNorm(v)), with the GroupNorm output rounded first as PyTorch does
};

/// Bytes of device scratch launch_group_norm_* needs for these sizes (partial statistics and per-channel
/// scale/shift); pass a buffer of at least this size.
size_t group_norm_workspace_bytes(int64_t n, int64_t hw, int64_t c, int64_t groups);

/// v = x (+ add_c) (+ add_nc); y = (v - mean) / sqrt(var + eps) * gamma + beta per (sample, group),
/// optionally followed by SiLU. Statistics in float32, reduced in a fixed order (deterministic, and a
/// sample's statistics do not depend on the other samples). Needs c % 8 == 0 and c / groups even. Three
/// kernels on `stream`.
cudaError_t launch_group_norm_f16(const GroupNormArgs& args, void* workspace, cudaStream_t stream);
cudaError_t launch_group_norm_bf16(const GroupNormArgs& args, void* workspace, cudaStream_t stream);
/// float32 (the SDXL VAE under force_upcast): the same kernels, 4 elements per 16-byte vector.
cudaError_t launch_group_norm_f32(const GroupNormArgs& args, void* workspace, cudaStream_t stream);

/// The same GroupNorm (+ SiLU) of fp16/bf16 x (dtype code 1 __half, 2 __nv_bfloat16) with its output
/// quantised per sample to e4m3 instead of written (args.y must be null): q [n, hw, c] e4m3 (8-byte aligned)
/// and the sample's scale once per pixel in pixel_scale [n, hw]. The scale is e4m3_scale of a bound of the
/// sample's largest output magnitude, which the statistics pass finds with the moments: each group's smallest
/// and largest value v, taken through each of its channels' normalisation (monotone in v) and SiLU (whose
/// magnitude is largest at an end of that range, or at its minimum where the range holds it). So the scale
/// is at least quantize_samples' (fp8_quantize_kernel.h) for the output launch_group_norm_* writes, and q is
/// that output times the scale's float32 reciprocal, rounded to nearest e4m3; each sample's scale depends
/// only on that sample. amax_bits: n unsigned ints of workspace. For a GroupNorm whose output only an FP8
/// convolution reads: x is read twice (statistics, conversion) and q written once, instead of the output
/// written and read twice. Three launches on `stream`. With `bound` false, a pass over x before the
/// conversion finds each sample's largest output magnitude instead, and the scale and q are exactly
/// quantize_samples' (four launches).
cudaError_t launch_group_norm_e4m3(int dtype, const GroupNormArgs& args, void* workspace, void* q,
                                   float* pixel_scale, unsigned* amax_bits, bool bound, cudaStream_t stream);

/// out[i] = (residual[i] + residual_bias[i % c]) + (x[i] + bias[i % c]) over `count` elements (residual_bias
/// may be null), each sum rounded to the type as PyTorch's unfused ops would round it (so bit-identical to
/// them). With residual null: out[i] = x[i] + bias[i % c] (a convolution's bias; out may be x). count % c ==
/// 0, c % 8 == 0 and 16-byte aligned pointers.
cudaError_t launch_bias_residual_f16(const void* x, const void* bias, const void* residual,
                                     const void* residual_bias, void* out, int64_t count, int64_t c,
                                     cudaStream_t stream);
cudaError_t launch_bias_residual_bf16(const void* x, const void* bias, const void* residual,
                                      const void* residual_bias, void* out, int64_t count, int64_t c,
                                      cudaStream_t stream);
cudaError_t launch_bias_residual_f32(const void* x, const void* bias, const void* residual,
                                     const void* residual_bias, void* out, int64_t count, int64_t c,
                                     cudaStream_t stream);

}  // namespace sdxlb::kernels
