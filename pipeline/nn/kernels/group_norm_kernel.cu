#include "pipeline/nn/kernels/group_norm_kernel.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

// ---- element types ----

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 to_float2(type v) { return __half22float2(v); }
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_float2(type v) { return __bfloat1622float2(v); }
};
template <>
struct Pair<float> {
  using type = float2;
  static __device__ __forceinline__ float2 to_float2(type v) { return v; }
};

// Elements of T in one 16-byte load or store: 8 for fp16/bf16, 4 for float32.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

// ---- statistics: (count, mean, M2) merged with Chan et al.'s formula, always in a fixed order ----

struct Moments {
  float count = 0.f, mean = 0.f, m2 = 0.f;
};

__device__ __forceinline__ Moments merge(Moments a, const Moments& b) {
  if (b.count == 0.f) return a;
  if (a.count == 0.f) return b;
  const float count = a.count + b.count;
  const float delta = b.mean - a.mean;
  const float f = b.count / count;
  a.mean += delta * f;
  a.m2 += b.m2 + delta * delta * a.count * f;
  a.count = count;
  return a;
}

__device__ __forceinline__ Moments shfl_xor(const Moments& m, int mask) {
  Moments o;
  o.count = __shfl_xor_sync(0xffffffffu, m.count, mask);
  o.mean = __shfl_xor_sync(0xffffffffu, m.mean, mask);
  o.m2 = __shfl_xor_sync(0xffffffffu, m.m2, mask);
  return o;
}

// Every lane ends with the merge of all 32 lanes' moments (the same tree whatever the data).
__device__ __forceinline__ Moments warp_merge(Moments m) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) m = merge(m, shfl_xor(m, mask));
  return m;
}

// The value the normalisation sees for one channel: x, plus the per-channel and per-(sample, channel)
// additions, each sum rounded to T as separate PyTorch ops would. add_nc's rows are nc_stride elements apart.
template <typename T>
struct PreAdd {
  bool has_c = false, has_nc = false;
  float ac = 0.f, anc = 0.f;
  PreAdd() = default;
  __device__ __forceinline__ PreAdd(const T* add_c, const T* add_nc, int n, int ch, int nc_stride)
      : has_c(add_c != nullptr), has_nc(add_nc != nullptr) {
    if (has_c) ac = to_float(add_c[ch]);
    if (has_nc) anc = to_float(add_nc[static_cast<size_t>(n) * nc_stride + ch]);
  }
  __device__ __forceinline__ float operator()(float v) const {
    if (has_c) v = round_to<T>(v + ac);
    if (has_nc) v = round_to<T>(v + anc);
    return v;
  }
};

constexpr int kMaxThreads = 512;
// Statistics blocks per sample: a function of the sample's shape only (not of the GPU, nor of the batch), so
// that the reduction order, and with it every bit, is the shape's. 256, and up to 1024 for samples of more
// than 32 Mi elements (128 Ki elements per block): with 256, the statistics of the VAE's 1024² tensors read
// at a quarter of the H200's bandwidth (too few loads in flight), while 1024 for the UNet's batches of small
// samples made its statistics slower.
constexpr int kBlocksPerSample = 256;
constexpr int kMaxBlocksPerSample = 1024;
constexpr int64_t kElementsPerBlock = int64_t{1} << 17;

int64_t blocks_per_sample(int64_t hw, int64_t c) {
  return std::clamp<int64_t>(hw * c / kElementsPerBlock, kBlocksPerSample, kMaxBlocksPerSample);
}
constexpr int kApplyThreads = 256;
constexpr int kApplyVectors = 4;  // vectors per thread that gn_apply aims for

struct Layout {
  int pairs_per_group = 0;  // channel pairs per group (c / groups / 2)
  int groups_per_block = 0;
  int slices = 0;  // blocks across the channels
  int bx = 0, by = 0;
  int rows_per_chunk = 0, chunks = 0;
};

