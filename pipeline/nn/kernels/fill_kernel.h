// A CUDA graph's memset node as a kernel node (pipeline/nn/kernels/fill_kernel.cu): libraries (cuBLASLt's
// dynamic tile scheduler, cuDNN's attention) zero their workspaces with memsets, and in the UNet's graph each
// memset node costs a few microseconds of idle GPU around it, more than a kernel node between kernels does.
// Raw CUDA runtime types only; pipeline/runtime/graph_memsets.cpp rewires the graph.
#pragma once

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// Adds to `graph`, without dependencies, a kernel node that writes what a memset node with `params` writes:
/// params.value's low elementSize bytes into each of params.height rows of params.width elements, rows
/// params.pitch bytes apart, the same bytes. cudaErrorInvalidValue, adding nothing, for an element size other
/// than 1, 2 or 4, an empty memset, or a pitch shorter than a row.
cudaError_t add_fill_node(cudaGraph_t graph, const cudaMemsetParams& params, cudaGraphNode_t* node);

/// The most memsets one node of add_fills_node writes.
constexpr int kMaxFillsPerNode = 4;

/// Adds to `graph`, without dependencies, one kernel node that writes what the `count` memset nodes with
/// `params` write (2 to kMaxFillsPerNode of them), in one launch instead of one each: the FP8 attention's
/// cuDNN graph zeroes three regions with three memsets in a row. The kernel writes the regions in no order,
/// so they must not overlap. cudaErrorInvalidValue, adding nothing, for a count out of range, two regions
/// that share a byte, or a memset that add_fill_node refuses.
cudaError_t add_fills_node(cudaGraph_t graph, const cudaMemsetParams* params, int count,
                           cudaGraphNode_t* node);

}  // namespace sdxlb::kernels
