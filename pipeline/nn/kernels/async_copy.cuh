// Asynchronous 16-byte copies from global to shared memory (sm_80 and later): each thread issues all of its
// copies before waiting once, so a block's loads are in flight together instead of one round trip per load.
// Device code only.
#pragma once

#include <cstdint>

namespace sdxlb::kernels {

/// Starts copying 16 bytes from src (global) to dst (shared); with valid false, writes 16 zero bytes to dst
/// and reads nothing (src must still be a valid address). Both 16-byte aligned.
__device__ __forceinline__ void copy16_async(void* dst, const void* src, bool valid = true) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}

/// Waits for this thread's copies started by copy16_async (a __syncthreads() after it publishes them all).
__device__ __forceinline__ void wait_async_copies() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

}  // namespace sdxlb::kernels
