// Linear layers whose output takes a residual add in the GEMM's epilogue: y = x Wᵀ + b + r in one cuBLASLt
// call (D = A·B + bias + C, with C the residual) instead of a GEMM and an add kernel that reads both again.
// The UNet has 81 such adds per call: each transformer block's feed-forward output plus the block's hidden
// state (net.2), and each Transformer2DModel's proj_out plus its input. Issue 16's "epilogues" item.
//
// Rounding: the sum is formed in float32 and rounded to the output type once, where the ops round the GEMM's
// output and then the sum; a rounding change of at most one unit in the last place, never another method.
// On the CPU, and wherever cuBLASLt declines the problem or the fusion is off
// (SDXLB_DISABLE_FUSION=residual), the same ops as before run: the linear layer, then the add.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "pipeline/nn/fp8.h"

namespace sdxlb {

/// at::linear(x, weight, bias) + residual, for x [..., in], weight [out, in], bias [out] (may be undefined)
/// and residual [..., out] with x's leading shape (its rows may be strided: a channels-last image read as
/// rows is fine). One cuBLASLt GEMM with the bias and the residual in its epilogue for CUDA fp16/bf16
/// operands; else the ops.
at::Tensor linear_add(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& residual);

/// fp8_linear(x, w, bias) + residual likewise: one cuBLASLt e4m3 GEMM with per-row and per-channel scales,
/// the bias and the residual in its epilogue, float32 accumulation (fast accumulation as w says); else the
/// ops.
at::Tensor fp8_linear_add(const Fp8Activation& x, const Fp8Weight& w, const at::Tensor& bias,
                          const at::Tensor& residual);

/// How many calls of the two functions above ran the fused GEMM, and how many fell back to the ops, in this
/// process (for tests and benchmarks: a fallback is correct but slower).
struct ResidualGemmCounts {
  int64_t fused = 0;
  int64_t unfused = 0;
};
ResidualGemmCounts residual_gemm_counts();

}  // namespace sdxlb
