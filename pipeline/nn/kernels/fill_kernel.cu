#include "pipeline/nn/kernels/fill_kernel.h"

#include <algorithm>
#include <cstdint>

namespace sdxlb::kernels {
namespace {

// Grid-stride over the elements; a thread writes 16 bytes at a time where a row allows (the row's start and
// its end 16-byte aligned inside it), single elements at its unaligned ends. `pattern` is the element value
// repeated over 16 bytes.
template <typename E>
__device__ void fill_region(char* dst, size_t pitch, size_t width, size_t height, E value, uint4 pattern) {
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
__global__ void fill_rows(char* dst, size_t pitch, size_t width, size_t height, E value, uint4 pattern) {
  fill_region<E>(dst, pitch, width, height, value, pattern);
}

// One memset of a fill_many node: its region, element size, value and the value repeated over 16 bytes.
struct Fill {
  char* dst = nullptr;
  size_t pitch = 0, width = 0, height = 0;
  uint32_t value = 0, element_size = 0;
  uint4 pattern = {};
};
struct Fills {
  Fill fill[kMaxFillsPerNode];
  int count = 0;
};

// Every fill of `fills` by the whole grid, one after another (their regions do not overlap).
__global__ void fill_many(Fills fills) {
  for (int i = 0; i < fills.count; ++i) {
    const Fill& f = fills.fill[i];
    switch (f.element_size) {
      case 1:
        fill_region<uint8_t>(f.dst, f.pitch, f.width, f.height, static_cast<uint8_t>(f.value), f.pattern);
        break;
      case 2:
        fill_region<uint16_t>(f.dst, f.pitch, f.width, f.height, static_cast<uint16_t>(f.value), f.pattern);
        break;
      default:
        fill_region<uint32_t>(f.dst, f.pitch, f.width, f.height, f.value, f.pattern);
    }
  }
}

constexpr unsigned kThreads = 256;

// Blocks for a fill of `width` elements of E per row: one 16-byte store per thread where the row allows.
template <typename E>
unsigned blocks_for(size_t width) {
  const size_t work = std::max<size_t>(width * sizeof(E) / 16, 1);
  return static_cast<unsigned>(std::min<size_t>((work + kThreads - 1) / kThreads, 1024));
}

template <typename E>
uint4 pattern_of(E value) {
  uint4 pattern;
  E* lanes = reinterpret_cast<E*>(&pattern);
  for (size_t k = 0; k < 16 / sizeof(E); ++k) lanes[k] = value;
  return pattern;
}

// Sets f's value and its 16-byte pattern for element type E; returns the blocks p's rows need.
template <typename E>
unsigned describe(const cudaMemsetParams& p, Fill& f) {
  f.value = static_cast<E>(p.value);
  f.pattern = pattern_of(static_cast<E>(p.value));
  return blocks_for<E>(p.width);
}

bool expressible(const cudaMemsetParams& p) {
  return p.width > 0 && p.height > 0 && (p.height == 1 || p.pitch >= p.width * p.elementSize) &&
         (p.elementSize == 1 || p.elementSize == 2 || p.elementSize == 4);
}

// The bytes a memset writes lie in [first, last).
uintptr_t first_byte(const cudaMemsetParams& p) {
  return reinterpret_cast<uintptr_t>(p.dst);
}
uintptr_t last_byte(const cudaMemsetParams& p) {
  return first_byte(p) + (p.height - 1) * p.pitch + p.width * p.elementSize;
}

template <typename E>
cudaError_t add(cudaGraph_t graph, const cudaMemsetParams& p, cudaGraphNode_t* node) {
  E value = static_cast<E>(p.value);
  uint4 pattern = pattern_of(value);
  char* dst = static_cast<char*>(p.dst);
  size_t pitch = p.pitch, width = p.width, height = p.height;
  void* args[] = {&dst, &pitch, &width, &height, &value, &pattern};
  cudaKernelNodeParams k = {};
  k.func = reinterpret_cast<void*>(fill_rows<E>);
  k.gridDim = dim3(blocks_for<E>(width));
  k.blockDim = dim3(kThreads);
  k.kernelParams = args;
  return cudaGraphAddKernelNode(node, graph, nullptr, 0, &k);
}

}  // namespace

cudaError_t add_fill_node(cudaGraph_t graph, const cudaMemsetParams& params, cudaGraphNode_t* node) {
  if (!expressible(params)) return cudaErrorInvalidValue;
  switch (params.elementSize) {
    case 1:
      return add<uint8_t>(graph, params, node);
    case 2:
      return add<uint16_t>(graph, params, node);
    default:
      return add<uint32_t>(graph, params, node);
  }
}

cudaError_t add_fills_node(cudaGraph_t graph, const cudaMemsetParams* params, int count,
                           cudaGraphNode_t* node) {
  if (params == nullptr || count < 2 || count > kMaxFillsPerNode) return cudaErrorInvalidValue;
  Fills fills;
  fills.count = count;
  unsigned blocks = 1;
  for (int i = 0; i < count; ++i) {
    const cudaMemsetParams& p = params[i];
    if (!expressible(p)) return cudaErrorInvalidValue;
    for (int j = 0; j < i; ++j)
      if (first_byte(p) < last_byte(params[j]) && first_byte(params[j]) < last_byte(p))
        return cudaErrorInvalidValue;
    Fill& f = fills.fill[i];
    f.dst = static_cast<char*>(p.dst);
    f.pitch = p.pitch;
    f.width = p.width;
    f.height = p.height;
    f.element_size = p.elementSize;
    const unsigned b = p.elementSize == 1   ? describe<uint8_t>(p, f)
                       : p.elementSize == 2 ? describe<uint16_t>(p, f)
                                            : describe<uint32_t>(p, f);
    blocks = std::max(blocks, b);
  }
  void* args[] = {&fills};
  cudaKernelNodeParams k = {};
  k.func = reinterpret_cast<void*>(fill_many);
  k.gridDim = dim3(blocks);
  k.blockDim = dim3(kThreads);
  k.kernelParams = args;
  return cudaGraphAddKernelNode(node, graph, nullptr, 0, &k);
}

}  // namespace sdxlb::kernels
