// FP8 (issue 17): the per-row e4m3 quantisation against tests/oracle/ref_fp8.py (written from the method with
// torch's float8_e4m3fn), the e4m3 product against the dequantised operands, the refusal where no FP8 GEMM
// runs, and on a GPU the quantisation kernels (alone and inside LayerNorm and GEGLU) and the GPU products
// (cuBLASLt's and our CUTLASS GEMM) against the references.
#include "pipeline/nn/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>

#include "oracle_reference.h"
#include "pipeline/nn/fused_ops.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"

#ifdef SDXLB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "pipeline/nn/kernels/group_norm_kernel.h"
#endif

namespace sdxlb {
namespace {

using testing::open_reference;
using testing::rel_err;

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

// The convolution's quantisation (activations per sample over their channels-last values, the weight per
// output channel over its [3, 3, in] rows) gives the Python reference's bits, and fp8_conv on the CPU the
// convolution of the dequantised operands.
TEST(Fp8Conv, QuantisationAndProductMatchTheReference) {
  const auto ref = open_reference("fp8", "quantize");
  c10::InferenceMode guard;
  const at::Tensor x = ref.get("conv_x"), w = ref.get("conv_w");
  const auto [qx, sx] = quantize_samples_reference(x);
  EXPECT_EQ(qx.sizes(), (at::IntArrayRef{2, 6, 5, 32}));
  EXPECT_TRUE(at::equal(qx.view(at::kByte), ref.get("conv_qx")));
  EXPECT_TRUE(at::equal(sx, ref.get("conv_sx")));
  // The same numbers whatever x's memory format.
  const auto [qx_cl, sx_cl] = quantize_samples_reference(x.contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(at::equal(qx_cl.view(at::kByte), qx.view(at::kByte)));
  const Fp8ConvWeight qw = quantize_conv_weight(w);
  EXPECT_EQ(qw.q.sizes(), (at::IntArrayRef{48, 3, 3, 32}));
  EXPECT_TRUE(at::equal(qw.q.view(at::kByte), ref.get("conv_qw")));
  EXPECT_TRUE(at::equal(qw.scale, ref.get("conv_sw")));
  const at::Tensor y = fp8_conv(x, qw), expected = ref.get("conv_y");
  EXPECT_EQ(y.sizes(), expected.sizes());
  for (int64_t s = 0; s < 2; ++s)  // each sample against its own scale (the second is 100x the first)
    EXPECT_LE((y[s] - expected[s]).abs().max().item<float>(), 1e-5f * expected[s].abs().max().item<float>());
}

// A Conv2d switched to FP8 runs fp8_conv (and its bias) and holds no fp16 weight; the UNet's switch takes
// exactly the resnets' and upsamplers' 3x3 convolutions.
TEST(Fp8Conv, Conv2dRunsTheFp8Product) {
  const auto ref = open_reference("fp8", "quantize");
  c10::InferenceMode guard;
  Conv2d conv(32, 48, 3, 1, 1);
  conv->weight.copy_(ref.get("conv_w"));
  conv->bias.copy_(at::arange(48, at::kFloat) * 0.1);
  conv->use_fp8(quantize_conv_weight(conv->weight));
  const at::Tensor y = conv(ref.get("conv_x"));
  const at::Tensor expected = ref.get("conv_y") + conv->bias.view({1, -1, 1, 1});
  EXPECT_LE((y - expected).abs().max().item<float>(), 1e-5f * expected.abs().max().item<float>());
}

// An input quantised ahead (GroupNorm::forward_act_e4m3, the resnets' path) gives what quantising the
// GroupNorm's output inside the convolution gives: the same quantised bits and scales, the same output.
TEST(Fp8Conv, GroupNormQuantisedAheadIsTheSameConvolution) {
  const auto ref = open_reference("fp8", "quantize");
  c10::InferenceMode guard;
  at::manual_seed(31);
  const at::Tensor x = ref.get("conv_x");  // [2, 32, 6, 5], the samples 100x apart
  GroupNorm norm(8, 32, 1e-5);
  norm->weight.copy_(at::rand({32}) + 0.5);
  norm->bias.copy_(at::randn({32}) * 0.1);
  Conv2d conv(32, 48, 3, 1, 1);
  conv->weight.copy_(ref.get("conv_w"));
  conv->use_fp8(quantize_conv_weight(conv->weight));
  const at::Tensor add_c = at::randn({32}), add_nc = at::randn({2, 32});
  for (const bool silu : {true, false}) {
    SCOPED_TRACE(silu ? "with SiLU" : "without SiLU");
    const at::Tensor y = norm->forward_act(x, silu, add_c, add_nc);
    const E4m3Samples q = norm->forward_act_e4m3(x, silu, add_c, add_nc);
    const auto [qy, sy] = quantize_samples_reference(y);
    EXPECT_EQ(q.q.sizes(), (at::IntArrayRef{2, 6, 5, 32}));
    EXPECT_TRUE(at::equal(q.q.view(at::kByte), qy.view(at::kByte)));
    EXPECT_EQ(q.pixel_scale.sizes(), (at::IntArrayRef{2, 30}));
    EXPECT_TRUE(at::equal(q.pixel_scale, sy.expand({2, 30})));
    EXPECT_TRUE(at::equal(conv->forward_without_bias(q, at::kFloat), conv->forward_without_bias(y)));
  }
  Conv2d plain(32, 48, 3, 1, 1);  // not switched to FP8: refused
  EXPECT_THROW(plain->forward_without_bias(norm->forward_act_e4m3(x, true), at::kFloat), c10::Error);
}

// An upsampler switched to its phase convolution (resnet_block.h) and then to FP8: use_fp8_convolutions takes
// the 3x3 convolution and the 2x2 phase convolution, and the upsampler's output is the FP8 product of the
// phase convolution (the dequantised operands, the bias after the gather), close to the float32 upsampler.
TEST(Fp8Conv, UpsamplerPhaseConvolutionInFp8) {
  c10::InferenceMode guard;
  at::manual_seed(43);
  Upsample2D up(Upsample2DOptions(32).use_conv(true).out_channels(48));
  // Named as in the UNet ("up_blocks.0.upsamplers.0.conv"): the FP8 switch takes resnets and upsamplers.
  auto root = std::make_shared<torch::nn::Module>();
  root->register_module("block", std::make_shared<torch::nn::Module>())
      ->register_module("upsamplers", torch::nn::ModuleList(up));
  for (auto& p : up->named_parameters()) p.value().normal_().mul_(0.1);
  const at::Tensor x = at::randn({2, 32, 5, 6});
  const at::Tensor plain = up->forward(x);
  ASSERT_TRUE(up->use_phase_convolution());
  const at::Tensor phase_weight = up->named_parameters()["phase_conv.weight"].clone();
  const at::Tensor bias = up->named_parameters()["conv.bias"];
  EXPECT_EQ(use_fp8_convolutions(*root), 2);
  const at::Tensor got = up->forward(x);
  const at::Tensor want = upsample_phases(fp8_conv(x, quantize_conv_weight(phase_weight)), bias);
  EXPECT_TRUE(at::equal(got, want));
  const double err = ((got - plain).abs().max() / plain.abs().max()).item<double>();
  EXPECT_LT(err, 0.1);
  EXPECT_GT(err, 0.0);  // FP8 products, not the float32 ones
}

TEST(Fp8Support, RefusedOnTheCpuWithAReason) {
  std::string why;
  EXPECT_FALSE(fp8_supported(at::Device(at::kCPU), &why));
  EXPECT_NE(why.find("compute capability 8.9"), std::string::npos) << why;
  why.clear();
  EXPECT_FALSE(fp8_conv_supported(at::Device(at::kCPU), &why));
  EXPECT_FALSE(why.empty());
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

// Our CUTLASS FP8 GEMM (kernels/fp8_gemm_kernel.h), which fp8_linear runs on Hopper for the UNet's layers
// (fp16, fast accumulation), against the dequantised operands' product in float64 and against cuBLASLt's
// at::_scaled_mm with the same accumulation; with and without bias, at the UNet's widths; and the shapes it
// does not take (K not a multiple of 128) still go to cuBLASLt, bit for bit.
TEST(Fp8Cuda, OurGemmIsTheLinear) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(19);
  struct Shape {
    int64_t rows, in, out;
    bool bias;
  };
  for (const Shape& s : {Shape{2048, 1280, 1280, true}, Shape{4096, 640, 5120, true},
                         Shape{1000, 2560, 640, false}, Shape{256, 208, 640, true}}) {
    SCOPED_TRACE(std::to_string(s.rows) + "x" + std::to_string(s.in) + "->" + std::to_string(s.out));
    at::Tensor x = at::randn({s.rows, s.in}).to(at::kHalf);
    x[3] = x[3] * 300;
    const at::Tensor b = s.bias ? at::randn({s.out}).to(at::kHalf) : at::Tensor();
    Fp8Weight w = quantize_weight((at::randn({s.out, s.in}) * 0.02).to(at::kHalf).cuda());
    w.fast_accum = true;
    const Fp8Activation a = quantize_activation(x.cuda());
    const at::Tensor bc = s.bias ? b.cuda() : at::Tensor();
    const at::Tensor y = fp8_linear(a, w, bc);
    ASSERT_EQ(y.scalar_type(), at::kHalf);
    std::optional<at::Tensor> bo;
    if (s.bias) bo = bc;
    const at::Tensor lt = at::_scaled_mm(a.q, w.q.t(), a.scale, w.scale, bo, std::nullopt, at::kHalf, true);
    at::Tensor expected = (a.q.cpu().to(at::kDouble) * a.scale.cpu().to(at::kDouble))
                              .matmul((w.q.cpu().to(at::kDouble) * w.scale.cpu().to(at::kDouble).t()).t());
    if (s.bias) expected = expected + b.to(at::kDouble);
    const at::Tensor yf = y.cpu().to(at::kDouble);
    // Per row, relative to the row's largest value: as close to the exact product as cuBLASLt with the same
    // fast accumulation, whose error grows with K (5.5e-3 at K = 2560 on the H100), give or take two fp16
    // units; and within a few fp16 units of cuBLASLt's output.
    const at::Tensor row_max = expected.abs().amax(-1, true).clamp_min(1e-3);
    const at::Tensor ltf = lt.cpu().to(at::kDouble);
    const double ours = ((yf - expected).abs() / row_max).max().item<double>();
    const double library = ((ltf - expected).abs() / row_max).max().item<double>();
    std::printf("FP8 GEMM %lldx%lld->%lld: error %.2e (cuBLASLt %.2e) of the row's largest value\n",
                static_cast<long long>(s.rows), static_cast<long long>(s.in), static_cast<long long>(s.out),
                ours, library);
    EXPECT_LE(ours, library + 1e-3);
    EXPECT_LE(((yf - ltf).abs() / row_max).max().item<double>(), 3e-3);
    if (s.in % 128 != 0) {
      EXPECT_TRUE(at::equal(y, lt));  // not ours: cuBLASLt's bits
    }
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

// The CUTLASS convolution against the product of the same quantised operands in float64, at SDXL's channel
// counts (a 160- and a 128-wide tile of output channels, input channels that are not a multiple of the
// 128-wide K tile), and the quantiser's bits against the reference. The kernel accumulates in the tensor
// cores' own accumulator, which keeps fewer bits than float32 (fast accumulation): its error grows with
// K = size² · C, about as √K: on an H100 (session 32), 1.7e-3 to 2.0e-3 of the output's range at K = 1280,
// 2.7e-3 at 2560 and 2880, 5.1e-3 at 5760 and 1.1e-2 at 23040, both filter sizes on one curve (at most
// 7.3e-5 · √K); the bound is 1.2e-4 · √K (a wrong layout, phase or scale is off by the output's whole
// range). The earlier bound of 1.5e-6 · K, from the 3x3 shapes on the H200, was too tight at the 2x2 phase
// convolutions' smaller K. And each image's output is the same whatever else is in the batch.
TEST(Fp8ConvCuda, CutlassMatchesTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_conv_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 convolution kernel on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(29);
  struct Shape {
    int64_t n, c, k, h, w;
  };
  // Size 2: the upsamplers' phase convolutions (resnet_block.h), whose output has one more row and column.
  for (const auto& [s, r] : {std::pair<Shape, int64_t>{Shape{2, 320, 320, 32, 32}, 3},
                             {Shape{3, 640, 1280, 16, 16}, 3},
                             {Shape{2, 960, 320, 24, 20}, 3},
                             {Shape{1, 2560, 1280, 8, 8}, 3},
                             {Shape{2, 640, 2560, 16, 16}, 2},
                             {Shape{3, 320, 1280, 12, 10}, 2},
                             {Shape{1, 1280, 320, 8, 8}, 2}}) {
    SCOPED_TRACE(std::to_string(s.c) + "->" + std::to_string(s.k) + " at " + std::to_string(s.h) + "x" +
                 std::to_string(s.w) + ", size " + std::to_string(r));
    at::Tensor x = at::randn({s.n, s.c, s.h, s.w}).to(at::kHalf);
    x[0] = x[0] * 30;  // samples of different ranges: each has its own scale
    const at::Tensor w = at::randn({s.k, s.c, r, r}) * 0.02;
    const at::Tensor xg = x.cuda().contiguous(at::MemoryFormat::ChannelsLast);
    const Fp8ConvWeight wq = quantize_conv_weight(w.to(at::kHalf).cuda());
    const Fp8ConvWeight wc = quantize_conv_weight(w.to(at::kHalf));
    EXPECT_TRUE(at::equal(wq.q.view(at::kByte).cpu(), wc.q.view(at::kByte)));
    const auto [qg, sg] = quantize_samples(xg);
    const auto [qx, sx] = quantize_samples_reference(x);
    EXPECT_TRUE(at::equal(qg.view(at::kByte).cpu(), qx.view(at::kByte)));
    EXPECT_TRUE(at::equal(sg.cpu(), sx));
    const at::Tensor y = fp8_conv(xg, wq);
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{s.n, s.k, s.h + 3 - r, s.w + 3 - r}));
    EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
    const at::Tensor dx =
        (qx.to(at::kDouble) * sx.to(at::kDouble).view({s.n, 1, 1, 1})).permute({0, 3, 1, 2});
    const at::Tensor dw =
        (wc.q.to(at::kDouble) * wc.scale.to(at::kDouble).view({s.k, 1, 1, 1})).permute({0, 3, 1, 2});
    const at::Tensor expected = at::conv2d(dx, dw, {}, {1, 1}, {1, 1});
    const at::Tensor got = y.cpu().to(at::kDouble);
    const double tol = 1.2e-4 * std::sqrt(static_cast<double>(r * r * s.c));
    for (int64_t i = 0; i < s.n; ++i) {
      const double range = expected[i].abs().max().item<double>();
      const double err = (got[i] - expected[i]).abs().max().item<double>() / range;
      std::printf("FP8 conv %lld->%lld size %lld sample %lld: error %.3g of the range (bound %.3g)\n",
                  static_cast<long long>(s.c), static_cast<long long>(s.k), static_cast<long long>(r),
                  static_cast<long long>(i), err, tol);
      EXPECT_LE(err, tol) << "sample " << i;
    }
    // Batch invariance: the last image alone gives the same bits.
    const at::Tensor alone =
        fp8_conv(xg.narrow(0, s.n - 1, 1).contiguous(at::MemoryFormat::ChannelsLast), wq);
    EXPECT_TRUE(at::equal(alone.cpu(), y.narrow(0, s.n - 1, 1).cpu()));
  }
}

// The GroupNorm kernel's e4m3 output (group_norm_act_e4m3: the resnets' norms before an FP8 convolution)
// against the GroupNorm kernel's fp16/bf16 output: one scale per sample, at least the per-sample reference's
// (the bound covers every output) and within 8x of it (the largest ratio is printed), and the bytes of that
// output converted at the kernel's scale as the reference converts at its own; at the UNet's resnet shapes
// (with and without the convolution bias and time embedding added first, with and without SiLU, with weights
// of both signs, and with outputs all below SiLU's largest magnitude on negative inputs), per sample; and
// the FP8 convolution on it as close to the float32 convolution as the reference's quantisation. With the
// bound off (the launcher's exact mode), the reference's bits and scales, and the same convolution.
TEST(Fp8ConvCuda, GroupNormQuantisesLikeTheOps) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(37);
  struct Shape {
    int64_t n, c, h, w;
  };
  double largest_ratio = 0.0;
  for (const at::ScalarType dt : {at::kHalf, at::kBFloat16}) {
    const auto cuda = at::TensorOptions().dtype(dt).device(at::kCUDA);
    for (const Shape& s : {Shape{2, 320, 128, 128}, Shape{2, 640, 64, 64}, Shape{3, 1280, 32, 32},
                           Shape{2, 2560, 32, 32}, Shape{2, 960, 20, 24}}) {
      // The weights: positive; of both signs (the normalisation decreasing in x on some channels); and so
      // small that every SiLU output stays below 0.3 (where the maximum may come from a negative input).
      for (const auto& [silu, weights] :
           {std::pair<bool, int>{true, 0}, {false, 0}, {true, 1}, {false, 1}, {true, 2}}) {
        SCOPED_TRACE(std::string(c10::toString(dt)) + " " + std::to_string(s.c) + " at " +
                     std::to_string(s.h) + "x" + std::to_string(s.w) + (silu ? " with SiLU" : "") +
                     (weights == 1   ? ", weights of both signs"
                      : weights == 2 ? ", small outputs"
                                     : ""));
        at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, cuda).contiguous(at::MemoryFormat::ChannelsLast);
        x[0].mul_(20);  // samples of different ranges: each has its own scale
        const at::Tensor g = weights == 0   ? at::rand({s.c}, cuda) + 0.5
                             : weights == 1 ? at::randn({s.c}, cuda)
                                            : at::rand({s.c}, cuda) * 0.05;
        const at::Tensor b = at::randn({s.c}, cuda) * (weights == 2 ? 0.01 : 0.2);
        const at::Tensor add_c = silu ? at::randn({s.c}, cuda) : at::Tensor();
        const at::Tensor add_nc = silu ? at::randn({s.n, s.c}, cuda) : at::Tensor();
        const at::Tensor y = group_norm_act(x, 32, g, b, 1e-5, silu, add_c, add_nc);
        const E4m3Samples q = group_norm_act_e4m3(x, 32, g, b, 1e-5, silu, add_c, add_nc);
        // The reference on the CPU: on the GPU, ATen divides by a scalar as a product with its reciprocal.
        const auto [qy, sy] = quantize_samples_reference(y.cpu());
        ASSERT_EQ(q.q.sizes(), qy.sizes());
        const at::Tensor ps = q.pixel_scale.cpu(), scale = ps.select(1, 0).contiguous();
        EXPECT_TRUE(at::equal(ps, scale.view({-1, 1}).expand_as(ps))) << "one scale per sample";
        const at::Tensor ratio = scale.to(at::kDouble) / sy.view({-1}).to(at::kDouble);
        EXPECT_GE(ratio.min().item<double>(), 1.0) << "a scale below the sample's largest output / 448";
        EXPECT_LE(ratio.max().item<double>(), 8.0);
        largest_ratio = std::max(largest_ratio, ratio.max().item<double>());
        // The reference's conversion at the kernel's scale: the output in channels-last order times the
        // scale's float32 reciprocal, rounded to the nearest e4m3.
        const at::Tensor want =
            (y.cpu().to(at::kFloat).permute({0, 2, 3, 1}) * scale.reciprocal().view({-1, 1, 1, 1}))
                .to(at::kFloat8_e4m3fn);
        EXPECT_TRUE(at::equal(q.q.view(at::kByte).cpu(), want.contiguous().view(at::kByte)));
        EXPECT_GT(q.pixel_scale[0][0].item<float>(), 0.f);
#ifdef SDXLB_WITH_CUDA
        // With the bound off (the fusion "gnbound"), the kernel's own pass over its outputs: the per-sample
        // reference's bits and scales.
        kernels::GroupNormArgs args;
        args.x = x.data_ptr();
        args.gamma = g.data_ptr();
        args.beta = b.data_ptr();
        args.add_c = add_c.defined() ? add_c.data_ptr() : nullptr;
        args.add_nc = add_nc.defined() ? add_nc.data_ptr() : nullptr;
        args.n = s.n;
        args.hw = s.h * s.w;
        args.c = s.c;
        args.groups = 32;
        args.eps = 1e-5f;
        args.silu = silu;
        const at::Tensor ws =
            at::empty({static_cast<int64_t>(kernels::group_norm_workspace_bytes(s.n, s.h * s.w, s.c, 32))},
                      x.options().dtype(at::kByte));
        const at::Tensor exact_q = at::empty({s.n, s.h, s.w, s.c}, x.options().dtype(at::kFloat8_e4m3fn));
        const at::Tensor exact_scale = at::empty({s.n, s.h * s.w}, x.options().dtype(at::kFloat));
        const at::Tensor amax = at::empty({s.n}, x.options().dtype(at::kInt));
        ASSERT_EQ(kernels::launch_group_norm_e4m3(dt == at::kHalf ? 1 : 2, args, ws.data_ptr(),
                                                  exact_q.data_ptr(), exact_scale.data_ptr<float>(),
                                                  static_cast<unsigned*>(amax.data_ptr()), /*bound=*/false,
                                                  nullptr),
                  cudaSuccess);
        EXPECT_TRUE(at::equal(exact_q.view(at::kByte).cpu(), qy.view(at::kByte).cpu()));
        EXPECT_TRUE(at::equal(exact_scale.cpu(), sy.expand({s.n, s.h * s.w}).cpu()));
#endif
        if (weights == 2) {
          EXPECT_LT(y.abs().max().item<float>(), 0.3f);
        }
        // Per sample: the last image alone gives its bits.
        const E4m3Samples alone = group_norm_act_e4m3(x.narrow(0, s.n - 1, 1), 32, g, b, 1e-5, silu, add_c,
                                                      silu ? add_nc.narrow(0, s.n - 1, 1) : add_nc);
        EXPECT_TRUE(
            at::equal(alone.q.view(at::kByte).cpu(), q.q.narrow(0, s.n - 1, 1).view(at::kByte).cpu()));
        if (dt == at::kHalf && s.c <= 1280 && fp8_conv_supported(at::Device(at::kCUDA, 0))) {
          const Fp8ConvWeight wq = quantize_conv_weight((at::randn({320, s.c, 3, 3}) * 0.02).to(dt).cuda());
          // Against the float32 convolution of the fp16 output with the dequantised weight: as close as
          // the convolution of the output quantised at the reference's exact scale (e4m3 is a floating-point
          // format: a larger scale moves no value out of its precision unless it becomes subnormal).
          const at::Tensor wf = (wq.q.to(at::kFloat) * wq.scale.view({-1, 1, 1, 1})).permute({0, 3, 1, 2});
          const at::Tensor exact = at::conv2d(y.to(at::kFloat), wf.contiguous(), {}, 1, 1);
          const double ours = rel_err(fp8_conv(q.q, q.pixel_scale, wq, dt).to(at::kFloat), exact);
          const double reference = rel_err(fp8_conv(y, wq).to(at::kFloat), exact);
          EXPECT_LE(ours, 1.25 * reference + 1e-3) << "the reference's error " << reference;
#ifdef SDXLB_WITH_CUDA
          EXPECT_TRUE(at::equal(fp8_conv(exact_q, exact_scale, wq, dt).cpu(), fp8_conv(y, wq).cpu()));
#endif
        }
      }
    }
  }
  std::printf("GroupNorm e4m3: the bound's scale is at most %.3gx the per-sample reference's\n",
              largest_ratio);
}

// The upsamplers' FP8 convolutions take their input quantised before the upsampling
// (upsample_nearest2x_e4m3): the bits and scales of quantising the upsampled image, at the UNet's two
// upsampler shapes, per sample.
TEST(Fp8ConvCuda, UpsampledQuantisationIsTheSame) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(41);
  for (const at::ScalarType dt : {at::kHalf, at::kBFloat16}) {
    for (const auto& [c, hw] : {std::pair<int64_t, int64_t>{1280, 32}, {640, 64}}) {
      SCOPED_TRACE(std::string(c10::toString(dt)) + " " + std::to_string(c));
      at::Tensor x = at::randn({2, c, hw, hw}, at::TensorOptions().dtype(dt).device(at::kCUDA))
                         .contiguous(at::MemoryFormat::ChannelsLast);
      x[1].mul_(50);
      const E4m3Samples got = upsample_nearest2x_e4m3(x);
      const auto [q, scale] = quantize_samples_reference(upsample_nearest2x(x).cpu());
      ASSERT_EQ(got.q.sizes(), q.sizes());
      EXPECT_TRUE(at::equal(got.q.view(at::kByte).cpu(), q.view(at::kByte)));
      EXPECT_TRUE(at::equal(got.pixel_scale.cpu(), scale.expand({2, 4 * hw * hw})));
    }
  }
}

}  // namespace
}  // namespace sdxlb
