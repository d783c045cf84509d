// The feed-forward's first linear with GEGLU in its epilogue: CUTLASS 3's Hopper warp-specialized fp16 GEMM
// (TMA loads, WGMMA, float32 accumulation, clusters of two) with an epilogue of our own. The weight's rows
// come in interleaved GEGLU order (geglu_gemm_kernel.h), so that in WGMMA's accumulator layout, where a
// thread holds two neighbouring columns of each 8-column block, the same rows and columns of the next block
// hold their gates: each thread turns its value and gate pairs into GEGLU outputs and stores them straight
// from registers, and the [rows, 2F] projection is never written. Ping-pong consumers on 128x128x64 tiles:
// each warpgroup owns a tile, and one's epilogue (64 erf per thread) runs while the other's mainloop uses the
// tensor cores. On an H100 that took the kernel from 97.9 to 92.6 µs at 2048x1280x10240 and from about 124 to
// 112 µs at 8192x640x5120 against cooperative consumers on 128x256 tiles, whose epilogue nothing hid
// (cuBLASLt's projection alone: 81 and 90 µs; bench/results/2026-12-06-session28.md). Grid dependency control
// is compiled in: launched programmatically, the kernel waits for the kernel before it only where it first
// reads global memory. Compiled for sm_90a only; see pipeline/nn/CMakeLists.txt.
#include "pipeline/nn/kernels/geglu_gemm_kernel.h"

#if defined(SDXLB_WITH_CUTLASS)

#define CUTLASS_ENABLE_GDC_FOR_SM90 1

#include <cuda_fp16.h>

#include <cutlass/cutlass.h>
#include <cutlass/kernel_hardware_info.hpp>

#include <cutlass/epilogue/thread/linear_combination.h>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/numeric_types.h>
#include <cute/tensor.hpp>
#include <cutlass/epilogue/collective/detail.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "pipeline/nn/kernels/cutlass_launch.cuh"
#include "pipeline/nn/kernels/element_types.cuh"
#include "pipeline/nn/kernels/gelu.cuh"
#include "pipeline/nn/kernels/programmatic_launch.h"

namespace sdxlb::kernels {
namespace {

using namespace cute;

using Half = cutlass::half_t;
// The epilogue: CUTLASS's DefaultEpilogue interface (the one its no-shared-memory epilogues give the
// warp-specialized kernels through Sm90TmaWarpSpecializedAdapter), with GEGLU in place of its element-wise
// operation and an output half as wide as the product.
template <class TileShape>
class GegluEpilogue {
 public:
  using EpilogueSchedule = cutlass::gemm::EpilogueDefault;
  using DispatchPolicy = EpilogueSchedule;
  // Types the kernel and its adapter name; the arithmetic is operator()'s own.
  using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<Half, 1, float, float>;
  using ElementOutput = Half;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using ElementScalar = float;
  using ElementC = void;  // no source tensor
  using ElementD = Half;
  using StrideC = Stride<int64_t, _1, int64_t>;
  using StrideD = Stride<int64_t, _1, int64_t>;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;

  struct SharedStorage {};
  using TensorStorage = SharedStorage;

