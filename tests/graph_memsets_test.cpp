// The CUDA graph's memset nodes rewritten as kernel nodes (pipeline/runtime/graph_memsets.h): the fill
// kernel writes a memset's bytes, element sizes 1, 2 and 4, rows with a pitch, starts off a 16-byte boundary;
// a captured graph with memsets between kernels gives the same bytes rewritten as not. GPU only.
#include "pipeline/runtime/graph_memsets.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/fill_kernel.h"

namespace sdxlb {
namespace {

class GraphMemsetsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  }
};

// Runs a graph holding one node made by `add` on a buffer of random bytes; returns the buffer after.
template <typename Add>
at::Tensor after_graph(const at::Tensor& start, Add add) {
  at::Tensor buffer = start.clone();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaGraphCreate(&graph, 0), cudaSuccess);
  add(graph, static_cast<char*>(buffer.data_ptr()));
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return buffer.cpu();
}

TEST_F(GraphMemsetsTest, FillNodeWritesTheMemsetsBytes) {
  at::manual_seed(3);
  const at::Tensor start =
      at::randint(0, 256, {1 << 20}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0));
  struct Case {
    unsigned element_size;
    size_t offset, width, height, pitch;
    unsigned value;
  };
  for (const Case& c : std::vector<Case>{{1, 0, 4096, 1, 0, 0},
                                         {1, 3, 1001, 1, 0, 0xAB},
                                         {2, 2, 777, 1, 0, 0x1234},
                                         {4, 4, 65536, 1, 0, 0},
                                         {4, 12, 5, 1, 0, 0xDEADBEEF},
                                         {4, 0, 100, 7, 1024, 0x01020304},
                                         {2, 6, 33, 9, 512, 0xFFFF},
                                         {1, 1, 15, 1, 0, 7}}) {
    SCOPED_TRACE(testing::Message() << "element " << c.element_size << " offset " << c.offset << " width "
                                    << c.width << " height " << c.height);
    cudaMemsetParams p = {};
    p.value = c.value;
    p.elementSize = c.element_size;
    p.width = c.width;
    p.height = c.height;
    p.pitch = c.height > 1 ? c.pitch : c.width * c.element_size;
    const at::Tensor want = after_graph(start, [&](cudaGraph_t g, char* base) {
      p.dst = base + c.offset;
      cudaGraphNode_t node;
      EXPECT_EQ(cudaGraphAddMemsetNode(&node, g, nullptr, 0, &p), cudaSuccess);
    });
    const at::Tensor got = after_graph(start, [&](cudaGraph_t g, char* base) {
      p.dst = base + c.offset;
      cudaGraphNode_t node;
      EXPECT_EQ(kernels::add_fill_node(g, p, &node), cudaSuccess);
    });
    EXPECT_FALSE(at::equal(want, start.cpu()));  // the memset wrote something
    EXPECT_TRUE(at::equal(got, want));
  }
  cudaMemsetParams bad = {};
  bad.elementSize = 8;
  bad.width = bad.height = 1;
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaGraphCreate(&g, 0), cudaSuccess);
  cudaGraphNode_t node;
  EXPECT_EQ(kernels::add_fill_node(g, bad, &node), cudaErrorInvalidValue);
  cudaGraphDestroy(g);
}

// A captured graph: kernels, memsets between them, kernels that read what the memsets wrote. Rewritten, it
// has no memset node left and gives the same bytes.
TEST_F(GraphMemsetsTest, RewrittenGraphGivesTheSameResult) {
  at::manual_seed(5);
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  const at::Tensor x = at::randn({512, 512}, cuda);
  std::vector<at::Tensor> outs;
  for (const bool rewrite : {false, true}) {
    at::Tensor buffer = at::empty({1 << 16}, cuda.dtype(at::kInt));
    at::Tensor out;
    at::cuda::CUDAGraph graph(/*keep_graph=*/true);
    auto stream = c10::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      (void)at::mm(x, x);  // a LibTorch op before capture
      stream.synchronize();
      graph.capture_begin();
      at::Tensor y = at::mm(x, x) + 1;
      EXPECT_EQ(cudaMemsetAsync(buffer.data_ptr(), 0x11, buffer.numel() * 4, stream), cudaSuccess);
      EXPECT_EQ(cudaMemsetAsync(static_cast<char*>(buffer.data_ptr()) + 6, 0, 1000, stream), cudaSuccess);
      out = y.sum() + buffer.to(at::kFloat).sum() + at::mm(y, x).sum();
      graph.capture_end();
    }
    if (rewrite) {
      EXPECT_GE(memsets_to_kernels(graph.raw_cuda_graph()), 2);  // ours, and any of cuBLASLt
      size_t n = 0;
      ASSERT_EQ(cudaGraphGetNodes(graph.raw_cuda_graph(), nullptr, &n), cudaSuccess);
      std::vector<cudaGraphNode_t> nodes(n);
      ASSERT_EQ(cudaGraphGetNodes(graph.raw_cuda_graph(), nodes.data(), &n), cudaSuccess);
      for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type;
        ASSERT_EQ(cudaGraphNodeGetType(node, &type), cudaSuccess);
        EXPECT_NE(type, cudaGraphNodeTypeMemset);
      }
    }
    graph.instantiate();
    buffer.fill_(7);
    graph.replay();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    outs.push_back(at::cat({out.view({1}).to(at::kDouble), buffer.to(at::kDouble)}).cpu());
  }
  EXPECT_TRUE(at::equal(outs[0], outs[1]));
}

}  // namespace
}  // namespace sdxlb
