// The memset nodes of a captured CUDA graph rewritten as kernel nodes. cuBLASLt (its dynamic tile scheduler's
// counters) and cuDNN (its attention's workspace) zero memory with memsets; in the UNet's graph the GPU sits
// idle for a few microseconds around each memset node (session 25's profile: 3.5 µs after each, 154 of them
// per fp16 call then; 94 after session 27's fused projections), where one kernel node follows another within
// a microsecond. The kernels write the same bytes (pipeline/nn/kernels/fill_kernel.h), so the results are the
// same bits. On an H100 (session 28) the one-image fp16 call's idle time went from 0.88 to 0.50 ms and the
// call from 29.40 to 29.17 ms.
#pragma once

#include <cuda_runtime_api.h>

namespace at::cuda {
struct CUDAGraph;
}

namespace sdxlb {

/// Replaces every memset node of `graph` (captured, not yet instantiated) by a kernel node with the same
/// dependencies and dependents that writes the same bytes. Memsets in a row (each the only dependent of the
/// one before, and it its only dependency) whose regions do not overlap become one kernel node, up to
/// kernels::kMaxFillsPerNode of them, unless SDXLB_DISABLE_FUSION lists "fillchains" (cuDNN's FP8 attention
/// zeroes three regions that way: 210 memsets per FP8 UNet call). Returns how many memset nodes it replaced;
/// a memset it cannot express stays. Throws std::runtime_error, naming the call, on a CUDA error (the graph
/// may then be half rewritten: instantiate none of it).
int memsets_to_kernels(cudaGraph_t graph);

/// Instantiates `graph`, made with keep_graph = true and captured, after memsets_to_kernels on it unless
/// SDXLB_DISABLE_FUSION lists "memsetkernels". Returns what memsets_to_kernels replaced; errors as
/// c10::Error.
int instantiate_graph(at::cuda::CUDAGraph& graph);

}  // namespace sdxlb