Layout layout_for(int64_t hw, int64_t c, int64_t groups) {
  Layout l;
  l.pairs_per_group = static_cast<int>(c / groups / 2);
  l.groups_per_block = 1;
  for (int g = 1; g <= groups; ++g)
    if (groups % g == 0 && g * l.pairs_per_group <= 256) l.groups_per_block = g;
  l.slices = static_cast<int>(groups) / l.groups_per_block;
  l.bx = l.groups_per_block * l.pairs_per_group;
  l.by = std::max(1, std::min(8, kMaxThreads / std::max(1, l.bx)));
  const int64_t want_chunks = std::max<int64_t>(1, blocks_per_sample(hw, c) / l.slices);
  int64_t rows = (hw + want_chunks - 1) / want_chunks;
  rows = std::max<int64_t>(rows, 4 * l.by);
  rows = (rows + l.by - 1) / l.by * l.by;
  l.rows_per_chunk = static_cast<int>(rows);
  l.chunks = static_cast<int>((hw + rows - 1) / rows);
  return l;
}

// Floats per (sample, chunk, group) in the statistics' partial results: count, mean, M2, and for the e4m3
// output the smallest and largest value the normalisation sees.
constexpr int kPartial = 5;

// The normalisation's affine map of a value v (after the additions): the one expression gn_apply and the
// e4m3 output's bound (gn_finalize) both evaluate.
__device__ __forceinline__ float normalise(float v, float a, float b) {
  return v * a + b;
}

// Grid (slices, chunks, n), block (bx, by). Thread (tx, ty) owns one channel pair and every by-th row of the
// chunk. Writes the chunk's moments per group: partial[((n * chunks + chunk) * groups + g) * kPartial +
// {0,1,2}], and with kRange the smallest and largest value at {3,4}. Zeroes amax_bits[n] (where given) for
// the kernels after it (gn_finalize's bound or gn_apply's kAmax pass).
template <typename T, bool kRange>
__global__ void __launch_bounds__(kMaxThreads)
    gn_stats(const T* __restrict__ x, const T* __restrict__ add_c, const T* __restrict__ add_nc,
             float* __restrict__ partial, int hw, int c, int nc_stride, int groups, int pairs_per_group,
             int rows_per_chunk, unsigned* __restrict__ amax_bits) {
  wait_for_prior_grids();
  using P = Pair<T>;
  extern __shared__ float shm[];  // kPartial * bx * by
  const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int slice = blockIdx.x, chunk = blockIdx.y, n = blockIdx.z, chunks = gridDim.y;
  const int pair = slice * bx + tx;
  const int ch = pair * 2;
  const int r0 = chunk * rows_per_chunk;
  const int r1 = min(hw, r0 + rows_per_chunk);
  const auto* base = reinterpret_cast<const typename P::type*>(x + static_cast<size_t>(n) * hw * c) + pair;
  const size_t row_stride = static_cast<size_t>(c / 2);

  // Sums of (v - shift) with the thread's first value as the shift, which keeps E[v^2] - E[v]^2 exact enough.
  const PreAdd<T> pre0(add_c, add_nc, n, ch, nc_stride), pre1(add_c, add_nc, n, ch + 1, nc_stride);
  if (amax_bits != nullptr && slice == 0 && chunk == 0 && tx == 0 && ty == 0) amax_bits[n] = 0u;
  float shift = 0.f, s = 0.f, ss = 0.f;
  float lo = INFINITY, hi = -INFINITY;
  int count = 0;
  if (r0 + ty < r1) shift = pre0(P::to_float2(base[(r0 + ty) * row_stride]).x);
#pragma unroll 8
  for (int r = r0 + ty; r < r1; r += by) {
    const float2 v = P::to_float2(base[r * row_stride]);
    const float v0 = pre0(v.x), v1 = pre1(v.y);
    const float d0 = v0 - shift, d1 = v1 - shift;
    s += d0 + d1;
    ss += d0 * d0 + d1 * d1;
    count += 2;
    if constexpr (kRange) {
      lo = fminf(lo, fminf(v0, v1));
      hi = fmaxf(hi, fmaxf(v0, v1));
    }
  }
  Moments m;
  if (count > 0) {
    m.count = static_cast<float>(count);
    m.mean = shift + s / m.count;
    m.m2 = fmaxf(ss - s * s / m.count, 0.f);
  }
  float* sc = shm;
  float* sm = shm + bx * by;
  float* sq = shm + 2 * bx * by;
  float* slo = shm + 3 * bx * by;
  float* shi = shm + 4 * bx * by;
  const int tid = ty * bx + tx;
  sc[tid] = m.count;
  sm[tid] = m.mean;
  sq[tid] = m.m2;
  if constexpr (kRange) {
    slo[tid] = lo;
    shi[tid] = hi;
  }
  __syncthreads();
  // Rows of the block: column tx merges its by entries in order.
  if (ty == 0) {
    for (int k = 1; k < by; ++k) {
      m = merge(m, Moments{sc[k * bx + tx], sm[k * bx + tx], sq[k * bx + tx]});
      if constexpr (kRange) {
        lo = fminf(lo, slo[k * bx + tx]);
        hi = fmaxf(hi, shi[k * bx + tx]);
      }
    }
    sc[tx] = m.count;
    sm[tx] = m.mean;
    sq[tx] = m.m2;
    if constexpr (kRange) {
      slo[tx] = lo;
      shi[tx] = hi;
    }
  }
  __syncthreads();
  // Groups of the block: warp w merges the pairs of groups w, w + warps, ...
  // Whole warps only (the launcher makes bx * by >= 32), so that the shuffles see 32 live lanes.
  const int lane = tid & 31, warp = tid >> 5, warps = (bx * by) >> 5;
  const int groups_here = bx / pairs_per_group;
  for (int gl = warp; warp < warps && gl < groups_here; gl += warps) {
    Moments acc;
    float glo = INFINITY, ghi = -INFINITY;
    for (int p = lane; p < pairs_per_group; p += 32) {
      const int i = gl * pairs_per_group + p;
      acc = merge(acc, Moments{sc[i], sm[i], sq[i]});
      if constexpr (kRange) {
        glo = fminf(glo, slo[i]);
        ghi = fmaxf(ghi, shi[i]);
      }
    }
    acc = warp_merge(acc);
    if constexpr (kRange) {
      glo = -warp_max(-glo);
      ghi = warp_max(ghi);
    }
    if (lane == 0) {
      const int g = slice * groups_here + gl;
      float* out = partial + ((static_cast<size_t>(n) * chunks + chunk) * groups + g) * kPartial;
      out[0] = acc.count;
      out[1] = acc.mean;
      out[2] = acc.m2;
      if constexpr (kRange) {
        out[3] = glo;
        out[4] = ghi;
      }
    }
  }
}

