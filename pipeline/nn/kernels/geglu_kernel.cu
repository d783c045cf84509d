#include "pipeline/nn/kernels/geglu_kernel.h"

#include <array>
#include <atomic>
#include <mutex>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "pipeline/nn/kernels/async_copy.cuh"
#include "pipeline/nn/kernels/e4m3.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/gelu.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

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

// GELU of every 16-bit value, as gelu() rounds it, indexed by the input's bits: GEGLU's kernel is bound by
// erf's arithmetic (session 17's probe: without erf it ran at a copy's speed), and a 16-bit input has only
// 65536 values. Filled on the GPU by the same gelu(), so a lookup gives gelu()'s bits.
constexpr int kTableSize = 1 << 16;
__device__ uint16_t gelu_table_f16[kTableSize];
__device__ uint16_t gelu_table_bf16[kTableSize];

template <typename T>
__device__ __forceinline__ uint16_t* gelu_table() {
  if constexpr (std::is_same_v<T, __half>)
    return gelu_table_f16;
  else
    return gelu_table_bf16;
}

template <typename T>
__global__ void fill_gelu_table() {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kTableSize) return;
  const uint16_t bits = static_cast<uint16_t>(i);
  const T g = gelu(*reinterpret_cast<const T*>(&bits));
  gelu_table<T>()[i] = *reinterpret_cast<const uint16_t*>(&g);
}

// The table of T copied into this block's shared memory (kTableSize * 2 bytes) by its `threads` threads. The
// table is written once, outside any CUDA graph, and waited for, so a kernel may copy it before
// wait_for_prior_grids(): while the kernel ahead on the stream finishes.
template <typename T, int threads>
__device__ __forceinline__ const uint16_t* load_gelu_table(uint4* shared) {
  const uint4* table = reinterpret_cast<const uint4*>(gelu_table<T>());
#pragma unroll
  for (int k = 0; k < kTableSize * 2 / 16 / threads; ++k)
    copy16_async(shared + threadIdx.x + k * threads, table + threadIdx.x + k * threads);
  wait_async_copies();
  __syncthreads();
  return reinterpret_cast<const uint16_t*>(shared);
}

// h * gelu(g) of 8 T pairs with gelu looked up, rounded as geglu_vec8 rounds them.
template <typename T>
__device__ __forceinline__ uint4 geglu8_lookup(const uint4& hv, const uint4& gv, const uint16_t* lookup) {
  const T* h = reinterpret_cast<const T*>(&hv);
  const uint16_t* g = reinterpret_cast<const uint16_t*>(&gv);
  uint4 ov;
  T* o = reinterpret_cast<T*>(&ov);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint16_t gl = lookup[g[k]];
    o[k] = from_float<T>(to_float(h[k]) * to_float(*reinterpret_cast<const T*>(&gl)));
  }
  return ov;
}

// geglu_vec8 with the GELU looked up: one block per SM holds the table in shared memory (128 KiB) and strides
// over the 8-element groups, two per iteration with their loads issued first.
constexpr int kTableThreads = 1024;

template <typename T>
__global__ void __launch_bounds__(kTableThreads)
    geglu_table_vec8(const T* __restrict__ in, T* __restrict__ out, uint32_t groups,
                     uint32_t groups_per_row) {
  extern __shared__ uint4 table_shared[];
  const uint16_t* lookup = load_gelu_table<T, kTableThreads>(table_shared);
  wait_for_prior_grids();
  const uint32_t f = groups_per_row * 8, stride = gridDim.x * kTableThreads;
  for (uint32_t i = blockIdx.x * kTableThreads + threadIdx.x; i < groups; i += 2 * stride) {
    uint4 hv[2], gv[2];
    uint32_t at[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const uint32_t j = i + u * stride;
      if (j < groups) {
        const uint32_t r = j / groups_per_row, c = (j - r * groups_per_row) * 8;
        const T* row = in + static_cast<uint64_t>(r) * 2 * f;
        hv[u] = __ldcs(reinterpret_cast<const uint4*>(row + c));
        gv[u] = __ldcs(reinterpret_cast<const uint4*>(row + f + c));
        at[u] = r * f + c;
      }
    }
#pragma unroll
    for (int u = 0; u < 2; ++u)
      if (i + u * stride < groups)
        *reinterpret_cast<uint4*>(out + at[u]) = geglu8_lookup<T>(hv[u], gv[u], lookup);
  }
}

