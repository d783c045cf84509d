#include "pipeline/nn/kernels/token_merge_kernel.h"

#include <algorithm>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_scan.cuh>

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

// One thread per output row and Vec of channels (Vec: T itself, or 16-byte vectors of 16 / sizeof(T)
// channels); a destination's sum in float, its own row first and then its sources in order, so every Vec
// gives the same bits. `vecs` is the row width in Vecs.
template <typename T, typename Vec>
__global__ void merge_rows_mean_kernel(const Vec* __restrict__ x, const int64_t* __restrict__ unm,
                                       const int64_t* __restrict__ dst, const int64_t* __restrict__ src,
                                       const int64_t* __restrict__ start, const int64_t* __restrict__ count,
                                       Vec* __restrict__ out, int64_t batch, int64_t n, int64_t u, int64_t nd,
                                       int64_t r, int64_t vecs) {
  constexpr int kPer = sizeof(Vec) / sizeof(T);
  const int64_t rows = u + nd;
  const int64_t total = batch * rows * vecs;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = i % vecs;
    const int64_t bt = i / vecs;
    const int64_t b = bt / rows, t = bt % rows;
    const Vec* xb = x + b * n * vecs + v;
    if (t < u) {
      out[i] = xb[unm[b * u + t] * vecs];
      continue;
    }
    const int64_t j = t - u;
    const int64_t k0 = start[b * nd + j], cnt = count[b * nd + j];
    float acc[kPer];
    {
      const Vec d = xb[dst[j] * vecs];
      const T* e = reinterpret_cast<const T*>(&d);
#pragma unroll
      for (int q = 0; q < kPer; ++q) acc[q] = load_float(e + q);
    }
    // Four sources' loads in flight at a time (a destination may have many), added in order.
    const int64_t* s = src + b * r + k0;
    for (int64_t k = 0; k < cnt; k += 4) {
      Vec w[4];
#pragma unroll
      for (int p = 0; p < 4; ++p)
        if (k + p < cnt) w[p] = xb[s[k + p] * vecs];
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        if (k + p >= cnt) break;
        const T* e = reinterpret_cast<const T*>(&w[p]);
#pragma unroll
        for (int q = 0; q < kPer; ++q) acc[q] += load_float(e + q);
      }
    }
    Vec o;
    T* oe = reinterpret_cast<T*>(&o);
    const float den = static_cast<float>(cnt + 1);
#pragma unroll
    for (int q = 0; q < kPer; ++q) oe[q] = store_float<T>(acc[q] / den);
    out[i] = o;
  }
}

