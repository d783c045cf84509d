#include "pipeline/nn/kernels/fp8_quantize_kernel.h"

#include <algorithm>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

// One warp per row, 16-byte loads: a pass for the row's largest magnitude, then a pass that converts (the
// row, at most a few KiB, is read again from L1/L2). Little register state, so that many rows are in flight:
// the kernel is bound by memory bandwidth, not by one row's latency.
template <typename T>
__global__ void __launch_bounds__(256)
    quantize_rows_vec_kernel(const uint4* __restrict__ x, int64_t rows, int64_t vecs, uint2* __restrict__ q,
                             float* __restrict__ scale) {
  wait_for_prior_grids();
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint4* xr = x + row * vecs;
  float amax = 0.f;
#pragma unroll 4
  for (int64_t c = lane; c < vecs; c += 32) amax = fmaxf(amax, amax8<T>(xr[c]));
  const float s = e4m3_scale(warp_max(amax));
  if (lane == 0) scale[row] = s;
  const float inverse = e4m3_inverse(s);
  uint2* qr = q + row * vecs;
#pragma unroll 4
  for (int64_t c = lane; c < vecs; c += 32) qr[c] = e4m3x8<T>(xr[c], inverse);
}

// One warp per row, the row held in registers (lane l: vectors l, l + 32, ..., kNV of them at most) and read
// once: its largest magnitude, then the conversion from the registers. Rows up to 32 * kNV vectors.
template <typename T, int kNV>
__global__ void __launch_bounds__(256)
    quantize_rows_reg_kernel(const uint4* __restrict__ x, int64_t rows, int vecs, uint2* __restrict__ q,
                             float* __restrict__ scale) {
  wait_for_prior_grids();
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const uint4* xr = x + row * vecs;
  uint4 v[kNV];
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int c = lane + 32 * j;
    if (c < vecs) {
      v[j] = xr[c];
      amax = fmaxf(amax, amax8<T>(v[j]));
    }
  }
  const float s = e4m3_scale(warp_max(amax));
  if (lane == 0) scale[row] = s;
  const float inverse = e4m3_inverse(s);
  uint2* qr = q + row * vecs;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int c = lane + 32 * j;
    if (c < vecs) qr[c] = e4m3x8<T>(v[j], inverse);
  }
}

// Any width: one warp per row, the row read twice.
template <typename T>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                     __nv_fp8_storage_t* __restrict__ q, float* __restrict__ scale) {
  wait_for_prior_grids();
  const int64_t row = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  __nv_fp8_storage_t* qr = q + row * cols;
  float amax = 0.f;
  for (int64_t c = lane; c < cols; c += 32) amax = fmaxf(amax, fabsf(to_float(xr[c])));
  const float s = e4m3_scale(warp_max(amax));
  if (lane == 0) scale[row] = s;
  const float inverse = e4m3_inverse(s);
  for (int64_t c = lane; c < cols; c += 32)
    qr[c] = static_cast<__nv_fp8_storage_t>(to_e4m3(to_float(xr[c]), inverse));
}

template <typename T>
cudaError_t launch(const void* x, int64_t rows, int64_t cols, void* q, float* scale, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(blocks);
  const bool aligned =
      cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0;
  const int64_t per_lane = (cols / 8 + 31) / 32;
  if (aligned && per_lane <= 8) {
    const auto kernel = per_lane <= 2   ? quantize_rows_reg_kernel<T, 2>
                        : per_lane <= 3 ? quantize_rows_reg_kernel<T, 3>
                        : per_lane <= 5 ? quantize_rows_reg_kernel<T, 5>
                                        : quantize_rows_reg_kernel<T, 8>;
    launch_kernel(kernel, grid, kThreads, 0, stream, static_cast<const uint4*>(x), rows,
                  static_cast<int>(cols / 8), static_cast<uint2*>(q), scale);
  } else if (aligned) {
    launch_kernel(quantize_rows_vec_kernel<T>, grid, kThreads, 0, stream, static_cast<const uint4*>(x), rows,
                  cols / 8, static_cast<uint2*>(q), scale);
  } else {
    launch_kernel(quantize_rows_kernel<T>, grid, kThreads, 0, stream, static_cast<const T*>(x), rows, cols,
                  static_cast<__nv_fp8_storage_t*>(q), scale);
  }
  return cudaGetLastError();
}

// Fixed scales: up to three tensors (blockIdx.y), a grid-stride loop over 8-value vectors.
struct FixedArgs {
  const void* x[3];
  void* q[3];
  float inverse[3];
};

