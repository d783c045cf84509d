#include "pipeline/nn/kernels/short_attention_kernel.h"

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/async_copy.cuh"
#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

constexpr int kD = static_cast<int>(kShortAttentionHeadDim);
constexpr int kWarps = 8;
constexpr int kRowsPerWarp = 16;                 // one m16 tile of queries per warp
constexpr int kQueries = kWarps * kRowsPerWarp;  // per block
constexpr int kPitch = kD + 8;                   // 144-byte shared rows: ldmatrix without bank conflicts
constexpr int kChunksPerRow = kD * 2 / 16;       // 16-byte pieces of a 64-wide 16-bit row

// Tensor-core products of 16-bit operands with float32 accumulation (sm_80 and later): c += a · b over one
// m16n8k16 tile, operands in the register layouts of the PTX ISA's mma.m16n8k16.
template <typename T>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* p) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* p) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// Two floats rounded to nearest even into one register of two 16-bit values (x in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float x, float y) {
  const __half2 h = __floats2half2_rn(x, y);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float x, float y) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Starts copying `rows` rows of 64 16-bit values from global memory (row r at src + r * stride) into shared
// rows kPitch apart, zeros past `valid` (wait_async_copies, then __syncthreads, before reading them).
template <typename T, int kRows>
__device__ __forceinline__ void load_rows(T* dst, const T* src, int64_t stride, int valid) {
#pragma unroll
  for (int c = threadIdx.x; c < kRows * kChunksPerRow; c += kWarps * 32) {
    const int r = c / kChunksPerRow, piece = c % kChunksPerRow;
    copy16_async(dst + r * kPitch + piece * 8, r < valid ? src + r * stride + piece * 8 : src, r < valid);
  }
}

// One block: kQueries queries of one (batch, head) against all its keys (kKeys = the key count rounded up to
// 16; the keys past `keys` are zeros and get no weight). Each warp takes 16 queries through
// S = Q Kᵀ (kKeys / 8 tiles m16n8), a row softmax in registers, O = P V (P rounded to T), O / rowsum.
// kE4m3: O / rowsum as e4m3 at the batch item's scale out_scale[b] (bytes at o), and each row's scale into
// row_scale (by the head-0 blocks); else rounded to T.
template <typename T, int kKeys, bool kE4m3>
__global__ void __launch_bounds__(kWarps * 32)
    short_attention(const T* __restrict__ q, HeadStrides qs, const T* __restrict__ k, HeadStrides ks,
                    const T* __restrict__ v, HeadStrides vs, void* __restrict__ o_out, int heads, int queries,
                    int keys, float scale_log2, const float* __restrict__ out_scale,
                    float* __restrict__ row_scale) {
  wait_for_prior_grids();
  __shared__ __align__(16) T sq[kQueries * kPitch];  // the queries, then each warp's output rows
  __shared__ __align__(16) T sk[kKeys * kPitch];
  __shared__ __align__(16) T sv[kKeys * kPitch];
  const int b = blockIdx.z, h = blockIdx.y, n0 = blockIdx.x * kQueries;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  load_rows<T, kQueries>(sq, q + b * qs.batch + h * qs.head + static_cast<int64_t>(n0) * qs.token, qs.token,
                         queries - n0);
  load_rows<T, kKeys>(sk, k + b * ks.batch + h * ks.head, ks.token, keys);
  load_rows<T, kKeys>(sv, v + b * vs.batch + h * vs.head, vs.token, keys);
  wait_async_copies();
  __syncthreads();

  T* rows = sq + warp * kRowsPerWarp * kPitch;
  uint32_t qa[kD / 16][4];  // A operands: the warp's 16 queries, 16 dimensions per product
#pragma unroll
  for (int t = 0; t < kD / 16; ++t)
    ldmatrix_x4(qa[t], rows + (lane % 16) * kPitch + t * 16 + (lane / 16) * 8);

  constexpr int kTiles = kKeys / 8;
  float s[kTiles][4];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int j = 0; j < kTiles; j += 2) {
#pragma unroll
    for (int t = 0; t < kD / 16; ++t) {
      // B operands of key tiles j and j + 1 (keys as columns): rows of K, 8 dimensions per matrix.
      uint32_t kb[4];
      ldmatrix_x4(kb,
                  sk + (j * 8 + (lane & 7) + ((lane >> 4) << 3)) * kPitch + t * 16 + ((lane >> 3) & 1) * 8);
      mma_16816<T>(s[j], qa[t], kb[0], kb[1]);
      mma_16816<T>(s[j + 1], qa[t], kb[2], kb[3]);
    }
  }

  // This thread holds rows g and g + 8 of the warp's tile, columns 2 (lane % 4) + {0, 1} of each key tile.
  const int quad = lane & 3;
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (j * 8 + 2 * quad + e >= keys) s[j][e] = s[j][e + 2] = -INFINITY;
      m0 = fmaxf(m0, s[j][e]);
      m1 = fmaxf(m1, s[j][e + 2]);
    }
  }
