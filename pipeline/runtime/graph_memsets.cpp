#include "pipeline/runtime/graph_memsets.h"

#include <algorithm>
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

bool is_memset(cudaGraphNode_t node) {
  cudaGraphNodeType type;
  check(cudaGraphNodeGetType(node, &type), "cudaGraphNodeGetType");
  return type == cudaGraphNodeTypeMemset;
}

cudaMemsetParams memset_params(cudaGraphNode_t node) {
  cudaMemsetParams params = {};
  check(cudaGraphMemsetNodeGetParams(node, &params), "cudaGraphMemsetNodeGetParams");
  return params;
}

// The memset node that `node` alone follows, and that `node` alone follows it: the link of a chain of
// memsets with nothing else between or beside them (nullptr: none).
cudaGraphNode_t only_memset_before(cudaGraphNode_t node) {
  const std::vector<cudaGraphNode_t> before = neighbours(node, true);
  if (before.size() != 1 || !is_memset(before[0]) || neighbours(before[0], false).size() != 1) return nullptr;
  return before[0];
}
cudaGraphNode_t only_memset_after(cudaGraphNode_t node) {
  const std::vector<cudaGraphNode_t> after = neighbours(node, false);
  if (after.size() != 1 || !is_memset(after[0]) || neighbours(after[0], true).size() != 1) return nullptr;
  return after[0];
}

// Puts `fill` where the chain `nodes` (first to last) was: the first's dependencies before it, the last's
// dependents after it. Edges into and out of a memset node are plain ones (programmatic edges join kernel
// nodes only), so the kernel node takes them as plain edges.
void take_place(cudaGraph_t graph, const std::vector<cudaGraphNode_t>& nodes, cudaGraphNode_t fill) {
  for (cudaGraphNode_t from : neighbours(nodes.front(), true))
    check(kAddDependencies(graph, &from, &fill, nullptr, 1), "cudaGraphAddDependencies");
  for (cudaGraphNode_t to : neighbours(nodes.back(), false))
    check(kAddDependencies(graph, &fill, &to, nullptr, 1), "cudaGraphAddDependencies");
  for (cudaGraphNode_t node : nodes) check(cudaGraphDestroyNode(node), "cudaGraphDestroyNode");
}

// One memset as a fill kernel node; false where the fill kernel cannot express it (it stays a memset).
bool replace_one(cudaGraph_t graph, cudaGraphNode_t node) {
  cudaGraphNode_t fill = nullptr;
  const cudaError_t added = kernels::add_fill_node(graph, memset_params(node), &fill);
  if (added == cudaErrorInvalidValue) {
    (void)cudaGetLastError();
    return false;
  }
  check(added, "adding the fill kernel node");
  take_place(graph, {node}, fill);
  return true;
}

}  // namespace

int memsets_to_kernels(cudaGraph_t graph) {
  // First the chains, from the graph as captured: each starts at a memset that does not follow another alone,
  // and each next memset follows the one before it alone.
  std::vector<std::vector<cudaGraphNode_t>> chains;
  for (cudaGraphNode_t node : nodes_of(graph)) {
    if (!is_memset(node) || only_memset_before(node) != nullptr) continue;
    chains.push_back({node});
    for (cudaGraphNode_t next = only_memset_after(node); next != nullptr; next = only_memset_after(next))
      chains.back().push_back(next);
  }
  // Then each chain, up to kMaxFillsPerNode memsets at a time, as one fill node; one node each where their
  // regions overlap or the fill kernel cannot express one of them.
  int replaced = 0;
  for (const std::vector<cudaGraphNode_t>& chain : chains) {
    for (size_t start = 0; start < chain.size(); start += kernels::kMaxFillsPerNode) {
      const size_t end = std::min(chain.size(), start + kernels::kMaxFillsPerNode);
      const std::vector<cudaGraphNode_t> group(chain.begin() + start, chain.begin() + end);
      if (group.size() > 1 && fusion_enabled(Fusion::kFillChains)) {
        std::vector<cudaMemsetParams> params;
        for (cudaGraphNode_t n : group) params.push_back(memset_params(n));
        cudaGraphNode_t fill = nullptr;
        const cudaError_t added =
            kernels::add_fills_node(graph, params.data(), static_cast<int>(params.size()), &fill);
        if (added == cudaSuccess) {
          take_place(graph, group, fill);
          replaced += static_cast<int>(group.size());
          continue;
        }
        if (added != cudaErrorInvalidValue) check(added, "adding the fill kernel node");
        (void)cudaGetLastError();
      }
      for (cudaGraphNode_t n : group) replaced += replace_one(graph, n) ? 1 : 0;
    }
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
