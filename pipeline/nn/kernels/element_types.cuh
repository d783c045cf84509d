// Conversions between the storage types of the fused kernels (fp16, bf16; float32 where a kernel takes it)
// and float32, shared by the .cu files of pipeline/kernels/ (device code), and the launchers' check that a
// pointer takes 16-byte vectors (host code).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Whether p may be read and written as 16-byte vectors (null counts as aligned: an absent operand).
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
__device__ __forceinline__ float to_float(float x) {
  return x;
}

/// Round-to-nearest-even conversion to the storage type, as PyTorch stores a float result.
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
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}

/// Calls f(T{}) with T the 16-bit type a launcher's dtype code names (1 __half, 2 __nv_bfloat16), returning
/// its result; cudaErrorInvalidValue for another code. Host code.
template <typename F>
cudaError_t with_16bit_type(int dtype, F&& f) {
  switch (dtype) {
    case 1:
      return f(__half{});
    case 2:
      return f(__nv_bfloat16{});
    default:
      return cudaErrorInvalidValue;
  }
}

/// The value a float takes once stored in T (what PyTorch's ops do between two kernels).
template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

}  // namespace sdxlb::kernels
