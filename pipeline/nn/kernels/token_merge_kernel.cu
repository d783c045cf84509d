#include "pipeline/nn/kernels/token_merge_kernel.h"

#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {
namespace {

template <typename T>
__device__ __forceinline__ float load_float(const T* p) {
  return to_float(*p);
}
template <>
__device__ __forceinline__ float load_float<float>(const float* p) {
  return *p;
}
template <typename T>
__device__ __forceinline__ T store_from_float(float v) {
  return from_float<T>(v);
}
template <>
__device__ __forceinline__ float store_from_float<float>(float v) {
  return v;
}

// One thread per (b, j, c): a destination token's channel and its sources, in order.
template <typename T>
__global__ void merge_mean(const T* __restrict__ dst, const T* __restrict__ src,
                           const int64_t* __restrict__ start, const int64_t* __restrict__ count, T* out,
                           int64_t batch, int64_t nd, int64_t r, int64_t channels) {
  const int64_t total = batch * nd * channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % channels;
    const int64_t bj = i / channels;  // b * nd + j
    const int64_t b = bj / nd;
    const int64_t k0 = start[bj], n = count[bj];
    float acc = load_float(dst + i);
    const T* s = src + (b * r + k0) * channels + c;
    for (int64_t k = 0; k < n; ++k) acc += load_float(s + k * channels);
    out[i] = store_from_float<T>(acc / static_cast<float>(n + 1));
  }
}

template <typename T>
cudaError_t launch(const void* dst, const void* src, const int64_t* start, const int64_t* count, void* out,
                   int64_t batch, int64_t nd, int64_t r, int64_t channels, cudaStream_t stream) {
  const int64_t total = batch * nd * channels;
  if (total <= 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535 * 8));
  merge_mean<T><<<blocks, threads, 0, stream>>>(static_cast<const T*>(dst), static_cast<const T*>(src), start,
                                                count, static_cast<T*>(out), batch, nd, r, channels);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_token_merge_mean(int dtype, const void* dst, const void* src, const int64_t* start,
                                    const int64_t* count, void* out, int64_t batch, int64_t nd, int64_t r,
                                    int64_t channels, cudaStream_t stream) {
  switch (dtype) {
    case 0:
      return launch<float>(dst, src, start, count, out, batch, nd, r, channels, stream);
    case 1:
      return launch<__half>(dst, src, start, count, out, batch, nd, r, channels, stream);
    case 2:
      return launch<__nv_bfloat16>(dst, src, start, count, out, batch, nd, r, channels, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace sdxlb::kernels
