// The CUDA graph's memset nodes rewritten as kernel nodes (pipeline/runtime/graph_memsets.h): the fill
// kernel writes a memset's bytes, element sizes 1, 2 and 4, rows with a pitch, starts off a 16-byte boundary;
// a captured graph with memsets between kernels gives the same bytes rewritten as not; a chain of memsets
// with disjoint regions becomes one kernel node, overlapping ones one node each. GPU only.
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

TEST_F(GraphMemsetsTest, FillsNodeWritesEveryMemsetsBytes) {
  at::manual_seed(4);
  const at::Tensor start =
      at::randint(0, 256, {1 << 20}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0));
  struct Case {
    unsigned element_size;
    size_t offset, width, height, pitch;
    unsigned value;
  };
  // Disjoint regions: bytes, a pitched 2-byte block, a long 4-byte row off a 16-byte boundary, one element.
  const std::vector<Case> cases{{1, 3, 1001, 1, 0, 0xAB},
                                {2, 4096, 33, 9, 512, 0xFFFF},
                                {4, 12 + (1 << 16), 65536, 1, 0, 0xDEADBEEF},
                                {4, 1 << 19, 1, 1, 0, 0}};
  std::vector<cudaMemsetParams> params;
  for (const Case& c : cases) {
    cudaMemsetParams p = {};
    p.value = c.value;
    p.elementSize = c.element_size;
    p.width = c.width;
    p.height = c.height;
    p.pitch = c.height > 1 ? c.pitch : c.width * c.element_size;
    params.push_back(p);
  }
  const auto placed = [&](char* base) {
    std::vector<cudaMemsetParams> out = params;
    for (size_t i = 0; i < out.size(); ++i) out[i].dst = base + cases[i].offset;
    return out;
  };
  for (int count = 2; count <= 4; ++count) {
    SCOPED_TRACE(testing::Message() << count << " memsets");
    const at::Tensor want = after_graph(start, [&](cudaGraph_t g, char* base) {
      const std::vector<cudaMemsetParams> p = placed(base);
      cudaGraphNode_t prev = nullptr;
      for (int i = 0; i < count; ++i) {
        cudaGraphNode_t node;
        EXPECT_EQ(cudaGraphAddMemsetNode(&node, g, prev == nullptr ? nullptr : &prev, prev == nullptr ? 0 : 1,
                                         &p[i]),
                  cudaSuccess);
        prev = node;
      }
    });
    const at::Tensor got = after_graph(start, [&](cudaGraph_t g, char* base) {
      const std::vector<cudaMemsetParams> p = placed(base);
      cudaGraphNode_t node;
      EXPECT_EQ(kernels::add_fills_node(g, p.data(), count, &node), cudaSuccess);
    });
    EXPECT_FALSE(at::equal(want, start.cpu()));
    EXPECT_TRUE(at::equal(got, want));
  }
  // Refused, adding nothing: a count out of range, regions that share a byte, an element size of 8.
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaGraphCreate(&g, 0), cudaSuccess);
  at::Tensor buffer = start.clone();
  std::vector<cudaMemsetParams> p = placed(static_cast<char*>(buffer.data_ptr()));
  cudaGraphNode_t node;
  EXPECT_EQ(kernels::add_fills_node(g, p.data(), 1, &node), cudaErrorInvalidValue);
  EXPECT_EQ(kernels::add_fills_node(g, p.data(), kernels::kMaxFillsPerNode + 1, &node),
            cudaErrorInvalidValue);
  std::vector<cudaMemsetParams> overlap{p[0], p[1]};
  overlap[1].dst = static_cast<char*>(overlap[0].dst) + 1000;  // shares the first region's last byte
  overlap[1].height = 1;
  EXPECT_EQ(kernels::add_fills_node(g, overlap.data(), 2, &node), cudaErrorInvalidValue);
  std::vector<cudaMemsetParams> wide{p[0], p[2]};
  wide[1].elementSize = 8;
  EXPECT_EQ(kernels::add_fills_node(g, wide.data(), 2, &node), cudaErrorInvalidValue);
  size_t n = 1;
  ASSERT_EQ(cudaGraphGetNodes(g, nullptr, &n), cudaSuccess);
  EXPECT_EQ(n, 0u);
  cudaGraphDestroy(g);
}

// A captured graph with three memsets of disjoint regions in a row between kernels: rewritten, they are one
// kernel node, and the graph gives the same bytes.
TEST_F(GraphMemsetsTest, ChainOfDisjointMemsetsBecomesOneNode) {
  at::manual_seed(6);
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  const at::Tensor x = at::randn({256, 256}, cuda);
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
      at::Tensor y = x * 2 + 1;
      char* b = static_cast<char*>(buffer.data_ptr());
      EXPECT_EQ(cudaMemsetAsync(b, 0x11, 4000, stream), cudaSuccess);
      EXPECT_EQ(cudaMemsetAsync(b + 4000, 0, 3, stream), cudaSuccess);
      EXPECT_EQ(cudaMemsetAsync(b + 8192, 0x7F, 50000, stream), cudaSuccess);
      out = y.sum() + buffer.to(at::kFloat).sum();
      graph.capture_end();
    }
    if (rewrite) {
      size_t before = 0, after = 0;
      ASSERT_EQ(cudaGraphGetNodes(graph.raw_cuda_graph(), nullptr, &before), cudaSuccess);
      EXPECT_EQ(memsets_to_kernels(graph.raw_cuda_graph()), 3);
      ASSERT_EQ(cudaGraphGetNodes(graph.raw_cuda_graph(), nullptr, &after), cudaSuccess);
      EXPECT_EQ(after, before - 2);  // three memset nodes, one kernel node
    }
    graph.instantiate();
    buffer.fill_(7);
    graph.replay();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    outs.push_back(at::cat({out.view({1}).to(at::kDouble), buffer.to(at::kDouble)}).cpu());
  }
  EXPECT_TRUE(at::equal(outs[0], outs[1]));
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
