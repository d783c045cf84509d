// FP8 convolutions (issue 17, part of unet_precision: fp8): per-image input scales and per-channel weight
// scales are fp8.h's row rule, the reference is a convolution within e4m3's rounding, an image's numbers do
// not depend on the images beside it, the switch takes exactly the resnets' conv1 and conv2, the refusal
// where cuDNN's FP8 convolution does not run, and on a Hopper GPU the quantisation kernel and cuDNN's FP8
// convolution against the references, batch invariance and CUDA-graph replay.
#include "pipeline/nn/fp8_conv.h"

#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/nn/fp8.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"

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

at::Tensor channels_last(const at::Tensor& x) {
  return x.contiguous(at::MemoryFormat::ChannelsLast);
}

// Each image is one row of fp8.h's rule: its scale is its own largest magnitude / 448, and its e4m3 values
// are those of the row quantiser on that image alone, so scaling the other image changes nothing in it.
TEST(Fp8Conv, ImagesAreQuantisedOneScaleEach) {
  c10::InferenceMode guard;
  at::manual_seed(3);
  at::Tensor x = channels_last(at::randn({2, 16, 6, 5}) * at::tensor({3.f, 0.01f}).view({2, 1, 1, 1}));
  const Fp8Images q = quantize_images(x);
  ASSERT_EQ(q.q.scalar_type(), at::kFloat8_e4m3fn);
  ASSERT_EQ(q.scale.sizes(), at::IntArrayRef({2}));
  EXPECT_TRUE(q.q.is_contiguous(at::MemoryFormat::ChannelsLast));
  for (int64_t i = 0; i < 2; ++i) {
    SCOPED_TRACE("image " + std::to_string(i));
    const at::Tensor image = x[i];
    EXPECT_FLOAT_EQ(q.scale[i].item<float>(), image.abs().max().item<float>() / 448.f);
    auto [rq, rs] = quantize_rows_reference(image.reshape({1, -1}));
    EXPECT_TRUE(
        at::equal(q.q[i].contiguous().view(at::kByte).reshape({-1}), rq.view(at::kByte).reshape({-1})));
    // Dequantised: within e4m3's rounding (half a unit in the last of 3 mantissa bits) of the input, above
    // the subnormal range.
    const at::Tensor back = q.q[i].to(at::kFloat) * q.scale[i];
    const at::Tensor big = image.abs() > q.scale[i] * 0.015625;
    EXPECT_LE(((back - image).abs() / image.abs()).masked_select(big).max().item<float>(), 1.f / 16 + 1e-6);
  }
  at::Tensor louder = x.clone();
  louder[0].mul_(100);
  const Fp8Images q2 = quantize_images(louder);
  EXPECT_TRUE(at::equal(q2.q[1].view(at::kByte), q.q[1].view(at::kByte)));
  EXPECT_FLOAT_EQ(q2.scale[1].item<float>(), q.scale[1].item<float>());
}

// One scale per output channel, and the e4m3 weight in channels-last memory (cuDNN's FP8 layout).
TEST(Fp8Conv, WeightHasOneScalePerOutputChannel) {
  c10::InferenceMode guard;
  at::manual_seed(4);
  const at::Tensor w = at::randn({8, 16, 3, 3}) * at::linspace(0.01, 2.0, 8).view({8, 1, 1, 1});
  const Fp8ConvWeight q = quantize_conv_weight(w);
  ASSERT_EQ(q.q.sizes(), w.sizes());
  EXPECT_TRUE(q.q.is_contiguous(at::MemoryFormat::ChannelsLast));
  const at::Tensor want = std::get<0>(w.abs().reshape({8, -1}).max(1)) / 448;
  EXPECT_TRUE(at::allclose(q.scale, want, 1e-6, 0));
  const at::Tensor back = q.q.to(at::kFloat) * q.scale.view({-1, 1, 1, 1});
  EXPECT_LT(relative_error(back, w), 0.04);
}