#pragma unroll
  for (int mask = 1; mask <= 2; mask <<= 1) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, mask));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, mask));
  }
  const float b0 = m0 * scale_log2, b1 = m1 * scale_log2;
  float l0 = 0.f, l1 = 0.f;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[j][e] = exp2f(fmaf(s[j][e], scale_log2, -b0));
      s[j][e + 2] = exp2f(fmaf(s[j][e + 2], scale_log2, -b1));
      l0 += s[j][e];
      l1 += s[j][e + 2];
    }
  }
#pragma unroll
  for (int mask = 1; mask <= 2; mask <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, mask);
    l1 += __shfl_xor_sync(0xffffffffu, l1, mask);
  }

  float acc[kD / 8][4];
#pragma unroll
  for (int d = 0; d < kD / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
#pragma unroll
  for (int t = 0; t < kKeys / 16; ++t) {
    // A operand: the probabilities of keys 16t..16t+15, from the accumulators of key tiles 2t and 2t + 1.
    const uint32_t pa[4] = {pack2<T>(s[2 * t][0], s[2 * t][1]), pack2<T>(s[2 * t][2], s[2 * t][3]),
                            pack2<T>(s[2 * t + 1][0], s[2 * t + 1][1]),
                            pack2<T>(s[2 * t + 1][2], s[2 * t + 1][3])};
#pragma unroll
    for (int d = 0; d < kD / 8; d += 2) {
      // B operands of dimension tiles d and d + 1: V's rows (keys) transposed by ldmatrix.
      uint32_t vb[4];
      ldmatrix_x4_trans(
          vb, sv + (t * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + d * 8 + (lane >> 4) * 8);
      mma_16816<T>(acc[d], pa, vb[0], vb[1]);
      mma_16816<T>(acc[d + 1], pa, vb[2], vb[3]);
    }
  }

  // The output rows, rounded to T (or e4m3), through the warp's own shared rows (its queries are in registers
  // now) so that the stores to global memory are whole 16-byte pieces.
  const float i0 = 1.f / l0, i1 = 1.f / l1;
  const int g = lane >> 2;
  const int first = n0 + warp * kRowsPerWarp;
  __syncwarp();
  if constexpr (kE4m3) {
    const float s_b = out_scale[b], inverse = e4m3_inverse(s_b);
    auto* rows8 = reinterpret_cast<uint8_t*>(rows);  // byte rows kPitch · 2 apart
#pragma unroll
    for (int d = 0; d < kD / 8; ++d) {
      *reinterpret_cast<uint16_t*>(rows8 + g * kPitch * 2 + d * 8 + 2 * quad) =
          static_cast<uint16_t>(to_e4m3x2(acc[d][0] * i0, acc[d][1] * i0, inverse));
      *reinterpret_cast<uint16_t*>(rows8 + (g + 8) * kPitch * 2 + d * 8 + 2 * quad) =
          static_cast<uint16_t>(to_e4m3x2(acc[d][2] * i1, acc[d][3] * i1, inverse));
    }
    __syncwarp();
    auto* o8 = static_cast<uint8_t*>(o_out);
    constexpr int kPieces = kD / 16;  // 16-byte pieces of a 64-byte e4m3 row
#pragma unroll
    for (int c = lane; c < kRowsPerWarp * kPieces; c += 32) {
      const int r = c / kPieces, piece = c % kPieces;
      if (first + r < queries) {
        uint8_t* dst = o8 + ((static_cast<int64_t>(b) * queries + first + r) * heads + h) * kD + piece * 16;
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(rows8 + r * kPitch * 2 + piece * 16);
      }
    }
    if (h == 0 && lane < kRowsPerWarp && first + lane < queries)
      row_scale[static_cast<int64_t>(b) * queries + first + lane] = s_b;
    return;
  }
  T* o = static_cast<T*>(o_out);
#pragma unroll
  for (int d = 0; d < kD / 8; ++d) {
    *reinterpret_cast<uint32_t*>(rows + g * kPitch + d * 8 + 2 * quad) =
        pack2<T>(acc[d][0] * i0, acc[d][1] * i0);
    *reinterpret_cast<uint32_t*>(rows + (g + 8) * kPitch + d * 8 + 2 * quad) =
        pack2<T>(acc[d][2] * i1, acc[d][3] * i1);
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < kRowsPerWarp * kChunksPerRow; c += 32) {
    const int r = c / kChunksPerRow, piece = c % kChunksPerRow;
    if (first + r < queries) {
      T* dst = o + ((static_cast<int64_t>(b) * queries + first + r) * heads + h) * kD + piece * 8;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(rows + r * kPitch + piece * 8);
    }
  }
}

bool strides_ok(const void* p, HeadStrides s) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && s.batch % 8 == 0 && s.head % 8 == 0 && s.token % 8 == 0;
}