template <typename T>
__global__ void __launch_bounds__(256) quantize_fixed_vec_kernel(FixedArgs a, int64_t vecs) {
  wait_for_prior_grids();
  const uint4* __restrict__ x = static_cast<const uint4*>(a.x[blockIdx.y]);
  uint2* __restrict__ q = static_cast<uint2*>(a.q[blockIdx.y]);
  const float inverse = a.inverse[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    q[i] = e4m3x8<T>(x[i], inverse);
}

template <typename T>
__global__ void quantize_fixed_kernel(FixedArgs a, int64_t n) {
  wait_for_prior_grids();
  const T* __restrict__ x = static_cast<const T*>(a.x[blockIdx.y]);
  __nv_fp8_storage_t* __restrict__ q = static_cast<__nv_fp8_storage_t*>(a.q[blockIdx.y]);
  const float inverse = a.inverse[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    q[i] = static_cast<__nv_fp8_storage_t>(to_e4m3(to_float(x[i]), inverse));
}

template <typename T>
cudaError_t launch_fixed(const FixedArgs& a, int count, int64_t n, cudaStream_t stream) {
  constexpr int kThreads = 256;
  bool aligned = n % 8 == 0;
  for (int t = 0; t < count; ++t)
    aligned = aligned && reinterpret_cast<uintptr_t>(a.x[t]) % 16 == 0 &&
              reinterpret_cast<uintptr_t>(a.q[t]) % 8 == 0;
  const int64_t items = aligned ? n / 8 : n;
  // Enough blocks to fill the GPU several times over; the loop covers the rest.
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((items + kThreads - 1) / kThreads, 4096));
  const dim3 grid(blocks, static_cast<unsigned>(count));
  if (aligned)
    launch_kernel(quantize_fixed_vec_kernel<T>, grid, kThreads, 0, stream, a, items);
  else
    launch_kernel(quantize_fixed_kernel<T>, grid, kThreads, 0, stream, a, items);
  return cudaGetLastError();
}

// Per-sample scales: blockIdx.y is the sample, a grid-stride loop over its 8-value vectors. First each
// block's largest magnitude, merged into amax_bits[sample] with atomicMax on the float's bits (non-negative
// floats order as their bit patterns, so the maximum is exact and independent of the order).
template <typename T>
__global__ void __launch_bounds__(256)
    sample_amax_kernel(const uint4* __restrict__ x, int64_t vecs, unsigned* __restrict__ amax_bits) {
  wait_for_prior_grids();
  const uint4* xs = x + blockIdx.y * vecs;
  float amax = 0.f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    amax = fmaxf(amax, amax8<T>(xs[i]));
  amax = warp_max(amax);
  __shared__ float warps[8];
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x < 32) {
    amax = threadIdx.x < blockDim.x / 32 ? warps[threadIdx.x] : 0.f;
    amax = warp_max(amax);
    if (threadIdx.x == 0) atomicMax(amax_bits + blockIdx.y, __float_as_uint(amax));
  }
}

// Then the conversion with the sample's scale, and the sample's scale for each of its pixels.
template <typename T>
__global__ void __launch_bounds__(256)
    sample_quantize_kernel(const uint4* __restrict__ x, int64_t vecs, const unsigned* __restrict__ amax_bits,
                           uint2* __restrict__ q, float* __restrict__ pixel_scale, int64_t pixels) {
  wait_for_prior_grids();
  const float s = e4m3_scale(__uint_as_float(amax_bits[blockIdx.y]));
  const float inverse = e4m3_inverse(s);
  const uint4* xs = x + blockIdx.y * vecs;
  uint2* qs = q + blockIdx.y * vecs;
  float* ps = pixel_scale + blockIdx.y * pixels;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < vecs; i += stride) qs[i] = e4m3x8<T>(xs[i], inverse);
  for (int64_t p = first; p < pixels; p += stride) ps[p] = s;
}

template <typename T>
cudaError_t launch_samples(const void* x, int64_t samples, int64_t n, void* q, float* pixel_scale,
                           int64_t pixels, unsigned* amax_bits, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t vecs = n / 8;
  // About 512 blocks over all samples (a few per SM); each block's loop covers the rest of its sample.
  constexpr int64_t kBlocks = 512;
  const int64_t per_sample = std::max<int64_t>(
      1, std::min<int64_t>((vecs + kThreads - 1) / kThreads, (kBlocks + samples - 1) / samples));
  const dim3 grid(static_cast<unsigned>(per_sample), static_cast<unsigned>(samples));
  cudaError_t e = cudaMemsetAsync(amax_bits, 0, samples * sizeof(unsigned), stream);
  if (e != cudaSuccess) return e;
  launch_kernel(sample_amax_kernel<T>, grid, kThreads, 0, stream, static_cast<const uint4*>(x), vecs,
                amax_bits);
  launch_kernel(sample_quantize_kernel<T>, grid, kThreads, 0, stream, static_cast<const uint4*>(x), vecs,
                amax_bits, static_cast<uint2*>(q), pixel_scale, pixels);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quantize_samples_e4m3(int dtype, const void* x, int64_t samples, int64_t n, void* q,
                                         float* pixel_scale, int64_t pixels, unsigned* amax_bits,
                                         cudaStream_t stream) {
  if (samples <= 0 || n <= 0) return cudaSuccess;
  if (n % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(q) % 8 != 0 ||
      samples > 65535)
    return cudaErrorInvalidValue;
  return with_16bit_type(dtype, [&](auto t) {
    return launch_samples<decltype(t)>(x, samples, n, q, pixel_scale, pixels, amax_bits, stream);
  });
}

cudaError_t launch_quantize_fixed_e4m3(int dtype, int count, const void* const* x, void* const* q,
                                       const float* inverse, int64_t n, cudaStream_t stream) {
  if (count < 1 || count > 3) return cudaErrorInvalidValue;
  if (n <= 0) return cudaSuccess;
  FixedArgs a{};
  for (int t = 0; t < count; ++t) {
    a.x[t] = x[t];
    a.q[t] = q[t];
    a.inverse[t] = inverse[t];
  }
  return with_16bit_type(dtype, [&](auto t) { return launch_fixed<decltype(t)>(a, count, n, stream); });
}

cudaError_t launch_quantize_rows_e4m3(int dtype, const void* x, int64_t rows, int64_t cols, void* q,
                                      float* scale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  return with_16bit_type(dtype, [&](auto t) { return launch<decltype(t)>(x, rows, cols, q, scale, stream); });
}

}  // namespace sdxlb::kernels
