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

// A memset's region at `offset` bytes into a buffer, and what it writes.
struct Case {
  unsigned element_size;
  size_t offset, width, height, pitch;
  unsigned value;
};

// The memset of `c` (without its destination, which the graph's buffer gives).
cudaMemsetParams params_of(const Case& c) {
  cudaMemsetParams p = {};
  p.value = c.value;
  p.elementSize = c.element_size;
  p.width = c.width;
  p.height = c.height;
  p.pitch = c.height > 1 ? c.pitch : c.width * c.element_size;
  return p;
}

TEST_F(GraphMemsetsTest, FillNodeWritesTheMemsetsBytes) {
  at::manual_seed(3);
  const at::Tensor start =
      at::randint(0, 256, {1 << 20}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, 0));
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
    cudaMemsetParams p = params_of(c);
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
  // Disjoint regions: bytes, a pitched 2-byte block, a long 4-byte row off a 16-byte boundary, one element.
  const std::vector<Case> cases{{1, 3, 1001, 1, 0, 0xAB},
                                {2, 4096, 33, 9, 512, 0xFFFF},
                                {4, 12 + (1 << 16), 65536, 1, 0, 0xDEADBEEF},
                                {4, 1 << 19, 1, 1, 0, 0}};
  std::vector<cudaMemsetParams> params;
  for (const Case& c : cases) params.push_back(params_of(c));
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

// A graph captured on a side stream (after one LibTorch op): `ops(buffer, stream)` records what it holds and
// returns its output. With `rewrite` its memsets become kernels first, and `check(graph)` runs after the
// rewrite. Replayed once on a buffer of sevens; returns the output followed by the buffer's values.
template <typename Ops, typename Check>
at::Tensor replayed(bool rewrite, const at::Tensor& x, Ops ops, Check check) {
  at::Tensor buffer = at::empty({1 << 16}, x.options().dtype(at::kInt));
  at::Tensor out;
  at::cuda::CUDAGraph graph(/*keep_graph=*/true);
  auto stream = c10::cuda::getStreamFromPool();
  {
    c10::cuda::CUDAStreamGuard guard(stream);
    (void)at::mm(x, x);  // a LibTorch op before capture
    stream.synchronize();
    graph.capture_begin();
    out = ops(buffer, stream.stream());
    graph.capture_end();
  }
  if (rewrite) check(graph.raw_cuda_graph());
  graph.instantiate();
  buffer.fill_(7);
  graph.replay();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return at::cat({out.view({1}).to(at::kDouble), buffer.to(at::kDouble)}).cpu();
}

size_t node_count(cudaGraph_t graph) {
  size_t n = 0;
  EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &n), cudaSuccess);
  return n;
}

// Three memsets of disjoint regions in a row between kernels: rewritten, they are one kernel node, and the
// graph gives the same bytes.
TEST_F(GraphMemsetsTest, ChainOfDisjointMemsetsBecomesOneNode) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({256, 256}, at::TensorOptions().device(at::kCUDA, 0));
  const auto ops = [&](const at::Tensor& buffer, cudaStream_t stream) {
    at::Tensor y = x * 2 + 1;
    char* b = static_cast<char*>(buffer.data_ptr());
    EXPECT_EQ(cudaMemsetAsync(b, 0x11, 4000, stream), cudaSuccess);
    EXPECT_EQ(cudaMemsetAsync(b + 4000, 0, 3, stream), cudaSuccess);
    EXPECT_EQ(cudaMemsetAsync(b + 8192, 0x7F, 50000, stream), cudaSuccess);
    return y.sum() + buffer.to(at::kFloat).sum();
  };
  const auto check = [](cudaGraph_t graph) {
    const size_t before = node_count(graph);
    EXPECT_EQ(memsets_to_kernels(graph), 3);
    EXPECT_EQ(node_count(graph), before - 2);  // three memset nodes, one kernel node
  };
  EXPECT_TRUE(at::equal(replayed(false, x, ops, check), replayed(true, x, ops, check)));
}

// Kernels, memsets between them (the second inside the first's region), kernels that read what the memsets
// wrote. Rewritten, the graph has no memset node left and gives the same bytes.
TEST_F(GraphMemsetsTest, RewrittenGraphGivesTheSameResult) {
  at::manual_seed(5);
  const at::Tensor x = at::randn({512, 512}, at::TensorOptions().device(at::kCUDA, 0));
  const auto ops = [&](const at::Tensor& buffer, cudaStream_t stream) {
    at::Tensor y = at::mm(x, x) + 1;
    EXPECT_EQ(cudaMemsetAsync(buffer.data_ptr(), 0x11, buffer.numel() * 4, stream), cudaSuccess);
    EXPECT_EQ(cudaMemsetAsync(static_cast<char*>(buffer.data_ptr()) + 6, 0, 1000, stream), cudaSuccess);
    return y.sum() + buffer.to(at::kFloat).sum() + at::mm(y, x).sum();
  };
  const auto check = [](cudaGraph_t graph) {
    EXPECT_GE(memsets_to_kernels(graph), 2);  // ours, and any of cuBLASLt
    std::vector<cudaGraphNode_t> nodes(node_count(graph));
    size_t n = nodes.size();
    ASSERT_EQ(cudaGraphGetNodes(graph, nodes.data(), &n), cudaSuccess);
    for (cudaGraphNode_t node : nodes) {
      cudaGraphNodeType type;
      ASSERT_EQ(cudaGraphNodeGetType(node, &type), cudaSuccess);
      EXPECT_NE(type, cudaGraphNodeTypeMemset);
    }
  };
  EXPECT_TRUE(at::equal(replayed(false, x, ops, check), replayed(true, x, ops, check)));
}

}  // namespace
}  // namespace sdxlb
