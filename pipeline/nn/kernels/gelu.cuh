// PyTorch's exact-erf GELU of a 16-bit value, shared by the GEGLU kernel (geglu_kernel.cu) and the GEMM that
// applies GEGLU in its epilogue (geglu_gemm_kernel.cu), so that both give the bits of `F.gelu(g)`. Device
// code.
#pragma once

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {

/// gelu(g) = g/2 · (1 + erf(g/√2)) in float, rounded to T like PyTorch's output tensor.
template <typename T>
__device__ __forceinline__ T gelu(T g) {
  const float x = to_float(g);
  constexpr float kAlpha = 0.70710678118654752440f;  // M_SQRT1_2
  return from_float<T>(x * 0.5f * (1.0f + ::erff(x * kAlpha)));
}

}  // namespace sdxlb::kernels
