// The FP8 3x3 (and 2x2) convolution: CUTLASS 3's Hopper implicit GEMM (cutlass/conv), instantiated for e4m3
// NHWC activations and KRSC filters, with an epilogue of our own made of CUTLASS's visitor nodes: the
// accumulator times the output channel's scale (a row broadcast over N) times the pixel's scale (a column
// broadcast over the linearised M = N·H·W), rounded to fp16.
//
// The products accumulate in the tensor cores' own accumulator, which keeps fewer bits than float32 (what
// cuBLASLt calls fast accumulation, and what our FP8 linears use): against the exact sum of the same e4m3
// operands, 2.2e-3 to 1.1e-2 of the output's range over SDXL's K = 9 · C of 2,880 to 23,040 (measured on the
// H200). Promoting to a float32 sum every 128 values of K (CUTLASS's GmmaFP8Accumulation, with 64-row tiles
// to hold both) brought that under 2e-3 but made the convolutions as slow as cuDNN's fp16 ones (36.0 against
// 24.3 ms per batch-16 UNet call; bench/results/2026-12-03-h200-session14.md), so it was dropped.
// Compiled for sm_90a only (WGMMA and TMA im2col); see pipeline/nn/CMakeLists.txt.
#include "pipeline/nn/kernels/fp8_conv_kernel.h"

#if defined(SDXLB_WITH_CUTLASS)

// CUTLASS's conv headers use KernelHardwareInfo without including it: it comes first.
#include <cutlass/cutlass.h>
#include <cutlass/kernel_hardware_info.hpp>

#include <cutlass/numeric_types.h>
#include <cute/tensor.hpp>
#include <cutlass/conv/collective/collective_builder.hpp>
#include <cutlass/conv/convnd_problem_shape.hpp>
#include <cutlass/conv/device/conv_universal_adapter.hpp>
#include <cutlass/conv/kernel/conv_universal.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>

#include "pipeline/nn/kernels/cutlass_launch.cuh"

namespace sdxlb::kernels {
namespace {

using namespace cute;

template <int kTileM, int kTileN, int kTileK, int kClusterM>
struct Fp8Conv {
  using TileShape = Shape<Int<kTileM>, Int<kTileN>, Shape<Int<kTileK>>>;
  using ClusterShape = Shape<Int<kClusterM>, _1, _1>;
  using Element = cutlass::float_e4m3_t;
  using Output = cutlass::half_t;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  // D = fp16((acc · channel_scale[n]) · pixel_scale[m]), in float32.
  using PixelScale =
      cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using ChannelScale =
      cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  using Scaled = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
      cutlass::epilogue::fusion::Sm90AccFetch, ChannelScale>;
  using Fusion = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, Output, float, kRound>, PixelScale, Scaled>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::TensorNHWC, 8,
      Output, cutlass::layout::TensorNHWC, 8, cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;

  using Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop, Element,
      cutlass::layout::TensorNHWC, 16, Element, cutlass::layout::TensorNHWC, 16, float, TileShape,
      ClusterShape,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;

  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<ProblemShape, Mainloop, Epilogue>;
  using Conv = cutlass::conv::device::ConvUniversalAdapter<Kernel>;

  static cudaError_t run(const void* x, const void* f, const float* pixel_scale, const float* channel_scale,
                         void* y, int n, int h, int w, int c, int k, int size, cudaStream_t stream) {
    ProblemShape problem(cutlass::conv::Mode::kCrossCorrelation, {n, h, w, c}, {k, size, size, c}, {1, 1},
                         {1, 1}, {1, 1}, {1, 1}, 1);
    typename Kernel::StrideD stride_d{};
    cute::for_each(cute::make_seq<cute::rank<0>(typename Kernel::StrideD{})>{}, [&](auto i) {
      cute::get<0, i>(stride_d) = problem.stride_C[ProblemShape::RankT - 2 - i];
    });
    typename Kernel::MainloopArguments mainloop{static_cast<const Element*>(x),
                                                static_cast<const Element*>(f)};
    typename Kernel::EpilogueArguments epilogue{{}, nullptr, stride_d, static_cast<Output*>(y), stride_d};
    // Sm90EVT's arguments: the children's in order, then the node's own.
    epilogue.thread = {{pixel_scale, 0.f, {}},              // PixelScale
                       {{}, {channel_scale, 0.f, {}}, {}},  // Scaled: AccFetch, ChannelScale, op
                       {}};                                 // the final multiply
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = cutlass_sm_count(hw.device_id);
    typename Conv::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = problem;
    args.mainloop = mainloop;
    args.epilogue = epilogue;
    args.hw_info = hw;
    return launch_cutlass<Conv>(args, stream);
  }
};

}  // namespace

bool fp8_conv_compiled() {
  return true;
}

cudaError_t launch_fp8_conv(const void* x, const void* f, const float* pixel_scale,
                            const float* channel_scale, void* y, int n, int h, int w, int c, int k, int size,
                            cudaStream_t stream) {
  if (c % 16 != 0 || k % 16 != 0 || n <= 0 || h <= 0 || w <= 0 || (size != 2 && size != 3))
    return cudaErrorNotSupported;
  // 128 output channels per tile where they divide, else 160 (SDXL's 320 in two tiles).
  if (k % 128 == 0)
    return Fp8Conv<128, 128, 128, 1>::run(x, f, pixel_scale, channel_scale, y, n, h, w, c, k, size, stream);
  return Fp8Conv<128, 160, 128, 1>::run(x, f, pixel_scale, channel_scale, y, n, h, w, c, k, size, stream);
}

}  // namespace sdxlb::kernels

#else  // no CUTLASS in this build

namespace sdxlb::kernels {

bool fp8_conv_compiled() {
  return false;
}

cudaError_t launch_fp8_conv(const void*, const void*, const float*, const float*, void*, int, int, int, int,
                            int, int, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace sdxlb::kernels

#endif