// The reference is float32 convolution of the dequantised operands: a few percent from the unquantised
// convolution, and far off if either scale were dropped.
TEST(Fp8Conv, ReferenceIsAConvolutionWithinE4m3Rounding) {
  c10::InferenceMode guard;
  at::manual_seed(5);
  const at::Tensor x = channels_last(at::randn({2, 32, 12, 10}) * 4);
  const at::Tensor w = at::randn({24, 32, 3, 3}) * 0.05;
  const Fp8Images qx = quantize_images(x);
  const Fp8ConvWeight qw = quantize_conv_weight(w);
  for (const int64_t stride : {1, 2}) {
    SCOPED_TRACE("stride " + std::to_string(stride));
    const at::Tensor want = at::conv2d(x, w, {}, {stride, stride}, {1, 1});
    const at::Tensor got = fp8_conv2d(qx, qw, stride, 1, at::kFloat);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_LT(relative_error(got, want), 0.05);
    Fp8Images unscaled = qx;
    unscaled.scale = at::ones_like(qx.scale);
    EXPECT_GT(relative_error(fp8_conv2d(unscaled, qw, stride, 1, at::kFloat), want), 0.5);
  }
}

TEST(Fp8Conv, RefusedOnTheCpuWithAReason) {
  std::string why;
  EXPECT_FALSE(fp8_conv_supported(at::Device(at::kCPU), &why));
  EXPECT_NE(why.find("Hopper"), std::string::npos) << why;
}

// use_fp8_convs takes a resnet's conv1 and conv2 (their fp16 weights released), leaves the 1×1 shortcut,
// and the block's output stays within e4m3's rounding of the float32 block.
TEST(Fp8Conv, SwitchesTheResnetConvolutionsOnly) {
  c10::InferenceMode guard;
  at::manual_seed(6);
  ResnetBlock2D block(ResnetBlock2DOptions(32, 64).temb_channels(16).groups(8));
  for (auto& p : block->named_parameters()) {
    const bool norm_weight =
        p.key().find("norm") != std::string::npos && p.key().find("weight") != std::string::npos;
    p.value().copy_(norm_weight ? at::ones_like(p.value()) + at::randn_like(p.value()) * 0.1
                                : at::randn_like(p.value()) * 0.1);
  }
  const at::Tensor x = at::randn({2, 32, 8, 8}), temb = at::randn({2, 16});
  const at::Tensor want = block(x, temb);
  EXPECT_EQ(use_fp8_convs(*block), 2);
  int fp8 = 0;
  for (const auto& child : block->named_children()) {
    const auto* conv = child.value()->as<Conv2dImpl>();
    if (conv == nullptr) continue;
    const bool resnet_conv = child.key() == "conv1" || child.key() == "conv2";
    EXPECT_EQ(conv->is_fp8(), resnet_conv) << child.key();
    if (resnet_conv) EXPECT_EQ(conv->weight.numel(), 0) << child.key();
    fp8 += conv->is_fp8();
  }
  EXPECT_EQ(fp8, 2);
  EXPECT_EQ(use_fp8_convs(*block), 0);  // already switched
  const double err = relative_error(block(x, temb), want);
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 0.0);  // it did change the numbers: the FP8 path ran
}

#ifdef SDXLB_WITH_CUDA
bool skip_without_fp8_conv() {
  if (!at::hasCUDA()) return true;
  return !fp8_conv_supported(at::Device(at::kCUDA, 0));
}

// The per-image kernel gives the reference's bits: fp16 and bf16, the vectorised path (channels-last, C a
// multiple of 8) and the scalar one (an odd element count).
TEST(Fp8ConvCuda, QuantiseKernelMatchesTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(11);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    for (const auto& shape : {std::vector<int64_t>{2, 320, 64, 64}, std::vector<int64_t>{3, 5, 7, 9}}) {
      SCOPED_TRACE(c10::str(dtype, " ", at::IntArrayRef(shape)));
      const auto opt = at::TensorOptions().dtype(dtype).device(at::kCUDA);
      const at::Tensor x = channels_last(at::randn(shape, opt) * at::randn({shape[0], 1, 1, 1}, opt).exp());
      const Fp8Images got = quantize_images(x);
      const Fp8Images want = quantize_images_reference(x.cpu());
      EXPECT_TRUE(at::equal(got.scale.cpu(), want.scale));
      EXPECT_TRUE(at::equal(got.q.cpu().contiguous().view(at::kByte), want.q.contiguous().view(at::kByte)));
    }
  }
}

