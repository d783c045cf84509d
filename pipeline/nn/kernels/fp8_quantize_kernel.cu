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

// A row's scale from each lane's partial amax (the warp's lanes all call it).
__device__ __forceinline__ float row_scale(float amax) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  return fmaxf(amax / kE4m3Max, kMinScale);
}

// One warp per row, the row held in registers (16-byte loads, kVecs per lane): read once, written once as
// e4m3 (8 bytes per lane per vector).
template <typename T, int kVecs>
__global__ void quantize_rows_vec_kernel(const uint4* __restrict__ x, int64_t rows, int64_t vecs,
                                         uint2* __restrict__ q, float* __restrict__ scale) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint4* xr = x + row * vecs;
  uint4 v[kVecs];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < vecs) {
      v[i] = xr[c];
      const T* e = reinterpret_cast<const T*>(&v[i]);
#pragma unroll
      for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fabsf(to_float(e[k])));
    }
  }
  const float s = row_scale(amax);
  if (lane == 0) scale[row] = s;
  uint2* qr = q + row * vecs;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < vecs) {
      const T* e = reinterpret_cast<const T*>(&v[i]);
      __nv_fp8_storage_t b[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) b[k] = __nv_cvt_float_to_fp8(to_float(e[k]) / s, __NV_SATFINITE, __NV_E4M3);
      uint2 o;
      unsigned char* ob = reinterpret_cast<unsigned char*>(&o);
#pragma unroll
      for (int k = 0; k < 8; ++k) ob[k] = b[k];
      qr[c] = o;
    }
  }
}

// Any width: one warp per row, the row read twice.
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
  const float s = row_scale(amax);
  if (lane == 0) scale[row] = s;
  for (int64_t c = lane; c < cols; c += 32)
    qr[c] = __nv_cvt_float_to_fp8(to_float(xr[c]) / s, __NV_SATFINITE, __NV_E4M3);
}

template <typename T>
cudaError_t launch(const void* x, int64_t rows, int64_t cols, void* q, float* scale, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(blocks);
  const bool aligned =
      cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0;
  const int64_t vecs = cols / 8;
  if (aligned && vecs <= 32 * 4) {
    quantize_rows_vec_kernel<T, 4><<<grid, kThreads, 0, stream>>>(static_cast<const uint4*>(x), rows, vecs,
                                                                  static_cast<uint2*>(q), scale);
  } else if (aligned && vecs <= 32 * 24) {
    quantize_rows_vec_kernel<T, 24><<<grid, kThreads, 0, stream>>>(static_cast<const uint4*>(x), rows, vecs,
                                                                   static_cast<uint2*>(q), scale);
  } else {
    quantize_rows_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), rows, cols,
                                                           static_cast<__nv_fp8_storage_t*>(q), scale);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quantize_rows_e4m3(int dtype, const void* x, int64_t rows, int64_t cols, void* q,
                                      float* scale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  switch (dtype) {
    case 1:
      return launch<__half>(x, rows, cols, q, scale, stream);
    case 2:
      return launch<__nv_bfloat16>(x, rows, cols, q, scale, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace sdxlb::kernels