// The table GEGLU with each output row quantised to e4m3 (geglu_e4m3_rows's bits): one block per SM holding
// the table, its threads in kRowGroups groups of kRowThreads, each group one row at a time. A thread keeps
// its up to kVecs 8-element outputs, rounded to T, in registers; the group's largest magnitude goes through
// shared memory (two buffers, alternating by row, so one barrier per row suffices) and a named barrier.
constexpr int kRowThreads = 128;
constexpr int kRowGroups = kTableThreads / kRowThreads;

__device__ __forceinline__ void group_barrier(int group) {
  asm volatile("bar.sync %0, %1;" ::"r"(group + 1), "r"(kRowThreads) : "memory");
}

template <typename T, int kVecs>
__global__ void __launch_bounds__(kTableThreads)
    geglu_table_e4m3_rows(const T* __restrict__ in, uint2* __restrict__ q, float* __restrict__ scale,
                          uint32_t rows, uint32_t f) {
  extern __shared__ uint4 table_shared[];
  __shared__ float warp_amax[2][kRowGroups][kRowThreads / 32];
  const uint16_t* lookup = load_gelu_table<T, kTableThreads>(table_shared);
  wait_for_prior_grids();
  const int group = threadIdx.x / kRowThreads, lane = threadIdx.x % kRowThreads;
  const uint32_t vecs = f / 8;
  int parity = 0;
  for (uint32_t r = blockIdx.x * kRowGroups + group; r < rows; r += gridDim.x * kRowGroups, parity ^= 1) {
    const T* row = in + static_cast<uint64_t>(r) * 2 * f;
    uint4 hv[kVecs], gv[kVecs];
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      const uint32_t i = lane + kRowThreads * j;
      if (i < vecs) {
        hv[j] = __ldcs(reinterpret_cast<const uint4*>(row + 8 * i));
        gv[j] = __ldcs(reinterpret_cast<const uint4*>(row + f + 8 * i));
      }
    }
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      if (lane + kRowThreads * j < vecs) {
        hv[j] = geglu8_lookup<T>(hv[j], gv[j], lookup);
        amax = fmaxf(amax, amax8<T>(hv[j]));
      }
    }
    amax = warp_max(amax);
    if (lane % 32 == 0) warp_amax[parity][group][lane / 32] = amax;
    group_barrier(group);
#pragma unroll
    for (int w = 0; w < kRowThreads / 32; ++w) amax = fmaxf(amax, warp_amax[parity][group][w]);
    const float s = e4m3_scale(amax);
    if (lane == 0) scale[r] = s;
    const float inverse = e4m3_inverse(s);
    uint2* qr = q + static_cast<uint64_t>(r) * vecs;
#pragma unroll
    for (int j = 0; j < kVecs; ++j) {
      const uint32_t i = lane + kRowThreads * j;
      if (i < vecs) qr[i] = e4m3x8<T>(hv[j], inverse);
    }
  }
}

// The largest row geglu_table_e4m3_rows takes, and its instance for a row of `vecs` 8-element groups (the
// smallest that holds the row: registers decide how many rows are in flight).
constexpr int kTableMaxVecs = 5;

template <typename T>
auto table_e4m3_instance(int64_t vecs) {
  return vecs <= 3 * kRowThreads ? geglu_table_e4m3_rows<T, 3> : geglu_table_e4m3_rows<T, kTableMaxVecs>;
}

