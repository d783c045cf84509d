#include "pipeline/nn/kernels/programmatic_launch.cuh"
#include "pipeline/nn/kernels/upsample_kernel.h"

#include <algorithm>
#include <cstdint>

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

}  // namespace

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