// SiLU as gn_apply computes it on a GroupNorm output t already rounded to T: the fast division, 0 when
// exp(-t) overflows, as t / inf.
__device__ __forceinline__ float gn_silu(float t) {
  return __fdividef(t, 1.0f + __expf(-t));
}

// An upper bound of |SiLU(t)| over t < 0, rounded up to a bf16 and an fp16 value: SiLU's minimum is
// -0.278465 at t = -1.278465.
constexpr float kSiluNegativeBound = 0.2793f;
constexpr float kSiluArgmin = -1.278465f;

// Grid (groups, n), one warp per block: the warp of group g merges the group's chunks and writes the
// per-channel affine of the normalisation: y = v * scale[n, ch] + shift[n, ch]. (One block per sample with a
// warp per group in turn was latency-bound: two blocks on a GPU of 132 SMs for a CFG pair.) With amax_bits
// (the e4m3 output; kRange statistics): a bound of the sample's largest output magnitude, merged into
// amax_bits[n] with atomicMax on the float's bits (non-negative floats order as their bits: the result does
// not depend on the order). Each channel's outputs come from values within the group's [lo, hi] through a
// monotone map (the affine, the rounding to T) and then SiLU, whose magnitude is largest at an end of that
// range or, where the range holds its minimum, at most kSiluNegativeBound.
template <typename T, int kChunksPerLane>
__global__ void __launch_bounds__(32)
    gn_finalize(const float* __restrict__ partial, const T* __restrict__ gamma, const T* __restrict__ beta,
                float* __restrict__ scale, float* __restrict__ shift, int chunks, int c, int groups,
                float eps, bool silu, unsigned* __restrict__ amax_bits) {
  wait_for_prior_grids();
  const int n = blockIdx.y, lane = threadIdx.x & 31;
  const int per_group = c / groups;
  {
    const int g = blockIdx.x;
    // All loads first (chunks <= 32 x kChunksPerLane), then the merges in a fixed order.
    Moments part[kChunksPerLane];
    float lo = INFINITY, hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < kChunksPerLane; ++j) {
      const int k = lane + 32 * j;
      if (k < chunks) {
        const float* p = partial + ((static_cast<size_t>(n) * chunks + k) * groups + g) * kPartial;
        part[j] = Moments{p[0], p[1], p[2]};
        if (amax_bits != nullptr) {
          lo = fminf(lo, p[3]);
          hi = fmaxf(hi, p[4]);
        }
      }
    }
    Moments acc;
#pragma unroll
    for (int j = 0; j < kChunksPerLane; ++j) acc = merge(acc, part[j]);
    acc = warp_merge(acc);
    const float mean = __shfl_sync(0xffffffffu, acc.mean, 0);
    const float var = __shfl_sync(0xffffffffu, acc.m2 / acc.count, 0);
    const float rstd = rsqrtf(var + eps);
    if (amax_bits != nullptr) {
      lo = -warp_max(-lo);
      hi = warp_max(hi);
    }
    float bound = 0.f;
    for (int k = lane; k < per_group; k += 32) {
      const int ch = g * per_group + k;
      const float a = rstd * to_float(gamma[ch]);
      const float b = to_float(beta[ch]) - mean * a;
      scale[n * c + ch] = a;
      shift[n * c + ch] = b;
      if (amax_bits != nullptr) {
        const float t0 = round_to<T>(normalise(lo, a, b)), t1 = round_to<T>(normalise(hi, a, b));
        const float tl = fminf(t0, t1), th = fmaxf(t0, t1);
        if (silu) {
          bound = fmaxf(bound, fmaxf(fabsf(round_to<T>(gn_silu(tl))), fabsf(round_to<T>(gn_silu(th)))));
          if (tl < kSiluArgmin && th > kSiluArgmin) bound = fmaxf(bound, kSiluNegativeBound);
        } else {
          bound = fmaxf(bound, fmaxf(fabsf(tl), fabsf(th)));
        }
      }
    }
    if (amax_bits != nullptr) {
      bound = warp_max(bound);
      if (lane == 0) atomicMax(amax_bits + n, __float_as_uint(bound));
    }
  }
}

