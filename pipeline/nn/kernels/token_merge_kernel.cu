#include "pipeline/nn/kernels/token_merge_kernel.h"

#include <algorithm>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {
namespace {

__device__ __forceinline__ float load_float(const float* p) {
  return *p;
}
__device__ __forceinline__ float load_float(const __half* p) {
  return to_float(*p);
}
__device__ __forceinline__ float load_float(const __nv_bfloat16* p) {
  return to_float(*p);
}
template <typename T>
__device__ __forceinline__ T store_float(float v) {
  return from_float<T>(v);
}
template <>
__device__ __forceinline__ float store_float<float>(float v) {
  return v;
}

int blocks_for(int64_t work, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, 65535 * 8)));
}

// Row copies in 16-byte vectors (V elements of T) when the width allows, else element by element.
template <typename Vec>
__global__ void gather_rows_kernel(const Vec* __restrict__ x, const int64_t* __restrict__ rows,
                                   int64_t rows_batch_stride, Vec* __restrict__ out, int64_t batch, int64_t n,
                                   int64_t m, int64_t width) {
  const int64_t total = batch * m * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % width;
    const int64_t bm = i / width;
    const int64_t b = bm / m, row = bm % m;
    const int64_t src = rows[b * rows_batch_stride + row];
    out[i] = x[(b * n + src) * width + c];
  }
}

template <typename T>
__global__ void merge_rows_mean_kernel(const T* __restrict__ x, const int64_t* __restrict__ unm,
                                       const int64_t* __restrict__ dst, const int64_t* __restrict__ src,
                                       const int64_t* __restrict__ start, const int64_t* __restrict__ count,
                                       T* __restrict__ out, int64_t batch, int64_t n, int64_t u, int64_t nd,
                                       int64_t r, int64_t channels) {
  const int64_t rows = u + nd;
  const int64_t total = batch * rows * channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % channels;
    const int64_t bt = i / channels;
    const int64_t b = bt / rows, t = bt % rows;
    const T* xb = x + b * n * channels + c;
    if (t < u) {
      out[i] = xb[unm[b * u + t] * channels];
      continue;
    }
    const int64_t j = t - u;
    const int64_t k0 = start[b * nd + j], cnt = count[b * nd + j];
    float acc = load_float(xb + dst[j] * channels);
    const int64_t* s = src + b * r + k0;
    for (int64_t k = 0; k < cnt; ++k) acc += load_float(xb + s[k] * channels);
    out[i] = store_float<T>(acc / static_cast<float>(cnt + 1));
  }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__global__ void cell_hash_kernel(const int64_t* seed, const int64_t* step, int64_t ordinal, int64_t cells,
                                 int64_t* out, int64_t count) {
  const uint64_t key0 = mix64(static_cast<uint64_t>(*seed) + 0x9e3779b97f4a7c15ULL);
  const uint64_t key = mix64(key0 + static_cast<uint64_t>(*step) * 0xd1b54a32d192ed03ULL +
                             static_cast<uint64_t>(ordinal) * 0x8cb92ba72f3d8dd7ULL);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t z = mix64(static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL + key);
    out[i] = static_cast<int64_t>(z & 0x7fffffffffffffffULL) % cells;
  }
}

template <typename T>
cudaError_t merge_launch(const void* x, const int64_t* unm, const int64_t* dst, const int64_t* src,
                         const int64_t* start, const int64_t* count, void* out, int64_t batch, int64_t n,
                         int64_t u, int64_t nd, int64_t r, int64_t channels, cudaStream_t stream) {
  const int64_t total = batch * (u + nd) * channels;
  if (total <= 0) return cudaSuccess;
  merge_rows_mean_kernel<T>
      <<<blocks_for(total, 256), 256, 0, stream>>>(static_cast<const T*>(x), unm, dst, src, start, count,
                                                   static_cast<T*>(out), batch, n, u, nd, r, channels);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gather_rows(int dtype, const void* x, const int64_t* rows, int64_t rows_batch_stride,
                               void* out, int64_t batch, int64_t n, int64_t m, int64_t channels,
                               cudaStream_t stream) {
  const int64_t bytes = dtype == 0 ? 4 : 2;
  const int64_t row_bytes = channels * bytes;
  if (batch * m * channels <= 0) return cudaSuccess;
  const bool vec = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec) {
    const int64_t width = row_bytes / 16;
    gather_rows_kernel<uint4><<<blocks_for(batch * m * width, 256), 256, 0, stream>>>(
        static_cast<const uint4*>(x), rows, rows_batch_stride, static_cast<uint4*>(out), batch, n, m, width);
  } else if (bytes == 4) {
    gather_rows_kernel<float><<<blocks_for(batch * m * channels, 256), 256, 0, stream>>>(
        static_cast<const float*>(x), rows, rows_batch_stride, static_cast<float*>(out), batch, n, m,
        channels);
  } else {
    gather_rows_kernel<__half><<<blocks_for(batch * m * channels, 256), 256, 0, stream>>>(
        static_cast<const __half*>(x), rows, rows_batch_stride, static_cast<__half*>(out), batch, n, m,
        channels);
  }
  return cudaGetLastError();
}

cudaError_t launch_merge_rows_mean(int dtype, const void* x, const int64_t* unm, const int64_t* dst,
                                   const int64_t* src, const int64_t* start, const int64_t* count, void* out,
                                   int64_t batch, int64_t n, int64_t u, int64_t nd, int64_t r,
                                   int64_t channels, cudaStream_t stream) {
  switch (dtype) {
    case 0:
      return merge_launch<float>(x, unm, dst, src, start, count, out, batch, n, u, nd, r, channels, stream);
    case 1:
      return merge_launch<__half>(x, unm, dst, src, start, count, out, batch, n, u, nd, r, channels, stream);
    case 2:
      return merge_launch<__nv_bfloat16>(x, unm, dst, src, start, count, out, batch, n, u, nd, r, channels,
                                         stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_cell_hash(const int64_t* seed, const int64_t* step, int64_t ordinal, int64_t cells,
                             int64_t* out, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  cell_hash_kernel<<<blocks_for(count, 256), 256, 0, stream>>>(seed, step, ordinal, cells, out, count);
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
