// residual_gemm: the ops it stands for on the CPU (bit for bit: the CPU path is diffusers' op order), and on
// a GPU the fused cuBLASLt GEMM (fp16 and e4m3) against those ops within one rounding, with the residual read
// through a channels-last view, replayed identically from a CUDA graph, and counted as fused.
#include "pipeline/nn/residual_gemm.h"

#include <cstdio>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/nn/fp8.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sdxlb {
namespace {

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return ((g - w).norm() / w.norm()).item<double>();
}

TEST(ResidualGemm, CpuRunsTheOps) {
  c10::InferenceMode guard;
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 7, 32}), w = at::randn({48, 32}), b = at::randn({48}),
                   r = at::randn({2, 7, 48});
  const ResidualGemmCounts before = residual_gemm_counts();
  EXPECT_TRUE(at::equal(linear_add(x, w, b, r), at::linear(x, w, b) + r));
  EXPECT_TRUE(at::equal(linear_add(x, w, {}, r), at::linear(x, w, {}) + r));
  const Fp8Weight fw = quantize_weight(w);
  const Fp8Activation fx = quantize_activation(x);
  EXPECT_TRUE(at::equal(fp8_linear_add(fx, fw, b, r), fp8_linear(fx, fw, b) + r));
  const ResidualGemmCounts after = residual_gemm_counts();
  EXPECT_EQ(after.unfused - before.unfused, 3);
  EXPECT_EQ(after.fused, before.fused);
  // A residual of the wrong size is refused with the shapes.
  EXPECT_THROW(linear_add(x, w, b, at::randn({2, 7, 47})), c10::Error);
}

#ifdef SDXLB_WITH_CUDA
// The UNet's shapes: a feed-forward's net.2 (5120 -> 1280 over 2048 rows) with the block's hidden state, and
// proj_out (640 -> 640 over 2·4096 rows) with its input read from a channels-last image.
TEST(ResidualGemmCuda, FusedGemmMatchesTheOpsWithinOneRounding) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(2);
  at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));  // a LibTorch op before any capture
  const auto opt = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
  struct Case {
    int64_t rows, in, out;
    bool channels_last;
  };
  for (const Case c : {Case{2048, 5120, 1280, false}, Case{8192, 640, 640, true}}) {
    SCOPED_TRACE(c10::str(c.rows, "x", c.in, " -> ", c.out));
    const at::Tensor x = at::randn({2, c.rows / 2, c.in}, opt);
    const at::Tensor w = at::randn({c.out, c.in}, opt) * (1.0 / std::sqrt(static_cast<double>(c.in)));
    const at::Tensor b = at::randn({c.out}, opt) * 0.1;
    at::Tensor r;
    if (c.channels_last) {
      const int64_t side = 64;  // 64 x 64 = 4096 tokens per image
      const at::Tensor image =
          at::randn({2, c.out, side, side}, opt).contiguous(at::MemoryFormat::ChannelsLast);
      r = image.permute({0, 2, 3, 1}).reshape({2, side * side, c.out});
      ASSERT_EQ(r.data_ptr(), image.data_ptr());  // a view: the GEMM reads the image's memory as rows
    } else {
      r = at::randn({2, c.rows / 2, c.out}, opt) * 3;
    }
    const at::Tensor exact =
        at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble)) + r.to(at::kDouble);
    const ResidualGemmCounts before = residual_gemm_counts();
    const at::Tensor got = linear_add(x, w, b, r);
    EXPECT_EQ(residual_gemm_counts().fused - before.fused, 1) << "the fused GEMM did not run";
    const at::Tensor ops = at::linear(x, w, b) + r;
    const double err_fused = relative_error(got, exact), err_ops = relative_error(ops, exact);
    std::printf("residual GEMM fp16 %lldx%lld->%lld: relative error %.3g fused, %.3g ops\n",
                static_cast<long long>(c.rows), static_cast<long long>(c.in), static_cast<long long>(c.out),
                err_fused, err_ops);
    // One rounding of the sum instead of two: no worse than the ops (with a little slack for the GEMMs'
    // own accumulation orders).
    EXPECT_LE(err_fused, err_ops * 1.2 + 1e-5);

    // e4m3: against fp8_linear + residual on the same quantised numbers.
    const Fp8Weight fw = quantize_weight(w);
    const Fp8Activation fx = quantize_activation(x);
    const ResidualGemmCounts before8 = residual_gemm_counts();
    const at::Tensor got8 = fp8_linear_add(fx, fw, b, r);
    EXPECT_EQ(residual_gemm_counts().fused - before8.fused, 1) << "the fused e4m3 GEMM did not run";
    const at::Tensor ops8 = fp8_linear(fx, fw, b) + r;
    const double diff8 = relative_error(got8, ops8);
    std::printf("residual GEMM e4m3 %lldx%lld->%lld: relative difference %.3g from the ops\n",
                static_cast<long long>(c.rows), static_cast<long long>(c.in), static_cast<long long>(c.out),
                diff8);
    EXPECT_LT(diff8, 2e-3);

    // Captured in a CUDA graph and replayed: the same bits.
    auto stream = c10::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      linear_add(x, w, b, r);
      fp8_linear_add(fx, fw, b, r);
      stream.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      const at::Tensor replayed = linear_add(x, w, b, r);
      const at::Tensor replayed8 = fp8_linear_add(fx, fw, b, r);
      graph.capture_end();
      graph.replay();
      stream.synchronize();
      EXPECT_TRUE(at::equal(replayed, got));
      EXPECT_TRUE(at::equal(replayed8, got8));
    }
  }
}
#endif

}  // namespace
}  // namespace sdxlb
