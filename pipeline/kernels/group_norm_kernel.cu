#include "pipeline/kernels/group_norm_kernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace sdxlb::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowsPerSplit = 256;  // HW positions one stats block covers

__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Chan et al.'s combination of two Welford partials (count, mean, m2).
__device__ __forceinline__ void welford_merge(float& n, float& mean, float& m2, float nb, float meanb,
                                              float m2b) {
  if (nb == 0) return;
  const float nt = n + nb;
  const float delta = meanb - mean;
  mean += delta * (nb / nt);
  m2 += m2b + delta * delta * (n * nb / nt);
  n = nt;
}

// Stage 1: block (s, n) reduces rows [s*R, (s+1)*R) of image n, per channel; writes (count, mean, m2) per
// (n, s, c). Threads walk the channels, so reads are coalesced along C.
template <typename T>
__global__ void stats_partial(const T* __restrict__ x, float* __restrict__ part, int64_t hw, int64_t c,
                              int64_t splits) {
  const int64_t s = blockIdx.x, n = blockIdx.y;
  const int64_t row0 = s * kRowsPerSplit, row1 = min(hw, row0 + kRowsPerSplit);
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    float cnt = 0, mean = 0, m2 = 0;
    for (int64_t r = row0; r < row1; ++r) {
      const float v = to_float(x[(n * hw + r) * c + ch]);
      cnt += 1;
      const float d = v - mean;
      mean += d / cnt;
      m2 += d * (v - mean);
    }
    float* p = part + ((n * splits + s) * c + ch) * 3;
    p[0] = cnt;
    p[1] = mean;
    p[2] = m2;
  }
}

// Stage 2: one thread per (n, g) merges its partials in a fixed order (splits, then channels) -> mean, rstd.
__global__ void stats_final(const float* __restrict__ part, float* __restrict__ stats, int64_t n_img,
                            int64_t c, int64_t groups, int64_t splits, float eps) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n_img * groups) return;
  const int64_t n = i / groups, g = i % groups, cpg = c / groups;
  float cnt = 0, mean = 0, m2 = 0;
  for (int64_t s = 0; s < splits; ++s)
    for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch) {
      const float* p = part + ((n * splits + s) * c + ch) * 3;
      welford_merge(cnt, mean, m2, p[0], p[1], p[2]);
    }
  stats[i * 2] = mean;
  stats[i * 2 + 1] = rsqrtf(m2 / cnt + eps);  // biased variance, like torch.group_norm
}

// Stage 3: normalise, scale, shift (and SiLU), eight channels per thread.
template <typename T>
__global__ void apply(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                      const float* __restrict__ stats, T* __restrict__ y, int64_t n_img, int64_t hw,
                      int64_t c, int64_t groups, bool silu) {
  const int64_t vecs = n_img * hw * c / 8;
  const int64_t cpg = c / groups;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < vecs;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = v * 8;
    const int64_t ch0 = e % c, n = e / (hw * c);
    uint4 xv = *reinterpret_cast<const uint4*>(x + e);
    const T* xs = reinterpret_cast<const T*>(&xv);
    uint4 yv;
    T* ys = reinterpret_cast<T*>(&yv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int64_t ch = ch0 + k;
      const float* st = stats + (n * groups + ch / cpg) * 2;
      float out = (to_float(xs[k]) - st[0]) * st[1] * to_float(gamma[ch]) + to_float(beta[ch]);
      if (silu) out = out / (1.0f + __expf(-out));
      ys[k] = from_float<T>(out);
    }
    *reinterpret_cast<uint4*>(y + e) = yv;
  }
}

template <typename T>
cudaError_t launch(const void* x, const void* gamma, const void* beta, void* y, float* ws, int64_t n,
                   int64_t hw, int64_t c, int64_t groups, float eps, bool silu, cudaStream_t stream) {
  const int64_t splits = (hw + kRowsPerSplit - 1) / kRowsPerSplit;
  float* part = ws;
  float* stats = ws + n * splits * c * 3;
  stats_partial<T><<<dim3(static_cast<unsigned>(splits), static_cast<unsigned>(n)), kThreads, 0, stream>>>(
      static_cast<const T*>(x), part, hw, c, splits);
  const int64_t ng = n * groups;
  stats_final<<<static_cast<unsigned>((ng + 127) / 128), 128, 0, stream>>>(part, stats, n, c, groups, splits,
                                                                           eps);
  const int64_t vecs = n * hw * c / 8;
  const int blocks = static_cast<int>(std::min<int64_t>((vecs + kThreads - 1) / kThreads, 65535 * 4));
  apply<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(gamma),
                                            static_cast<const T*>(beta), stats, static_cast<T*>(y), n, hw, c,
                                            groups, silu);
  return cudaGetLastError();
}

}  // namespace

int64_t group_norm_workspace_floats(int64_t n, int64_t hw, int64_t c, int64_t groups) {
  const int64_t splits = (hw + kRowsPerSplit - 1) / kRowsPerSplit;
  return n * splits * c * 3 + n * groups * 2;
}

cudaError_t launch_group_norm_nhwc(int dtype, const void* x, const void* gamma, const void* beta, void* y,
                                   float* workspace, int64_t n, int64_t hw, int64_t c, int64_t groups,
                                   float eps, bool silu, cudaStream_t stream) {
  if (n <= 0 || hw <= 0) return cudaSuccess;
  return dtype == 0
             ? launch<__half>(x, gamma, beta, y, workspace, n, hw, c, groups, eps, silu, stream)
             : launch<__nv_bfloat16>(x, gamma, beta, y, workspace, n, hw, c, groups, eps, silu, stream);
}

}  // namespace sdxlb::kernels
