// FP8 (issue 17): the per-row e4m3 quantisation against tests/oracle/ref_fp8.py (written from the method with
// torch's float8_e4m3fn), the e4m3 product against the dequantised operands, the refusal where no FP8 GEMM
// runs, and on a GPU the quantisation kernels (alone and inside LayerNorm and GEGLU) and the cuBLASLt product
// against the references.
#include "pipeline/nn/fp8.h"

#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "oracle_reference.h"
#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/layers.h"

namespace sdxlb {
namespace {

using testing::open_reference;

TEST(Fp8Quantize, MatchesTorchFloat8Reference) {
  const auto ref = open_reference("fp8", "quantize");
  for (const char* name : {"f32", "f16"}) {
    SCOPED_TRACE(name);
    const at::Tensor x = ref.get(std::string("x_") + name);
    const auto [q, scale] = quantize_rows_reference(x);
    EXPECT_EQ(q.scalar_type(), at::kFloat8_e4m3fn);
    EXPECT_TRUE(at::equal(scale, ref.get(std::string("scale_") + name)));
    EXPECT_TRUE(at::equal(q.view(at::kByte), ref.get(std::string("q_") + name)));
    // quantize_rows is the reference on the CPU.
    const auto [q2, scale2] = quantize_rows(x);
    EXPECT_TRUE(at::equal(q2.view(at::kByte), q.view(at::kByte)));
    EXPECT_TRUE(at::equal(scale2, scale));
  }
}

TEST(Fp8Quantize, WeightScalesArePerOutputChannel) {
  const auto ref = open_reference("fp8", "quantize");
  const at::Tensor w = ref.get("lin_w");
  const Fp8Weight q = quantize_weight(w);
  EXPECT_EQ(q.q.sizes(), w.sizes());
  EXPECT_EQ(q.scale.sizes(), (at::IntArrayRef{1, w.size(0)}));
  const at::Tensor back = q.q.to(at::kFloat) * q.scale.t();
  EXPECT_LE((back - w).abs().max().item<float>(), w.abs().max().item<float>() * 0.0625f);
}

// fp8_linear's arithmetic (LibTorch's _scaled_mm, emulated on the CPU) is the product of the dequantised
// operands the Python reference computes.
TEST(Fp8Linear, IsTheProductOfTheDequantisedOperands) {
  const auto ref = open_reference("fp8", "quantize");
  c10::InferenceMode guard;
  const at::Tensor y = fp8_linear(ref.get("lin_x"), quantize_weight(ref.get("lin_w")), ref.get("lin_b"));
  const at::Tensor expected = ref.get("lin_y");
  EXPECT_LE((y - expected).abs().max().item<float>(), 1e-4f * expected.abs().max().item<float>());
}

TEST(Fp8Support, RefusedOnTheCpuWithAReason) {
  std::string why;
  EXPECT_FALSE(fp8_supported(at::Device(at::kCPU), &why));
  EXPECT_NE(why.find("compute capability 8.9"), std::string::npos) << why;
}

// The CUDA kernel gives the reference's bits, and the cuBLASLt product the dequantised operands' values.
TEST(Fp8Cuda, KernelAndProductMatchTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(17);
  for (const at::ScalarType dt : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    at::Tensor x = at::randn({300, 1280}).to(dt);
    x[7] = x[7] * 1000;
    x[8] = 0;
    const auto [qc, sc] = quantize_rows_reference(x);
    const auto [qg, sg] = quantize_rows(x.cuda());
    EXPECT_TRUE(at::equal(qg.view(at::kByte).cpu(), qc.view(at::kByte)));
    EXPECT_TRUE(at::equal(sg.cpu(), sc));
    const at::Tensor w = at::randn({640, 1280}).to(dt) * 0.02, b = at::randn({640}).to(dt);
    const Fp8Weight wq = quantize_weight(w.cuda());
    const at::Tensor xs = x.narrow(0, 0, 256).reshape({2, 128, 1280}).cuda();
    const at::Tensor y = fp8_linear(xs, wq, b.cuda()).cpu().to(at::kFloat);
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 128, 640}));
    const auto [qx, sx] = quantize_rows_reference(xs.reshape({256, 1280}).cpu());
    const at::Tensor expected =
        ((qx.to(at::kDouble) * sx.to(at::kDouble))
             .matmul((wq.q.cpu().to(at::kDouble) * wq.scale.cpu().to(at::kDouble).t()).t()) +
         b.to(at::kDouble))
            .to(at::kFloat)
            .view({2, 128, 640});
    // The output is rounded to fp16/bf16: within its half unit, relative to the row's largest value.
    const float tol = dt == at::kHalf ? 2e-3f : 1e-2f;
    EXPECT_LE((y - expected).abs().max().item<float>(), tol * expected.abs().max().item<float>());
  }
}

// The LayerNorm and GEGLU kernels that quantise their own output rows give the bits of their unfused output
// quantised by quantize_rows (the kernels' own paths on the same GPU), at the UNet's widths, at the largest
// row the fused kernels take, and past it (where they fall back to the ops); and the quantiser itself on
// widths its 16-byte path does not take.
TEST(Fp8Cuda, FusedLayerNormAndGegluQuantiseLikeTheOps) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(23);
  auto same = [](const E4m3Rows& a, const std::pair<at::Tensor, at::Tensor>& b) {
    return at::equal(a.q.view(at::kByte).cpu(), b.first.view(at::kByte).cpu()) &&
           at::equal(a.scale.cpu(), b.second.cpu());
  };
  for (const at::ScalarType dt : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dt));
    const auto cuda = at::TensorOptions().dtype(dt).device(at::kCUDA);
    for (const int64_t d : {640, 1280, 2048, 2560}) {
      SCOPED_TRACE("LayerNorm width " + std::to_string(d));
      const at::Tensor x = at::randn({2, 333, d}, cuda), r = at::randn({2, 333, d}, cuda) * 3;
      const at::Tensor g = at::randn({d}, cuda), b = at::randn({d}, cuda);
      const E4m3Rows plain = layer_norm_e4m3(x, {}, g, b, 1e-5, nullptr);
      EXPECT_TRUE(same(plain, quantize_rows(layer_norm(x, g, b, 1e-5).view({-1, d}))));
      at::Tensor sum;
      const E4m3Rows added = layer_norm_e4m3(x, r, g, b, 1e-5, &sum);
      const auto [sum_ops, y_ops] = add_layer_norm(x, r, g, b, 1e-5);
      EXPECT_TRUE(at::equal(sum, sum_ops));
      EXPECT_TRUE(same(added, quantize_rows(y_ops.view({-1, d}))));
    }
    for (const int64_t f : {2560, 5120, 8192, 8200}) {
      SCOPED_TRACE("GEGLU width " + std::to_string(f));
      at::Tensor p = at::randn({2, 129, 2 * f}, cuda) * 2;
      p[0][5].zero_();
      EXPECT_TRUE(same(geglu_e4m3(p), quantize_rows(geglu(p).view({-1, f}))));
    }
    for (const int64_t cols : {5120, 2048, 1000, 640, 77}) {
      SCOPED_TRACE("quantiser width " + std::to_string(cols));
      const at::Tensor x = at::randn({65, cols}).to(dt);
      const auto [qc, sc] = quantize_rows_reference(x);
      const auto [qg, sg] = quantize_rows(x.cuda());
      EXPECT_TRUE(at::equal(qg.view(at::kByte).cpu(), qc.view(at::kByte)));
      EXPECT_TRUE(at::equal(sg.cpu(), sc));
    }
  }
}

}  // namespace
}  // namespace sdxlb
