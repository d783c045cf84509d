// The FP8 GEMMs of our own: CUTLASS 3's Hopper warp-specialized e4m3 GEMM (TMA loads, WGMMA, ping-pong
// consumers, 128x128x128 tiles in clusters of two, fast accumulation) with epilogues of CUTLASS's visitor
// nodes, stored by TMA. Two epilogues:
// - the FP8 linear's: the accumulator times the weight row's scale times the input row's scale, plus the
//   bias, rounded to fp16. Its tile scheduler gives each output tile to one CTA for the whole of K, so a row
//   does not depend on its neighbours, where cuBLASLt's choice for at::_scaled_mm may split some tiles along
//   K (gpu_numerics.h);
// - the same product without bias, rounded to fp16, then times a fixed inverse scale and converted to e4m3:
//   the FP8 self-attention's query/key/value projection, without the fp16 tensor in memory.
// At the UNet's projection shapes this mainloop runs as fast as cuBLASLt's
// (bench/results/2026-12-04-h200-session18.md). Compiled for sm_90a only; see pipeline/nn/CMakeLists.txt.
#include "pipeline/nn/kernels/fp8_gemm_kernel.h"

#if defined(SDXLB_WITH_CUTLASS)

#include <cutlass/cutlass.h>
#include <cutlass/kernel_hardware_info.hpp>

#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/numeric_types.h>
#include <cute/tensor.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "pipeline/nn/kernels/cutlass_launch.cuh"

namespace sdxlb::kernels {
namespace {

using namespace cute;

using TileShape = Shape<_128, _128, _128>;
using ClusterShape = Shape<_2, _1, _1>;
using E4m3 = cutlass::float_e4m3_t;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// The epilogue's pieces, from CUTLASS's visitor nodes: the weight row's scale (one per output column n), the
// input row's scale (one per output row m), the bias (per column) and a scalar.
using WeightScale =
    cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
using InputScale =
    cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
using Bias = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, cutlass::half_t, float,
                                                         Stride<_0, _1, int64_t>>;
using Inverse = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>;
template <template <class> class Op, class Out, class... Children>
using Node =
    cutlass::epilogue::fusion::Sm90EVT<cutlass::epilogue::fusion::Sm90Compute<Op, Out, float, kRound>,
                                       Children...>;
// acc · w_scale[n], in float32.
using Scaled = Node<cutlass::multiplies, float, cutlass::epilogue::fusion::Sm90AccFetch, WeightScale>;

// The e4m3 GEMM of x [M, K] (row-major) and w [N, K] (row-major, so column-major as B) with `Fusion` as its
// epilogue and `Out` [M, N] row-major as its output: ping-pong consumers, fast accumulation, and CUTLASS's
// default tile scheduler for it, which gives each output tile to one CTA for the whole of K (no split-K,
// no stream-K): a row's sums do not depend on the rows beside it.
template <class Fusion, class Out>
struct Fp8Gemm {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor,
      16 / sizeof(Out), Out, cutlass::layout::RowMajor, 16 / sizeof(Out),
      cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, E4m3, cutlass::layout::RowMajor, 16, E4m3,
      cutlass::layout::ColumnMajor, 16, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Adapter = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t run(const void* x, const void* w, void* d, int m, int k, int n,
                         const typename Fusion::Arguments& fusion, cudaStream_t stream) {
    typename Kernel::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {m, n, k, 1};
    args.mainloop.ptr_A = static_cast<const E4m3*>(x);
    args.mainloop.dA = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {m, k, 1});
    args.mainloop.ptr_B = static_cast<const E4m3*>(w);
    args.mainloop.dB = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {n, k, 1});
    const auto stride_d = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {m, n, 1});
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = stride_d;
    args.epilogue.ptr_D = static_cast<Out*>(d);
    args.epilogue.dD = stride_d;
    args.epilogue.thread = fusion;
    cudaGetDevice(&args.hw_info.device_id);
    args.hw_info.sm_count = cutlass_sm_count(args.hw_info.device_id);
    return launch_cutlass<Adapter>(args, stream);
  }
};

// q = e4m3(fp16((acc · w_scale[n]) · x_scale[m]) · inverse), in float32 between the roundings.
using ToE4m3 =
    Node<cutlass::multiplies, E4m3, Node<cutlass::multiplies, cutlass::half_t, Scaled, InputScale>, Inverse>;
// y = fp16((acc · w_scale[n]) · x_scale[m] + bias[n]), in float32 before the rounding.
using ToHalf =
    Node<cutlass::plus, cutlass::half_t, Node<cutlass::multiplies, float, Scaled, InputScale>, Bias>;

// Shapes both kernels take: K in whole tiles of 128 (the UNet's 640 to 10240), N a multiple of 16, and
// 16-byte aligned operands.
bool takes(const void* x, const void* w, const void* d, int64_t m, int64_t k, int64_t n) {
  return m > 0 && k > 0 && n > 0 && k % 128 == 0 && n % 16 == 0 && m <= INT32_MAX && n <= INT32_MAX &&
         k <= INT32_MAX && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(d) % 16 == 0;
}

}  // namespace

bool fp8_gemm_compiled() {
  return true;
}

cudaError_t launch_fp8_gemm_e4m3(const void* x, const void* w, const float* x_scale, const float* w_scale,
                                 float inverse, void* q, int64_t m, int64_t k, int64_t n,
                                 cudaStream_t stream) {
  if (!takes(x, w, q, m, k, n)) return cudaErrorNotSupported;
  // Sm90EVT's arguments: the children's in order, then the node's own.
  const typename ToE4m3::Arguments fusion{{{{}, {w_scale, 0.f, {}}, {}},  // Scaled: AccFetch, WeightScale, op
                                           {x_scale, 0.f, {}},            // InputScale
                                           {}},                           // the fp16 product's op
                                          {{inverse}, {nullptr}, {}},     // Inverse
                                          {}};                            // the final op
  return Fp8Gemm<ToE4m3, E4m3>::run(x, w, q, static_cast<int>(m), static_cast<int>(k), static_cast<int>(n),
                                    fusion, stream);
}

cudaError_t launch_fp8_gemm(const void* x, const void* w, const float* x_scale, const float* w_scale,
                            const void* bias, void* y, int64_t m, int64_t k, int64_t n, cudaStream_t stream) {
  if (!takes(x, w, y, m, k, n) || reinterpret_cast<uintptr_t>(bias) % 16 != 0) return cudaErrorNotSupported;
  const typename ToHalf::Arguments fusion{
      {{{}, {w_scale, 0.f, {}}, {}},  // Scaled: AccFetch, WeightScale, op
       {x_scale, 0.f, {}},            // InputScale
       {}},                           // the product's op
      {static_cast<const cutlass::half_t*>(bias), cutlass::half_t(0.f), {}},  // Bias (none: zero)
      {}};                                                                    // the final op
  return Fp8Gemm<ToHalf, cutlass::half_t>::run(x, w, y, static_cast<int>(m), static_cast<int>(k),
                                               static_cast<int>(n), fusion, stream);
}

}  // namespace sdxlb::kernels

#else  // no CUTLASS in this build

namespace sdxlb::kernels {

bool fp8_gemm_compiled() {
  return false;
}

cudaError_t launch_fp8_gemm_e4m3(const void*, const void*, const float*, const float*, float, void*, int64_t,
                                 int64_t, int64_t, cudaStream_t) {
  return cudaErrorNotSupported;
}

cudaError_t launch_fp8_gemm(const void*, const void*, const float*, const float*, const void*, void*, int64_t,
                            int64_t, int64_t, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace sdxlb::kernels

#endif
