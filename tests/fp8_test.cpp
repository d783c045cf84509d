// FP8 (issue 17): the per-row e4m3 quantisation against tests/oracle/ref_fp8.py (written from the method with
// torch's float8_e4m3fn), the e4m3 product against the dequantised operands, the refusal where no FP8 GEMM
// runs, and on a GPU the quantisation kernel and the cuBLASLt product against the CPU reference.
#include "pipeline/nn/fp8.h"

#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "oracle_reference.h"
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

}  // namespace
}  // namespace sdxlb