  struct Arguments {
    const __half* bias = nullptr;  // [2F], interleaved GEGLU order; null: none
    __half* out = nullptr;         // [M, F], row-major
    int64_t out_row_stride = 0;    // F
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(const ProblemShape&, const Arguments& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(const ProblemShape&, const Arguments&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(const ProblemShape&, const Arguments&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  // Whole tiles of columns (so whole 8-column blocks of values and gates), and an output that takes the
  // GEGLU's half.
  template <class ProblemShape>
  static bool can_implement(const ProblemShape& problem_shape, const Arguments& args) {
    const auto n = get<1>(problem_shape);
    return n % size<1>(TileShape{}) == 0 && args.out != nullptr && args.out_row_stride == n / 2;
  }

  CUTLASS_HOST_DEVICE explicit GegluEpilogue(const Params& params, const SharedStorage& = SharedStorage())
      : params_(params) {}

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine,
            class FrgLayout, class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_mnk,
                                 BlockCoordMNKL blk_coord_mnkl, const Tensor<FrgEngine, FrgLayout>& acc,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char*) {
    constexpr int kAcc = decltype(size(acc))::value;
    static_assert(kAcc % 8 == 0, "WGMMA accumulators come in 8s per pair of column blocks");
    const int m_size = get<0>(problem_shape_mnkl), n_size = get<1>(problem_shape_mnkl);
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord_mnkl;
    // The (m, n) coordinates of each accumulator this thread holds.
    const Tensor cd = local_tile(make_identity_tensor(make_shape(m_size, n_size)), take<0, 2>(blk_shape_mnk),
                                 make_coord(m_coord, n_coord));
    const Tensor coords = tiled_mma.get_thread_slice(thread_idx).partition_C(cd);
    // WGMMA's layout: accumulators i, i+1 are columns n, n+1 of row m; i+2, i+3 the same columns of row m+8;
    // i+4 … i+7 the same places 8 columns on (the gates, in interleaved order), for each group of 8 (whose
    // (m, n) differ from the first group's by constants, so the compiler folds the checks away unless the
    // layout differs).
    const int64_t down = 8 * params_.out_row_stride;
    CUTLASS_PRAGMA_UNROLL
    for (int q = 0; q < kAcc / 8; ++q) {
      const int i = 8 * q;
      const int m = get<0>(coords(i)), n = get<1>(coords(i));
      if (get<1>(coords(i + 1)) != n + 1 || get<0>(coords(i + 1)) != m || get<0>(coords(i + 2)) != m + 8 ||
          get<1>(coords(i + 2)) != n || get<0>(coords(i + 4)) != m || get<1>(coords(i + 4)) != n + 8 ||
          (n & 8) != 0)
        __trap();
      // Values and gates rounded to fp16 as the linear's output is, for rows m and m+8.
      float2 bv = make_float2(0.f, 0.f), bg = bv;
      if (params_.bias != nullptr) {
        bv = __half22float2(__ldg(reinterpret_cast<const __half2*>(params_.bias + n)));
        bg = __half22float2(__ldg(reinterpret_cast<const __half2*>(params_.bias + n + 8)));
      }
      __half2 values[2], gates[2];
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int a = i + 2 * r;
        values[r] = __floats2half2_rn(acc(a) + bv.x, acc(a + 1) + bv.y);
        gates[r] = __floats2half2_rn(acc(a + 4) + bg.x, acc(a + 5) + bg.y);
        // gelu(g) as PyTorch rounds it to fp16.
        gates[r] = __halves2half2(gelu(__low2half(gates[r])), gelu(__high2half(gates[r])));
      }
      // value · gelu(gate): the product of two fp16 numbers is exact in float32, so fp16's own multiply
      // (rounded once, to nearest) gives the bits of PyTorch's float product rounded to fp16. Output column
      // of value column n: its 8-column block's place among the value blocks.
      __half* out = params_.out + static_cast<int64_t>(m) * params_.out_row_stride + (n >> 4) * 8 + (n & 7);
      if (m < m_size) *reinterpret_cast<__half2*>(out) = __hmul2(values[0], gates[0]);
      if (m + 8 < m_size) *reinterpret_cast<__half2*>(out + down) = __hmul2(values[1], gates[1]);
    }
  }

 private:
  Params params_;
};

// x [M, K] (row-major) times w [2F, K] (row-major, so column-major as B) with the GEGLU epilogue, on tiles of
// TileShape and clusters of ClusterShape with ping-pong consumers. CUTLASS's default tile scheduler gives
// each output tile to one warpgroup for the whole of K (no split-K, no stream-K).
template <class TileShape, class ClusterShape>
struct GegluGemm {
  using Epilogue =
      cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<GegluEpilogue<TileShape>>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Half, cutlass::layout::RowMajor, 8, Half,
      cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename GegluEpilogue<TileShape>::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Adapter = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t launch(const void* x, const void* w, const void* bias, void* out, int64_t m, int64_t k,
                            int64_t two_f, cudaStream_t stream) {
    if (m <= 0 || k <= 0 || two_f <= 0 || k % 8 != 0 || two_f % size<1>(TileShape{}) != 0 || m > INT32_MAX ||
        k > INT32_MAX || two_f > INT32_MAX || !aligned16(x) || !aligned16(w) || !aligned16(bias) ||
        !aligned16(out))
      return cudaErrorNotSupported;
    const int mi = static_cast<int>(m), ki = static_cast<int>(k), ni = static_cast<int>(two_f);
    typename Kernel::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {mi, ni, ki, 1};
    args.mainloop.ptr_A = static_cast<const Half*>(x);
    args.mainloop.dA = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {mi, ki, 1});
    args.mainloop.ptr_B = static_cast<const Half*>(w);
    args.mainloop.dB = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {ni, ki, 1});
    args.epilogue = {static_cast<const __half*>(bias), static_cast<__half*>(out), two_f / 2};
    cudaGetDevice(&args.hw_info.device_id);
    args.hw_info.sm_count = cutlass_sm_count(args.hw_info.device_id);
    Adapter op;
    if (const cudaError_t e = prepare_cutlass(op, args, stream); e != cudaSuccess) return e;
    if (op.run(stream, nullptr, programmatic_launch_enabled()) != cutlass::Status::kSuccess)
      return cudaGetLastError();
    return cudaGetLastError();
  }
};

// The product's tiles: 128x128x64, each computed by one warpgroup over the whole of K, so that the cluster
// shape changes only which SMs share a TMA load, never the bits (bench/geglu_variants on branch
// wip/geglu-variants: the same bits from every cluster and tile; bench/results/2026-12-07-session41.md).
// Clusters of two along N for the deepest level's 10240-wide projection, where they took 2048 rows from 99.5
// to 99.1 µs, 4096 from 205.1 to 192.9 and 8192 from 396.2 to 378.1 on an H100; clusters of two along M for
// the narrower ones (8192x640x5120: 118.9 µs along M, 125.5 along N). The choice depends on the layer's
// width alone, never on M. Along N only for an even number of column tiles: the epilogue guards rows past M,
// not columns past 2F, and a cluster's second tile past the last would write there.
using Tile = Shape<_128, _128, _64>;
using ClustersAlongM = GegluGemm<Tile, Shape<_2, _1, _1>>;
using ClustersAlongN = GegluGemm<Tile, Shape<_1, _2, _1>>;
constexpr int64_t kClustersAlongNFrom = 8192;  // 2F from which clusters run along N
static_assert(size<1>(Tile{}) == kGegluGemmColumns, "geglu_gemm_kernel.h states the tile's width");

}  // namespace

bool geglu_gemm_compiled() {
  return true;
}

cudaError_t launch_geglu_gemm(const void* x, const void* w, const void* bias, void* out, int64_t m, int64_t k,
                              int64_t two_f, cudaStream_t stream) {
  const bool along_n = two_f >= kClustersAlongNFrom && (two_f / kGegluGemmColumns) % 2 == 0;
  return along_n ? ClustersAlongN::launch(x, w, bias, out, m, k, two_f, stream)
                 : ClustersAlongM::launch(x, w, bias, out, m, k, two_f, stream);
}

}  // namespace sdxlb::kernels

#else  // no CUTLASS in this build

namespace sdxlb::kernels {

bool geglu_gemm_compiled() {
  return false;
}

cudaError_t launch_geglu_gemm(const void*, const void*, const void*, void*, int64_t, int64_t, int64_t,
                              cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace sdxlb::kernels

#endif