// What gn_apply does with the normalised values: store them in T (the GroupNorm's output), or, for an output
// that only an FP8 convolution reads, convert the values T would hold to e4m3 at the sample's scale from
// amax_bits (fp8_quantize_kernel.cu's conversion, without the store and the re-read in between): the bound
// gn_finalize merged there, or, with the fusion "gnbound" off, each sample's largest magnitude that a kAmax
// pass merged there first.
enum class ApplyMode { kStore, kAmax, kQuantize };

// Grid (x, n) with gridDim.x * kApplyThreads a multiple of the vectors per row (c / kVec<T>), so that each
// thread keeps one 16-byte column of channels and walks the sample's rows: the per-channel scale, shift and
// additions are loaded once, into registers. kAmax merges each block's largest magnitude into amax_bits[n]
// with atomicMax on the float's bits (non-negative floats order as their bits, so the result is exact and
// independent of the order); kQuantize writes q (8 e4m3 bytes per vector) with the sample's scale from
// amax_bits[n], and that scale for each of the sample's hw pixels into pixel_scale.
template <typename T, ApplyMode kMode = ApplyMode::kStore>
__global__ void __launch_bounds__(kApplyThreads)
    gn_apply(const T* __restrict__ x, const T* __restrict__ add_c, const T* __restrict__ add_nc,
             const float* __restrict__ scale, const float* __restrict__ shift, T* __restrict__ y, int hw,
             int c, int nc_stride, bool silu, unsigned* __restrict__ amax_bits = nullptr,
             uint2* __restrict__ q = nullptr, float* __restrict__ pixel_scale = nullptr) {
  wait_for_prior_grids();
  constexpr int V = kVec<T>;
  const int n = blockIdx.y;
  const int per_row = c / V;
  const int first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
  const int vc = first % per_row, ch0 = vc * V, row_step = stride / per_row;
  const size_t sample = static_cast<size_t>(n) * hw * c;
  float amax = 0.f, inverse = 0.f;
  if constexpr (kMode == ApplyMode::kQuantize) {
    const float s = e4m3_scale(__uint_as_float(amax_bits[n]));
    inverse = e4m3_inverse(s);
    float* ps = pixel_scale + static_cast<size_t>(n) * hw;
    for (int p = first; p < hw; p += stride) ps[p] = s;
  }
  float a[V], b[V];
  const float* sc = scale + n * c + ch0;
  const float* sh = shift + n * c + ch0;
#pragma unroll
  for (int k = 0; k < V; k += 4) {
    const float4 aq = *reinterpret_cast<const float4*>(sc + k);
    const float4 bq = *reinterpret_cast<const float4*>(sh + k);
    a[k] = aq.x, a[k + 1] = aq.y, a[k + 2] = aq.z, a[k + 3] = aq.w;
    b[k] = bq.x, b[k + 1] = bq.y, b[k + 2] = bq.z, b[k + 3] = bq.w;
  }
  PreAdd<T> pre[V];
#pragma unroll
  for (int k = 0; k < V; ++k) pre[k] = PreAdd<T>(add_c, add_nc, n, ch0 + k, nc_stride);
#pragma unroll kApplyVectors
  for (int r = first / per_row; r < hw; r += row_step) {
    const size_t i = static_cast<size_t>(r) * per_row + vc;  // the vector's index in the sample
    const uint4 in = *reinterpret_cast<const uint4*>(x + sample + i * V);
    const T* v = reinterpret_cast<const T*>(&in);
    uint4 out;
    T* o = reinterpret_cast<T*>(&out);
    float f[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float t = normalise(pre[k](to_float(v[k])), a[k], b[k]);
      if (silu) {
        t = round_to<T>(t);  // PyTorch stores the GroupNorm output before SiLU reads it
        t = gn_silu(t);
      }
      o[k] = from_float<T>(t);
      f[k] = to_float(o[k]);
      if constexpr (kMode == ApplyMode::kAmax) amax = fmaxf(amax, fabsf(f[k]));
    }
    if constexpr (kMode == ApplyMode::kStore) *reinterpret_cast<uint4*>(y + sample + i * V) = out;
    if constexpr (kMode == ApplyMode::kQuantize) {
      static_assert(V == 8, "e4m3 output for 16-bit types only");
      q[sample / V + i] = e4m3x8(f, inverse);
    }
  }
  if constexpr (kMode == ApplyMode::kAmax) {
    amax = warp_max(amax);
    __shared__ float warps[kApplyThreads / 32];
    if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = amax;
    __syncthreads();
    if (threadIdx.x < 32) {
      amax = threadIdx.x < blockDim.x / 32 ? warps[threadIdx.x] : 0.f;
      amax = warp_max(amax);
      if (threadIdx.x == 0) atomicMax(amax_bits + n, __float_as_uint(amax));
    }
  }
}

