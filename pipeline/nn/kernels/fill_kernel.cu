#include "pipeline/nn/kernels/fill_kernel.h"

#include <algorithm>
#include <cstdint>

namespace sdxlb::kernels {
namespace {

// Grid-stride over the elements; a thread writes 16 bytes at a time where a row allows (the row's start and
// its end 16-byte aligned inside it), single elements at its unaligned ends. `pattern` is the element value
// repeated over 16 bytes.
template <typename E>
__global__ void fill_rows(char* dst, size_t pitch, size_t width, size_t height, E value, uint4 pattern) {
  const size_t row_bytes = width * sizeof(E);
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const size_t first = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (size_t r = 0; r < height; ++r) {
    char* row = dst + r * pitch;
    // Elements before the first 16-byte boundary, the aligned middle, and the elements after it.
    const size_t misalign = reinterpret_cast<uintptr_t>(row) % 16;
    size_t head = misalign == 0 ? 0 : (16 - misalign);
    if (head % sizeof(E) != 0 || head > row_bytes) head = row_bytes;  // no aligned middle: element by element
    const size_t vectors = (row_bytes - head) / 16;
    const size_t tail_start = head + vectors * 16;
    for (size_t i = first; i < head / sizeof(E); i += stride) reinterpret_cast<E*>(row)[i] = value;
    uint4* middle = reinterpret_cast<uint4*>(row + head);
    for (size_t i = first; i < vectors; i += stride) middle[i] = pattern;
    for (size_t i = first; i < (row_bytes - tail_start) / sizeof(E); i += stride)
      reinterpret_cast<E*>(row + tail_start)[i] = value;
  }
}

template <typename E>
cudaError_t add(cudaGraph_t graph, const cudaMemsetParams& p, cudaGraphNode_t* node) {
  E value = static_cast<E>(p.value);
  uint4 pattern;
  E* lanes = reinterpret_cast<E*>(&pattern);
  for (size_t k = 0; k < 16 / sizeof(E); ++k) lanes[k] = value;
  char* dst = static_cast<char*>(p.dst);
  size_t pitch = p.pitch, width = p.width, height = p.height;
  constexpr unsigned kThreads = 256;
  const size_t work = std::max<size_t>(width * sizeof(E) / 16, 1);
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>((work + kThreads - 1) / kThreads, 1024));
  void* args[] = {&dst, &pitch, &width, &height, &value, &pattern};
  cudaKernelNodeParams k = {};
  k.func = reinterpret_cast<void*>(fill_rows<E>);
  k.gridDim = dim3(blocks);
  k.blockDim = dim3(kThreads);
  k.kernelParams = args;
  return cudaGraphAddKernelNode(node, graph, nullptr, 0, &k);
}

}  // namespace

cudaError_t add_fill_node(cudaGraph_t graph, const cudaMemsetParams& params, cudaGraphNode_t* node) {
  if (params.width == 0 || params.height == 0 ||
      (params.height > 1 && params.pitch < params.width * params.elementSize))
    return cudaErrorInvalidValue;
  switch (params.elementSize) {
    case 1:
      return add<uint8_t>(graph, params, node);
    case 2:
      return add<uint16_t>(graph, params, node);
    case 4:
      return add<uint32_t>(graph, params, node);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace sdxlb::kernels
