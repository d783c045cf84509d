// The FP8 GEMM with an e4m3 output: CUTLASS 3's Hopper warp-specialized e4m3 GEMM (TMA loads, WGMMA,
// ping-pong consumers, 128x128x128 tiles in clusters of two) with an epilogue of CUTLASS's visitor nodes: the
// accumulator times the weight row's scale times the input row's scale, rounded to fp16 (the FP8 linear's
// output), times the fixed inverse scale, converted to e4m3 with saturation, and stored by TMA. At the UNet's
// projection shapes this mainloop runs as fast as cuBLASLt's (bench/results/2026-12-04-h200-session18.md);
// the gain is the fp16 tensor that is neither written nor read back. Compiled for sm_90a only; see
// pipeline/nn/CMakeLists.txt.
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

struct Fp8GemmE4m3 {
  using TileShape = Shape<_128, _128, _128>;
  using ClusterShape = Shape<_2, _1, _1>;
  using Element = cutlass::float_e4m3_t;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  // q = e4m3(fp16((acc · w_scale[n]) · x_scale[m]) · inverse), in float32 between the roundings.
  using WeightScale =
      cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  using InputScale =
      cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using Inverse = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float>;
  using Scaled = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
      cutlass::epilogue::fusion::Sm90AccFetch, WeightScale>;
  using Projected = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, cutlass::half_t, float, kRound>, Scaled,
      InputScale>;
  using Fusion = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, Element, float, kRound>, Projected,
      Inverse>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor, 16,
      Element, cutlass::layout::RowMajor, 16, cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 16, Element,
      cutlass::layout::ColumnMajor, 16, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t run(const void* x, const void* w, const float* x_scale, const float* w_scale,
                         float inverse, void* q, int m, int k, int n, cudaStream_t stream) {
    typename Kernel::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {m, n, k, 1};
    args.mainloop.ptr_A = static_cast<const Element*>(x);
    args.mainloop.dA = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {m, k, 1});
    args.mainloop.ptr_B = static_cast<const Element*>(w);
    args.mainloop.dB = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {n, k, 1});
    const auto stride_d = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {m, n, 1});
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = stride_d;
    args.epilogue.ptr_D = static_cast<Element*>(q);
    args.epilogue.dD = stride_d;
    // Sm90EVT's arguments: the children's in order, then the node's own.
    args.epilogue.thread = {{{{}, {w_scale, 0.f, {}}, {}},  // Scaled: AccFetch, WeightScale, op
                             {x_scale, 0.f, {}},            // InputScale
                             {}},                           // Projected's op
                            {{inverse}, {nullptr}, {}},     // Inverse
                            {}};                            // the final op
    cudaGetDevice(&args.hw_info.device_id);
    args.hw_info.sm_count = cutlass_sm_count(args.hw_info.device_id);
    return launch_cutlass<Gemm>(args, stream);
  }
};

}  // namespace

bool fp8_gemm_e4m3_compiled() {
  return true;
}

cudaError_t launch_fp8_gemm_e4m3(const void* x, const void* w, const float* x_scale, const float* w_scale,
                                 float inverse, void* q, int64_t m, int64_t k, int64_t n,
                                 cudaStream_t stream) {
  // K in whole tiles of 128 (the UNet's 640 and 1280; smaller K is the two ops' business).
  if (m <= 0 || k <= 0 || n <= 0 || k % 128 != 0 || n % 16 != 0 || m > INT32_MAX || n > INT32_MAX ||
      k > INT32_MAX || reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(w) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(q) % 16 != 0)
    return cudaErrorNotSupported;
  return Fp8GemmE4m3::run(x, w, x_scale, w_scale, inverse, q, static_cast<int>(m), static_cast<int>(k),
                          static_cast<int>(n), stream);
}

}  // namespace sdxlb::kernels

#else  // no CUTLASS in this build

namespace sdxlb::kernels {

bool fp8_gemm_e4m3_compiled() {
  return false;
}

cudaError_t launch_fp8_gemm_e4m3(const void*, const void*, const float*, const float*, float, void*, int64_t,
                                 int64_t, int64_t, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace sdxlb::kernels

#endif