template <typename T>
__global__ void bias_residual(const T* x, const T* __restrict__ bias, const T* __restrict__ res,
                              const T* __restrict__ res_bias, T* out, int64_t vectors, int c) {
  wait_for_prior_grids();
  constexpr int V = kVec<T>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch0 = static_cast<int>((i * V) % c);
    uint4 xv = *reinterpret_cast<const uint4*>(x + i * V);
    uint4 rv = make_uint4(0, 0, 0, 0);
    if (res != nullptr) rv = *reinterpret_cast<const uint4*>(res + i * V);
    uint4 bv = *reinterpret_cast<const uint4*>(bias + ch0);
    uint4 rbv = make_uint4(0, 0, 0, 0);
    if (res_bias != nullptr) rbv = *reinterpret_cast<const uint4*>(res_bias + ch0);
    const T* xe = reinterpret_cast<const T*>(&xv);
    const T* re = reinterpret_cast<const T*>(&rv);
    const T* be = reinterpret_cast<const T*>(&bv);
    const T* rbe = reinterpret_cast<const T*>(&rbv);
    uint4 ov;
    T* o = reinterpret_cast<T*>(&ov);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (res == nullptr) {
        o[k] = from_float<T>(to_float(xe[k]) + to_float(be[k]));
        continue;
      }
      const float r = res_bias != nullptr ? round_to<T>(to_float(re[k]) + to_float(rbe[k])) : to_float(re[k]);
      o[k] = from_float<T>(r + round_to<T>(to_float(xe[k]) + to_float(be[k])));
    }
    *reinterpret_cast<uint4*>(out + i * V) = ov;
  }
}

