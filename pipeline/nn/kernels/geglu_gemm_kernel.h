// Launcher of the feed-forward's first linear with diffusers' GEGLU in its epilogue
// (pipeline/nn/kernels/geglu_gemm_kernel.cu, CUTLASS, sm_90a): the [rows, 2F] projection never reaches
// memory, only its GEGLU [rows, F]. Raw pointers only.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Whether this build holds the kernel (CUTLASS found at configure time); when not, the launcher returns
/// cudaErrorNotSupported.
bool geglu_gemm_compiled();

/// The row order of the projection's weight and bias that the kernel reads ("interleaved GEGLU order"):
/// rows 16j … 16j+7 are diffusers' value rows 8j … 8j+7 and rows 16j+8 … 16j+15 its gate rows F+8j … F+8j+7,
/// so that each thread of the kernel holds a value and its gate in the same registers.
constexpr int64_t kGegluInterleave = 8;

/// The kernel's output tile is this many of the product's columns wide: 2F must be a multiple of it.
constexpr int64_t kGegluGemmColumns = 128;

/// out[m, c] = fp16(float(v) · float(gelu(g))) with v = fp16(acc[m, value c] + bias[value c]) and
/// g = fp16(acc[m, gate c] + bias[gate c]), where acc is the float32 product of x [M, K] (fp16, row-major)
/// and w [2F, K] (fp16, row-major, interleaved GEGLU order), gelu PyTorch's exact-erf GELU rounded to fp16:
/// the roundings of `linear` then `geglu` (fused_ops.h), each output tile computed by one warpgroup over the
/// whole of K (a row depends only on its own input row, whatever M and wherever the row sits). bias [2F] fp16
/// in the same order, or null for none; out [M, F] fp16, row-major. Needs 2F a multiple of 128, K a multiple
/// of 8 and 16-byte aligned pointers (cudaErrorNotSupported, launching nothing, otherwise). Launched
/// programmatically where our kernels are (programmatic_launch.h).
cudaError_t launch_geglu_gemm(const void* x, const void* w, const void* bias, void* out, int64_t m, int64_t k,
                              int64_t two_f, cudaStream_t stream);

}  // namespace sdxlb::kernels
