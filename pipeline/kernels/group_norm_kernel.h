// Launchers of the channels-last GroupNorm (+ optional SiLU) CUDA kernels (group_norm_kernel.cu).
//
// x and y are [N, HW, C] (a channels-last NCHW tensor's memory), C a multiple of 8. Statistics are computed
// with Welford partial sums in a fixed order (deterministic: the same input gives the same bits every run),
// in float; the output is (x - mean) * rstd * gamma + beta, then SiLU when asked, rounded to the storage
// type. `workspace` must hold workspace_floats(N, HW, C, groups) floats.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

int64_t group_norm_workspace_floats(int64_t n, int64_t hw, int64_t c, int64_t groups);

/// dtype: 0 = fp16, 1 = bf16. gamma/beta are in the same dtype as x.
cudaError_t launch_group_norm_nhwc(int dtype, const void* x, const void* gamma, const void* beta, void* y,
                                   float* workspace, int64_t n, int64_t hw, int64_t c, int64_t groups,
                                   float eps, bool silu, cudaStream_t stream);

}  // namespace sdxlb::kernels
