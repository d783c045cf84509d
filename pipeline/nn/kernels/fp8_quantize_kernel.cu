#include "pipeline/nn/kernels/fp8_quantize_kernel.h"

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {
namespace {

constexpr float kE4m3Max = 448.f;
constexpr float kMinScale = 5.9604644775390625e-08f;  // 2^-24: an all-zero row keeps a finite scale

template <typename T>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                     __nv_fp8_storage_t* __restrict__ q, float* __restrict__ scale) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  __nv_fp8_storage_t* qr = q + row * cols;
  float amax = 0.f;
  for (int64_t c = lane; c < cols; c += 32) amax = fmaxf(amax, fabsf(to_float(xr[c])));
#pragma unroll
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float s = fmaxf(amax / kE4m3Max, kMinScale);
  if (lane == 0) scale[row] = s;
  for (int64_t c = lane; c < cols; c += 32)
    qr[c] = __nv_cvt_float_to_fp8(to_float(xr[c]) / s, __NV_SATFINITE, __NV_E4M3);
}

}  // namespace

cudaError_t launch_quantize_rows_e4m3(int dtype, const void* x, int64_t rows, int64_t cols, void* q,
                                      float* scale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  auto* out = static_cast<__nv_fp8_storage_t*>(q);
  switch (dtype) {
    case 1:
      quantize_rows_kernel<__half><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          static_cast<const __half*>(x), rows, cols, out, scale);
      break;
    case 2:
      quantize_rows_kernel<__nv_bfloat16><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), rows, cols, out, scale);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