// cuDNN's FP8 convolution at the UNet's resnet shapes: within fp16 output rounding of the reference on the
// same e4m3 numbers; each image's output independent of the image beside it (bit for bit); the same bits when
// replayed from a CUDA graph.
TEST(Fp8ConvCuda, CudnnMatchesTheReferenceAndIsBatchInvariant) {
  if (skip_without_fp8_conv()) GTEST_SKIP() << "no cuDNN FP8 convolution on this machine";
  c10::InferenceMode guard;
  at::manual_seed(5);
  at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));  // a LibTorch op before any capture
  struct Shape {
    int64_t c, hw, k, stride;
  };
  for (const Shape sh :
       {Shape{320, 128, 320, 1}, Shape{960, 64, 640, 1}, Shape{1280, 32, 1280, 1}, Shape{640, 64, 640, 2}}) {
    SCOPED_TRACE(c10::str(sh.c, "x", sh.hw, "² -> ", sh.k, " stride ", sh.stride));
    const auto opt = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
    const at::Tensor x = channels_last(at::silu(at::randn({2, sh.c, sh.hw, sh.hw}, opt) * 2));
    const at::Tensor w = at::randn({sh.k, sh.c, 3, 3}, opt) * 0.02;
    const Fp8Images qx = quantize_images(x);
    const Fp8ConvWeight qw = quantize_conv_weight(w);
    const at::Tensor got = fp8_conv2d(qx, qw, sh.stride, 1, at::kHalf);
    ASSERT_EQ(got.scalar_type(), at::kHalf);
    Fp8Images cpu_x{qx.q.cpu(), qx.scale.cpu()};
    Fp8ConvWeight cpu_w{qw.q.cpu(), qw.scale.cpu()};
    const at::Tensor ref = fp8_conv2d_reference(cpu_x, cpu_w, sh.stride, 1, at::kFloat);
    const double err_ref = relative_error(got.cpu(), ref);
    const double err_fp16 = relative_error(got, at::conv2d(x, w, {}, {sh.stride, sh.stride}, {1, 1}));
    std::printf(
        "fp8 conv %lldx%lld^2 -> %lld: relative error %.3g against the reference, %.3g against fp16\n",
        static_cast<long long>(sh.c), static_cast<long long>(sh.hw), static_cast<long long>(sh.k), err_ref,
        err_fp16);
    EXPECT_LT(err_ref, 2e-3);
    EXPECT_LT(err_fp16, 0.06);

    // Image 1 alone gives the bits it had beside image 0.
    const Fp8Images one{qx.q.narrow(0, 1, 1).contiguous(at::MemoryFormat::ChannelsLast),
                        qx.scale.narrow(0, 1, 1).contiguous()};
    EXPECT_TRUE(at::equal(fp8_conv2d(one, qw, sh.stride, 1, at::kHalf), got.narrow(0, 1, 1)));

    // Captured in a CUDA graph (with the quantisation) and replayed: the same bits.
    auto stream = c10::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      fp8_conv2d(quantize_images(x), qw, sh.stride, 1, at::kHalf);  // warm-up on the capture stream
      stream.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      const at::Tensor replayed = fp8_conv2d(quantize_images(x), qw, sh.stride, 1, at::kHalf);
      graph.capture_end();
      graph.replay();
      stream.synchronize();
      EXPECT_TRUE(at::equal(replayed, got));
    }
  }
}
#endif

}  // namespace
}  // namespace sdxlb