// Rows of x gathered and scaled to unit L2 norm, one warp per row: ATen's x / x.norm(2, -1, keepdim) in T
// (the norm accumulated in float and rounded to T, then the division in float rounded to T).
template <typename T>
__global__ void gather_normalize_rows_kernel(const T* __restrict__ x, const int64_t* __restrict__ rows,
                                             int64_t rows_batch_stride, T* __restrict__ out, int64_t batch,
                                             int64_t n, int64_t m, int64_t channels) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= batch * m) return;
  const int64_t b = warp / m, row = warp % m;
  const T* xr = x + (b * n + rows[b * rows_batch_stride + row]) * channels;
  T* o = out + warp * channels;
  float ss = 0.f;
  for (int64_t c = lane; c < channels; c += 32) {
    const float v = load_float(xr + c);
    ss += v * v;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const T norm_t = store_float<T>(sqrtf(ss));
  const float norm = load_float(&norm_t);
  for (int64_t c = lane; c < channels; c += 32) o[c] = store_float<T>(load_float(xr + c) / norm);
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

// Block sizes of the single-block kernels, with launch bounds so that the compiler keeps every thread's
// registers within what a block of this size may have.
constexpr int kSplitThreads = 1024;
constexpr int kPlanThreads = 512;

__global__ void __launch_bounds__(kSplitThreads)
    merge_split_kernel(const int64_t* cell_pos, int64_t h, int64_t w, int64_t sx, int64_t sy, int64_t* a_idx,
                       int64_t* b_idx) {
  using Scan = cub::BlockScan<int64_t, kSplitThreads>;
  __shared__ typename Scan::TempStorage scan;
  const int64_t hsy = h / sy, wsx = w / sx, n = h * w;
  auto is_dst = [&](int64_t i) {
    const int64_t y = i / w, x = i % w;
    if (y >= hsy * sy || x >= wsx * sx) return false;
    const int64_t p = cell_pos == nullptr ? 0 : cell_pos[(y / sy) * wsx + x / sx];
    return p == (y % sy) * sx + x % sx;
  };
  // Each thread takes a run of consecutive tokens; a block scan of the runs' destination counts gives where
  // each run's destinations and sources go.
  const int64_t per = (n + kSplitThreads - 1) / kSplitThreads;
  const int64_t begin = ::min(n, static_cast<int64_t>(threadIdx.x) * per);
  const int64_t end = ::min(n, begin + per);
  int64_t count = 0;
  for (int64_t i = begin; i < end; ++i) count += is_dst(i);
  int64_t before = 0;
  Scan(scan).ExclusiveSum(count, before);
  int64_t d = before, s = begin - before;
  for (int64_t i = begin; i < end; ++i) {
    if (is_dst(i)) {
      b_idx[d++] = i;
    } else {
      a_idx[s++] = i;
    }
  }
}

// The fused kernels' rows of batch row b, by the whole block, from its plan: e (source ordinals by decreasing
// score, the first r merged), v (those r sources' destinations, sorted stably) and by_dst (their positions in
// e's first r). Every token is exactly one of: an unmerged source, a destination, a merged source.
template <typename E, typename V, typename P>
__device__ void write_plan_rows(const E* e, const V* v, const P* by_dst, const int64_t* __restrict__ a_idx,
                                const int64_t* __restrict__ b_idx, int64_t b, int64_t n, int64_t nd,
                                int64_t r, int64_t* __restrict__ unm_rows, int64_t* __restrict__ src_rows,
                                int64_t* __restrict__ dst_start, int64_t* __restrict__ dst_count,
                                int64_t* __restrict__ source_row) {
  const int64_t u = n - nd - r;
  int64_t* rows = source_row + b * n;
  int64_t* start = dst_start + b * nd;
  int64_t* count = dst_count + b * nd;
  for (int64_t t = threadIdx.x; t < u; t += blockDim.x) {
    const int64_t row = a_idx[e[r + t]];
    unm_rows[b * u + t] = row;
    rows[row] = t;
  }
  for (int64_t j = threadIdx.x; j < nd; j += blockDim.x) {
    rows[b_idx[j]] = u + j;
    start[j] = 0;
    count[j] = 0;
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < r; k += blockDim.x) {
    const int64_t row = a_idx[e[by_dst[k]]];
    src_rows[b * r + k] = row;
    rows[row] = u + v[k];
  }
  // The sorted destinations' runs: each run's first position is its start, its last + 1 (kept in count
  // until the next pass) its end.
  for (int64_t k = threadIdx.x; k < r; k += blockDim.x) {
    if (k == 0 || v[k - 1] != v[k]) start[v[k]] = k;
    if (k == r - 1 || v[k + 1] != v[k]) count[v[k]] = k + 1;
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < nd; j += blockDim.x)
    if (count[j] > 0) count[j] -= start[j];
}

template <typename Key>
__global__ void __launch_bounds__(kPlanThreads)
    merge_plan_rows_kernel(const int64_t* __restrict__ edge, const Key* __restrict__ dst_sorted,
                           const int64_t* __restrict__ by_dst, const int64_t* __restrict__ a_idx,
                           const int64_t* __restrict__ b_idx, int64_t n, int64_t nd, int64_t r,
                           int64_t* __restrict__ unm_rows, int64_t* __restrict__ src_rows,
                           int64_t* __restrict__ dst_start, int64_t* __restrict__ dst_count,
                           int64_t* __restrict__ source_row) {
  const int64_t b = blockIdx.x;
  write_plan_rows(edge + b * (n - nd), dst_sorted + b * r, by_dst + b * r, a_idx, b_idx, b, n, nd, r,
                  unm_rows, src_rows, dst_start, dst_count, source_row);
}

// The whole merge plan after the similarity's row maxima, for up to kSortCap sources, in one block per batch
// row: the sources by decreasing best similarity (a stable argsort: equal scores keep their order), the
// merged sources' destinations, those sorted stably, and the fused kernels' rows (as merge_plan_rows_kernel).
constexpr int kSortThreads = 512;
constexpr int kSortItems = 8;
constexpr int kSortCap = kSortThreads * kSortItems;

// An unsigned key whose ascending order is the float's descending order (IEEE bits; -0 counts as +0).
template <typename Bits>
__device__ __forceinline__ Bits descending_key(Bits bits) {
  constexpr Bits kSign = static_cast<Bits>(Bits(1) << (sizeof(Bits) * 8 - 1));
  if (bits == kSign) bits = 0;
  const Bits ascending = (bits & kSign) ? static_cast<Bits>(~bits) : static_cast<Bits>(bits | kSign);
  return static_cast<Bits>(~ascending);
}

template <typename T, typename Bits>
__global__ void __launch_bounds__(kSortThreads)
    merge_plan_kernel(const T* __restrict__ node_max, const int64_t* __restrict__ node_idx,
                      const int64_t* __restrict__ a_idx, const int64_t* __restrict__ b_idx, int64_t n,
                      int64_t nd, int64_t r, int64_t* __restrict__ edge_out, int64_t* __restrict__ dst_out,
                      int64_t* __restrict__ unm_rows, int64_t* __restrict__ src_rows,
                      int64_t* __restrict__ dst_start, int64_t* __restrict__ dst_count,
                      int64_t* __restrict__ source_row) {
  using ScoreSort = cub::BlockRadixSort<Bits, kSortThreads, kSortItems, int16_t>;
  using DstSort = cub::BlockRadixSort<uint16_t, kSortThreads, kSortItems, int16_t>;
  __shared__ union {
    typename ScoreSort::TempStorage score;
    typename DstSort::TempStorage dst;
  } temp;
  __shared__ int16_t edge[kSortCap];         // source ordinals by decreasing score
  __shared__ uint16_t dst_sorted[kSortCap];  // the first r's destinations, sorted
  __shared__ int16_t by_dst[kSortCap];       // their positions in edge
  const int64_t b = blockIdx.x, s = n - nd;
  const int first = static_cast<int>(threadIdx.x) * kSortItems;
  {
    Bits keys[kSortItems];
    int16_t vals[kSortItems];
#pragma unroll
    for (int j = 0; j < kSortItems; ++j) {
      const int i = first + j;
      if (i < s) {
        const T v = node_max[b * s + i];
        Bits bits;
        memcpy(&bits, &v, sizeof(Bits));
        keys[j] = descending_key(bits);
      } else {
        keys[j] = static_cast<Bits>(~Bits(0));
      }
      vals[j] = static_cast<int16_t>(i);
    }
    ScoreSort(temp.score).Sort(keys, vals);
#pragma unroll
    for (int j = 0; j < kSortItems; ++j) {
      const int i = first + j;
      if (i < s) {
        edge[i] = vals[j];
        edge_out[b * s + i] = vals[j];
      }
    }
  }
  __syncthreads();
  {
    uint16_t keys[kSortItems];
    int16_t vals[kSortItems];
#pragma unroll
    for (int j = 0; j < kSortItems; ++j) {
      const int k = first + j;
      if (k < r) {
        const int64_t d = node_idx[b * s + edge[k]];
        dst_out[b * r + k] = d;
        keys[j] = static_cast<uint16_t>(d);
      } else {
        keys[j] = 0xffff;
      }
      vals[j] = static_cast<int16_t>(k);
    }
    DstSort(temp.dst).Sort(keys, vals);
#pragma unroll
    for (int j = 0; j < kSortItems; ++j) {
      const int k = first + j;
      if (k < r) {
        dst_sorted[k] = keys[j];
        by_dst[k] = vals[j];
      }
    }
  }
  // (write_plan_rows synchronises before it reads dst_sorted and by_dst.)
  write_plan_rows(edge, dst_sorted, by_dst, a_idx, b_idx, b, n, nd, r, unm_rows, src_rows, dst_start,
                  dst_count, source_row);
}

template <typename T>
cudaError_t merge_launch(const void* x, const int64_t* unm, const int64_t* dst, const int64_t* src,
                         const int64_t* start, const int64_t* count, void* out, int64_t batch, int64_t n,
                         int64_t u, int64_t nd, int64_t r, int64_t channels, cudaStream_t stream) {
  const int64_t total = batch * (u + nd) * channels;
  if (total <= 0) return cudaSuccess;
  if ((channels * static_cast<int64_t>(sizeof(T))) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    const int64_t vecs = channels * static_cast<int64_t>(sizeof(T)) / 16;
    merge_rows_mean_kernel<T, uint4><<<blocks_for(batch * (u + nd) * vecs, 256), 256, 0, stream>>>(
        static_cast<const uint4*>(x), unm, dst, src, start, count, static_cast<uint4*>(out), batch, n, u, nd,
        r, vecs);
  } else {
    merge_rows_mean_kernel<T, T>
        <<<blocks_for(total, 256), 256, 0, stream>>>(static_cast<const T*>(x), unm, dst, src, start, count,
                                                     static_cast<T*>(out), batch, n, u, nd, r, channels);
  }
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

cudaError_t launch_merge_split(const int64_t* cell_pos, int64_t h, int64_t w, int64_t sx, int64_t sy,
                               int64_t* a_idx, int64_t* b_idx, cudaStream_t stream) {
  if (h * w <= 0 || sx <= 0 || sy <= 0) return cudaErrorInvalidValue;
  merge_split_kernel<<<1, kSplitThreads, 0, stream>>>(cell_pos, h, w, sx, sy, a_idx, b_idx);
  return cudaGetLastError();
}

cudaError_t launch_merge_plan_rows(const int64_t* edge, const void* dst_sorted, int key_bytes,
                                   const int64_t* by_dst, const int64_t* a_idx, const int64_t* b_idx,
                                   int64_t batch, int64_t n, int64_t nd, int64_t r, int64_t* unm_rows,
                                   int64_t* src_rows, int64_t* dst_start, int64_t* dst_count,
                                   int64_t* source_row, cudaStream_t stream) {
  if (batch <= 0) return cudaSuccess;
  if (batch > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(batch));
  switch (key_bytes) {
    case 2:
      merge_plan_rows_kernel<int16_t><<<grid, kPlanThreads, 0, stream>>>(
          edge, static_cast<const int16_t*>(dst_sorted), by_dst, a_idx, b_idx, n, nd, r, unm_rows, src_rows,
          dst_start, dst_count, source_row);
      break;
    case 4:
      merge_plan_rows_kernel<int32_t><<<grid, kPlanThreads, 0, stream>>>(
          edge, static_cast<const int32_t*>(dst_sorted), by_dst, a_idx, b_idx, n, nd, r, unm_rows, src_rows,
          dst_start, dst_count, source_row);
      break;
    case 8:
      merge_plan_rows_kernel<int64_t><<<grid, kPlanThreads, 0, stream>>>(
          edge, static_cast<const int64_t*>(dst_sorted), by_dst, a_idx, b_idx, n, nd, r, unm_rows, src_rows,
          dst_start, dst_count, source_row);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_gather_normalize_rows(int dtype, const void* x, const int64_t* rows,
                                         int64_t rows_batch_stride, void* out, int64_t batch, int64_t n,
                                         int64_t m, int64_t channels, cudaStream_t stream) {
  const int64_t warps = batch * m;
  if (warps <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks64 = (warps * 32 + kThreads - 1) / kThreads;
  if (blocks64 > 0x7fffffff) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(blocks64);
  switch (dtype) {
    case 0:
      gather_normalize_rows_kernel<float>
          <<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(x), rows, rows_batch_stride,
                                            static_cast<float*>(out), batch, n, m, channels);
      break;
    case 1:
      gather_normalize_rows_kernel<__half>
          <<<blocks, kThreads, 0, stream>>>(static_cast<const __half*>(x), rows, rows_batch_stride,
                                            static_cast<__half*>(out), batch, n, m, channels);
      break;
    case 2:
      gather_normalize_rows_kernel<__nv_bfloat16>
          <<<blocks, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), rows, rows_batch_stride,
                                            static_cast<__nv_bfloat16*>(out), batch, n, m, channels);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_merge_plan(int dtype, const void* node_max, const int64_t* node_idx, const int64_t* a_idx,
                              const int64_t* b_idx, int64_t batch, int64_t n, int64_t nd, int64_t r,
                              int64_t* edge, int64_t* dst_idx, int64_t* unm_rows, int64_t* src_rows,
                              int64_t* dst_start, int64_t* dst_count, int64_t* source_row,
                              cudaStream_t stream) {
  if (batch <= 0) return cudaSuccess;
  if (batch > 65535 || n - nd > kSortCap || nd >= 0xffff || r < 0 || r > n - nd) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(batch));
  switch (dtype) {
    case 0:
      merge_plan_kernel<float, uint32_t><<<grid, kSortThreads, 0, stream>>>(
          static_cast<const float*>(node_max), node_idx, a_idx, b_idx, n, nd, r, edge, dst_idx, unm_rows,
          src_rows, dst_start, dst_count, source_row);
      break;
    case 1:
      merge_plan_kernel<__half, uint16_t><<<grid, kSortThreads, 0, stream>>>(
          static_cast<const __half*>(node_max), node_idx, a_idx, b_idx, n, nd, r, edge, dst_idx, unm_rows,
          src_rows, dst_start, dst_count, source_row);
      break;
    case 2:
      merge_plan_kernel<__nv_bfloat16, uint16_t><<<grid, kSortThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(node_max), node_idx, a_idx, b_idx, n, nd, r, edge, dst_idx,
          unm_rows, src_rows, dst_start, dst_count, source_row);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
