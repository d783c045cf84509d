#include "pipeline/nn/kernels/programmatic_launch.cuh"
#include "pipeline/nn/kernels/upsample_kernel.h"

#include <algorithm>
#include <cstdint>

#include "pipeline/nn/kernels/element_types.cuh"

namespace sdxlb::kernels {
namespace {

// Grid-stride over the input's 16-byte vectors (8 channels of one pixel); each goes to its 2×2 output pixels.
__global__ void __launch_bounds__(256)
    upsample_nearest2x_kernel(const uint4* __restrict__ x, uint4* __restrict__ y, int64_t vectors, int64_t h,
                              int64_t w, int64_t cv) {
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = i % cv, pixel = i / cv;
    const int64_t col = pixel % w, row = (pixel / w) % h, image = pixel / (w * h);
    const uint4 value = x[i];
    const int64_t out_row = (image * 2 * h + 2 * row) * 2 * w + 2 * col;  // output pixel (2 row, 2 col)
    uint4* top = y + out_row * cv + v;
    uint4* bottom = top + 2 * w * cv;
    top[0] = value;
    top[cv] = value;
    bottom[0] = value;
    bottom[cv] = value;
  }
}

// Grid-stride over the output's 16-byte vectors (kVec channels of one pixel). Output pixel (2i + a, 2j + b)
// is phase p = 2a + b of the phase convolution's pixel (i + a, j + b): its channels [p·c, (p + 1)·c).
template <typename T>
__global__ void __launch_bounds__(256)
    upsample_phases_kernel(const uint4* __restrict__ y, const T* __restrict__ bias, uint4* __restrict__ out,
                           int64_t vectors, int64_t h, int64_t w, int64_t cv) {
  constexpr int kVec = 16 / sizeof(T);
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = i % cv, pixel = i / cv;
    const int64_t ox = pixel % (2 * w), oy = (pixel / (2 * w)) % (2 * h), image = pixel / (4 * h * w);
    const int64_t a = oy & 1, b = ox & 1;
    const int64_t src = (image * (h + 1) + (oy >> 1) + a) * (w + 1) + (ox >> 1) + b;
    uint4 value = y[(src * 4 + 2 * a + b) * cv + v];
    if (bias != nullptr) {
      T* lanes = reinterpret_cast<T*>(&value);
      const T* bv = bias + v * kVec;
#pragma unroll
      for (int k = 0; k < kVec; ++k) lanes[k] = from_float<T>(to_float(lanes[k]) + to_float(bv[k]));
    }
    out[i] = value;
  }
}

template <typename T>
cudaError_t launch_phases(const void* y, const void* bias, void* out, int64_t n, int64_t h, int64_t w,
                          int64_t c, cudaStream_t stream) {
  constexpr int64_t kVec = 16 / sizeof(T);
  if (c % kVec != 0 || reinterpret_cast<uintptr_t>(y) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0)
    return cudaErrorInvalidValue;
  const int64_t cv = c / kVec, vectors = n * 4 * h * w * cv;
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((vectors + kThreads - 1) / kThreads, 8192));
  launch_kernel(upsample_phases_kernel<T>, blocks, kThreads, 0, stream, static_cast<const uint4*>(y),
                static_cast<const T*>(bias), static_cast<uint4*>(out), vectors, h, w, cv);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_upsample_phases(int dtype, const void* y, const void* bias, void* out, int64_t n,
                                   int64_t h, int64_t w, int64_t c, cudaStream_t stream) {
  if (n <= 0 || h <= 0 || w <= 0 || c <= 0) return cudaSuccess;
  if (dtype == 0) return launch_phases<float>(y, bias, out, n, h, w, c, stream);
  return with_16bit_type(
      dtype, [&](auto t) { return launch_phases<decltype(t)>(y, bias, out, n, h, w, c, stream); });
}

cudaError_t launch_upsample_nearest2x(const void* x, void* y, int64_t n, int64_t h, int64_t w,
                                      int64_t pixel_bytes, cudaStream_t stream) {
  if (n <= 0 || h <= 0 || w <= 0 || pixel_bytes <= 0) return cudaSuccess;
  if (pixel_bytes % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(y) % 16 != 0)
    return cudaErrorInvalidValue;
  const int64_t cv = pixel_bytes / 16, vectors = n * h * w * cv;
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((vectors + kThreads - 1) / kThreads, 8192));
  launch_kernel(upsample_nearest2x_kernel, blocks, kThreads, 0, stream, static_cast<const uint4*>(x),
                static_cast<uint4*>(y), vectors, h, w, cv);
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