template <typename T, int kKeys, bool kE4m3>
cudaError_t launch_for(const void* q, HeadStrides qs, const void* k, HeadStrides ks, const void* v,
                       HeadStrides vs, void* o, int64_t batch, int64_t heads, int64_t queries, int64_t keys,
                       float scale, const float* out_scale, float* row_scale, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((queries + kQueries - 1) / kQueries), static_cast<unsigned>(heads),
                  static_cast<unsigned>(batch));
  launch_kernel(short_attention<T, kKeys, kE4m3>, grid, kWarps * 32, 0, stream, static_cast<const T*>(q), qs,
                static_cast<const T*>(k), ks, static_cast<const T*>(v), vs, o, static_cast<int>(heads),
                static_cast<int>(queries), static_cast<int>(keys), scale * 1.4426950408889634f, out_scale,
                row_scale);
  return cudaGetLastError();
}

template <bool kE4m3>
cudaError_t launch(int dtype, const void* q, HeadStrides q_strides, const void* k, HeadStrides k_strides,
                   const void* v, HeadStrides v_strides, void* o, int64_t batch, int64_t heads,
                   int64_t queries, int64_t keys, float scale, const float* out_scale, float* row_scale,
                   cudaStream_t stream) {
  if (keys < 1 || keys > kShortAttentionMaxKeys || !(scale > 0.f) || batch > 65535 || heads > 65535 ||
      queries > 0x7fffffff || (queries + kQueries - 1) / kQueries > 0x7fffffff || !strides_ok(q, q_strides) ||
      !strides_ok(k, k_strides) || !strides_ok(v, v_strides) || reinterpret_cast<uintptr_t>(o) % 16 != 0 ||
      (kE4m3 && (out_scale == nullptr || row_scale == nullptr)))
    return cudaErrorInvalidValue;
  if (batch <= 0 || heads <= 0 || queries <= 0) return cudaSuccess;
  return with_16bit_type(dtype, [&](auto t) {
    using T = decltype(t);
    // The key count rounded up to 16: one instance per multiple of 16 up to kShortAttentionMaxKeys.
    using Launch =
        cudaError_t (*)(const void*, HeadStrides, const void*, HeadStrides, const void*, HeadStrides, void*,
                        int64_t, int64_t, int64_t, int64_t, float, const float*, float*, cudaStream_t);
    constexpr Launch kByKeyTiles[] = {launch_for<T, 16, kE4m3>, launch_for<T, 32, kE4m3>,
                                      launch_for<T, 48, kE4m3>, launch_for<T, 64, kE4m3>,
                                      launch_for<T, 80, kE4m3>, launch_for<T, 96, kE4m3>};
    static_assert(sizeof(kByKeyTiles) / sizeof(kByKeyTiles[0]) * 16 == kShortAttentionMaxKeys);
    return kByKeyTiles[(keys + 15) / 16 - 1](q, q_strides, k, k_strides, v, v_strides, o, batch, heads,
                                             queries, keys, scale, out_scale, row_scale, stream);
  });
}

}  // namespace

cudaError_t launch_short_attention(int dtype, const void* q, HeadStrides q_strides, const void* k,
                                   HeadStrides k_strides, const void* v, HeadStrides v_strides, void* o,
                                   int64_t batch, int64_t heads, int64_t queries, int64_t keys, float scale,
                                   cudaStream_t stream) {
  return launch<false>(dtype, q, q_strides, k, k_strides, v, v_strides, o, batch, heads, queries, keys, scale,
                       nullptr, nullptr, stream);
}

cudaError_t launch_short_attention_e4m3(int dtype, const void* q, HeadStrides q_strides, const void* k,
                                        HeadStrides k_strides, const void* v, HeadStrides v_strides, void* o,
                                        const float* out_scale, float* row_scale, int64_t batch,
                                        int64_t heads, int64_t queries, int64_t keys, float scale,
                                        cudaStream_t stream) {
  return launch<true>(dtype, q, q_strides, k, k_strides, v, v_strides, o, batch, heads, queries, keys, scale,
                      out_scale, row_scale, stream);
}

}  // namespace sdxlb::kernels