// The statistics (gn_stats, gn_finalize) into workspace; then the apply pass of kMode: with kQuantize (the
// e4m3 output) the statistics also bound each sample's largest output magnitude into amax_bits, or, with
// `bound` false, a kAmax pass finds it first.
template <typename T, ApplyMode kMode>
cudaError_t launch_gn(const GroupNormArgs& a, void* workspace, cudaStream_t stream,
                      unsigned* amax_bits = nullptr, void* q = nullptr, float* pixel_scale = nullptr,
                      bool bound = false) {
  if (a.n <= 0 || a.hw <= 0) return cudaSuccess;
  if (a.groups <= 0 || a.c % a.groups != 0 || (a.c / a.groups) % 2 != 0 || a.c % 8 != 0 ||
      a.c / a.groups / 2 > 256 || !aligned16(a.x) || !aligned16(a.y) || !aligned16(workspace) ||
      a.hw * a.c > (int64_t{1} << 30) || a.n > 65535 || (a.add_nc_stride != 0 && a.add_nc_stride < a.c) ||
      a.n * std::max(a.add_nc_stride, a.c) > (int64_t{1} << 30))
    return cudaErrorInvalidValue;
  const Layout l = layout_for(a.hw, a.c, a.groups);
  if (l.bx * l.by < 32) return cudaErrorInvalidValue;
  float* partial = static_cast<float*>(workspace);
  float* scale = partial + ((a.n * l.chunks * a.groups * kPartial + 3) / 4) * 4;  // keep 16-byte alignment
  float* shift = scale + a.n * a.c;
  const T* x = static_cast<const T*>(a.x);
  const T* add_c = static_cast<const T*>(a.add_c);
  const T* add_nc = static_cast<const T*>(a.add_nc);
  const int hw = static_cast<int>(a.hw), c = static_cast<int>(a.c), groups = static_cast<int>(a.groups);
  const int nc_stride = static_cast<int>(a.add_nc_stride == 0 ? a.c : a.add_nc_stride);

  const dim3 sgrid(l.slices, l.chunks, static_cast<unsigned>(a.n)), sblock(l.bx, l.by);
  const size_t shm = sizeof(float) * (bound ? kPartial : 3) * l.bx * l.by;
  launch_kernel(bound ? gn_stats<T, true> : gn_stats<T, false>, sgrid, sblock, shm, stream, x, add_c, add_nc,
                partial, hw, c, nc_stride, groups, l.pairs_per_group, l.rows_per_chunk, amax_bits);
  const auto finalize = l.chunks <= 32 * (kBlocksPerSample / 32) ? gn_finalize<T, kBlocksPerSample / 32>
                                                                 : gn_finalize<T, kMaxBlocksPerSample / 32>;
  launch_kernel(finalize, dim3(static_cast<unsigned>(groups), static_cast<unsigned>(a.n)), 32, 0, stream,
                partial, static_cast<const T*>(a.gamma), static_cast<const T*>(a.beta), scale, shift,
                l.chunks, c, groups, a.eps, a.silu, bound ? amax_bits : nullptr);
  const int threads = kApplyThreads;
  const int64_t vectors = a.hw * (a.c / kVec<T>);
  // Blocks per sample: about kApplyVectors vectors per thread (loads in flight: the row loop is unrolled that
  // far), up to 1024 blocks, rounded to a multiple of `whole` (the fewest blocks whose threads cover whole
  // rows), so that each thread's channels stay the same.
  const int per_row = static_cast<int>(a.c / kVec<T>);
  const int whole = per_row / std::gcd(per_row, threads);
  const int64_t per_block = int64_t{threads} * kApplyVectors;
  int blocks = static_cast<int>(std::min<int64_t>((vectors + per_block - 1) / per_block, 1024));
  blocks = std::max(whole, blocks / whole * whole);
  const dim3 grid(blocks, static_cast<unsigned>(a.n));
  if constexpr (kMode == ApplyMode::kStore) {
    launch_kernel(gn_apply<T>, grid, threads, 0, stream, x, add_c, add_nc, scale, shift, static_cast<T*>(a.y),
                  hw, c, nc_stride, a.silu, nullptr, nullptr, nullptr);
  } else {
    if (!bound)
      launch_kernel(gn_apply<T, ApplyMode::kAmax>, grid, threads, 0, stream, x, add_c, add_nc, scale, shift,
                    nullptr, hw, c, nc_stride, a.silu, amax_bits, nullptr, nullptr);
    launch_kernel(gn_apply<T, ApplyMode::kQuantize>, grid, threads, 0, stream, x, add_c, add_nc, scale, shift,
                  nullptr, hw, c, nc_stride, a.silu, amax_bits, static_cast<uint2*>(q), pixel_scale);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bias_res(const void* x, const void* bias, const void* res, const void* res_bias, void* out,
                            int64_t count, int64_t c, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  if (c % 8 != 0 || count % c != 0 || bias == nullptr || !aligned16(x) || !aligned16(bias) ||
      !aligned16(res) || !aligned16(out) || !aligned16(res_bias))
    return cudaErrorInvalidValue;
  const int threads = 256;
  const int64_t vectors = count / kVec<T>;
  const int blocks = static_cast<int>(std::min<int64_t>((vectors + threads - 1) / threads, 4096));
  launch_kernel(bias_residual<T>, blocks, threads, 0, stream, static_cast<const T*>(x),
                static_cast<const T*>(bias), static_cast<const T*>(res), static_cast<const T*>(res_bias),
                static_cast<T*>(out), vectors, static_cast<int>(c));
  return cudaGetLastError();
}

}  // namespace

size_t group_norm_workspace_bytes(int64_t n, int64_t hw, int64_t c, int64_t groups) {
  if (groups <= 0 || c % groups != 0 || (c / groups) < 2) return 0;
  const Layout l = layout_for(hw, c, groups);
  const int64_t partial = (n * l.chunks * groups * kPartial + 3) / 4 * 4;
  return static_cast<size_t>(partial + 2 * n * c) * sizeof(float);
}

cudaError_t launch_group_norm_f16(const GroupNormArgs& args, void* workspace, cudaStream_t stream) {
  return launch_gn<__half, ApplyMode::kStore>(args, workspace, stream);
}
cudaError_t launch_group_norm_bf16(const GroupNormArgs& args, void* workspace, cudaStream_t stream) {
  return launch_gn<__nv_bfloat16, ApplyMode::kStore>(args, workspace, stream);
}
cudaError_t launch_group_norm_f32(const GroupNormArgs& args, void* workspace, cudaStream_t stream) {
  return launch_gn<float, ApplyMode::kStore>(args, workspace, stream);
}
cudaError_t launch_group_norm_e4m3(int dtype, const GroupNormArgs& args, void* workspace, void* q,
                                   float* pixel_scale, unsigned* amax_bits, bool bound, cudaStream_t stream) {
  if (q == nullptr || pixel_scale == nullptr || amax_bits == nullptr || args.y != nullptr ||
      reinterpret_cast<uintptr_t>(q) % 8 != 0)
    return cudaErrorInvalidValue;
  return with_16bit_type(dtype, [&](auto t) {
    return launch_gn<decltype(t), ApplyMode::kQuantize>(args, workspace, stream, amax_bits, q, pixel_scale,
                                                        bound);
  });
}
cudaError_t launch_bias_residual_f32(const void* x, const void* bias, const void* residual,
                                     const void* residual_bias, void* out, int64_t count, int64_t c,
                                     cudaStream_t stream) {
  return launch_bias_res<float>(x, bias, residual, residual_bias, out, count, c, stream);
}
cudaError_t launch_bias_residual_f16(const void* x, const void* bias, const void* residual,
                                     const void* residual_bias, void* out, int64_t count, int64_t c,
                                     cudaStream_t stream) {
  return launch_bias_res<__half>(x, bias, residual, residual_bias, out, count, c, stream);
}
cudaError_t launch_bias_residual_bf16(const void* x, const void* bias, const void* residual,
                                      const void* residual_bias, void* out, int64_t count, int64_t c,
                                      cudaStream_t stream) {
  return launch_bias_res<__nv_bfloat16>(x, bias, residual, residual_bias, out, count, c, stream);
}

}  // namespace sdxlb::kernels
