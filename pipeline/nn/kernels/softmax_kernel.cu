#include "pipeline/nn/kernels/softmax_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

constexpr int kThreads = 512;

// Four outputs, stored with one 8-byte (fp16, bf16) or 16-byte (float32) store.
template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T e[4];
};

// (max, sum of exp(v - max)) of two partial rows, merged.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float nm = fmaxf(m, m2);
  if (nm == -INFINITY) return;  // both empty
  s = s * expf(m - nm) + s2 * expf(m2 - nm);
  m = nm;
}

// One block per row. Pass 1: each thread keeps a running (max, sum) over its float4s, merged over the block;
// pass 2 reads the row again (from L2: the rows in flight fit) and writes exp(v - max) / sum.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    softmax_rows_kernel(const float4* __restrict__ x, T* __restrict__ y, int64_t cols4, float scale) {
  wait_for_prior_grids();
  const float4* row = x + blockIdx.x * cols4;
  float m = -INFINITY, s = 0.f;
  for (int64_t i = threadIdx.x; i < cols4; i += kThreads) {
    const float4 v = row[i];
    const float a = v.x * scale, b = v.y * scale, c = v.z * scale, d = v.w * scale;
    const float lm = fmaxf(fmaxf(a, b), fmaxf(c, d));
    const float ls = expf(a - lm) + expf(b - lm) + expf(c - lm) + expf(d - lm);
    merge(m, s, lm, ls);
  }
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, mask);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, mask);
    merge(m, s, m2, s2);
  }
  __shared__ float warp_m[kThreads / 32], warp_s[kThreads / 32];
  if (threadIdx.x % 32 == 0) {
    warp_m[threadIdx.x / 32] = m;
    warp_s[threadIdx.x / 32] = s;
  }
  __syncthreads();
  m = warp_m[0];
  s = warp_s[0];
  for (int w = 1; w < kThreads / 32; ++w) merge(m, s, warp_m[w], warp_s[w]);
  const float inverse = 1.f / s;
  T* out = y + blockIdx.x * cols4 * 4;
  for (int64_t i = threadIdx.x; i < cols4; i += kThreads) {
    const float4 v = row[i];
    Vec4<T> o;
    o.e[0] = from_float<T>(expf(v.x * scale - m) * inverse);
    o.e[1] = from_float<T>(expf(v.y * scale - m) * inverse);
    o.e[2] = from_float<T>(expf(v.z * scale - m) * inverse);
    o.e[3] = from_float<T>(expf(v.w * scale - m) * inverse);
    reinterpret_cast<Vec4<T>*>(out)[i] = o;
  }
}

}  // namespace

cudaError_t launch_softmax_rows(int dtype, const float* x, void* y, int64_t rows, int64_t cols, float scale,
                                cudaStream_t stream) {
  if (cols <= 0 || cols % 4 != 0 || rows > 0x7fffffff || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(y) % (dtype == 3 ? 16 : 8) != 0)
    return cudaErrorInvalidValue;
  if (rows <= 0) return cudaSuccess;
  const auto launch = [&](auto t) {
    using T = decltype(t);
    launch_kernel(softmax_rows_kernel<T>, static_cast<unsigned>(rows), kThreads, 0, stream,
                  reinterpret_cast<const float4*>(x), static_cast<T*>(y), cols / 4, scale);
    return cudaGetLastError();
  };
  return dtype == 3 ? launch(float{}) : with_16bit_type(dtype, launch);
}

}  // namespace sdxlb::kernels
