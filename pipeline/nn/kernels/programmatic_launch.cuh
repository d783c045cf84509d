// Programmatic dependent launch (Hopper and later, CUDA 12.3+): our kernels are launched so that the GPU may
// start them while the kernel before them on the stream finishes, and each of them waits, as its first
// statement, until that kernel has completed and its writes are visible. What overlaps is the launch and the
// blocks' arrival on the SMs, never any memory access, so results are the same bits with or without it. In a
// CUDA graph the capture records the dependency as a programmatic edge.
//
// Every kernel launched through launch_kernel() must begin with wait_for_prior_grids(); a kernel that touched
// memory before it would race with its predecessor. The one exception is memory nothing on a stream writes:
// the GEGLU kernels copy their GELU table (written once, outside any graph, and waited for) before it. Before
// sm_90, and where SDXLB_DISABLE_FUSION lists "pdl" or "all", the launch is a plain one.
#pragma once

#include <utility>

#include <cuda_runtime.h>

#include "pipeline/nn/kernels/programmatic_launch.h"

namespace sdxlb::kernels {

/// The first statement of every kernel launched by launch_kernel(): waits for the grids before it on the
/// stream to complete, then lets the next programmatically launched grid start arriving (its blocks wait in
/// turn). A no-op for a plain launch and before sm_90.
__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/// kernel<<<grid, block, shared, stream>>>(args...), programmatically where programmatic_launch_enabled().
/// Returns the launch's error.
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared,
                          cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  if (programmatic_launch_enabled()) {
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace sdxlb::kernels