// Fills the table of T on the current device once (outside stream capture, on `stream`, waited for) and
// returns the blocks the table kernels run as (the SM count); 0 where they cannot run (capture before the
// table exists, less shared memory than they need).
template <typename T>
int table_blocks(cudaStream_t stream) {
  static std::mutex mutex;                           // taken only until a device's table exists (or cannot)
  static std::array<std::atomic<int>, 64> blocks{};  // per device: 0 not yet, -1 cannot run, else SMs
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 0;
  if (const int known = blocks[device].load(std::memory_order_acquire); known != 0)
    return known > 0 ? known : 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (const int known = blocks[device].load(std::memory_order_relaxed); known != 0)
    return known > 0 ? known : 0;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone)
    return 0;  // the erf kernels meanwhile: the same bits
  const auto table_shared = [](auto kernel) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kTableSize * 2);
  };
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      table_shared(geglu_table_vec8<T>) != cudaSuccess ||
      table_shared(table_e4m3_instance<T>(1)) != cudaSuccess ||
      table_shared(table_e4m3_instance<T>(kTableMaxVecs * kRowThreads)) != cudaSuccess) {
    (void)cudaGetLastError();
    blocks[device].store(-1, std::memory_order_release);
    return 0;
  }
  fill_gelu_table<T><<<kTableSize / 256, 256, 0, stream>>>();
  if (cudaGetLastError() != cudaSuccess || cudaStreamSynchronize(stream) != cudaSuccess) return 0;
  blocks[device].store(sms, std::memory_order_release);
  return sms;
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
cudaError_t launch_table(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  if (f % 8 != 0 || reinterpret_cast<uintptr_t>(in) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0 ||
      rows * 2 * f >= (int64_t{1} << 32))
    return cudaErrorInvalidValue;
  if (rows <= 0 || f <= 0) return cudaSuccess;
  const int blocks = table_blocks<T>(stream);
  if (blocks == 0) return cudaErrorInvalidValue;
  launch_kernel(geglu_table_vec8<T>, blocks, kTableThreads, kTableSize * 2, stream, static_cast<const T*>(in),
                static_cast<T*>(out), static_cast<uint32_t>(rows * (f / 8)), static_cast<uint32_t>(f / 8));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_table_e4m3(const void* in, void* q, float* scale, int64_t rows, int64_t f,
                              cudaStream_t stream) {
  if (f % 8 != 0 || f > 8 * kRowThreads * kTableMaxVecs || reinterpret_cast<uintptr_t>(in) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(q) % 8 != 0 || rows * 2 * f >= (int64_t{1} << 32))
    return cudaErrorInvalidValue;
  if (rows <= 0 || f <= 0) return cudaSuccess;
  const int blocks = table_blocks<T>(stream);
  if (blocks == 0) return cudaErrorInvalidValue;
  launch_kernel(table_e4m3_instance<T>(f / 8), blocks, kTableThreads, kTableSize * 2, stream,
                static_cast<const T*>(in), static_cast<uint2*>(q), scale, static_cast<uint32_t>(rows),
                static_cast<uint32_t>(f));
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

cudaError_t launch_geglu_table_e4m3(int dtype, const void* in, void* q, float* scale, int64_t rows, int64_t f,
                                    cudaStream_t stream) {
  return with_16bit_type(
      dtype, [&](auto t) { return launch_table_e4m3<decltype(t)>(in, q, scale, rows, f, stream); });
}

cudaError_t launch_geglu_table(int dtype, const void* in, void* out, int64_t rows, int64_t f,
                               cudaStream_t stream) {
  return with_16bit_type(dtype, [&](auto t) { return launch_table<decltype(t)>(in, out, rows, f, stream); });
}

cudaError_t launch_geglu_f16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  return launch<__half>(in, out, rows, f, stream);
}
cudaError_t launch_geglu_bf16(const void* in, void* out, int64_t rows, int64_t f, cudaStream_t stream) {
  return launch<__nv_bfloat16>(in, out, rows, f, stream);
}

}  // namespace sdxlb::kernels
