#include "pipeline/nn/kernels/geglu_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

// PyTorch's exact-erf GELU in float, then rounded like its output tensor would be.
template <typename T>
__device__ __forceinline__ T gelu(T g) {
  const float x = to_float(g);
  constexpr float kAlpha = 0.70710678118654752440f;  // M_SQRT1_2
  return from_float<T>(x * 0.5f * (1.0f + ::erff(x * kAlpha)));
}

// Eight elements per thread (16-byte loads) when f is a multiple of 8, which SDXL's widths always are.
template <typename T>
__global__ void geglu_vec8(const T* __restrict__ in, T* __restrict__ out, int64_t rows, int64_t f) {
  wait_for_prior_grids();
  const int64_t groups_per_row = f / 8;
  const int64_t total = rows * groups_per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / groups_per_row, c = (i % groups_per_row) * 8;
    const T* row = in + r * 2 * f;
    uint4 hv = *reinterpret_cast<const uint4*>(row + c);
    uint4 gv = *reinterpret_cast<const uint4*>(row + f + c);
    const T* h = reinterpret_cast<const T*>(&hv);
    const T* g = reinterpret_cast<const T*>(&gv);
    uint4 ov;
    T* o = reinterpret_cast<T*>(&ov);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = from_float<T>(to_float(h[k]) * to_float(gelu(g[k])));
    *reinterpret_cast<uint4*>(out + r * f + c) = ov;
  }
}

template <typename T>
__global__ void geglu_scalar(const T* __restrict__ in, T* __restrict__ out, int64_t rows, int64_t f) {
  wait_for_prior_grids();
  const int64_t total = rows * f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / f, c = i % f;
    out[i] = from_float<T>(to_float(in[r * 2 * f + c]) * to_float(gelu(in[r * 2 * f + f + c])));
  }
}

// One block per row, kGeluThreads threads, each holding up to kVecs of the row's 8-element outputs in
// registers (rounded to T as geglu_vec8 stores them): the row's largest magnitude over the block, then the
// outputs quantised to e4m3 with the row's scale (e4m3.cuh). Rows up to 8 * kGeluThreads * kVecs wide; kVecs
// is the smallest instance that holds the row, so that registers do not limit how many rows are in flight.
constexpr int kGeluThreads = 128;
constexpr int kGeluMaxVecs = 8;

template <typename T, int kVecs>
__global__ void __launch_bounds__(kGeluThreads)
    geglu_e4m3_rows(const T* __restrict__ in, uint2* __restrict__ q, float* __restrict__ scale, int64_t f) {
  wait_for_prior_grids();
  const int64_t r = blockIdx.x;
  const int64_t vecs = f / 8;
  const T* row = in + r * 2 * f;
  float out[kVecs][8];
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(kGeluThreads) * j;
    if (i < vecs) {
      const uint4 hv = *reinterpret_cast<const uint4*>(row + 8 * i);
      const uint4 gv = *reinterpret_cast<const uint4*>(row + f + 8 * i);
      const T* h = reinterpret_cast<const T*>(&hv);
      const T* g = reinterpret_cast<const T*>(&gv);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        out[j][k] = round_to<T>(to_float(h[k]) * to_float(gelu(g[k])));
        amax = fmaxf(amax, fabsf(out[j][k]));
      }
    }
  }
  __shared__ float warp_amax[kGeluThreads / 32];
  amax = warp_max(amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0.f;
#pragma unroll
  for (int w = 0; w < kGeluThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float s = e4m3_scale(amax);
  if (threadIdx.x == 0) scale[r] = s;
  const float inverse = e4m3_inverse(s);
  uint2* qr = q + r * vecs;
#pragma unroll
  for (int j = 0; j < kVecs; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(kGeluThreads) * j;
    if (i < vecs) qr[i] = e4m3x8(out[j], inverse);
  }
}

template <typename T>
cudaError_t launch(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  if (rows <= 0 || f <= 0) return cudaSuccess;
  const int threads = 256;
  const bool vec =
      f % 8 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t work = vec ? rows * (f / 8) : rows * f;
  const int blocks = static_cast<int>(std::min<int64_t>((work + threads - 1) / threads, 65535 * 8));
  if (vec)
    launch_kernel(geglu_vec8<T>, blocks, threads, 0, stream, static_cast<const T*>(in), static_cast<T*>(out),
                  rows, f);
  else
    launch_kernel(geglu_scalar<T>, blocks, threads, 0, stream, static_cast<const T*>(in),
                  static_cast<T*>(out), rows, f);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_e4m3(const void* in, void* q, float* scale, int64_t rows, int64_t f, cudaStream_t stream) {
  if (f % 8 != 0 || f > 8 * kGeluThreads * kGeluMaxVecs || reinterpret_cast<uintptr_t>(in) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(q) % 8 != 0 || rows > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (rows <= 0 || f <= 0) return cudaSuccess;
  const int64_t per_thread = (f / 8 + kGeluThreads - 1) / kGeluThreads;
  const auto kernel = per_thread <= 3   ? geglu_e4m3_rows<T, 3>
                      : per_thread <= 5 ? geglu_e4m3_rows<T, 5>
                                        : geglu_e4m3_rows<T, kGeluMaxVecs>;
  launch_kernel(kernel, static_cast<unsigned>(rows), kGeluThreads, 0, stream, static_cast<const T*>(in),
                static_cast<uint2*>(q), scale, f);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_geglu_e4m3(int dtype, const void* in, void* q, float* scale, int64_t rows, int64_t f,
                              cudaStream_t stream) {
  return with_16bit_type(dtype,
                         [&](auto t) { return launch_e4m3<decltype(t)>(in, q, scale, rows, f, stream); });
}

cudaError_t launch_geglu_f16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  return launch<__half>(in, out, rows, f, stream);
}
cudaError_t launch_geglu_bf16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  return launch<__nv_bfloat16>(in, out, rows, f, stream);
}

}  // namespace sdxlb::kernels
