// Per-row e4m3 quantisation in device code, shared by the FP8 kernels (fp8_quantize_kernel.cu, and the
// LayerNorm and GEGLU kernels that quantise their output rows themselves): the same numbers as fp8.h's ATen
// reference, scale = max(amax / 448, 2^-24) and q = e4m3(x · (1 / scale)) with the reciprocal rounded to
// float32 and the product rounded to nearest even (one division per row, not per element).
#pragma once

#include <cstdint>

#include <cuda_fp8.h>

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {

constexpr float kE4m3Max = 448.f;
constexpr float kE4m3MinScale = 5.9604644775390625e-08f;  // 2^-24: an all-zero row keeps a finite scale

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

/// A row's scale from its largest magnitude.
__device__ __forceinline__ float e4m3_scale(float amax) {
  return fmaxf(amax / kE4m3Max, kE4m3MinScale);
}

/// What a row's values are multiplied by: 1 / scale, rounded to nearest.
__device__ __forceinline__ float e4m3_inverse(float scale) {
  return __frcp_rn(scale);
}

/// One value times the row's inverse scale, as e4m3 (the product rounded to float32 first, as the reference's
/// float32 multiply; nothing saturates but a product one rounding above 448, which rounds back to 448).
__device__ __forceinline__ uint32_t to_e4m3(float x, float inverse) {
  return __nv_cvt_float_to_fp8(__fmul_rn(x, inverse), __NV_SATFINITE, __NV_E4M3);
}

/// The largest magnitude of 8 T values packed in 16 bytes.
template <typename T>
__device__ __forceinline__ float amax8(const uint4& v) {
  const T* e = reinterpret_cast<const T*>(&v);
  float m = 0.f;
#pragma unroll
  for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(to_float(e[k])));
  return m;
}

/// Two values times `inverse` as two e4m3 bytes (the first in the low byte): one paired conversion, the same
/// rounding as to_e4m3 on each.
__device__ __forceinline__ uint32_t to_e4m3x2(float a, float b, float inverse) {
  return __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(a, inverse), __fmul_rn(b, inverse)), __NV_SATFINITE,
                                  __NV_E4M3);
}

/// 8 values times `inverse` (e4m3_inverse of the row's scale) as e4m3: 8 bytes, in order.
__device__ __forceinline__ uint2 e4m3x8(const float (&f)[8], float inverse) {
  uint32_t w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    w[h] =
        to_e4m3x2(f[4 * h], f[4 * h + 1], inverse) | (to_e4m3x2(f[4 * h + 2], f[4 * h + 3], inverse) << 16);
  }
  return make_uint2(w[0], w[1]);
}

/// The same for 8 T values packed in 16 bytes.
template <typename T>
__device__ __forceinline__ uint2 e4m3x8(const uint4& v, float inverse) {
  const T* e = reinterpret_cast<const T*>(&v);
  float f[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) f[k] = to_float(e[k]);
  return e4m3x8(f, inverse);
}

}  // namespace sdxlb::kernels
