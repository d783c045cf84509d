#include "pipeline/nn/kernels/layer_norm_kernel.h"

#include <algorithm>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  return v;
}

constexpr int kMaxVectorsPerLane = 8;  // 8 x 8 elements x 32 lanes: rows up to 2048 wide
constexpr int kWarpsPerBlock = 4;

// One warp per row; lane l holds the row's 8-element vectors l, l + 32, ... (kNV of them at most: the
// smallest instance that holds the row runs, so that registers do not limit the rows in flight) in registers.
// With a residual r, the row is x + r (rounded to T, as a separate add would store it), which is also written
// to `sum`. With kE4m3 the normalised row, rounded to T as y would store it, is quantised to e4m3 with its
// own scale (e4m3.cuh) and written to q and scale instead of y: the bits of layer_norm then quantize_rows.
template <typename T, bool kE4m3, int kNV>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    layer_norm_rows(const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ sum_out,
                    const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ y,
                    uint2* __restrict__ q, float* __restrict__ scale, int64_t rows, int d, float eps) {
  wait_for_prior_grids();
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int vectors = d / 8;
  const uint4* in = reinterpret_cast<const uint4*>(x + row * d);
  const uint4* res = r != nullptr ? reinterpret_cast<const uint4*>(r + row * d) : nullptr;
  uint4* sum_row = sum_out != nullptr ? reinterpret_cast<uint4*>(sum_out + row * d) : nullptr;
  // Every load of the row (x, the residual, gamma and beta) is issued before any is used. Loading, adding and
  // storing one vector at a time compiled to one vector's loads in flight per lane (session 39's SASS); this
  // order does the same arithmetic, so it gives the same bits, and took the one-image fp16 call's LayerNorms
  // from 1.68 to 1.48 ms of kernel time on an H100 (FP8: 1.68 to 1.42).
  uint4 xr[kNV], rr[kNV], graw[kNV], braw[kNV];
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int i = lane + 32 * j;
    if (i < vectors) {
      xr[j] = in[i];
      if (res != nullptr) rr[j] = res[i];
      graw[j] = reinterpret_cast<const uint4*>(gamma)[i];
      braw[j] = reinterpret_cast<const uint4*>(beta)[i];
    }
  }
  float v[kNV][8];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int i = lane + 32 * j;
    if (i < vectors) {
      const T* e = reinterpret_cast<const T*>(&xr[j]);
      if (res != nullptr) {
        const T* re = reinterpret_cast<const T*>(&rr[j]);
        uint4 s;
        T* se = reinterpret_cast<T*>(&s);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          se[k] = from_float<T>(to_float(e[k]) + to_float(re[k]));
          v[j][k] = to_float(se[k]);
          sum += v[j][k];
        }
        sum_row[i] = s;
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          v[j][k] = to_float(e[k]);
          sum += v[j][k];
        }
      }
    }
  }
  const float mean = warp_sum(sum) / d;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    if (lane + 32 * j < vectors) {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float c = v[j][k] - mean;
        sq += c * c;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / d + eps);
  uint4* out = kE4m3 ? nullptr : reinterpret_cast<uint4*>(y + row * d);
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kNV; ++j) {
    const int i = lane + 32 * j;
    if (i < vectors) {
      const T* g = reinterpret_cast<const T*>(&graw[j]);
      const T* b = reinterpret_cast<const T*>(&braw[j]);
      uint4 o;
      T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        oe[k] = from_float<T>((v[j][k] - mean) * rstd * to_float(g[k]) + to_float(b[k]));
        if (kE4m3) {
          v[j][k] = to_float(oe[k]);
          amax = fmaxf(amax, fabsf(v[j][k]));
        }
      }
      if (!kE4m3) out[i] = o;
    }
  }
  if (kE4m3) {
    const float s = e4m3_scale(warp_max(amax));
    if (lane == 0) scale[row] = s;
    const float inverse = e4m3_inverse(s);
    uint2* qr = q + row * vectors;
#pragma unroll
    for (int j = 0; j < kNV; ++j) {
      const int i = lane + 32 * j;
      if (i < vectors) qr[i] = e4m3x8(v[j], inverse);
    }
  }
}

template <typename T>
cudaError_t launch(const void* x, const void* r, void* sum, const void* gamma, const void* beta, void* y,
                   void* q, float* scale, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
  const bool e4m3 = q != nullptr;
  if (d % 8 != 0 || d > 8 * 32 * kMaxVectorsPerLane || d <= 0 || !aligned16(x) || !aligned16(y) ||
      !aligned16(gamma) || !aligned16(beta) || !aligned16(r) || !aligned16(sum) ||
      (r == nullptr) != (sum == nullptr) || (y == nullptr) != e4m3 || (scale == nullptr) != !e4m3 ||
      reinterpret_cast<uintptr_t>(q) % 8 != 0)
    return cudaErrorInvalidValue;
  if (rows <= 0) return cudaSuccess;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const int64_t per_lane = (d / 8 + 31) / 32;
  const auto pick = [&](auto e4m3_tag) {
    constexpr bool kQ = decltype(e4m3_tag)::value;
    return per_lane <= 1   ? layer_norm_rows<T, kQ, 1>
           : per_lane <= 2 ? layer_norm_rows<T, kQ, 2>
           : per_lane <= 3 ? layer_norm_rows<T, kQ, 3>
           : per_lane <= 5 ? layer_norm_rows<T, kQ, 5>
                           : layer_norm_rows<T, kQ, kMaxVectorsPerLane>;
  };
  const auto kernel = e4m3 ? pick(std::true_type{}) : pick(std::false_type{});
  launch_kernel(kernel, static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream,
                static_cast<const T*>(x), static_cast<const T*>(r), static_cast<T*>(sum),
                static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(y),
                static_cast<uint2*>(q), scale, rows, static_cast<int>(d), eps);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_layer_norm_f16(const void* x, const void* residual, void* sum, const void* gamma,
                                  const void* beta, void* y, int64_t rows, int64_t d, float eps,
                                  cudaStream_t stream) {
  return launch<__half>(x, residual, sum, gamma, beta, y, nullptr, nullptr, rows, d, eps, stream);
}
cudaError_t launch_layer_norm_bf16(const void* x, const void* residual, void* sum, const void* gamma,
                                   const void* beta, void* y, int64_t rows, int64_t d, float eps,
                                   cudaStream_t stream) {
  return launch<__nv_bfloat16>(x, residual, sum, gamma, beta, y, nullptr, nullptr, rows, d, eps, stream);
}
cudaError_t launch_layer_norm_e4m3(int dtype, const void* x, const void* residual, void* sum,
                                   const void* gamma, const void* beta, void* q, float* scale, int64_t rows,
                                   int64_t d, float eps, cudaStream_t stream) {
  if (q == nullptr || scale == nullptr) return cudaErrorInvalidValue;
  return with_16bit_type(dtype, [&](auto t) {
    return launch<decltype(t)>(x, residual, sum, gamma, beta, nullptr, q, scale, rows, d, eps, stream);
  });
}

}  // namespace sdxlb::kernels
