#include "pipeline/runtime/graph_memsets.h"

#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAGraph.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/kernels/fill_kernel.h"

namespace sdxlb {
namespace {

// CUDA 13 names the edge-data forms of these calls plainly; CUDA 12.3 to 12.9 call them _v2.
#if CUDART_VERSION >= 13000
constexpr auto kGetDependencies = cudaGraphNodeGetDependencies;
constexpr auto kGetDependents = cudaGraphNodeGetDependentNodes;
constexpr auto kAddDependencies = cudaGraphAddDependencies;
#else
constexpr auto kGetDependencies = cudaGraphNodeGetDependencies_v2;
constexpr auto kGetDependents = cudaGraphNodeGetDependentNodes_v2;
constexpr auto kAddDependencies = cudaGraphAddDependencies_v2;
#endif

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("rewriting the CUDA graph's memsets: ") + what + ": " +
                             cudaGetErrorString(e));
}

std::vector<cudaGraphNode_t> nodes_of(cudaGraph_t graph) {
  size_t n = 0;
  check(cudaGraphGetNodes(graph, nullptr, &n), "cudaGraphGetNodes");
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) check(cudaGraphGetNodes(graph, nodes.data(), &n), "cudaGraphGetNodes");
  nodes.resize(n);
  return nodes;
}

// The nodes on one side of `node`: its dependencies (before) or its dependents (after).
std::vector<cudaGraphNode_t> neighbours(cudaGraphNode_t node, bool before) {
  const auto get = before ? kGetDependencies : kGetDependents;
  size_t n = 0;
  check(get(node, nullptr, nullptr, &n), "listing a memset node's edges");
  std::vector<cudaGraphNode_t> out(n);
  if (n > 0) check(get(node, out.data(), nullptr, &n), "listing a memset node's edges");
  out.resize(n);
  return out;
}

}  // namespace

int memsets_to_kernels(cudaGraph_t graph) {
  int replaced = 0;
  for (cudaGraphNode_t node : nodes_of(graph)) {
    cudaGraphNodeType type;
    check(cudaGraphNodeGetType(node, &type), "cudaGraphNodeGetType");
    if (type != cudaGraphNodeTypeMemset) continue;
    cudaMemsetParams params = {};
    check(cudaGraphMemsetNodeGetParams(node, &params), "cudaGraphMemsetNodeGetParams");
    cudaGraphNode_t fill = nullptr;
    const cudaError_t added = kernels::add_fill_node(graph, params, &fill);
    if (added == cudaErrorInvalidValue) {
      (void)cudaGetLastError();
      continue;  // a memset the fill kernel does not express stays a memset
    }
    check(added, "adding the fill kernel node");
    // Edges into and out of a memset node are plain ones (programmatic edges join kernel nodes only), so the
    // kernel node takes them as plain edges.
    for (cudaGraphNode_t from : neighbours(node, true))
      check(kAddDependencies(graph, &from, &fill, nullptr, 1), "cudaGraphAddDependencies");
    for (cudaGraphNode_t to : neighbours(node, false))
      check(kAddDependencies(graph, &fill, &to, nullptr, 1), "cudaGraphAddDependencies");
    check(cudaGraphDestroyNode(node), "cudaGraphDestroyNode");
    ++replaced;
  }
  return replaced;
}

int instantiate_graph(at::cuda::CUDAGraph& graph) {
  int replaced = 0;
  if (fusion_enabled(Fusion::kMemsetKernels)) {
    try {
      replaced = memsets_to_kernels(graph.raw_cuda_graph());
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, e.what());
    }
  }
  graph.instantiate();
  return replaced;
}

}  // namespace sdxlb
