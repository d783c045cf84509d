#include "pipeline/nn/kernels/concat_kernel.h"

#include <algorithm>
#include <cstdint>

#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/programmatic_launch.cuh"

namespace sdxlb::kernels {
namespace {

// Grid-stride over the output's 16-byte vectors; vector v of a row comes from a's row (v < av) or b's. Each
// load and store is 16 bytes and consecutive threads touch consecutive vectors, on both sides of the copy.
template <typename Index>
__global__ void __launch_bounds__(256)
    concat_rows_kernel(const uint4* __restrict__ a, const uint4* __restrict__ b, uint4* __restrict__ out,
                       Index vectors, Index av, Index bv) {
  wait_for_prior_grids();
  const Index ov = av + bv;
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index row = i / ov, v = i - row * ov;
    out[i] = v < av ? a[row * av + v] : b[row * bv + (v - av)];
  }
}

}  // namespace

cudaError_t launch_concat_rows(const void* a, const void* b, void* out, int64_t rows, int64_t a_bytes,
                               int64_t b_bytes, cudaStream_t stream) {
  if (rows < 0 || a_bytes <= 0 || b_bytes <= 0 || a_bytes % 16 != 0 || b_bytes % 16 != 0 || !aligned16(a) ||
      !aligned16(b) || !aligned16(out))
    return cudaErrorInvalidValue;
  const int64_t av = a_bytes / 16, bv = b_bytes / 16, vectors = rows * (av + bv);
  if (vectors == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  // Enough blocks for every SM several times over; the loop takes the rest.
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((vectors + kThreads - 1) / kThreads, 8192));
  const auto* pa = static_cast<const uint4*>(a);
  const auto* pb = static_cast<const uint4*>(b);
  auto* po = static_cast<uint4*>(out);
  // 32-bit indices where they reach (the divisions are cheaper), else 64-bit.
  if (vectors + static_cast<int64_t>(blocks) * kThreads < (int64_t{1} << 31)) {
    launch_kernel(concat_rows_kernel<uint32_t>, blocks, kThreads, 0, stream, pa, pb, po,
                  static_cast<uint32_t>(vectors), static_cast<uint32_t>(av), static_cast<uint32_t>(bv));
  } else {
    launch_kernel(concat_rows_kernel<int64_t>, blocks, kThreads, 0, stream, pa, pb, po, vectors, av, bv);
  }
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
