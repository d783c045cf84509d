// FP8 attention (issue 17, attention_precision: fp8): the static scales really bound the values they scale,
// the fixed-scale quantisation rounds and saturates as torch's float8_e4m3fn does, the reference math is
// attention within e4m3's rounding, the refusal where cuDNN's FP8 attention does not run, and on a Hopper GPU
// the kernel and cuDNN's FP8 attention against the references, batch invariance and CUDA-graph replay.
#include "pipeline/nn/fp8_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/nn/attention.h"
#include "pipeline/nn/layers.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
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

// Random LayerNorm outputs with a non-trivial affine, and attn1-like projections of them: the radius bounds
// every row's norm, and each projection's scale times 448 bounds every value the FP8 GEMM gives.
TEST(Fp8Attention, StaticScalesBoundTheValues) {
  c10::InferenceMode guard;
  at::manual_seed(7);
  const int64_t dim = 320, rows = 512;
  LayerNorm norm(dim, 1e-5);
  norm->weight = at::randn({dim}) * 0.5 + 1.0;
  norm->bias = at::randn({dim}) * 0.3;
  // Rows with outliers: a few tokens far from the others, and one constant row (variance 0).
  at::Tensor x = at::randn({rows, dim}) * 3 + at::randn({rows, 1}) * 10;
  x.index_put_({0}, at::full({dim}, 5.0));
  const at::Tensor n = norm(x);
  const double radius = layer_norm_radius(norm->weight, norm->bias);
  EXPECT_LE(n.norm(2, 1).max().item<double>(), radius);
  // The bound is not absurdly loose for such rows (e4m3 keeps ~15 binades; a bound 100x loose would waste 7).
  EXPECT_GT(n.norm(2, 1).max().item<double>(), radius / 4);

  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "with bias" : "without bias");
    const at::Tensor w = at::randn({640, dim}) * 0.05;
    const at::Tensor b = bias ? at::randn({640}) * 0.2 : at::Tensor();
    const Fp8Weight fw = quantize_weight(w);
    const float scale = fp8_projection_scale(fw, b, radius);
    const at::Tensor y = fp8_linear(n, fw, b);  // the e4m3 rows of n times the e4m3 weight
    const double top = y.abs().max().item<double>();
    EXPECT_LE(top, 448.0 * scale);
    EXPECT_GT(top, 448.0 * scale / 100);
  }
}

// e4m3(clamp(x / scale, ±448)): torch's float8_e4m3fn rounding (to nearest even), saturation instead of NaN,
// and the CPU path of quantize_fixed is the reference.
TEST(Fp8Attention, FixedScaleQuantisationRoundsAndSaturates) {
  const at::Tensor x = at::tensor({1.0625f, 1.1875f, -3.0f, 1000.0f, -1e6f, 0.0f, 2.0f * 0.001953125f});
  const at::Tensor q = quantize_fixed_reference(x, 0.5f);
  ASSERT_EQ(q.scalar_type(), at::kFloat8_e4m3fn);
  const at::Tensor back = q.to(at::kFloat);
  // x / 0.5: 2.125 (tie: 2.0), 2.375 (tie: 2.5, even mantissa), -6, 2000 (saturates), -2e6, 0, 2^-7
  // (subnormal).
  const at::Tensor want = at::tensor({2.0f, 2.5f, -6.0f, 448.0f, -448.0f, 0.0f, 0.0078125f});
  EXPECT_TRUE(at::equal(back, want)) << back;
  const auto both = quantize_fixed({x, -x}, {0.5f, 0.5f});
  ASSERT_EQ(both.size(), 2u);
  EXPECT_TRUE(at::equal(both[0].view(at::kByte), q.view(at::kByte)));
  EXPECT_TRUE(at::equal(both[1].to(at::kFloat), -want));
}

// The reference is attention over the dequantised operands within e4m3's rounding: against float32 SDPA on
// the same (dequantised) numbers, a few percent; with the scales swapped or forgotten it is far off.
TEST(Fp8Attention, ReferenceIsAttentionWithinE4m3Rounding) {
  c10::InferenceMode guard;
  at::manual_seed(3);
  const int64_t b = 2, n = 96, heads = 3, d = 32;
  const at::Tensor qf = at::randn({b, n, heads * d}) * 2, kf = at::randn({b, n, heads * d}) * 0.5,
                   vf = at::randn({b, n, heads * d}) * 4;
  auto scale_of = [](const at::Tensor& t) {
    return static_cast<float>(t.abs().max().item<double>() * 2 / 448);
  };
  const Fp8AttentionScales s =
      make_fp8_attention_scales(scale_of(qf), scale_of(kf), scale_of(vf), at::Device(at::kCPU));
  const auto qkv = quantize_fixed({qf, kf, vf}, {s.q, s.k, s.v});
  const at::Tensor o = fp8_attention_reference(qkv[0], qkv[1], qkv[2], heads, s);
  ASSERT_EQ(o.scalar_type(), at::kFloat8_e4m3fn);
  ASSERT_EQ(o.sizes(), qf.sizes());
  auto heads_of = [&](const at::Tensor& t, float scale) {
    return (t.to(at::kFloat) * scale).view({b, n, heads, d}).transpose(1, 2);
  };
  const at::Tensor exact =
      at::scaled_dot_product_attention(heads_of(qkv[0], s.q), heads_of(qkv[1], s.k), heads_of(qkv[2], s.v))
          .transpose(1, 2)
          .reshape({b, n, heads * d});
  const double err = relative_error(o.to(at::kFloat) * s.v, exact);
  EXPECT_LT(err, 0.06) << err;
  EXPECT_GT(err, 1e-4) << "no e4m3 rounding at all?";
  EXPECT_GT(relative_error(o.to(at::kFloat) * s.k, exact), 0.5);  // the keys' scale: 1/8 of the values'
}

// A self-attention with FP8 projections runs them as one GEMM once fused: the same products (within the
// CPU's float32 summation order), the three weights handed over to one tensor; FP8 attention then takes its
// query, keys and values as thirds of that output.
TEST(Fp8Attention, FusedProjectionsGiveTheSameProducts) {
  c10::InferenceMode guard;
  at::manual_seed(9);
  Attention attn(AttentionOptions(64, 2, 32));
  for (auto& p : attn->parameters()) p.copy_(at::randn(p.sizes()) * 0.1);
  for (const char* name : {"to_q", "to_k", "to_v", "to_out.0"}) {
    auto* linear = attn->named_modules()[name]->as<LinearImpl>();
    linear->use_fp8(quantize_weight(linear->weight));
  }
  const at::Tensor x = at::randn({2, 24, 64});
  const at::Tensor separate = attn->forward(x);
  ASSERT_TRUE(attn->fuse_fp8_projections());
  auto* to_q = attn->named_modules()["to_q"]->as<LinearImpl>();
  EXPECT_TRUE(to_q->is_fp8());
  EXPECT_EQ(to_q->fp8().q.numel(), 0);  // handed over: one copy, the attention's
  EXPECT_EQ(attn->named_buffers()["fp8_qkv_weight"].sizes(), (at::IntArrayRef{3 * 64, 64}));
  const at::Tensor fused = attn->forward(x);
  EXPECT_LT(relative_error(fused, separate), 1e-5);
  attn->use_fp8_attention(/*input_radius=*/x.norm(2, -1).max().item<double>());
  EXPECT_TRUE(attn->runs_fp8_attention());
  const Fp8Activation a = quantize_activation(x);
  const double err = relative_error(attn->forward_fp8(a), attn->forward(x));
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.1);
}

// fp8_linear_e4m3 is the fixed-scale quantisation of the FP8 linear's output (on the CPU, the two ops), with
// the input's leading shape; saturated at ±448 where the scale is too small.
TEST(Fp8Attention, LinearToE4m3IsTheQuantisedProjection) {
  c10::InferenceMode guard;
  at::manual_seed(13);
  const at::Tensor x = at::randn({2, 24, 64}) * 3, w = at::randn({96, 64}) * 0.1;
  const Fp8Activation a = quantize_activation(x);
  const Fp8Weight wq = quantize_weight(w);
  for (const float scale : {0.02f, 1e-4f}) {
    const at::Tensor q = fp8_linear_e4m3(a, wq, scale);
    EXPECT_EQ(q.sizes(), (at::IntArrayRef{2, 24, 96}));
    EXPECT_EQ(q.scalar_type(), at::kFloat8_e4m3fn);
    const at::Tensor want = quantize_fixed_reference(fp8_linear(a, wq, {}), scale);
    EXPECT_TRUE(at::equal(q.view(at::kByte), want.view(at::kByte))) << "scale " << scale;
  }
  EXPECT_EQ(fp8_linear_e4m3(a, wq, 1e-4f).to(at::kFloat).abs().max().item<float>(), 448.f);
}

TEST(Fp8Attention, RefusedOnTheCpuWithAReason) {
  std::string why;
  EXPECT_FALSE(fp8_attention_supported(at::Device(at::kCPU), &why));
  EXPECT_NE(why.find("Hopper"), std::string::npos) << why;
}

#ifdef SDXLB_WITH_CUDA
bool skip_without_fp8_attention() {
  if (!at::hasCUDA()) return true;
  return !fp8_attention_supported(at::Device(at::kCUDA, 0));
}

// The fixed-scale kernel gives the reference's bits (vectorised and scalar paths, fp16 and bf16, 1 to 3
// tensors).
TEST(Fp8AttentionCuda, FixedScaleKernelMatchesTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(11);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    for (const int64_t n : {int64_t{1} << 16, int64_t{1001}}) {
      SCOPED_TRACE(std::to_string(n));
      const auto opt = at::TensorOptions().dtype(dtype).device(at::kCUDA);
      const at::Tensor a = at::randn({n}, opt) * 30, b = at::randn({n}, opt), c = at::randn({n}, opt) * 1e-3;
      const auto got = quantize_fixed({a, b, c}, {0.05f, 0.01f, 1e-5f});
      const float scales[3] = {0.05f, 0.01f, 1e-5f};
      const at::Tensor in[3] = {a, b, c};
      for (int t = 0; t < 3; ++t)
        EXPECT_TRUE(at::equal(got[t].cpu().view(at::kByte),
                              quantize_fixed_reference(in[t].cpu(), scales[t]).view(at::kByte)))
            << "tensor " << t;
    }
  }
}

// The GEMM with an e4m3 epilogue (kernels/fp8_gemm_kernel.h) against the two ops it stands for (cuBLASLt's
// FP8 linear, then the fixed-scale kernel), at attn1's fused query/key/value shapes: the sums come from
// another kernel, so a value on a rounding boundary can land one e4m3 step away, never more; at most 1% of
// the values do. An output row does not depend on the rows beside it.
TEST(Fp8AttentionCuda, GemmWithE4m3OutputIsTheQuantisedProjection) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::cuda::CUDAGuard device(0);
  const cudaDeviceProp* p = at::cuda::getCurrentDeviceProperties();
  if (p->major != 9 || p->minor != 0) GTEST_SKIP() << "the e4m3-output GEMM is built for Hopper";
  c10::InferenceMode guard;
  at::manual_seed(17);
  struct Shape {
    int64_t rows, in;
  };
  for (const Shape& s : {Shape{1024 * 3 + 5, 1280}, Shape{4096 * 2, 640}, Shape{208, 128}}) {
    SCOPED_TRACE(std::to_string(s.rows) + "x" + std::to_string(s.in));
    at::Tensor x = at::randn({1, s.rows, s.in}).to(at::kHalf).cuda();
    x[0][1] = x[0][1] * 40;
    Fp8Weight w = quantize_weight((at::randn({3 * s.in, s.in}) * 0.03).to(at::kHalf).cuda());
    w.fast_accum = true;  // as the UNet's FP8 linears: our GEMM takes only those (our_fp8_gemm_takes)
    const Fp8Activation a = quantize_activation(x);
    const float scale = fp8_projection_scale(w, {}, x.norm(2, -1).max().item<double>());
    const at::Tensor got = fp8_linear_e4m3(a, w, scale);
    ASSERT_EQ(got.sizes(), (at::IntArrayRef{1, s.rows, 3 * s.in}));
    const at::Tensor want = quantize_fixed({fp8_linear(a, w, {})}, {scale})[0];
    // Same sign and adjacent codes: e4m3's magnitudes are ordered like their 7-bit codes.
    const at::Tensor g = got.cpu().view(at::kByte).to(at::kInt), e = want.cpu().view(at::kByte).to(at::kInt);
    const at::Tensor differ = g != e;
    const double share = differ.to(at::kDouble).mean().item<double>();
    const int64_t steps = (g - e).abs().max().item<int64_t>();
    std::printf("e4m3 GEMM %lldx%lld: %.4f%% of the codes one step off the two ops\n",
                static_cast<long long>(s.rows), static_cast<long long>(s.in), 100 * share);
    EXPECT_LE(steps, 1);
    EXPECT_LE(share, 0.01);
    // Batch invariance: the last rows alone give the same bits.
    const int64_t tail = std::min<int64_t>(s.rows, 128);
    const Fp8Activation t =
        make_activation(a.q.narrow(0, s.rows - tail, tail).contiguous(),
                        a.scale.narrow(0, s.rows - tail, tail).contiguous(), {tail, s.in}, at::kHalf);
    EXPECT_TRUE(at::equal(fp8_linear_e4m3(t, w, scale).cpu().view(at::kByte),
                          got.view({s.rows, 3 * s.in}).narrow(0, s.rows - tail, tail).cpu().view(at::kByte)));
  }
}

// cuDNN's FP8 attention at attn1's shapes: within e4m3 rounding of the reference and of fp16 SDPA on the
// same numbers; each image's output independent of the batch beside it (bit for bit); the same bits when
// replayed from a CUDA graph.
TEST(Fp8AttentionCuda, CudnnMatchesTheReferenceAndIsBatchInvariant) {
  if (skip_without_fp8_attention()) GTEST_SKIP() << "no cuDNN FP8 attention on this machine";
  c10::InferenceMode guard;
  at::manual_seed(5);
  at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));  // a LibTorch op before any capture
  struct Shape {
    int64_t b, n, heads;
  };
  for (const Shape sh : {Shape{2, 1024, 20}, Shape{2, 4096, 10}}) {
    SCOPED_TRACE(std::to_string(sh.n) + " tokens");
    const int64_t d = 64;
    const auto opt = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
    const at::Tensor q = at::randn({sh.b, sh.n, sh.heads * d}, opt) * 2,
                     k = at::randn({sh.b, sh.n, sh.heads * d}, opt),
                     v = at::randn({sh.b, sh.n, sh.heads * d}, opt) * 3;
    // Scales as loose as attn1's static bounds (about 10x the largest value).
    const Fp8AttentionScales s = make_fp8_attention_scales(
        static_cast<float>(q.abs().max().item<double>() * 10 / 448),
        static_cast<float>(k.abs().max().item<double>() * 10 / 448),
        static_cast<float>(v.abs().max().item<double>() * 10 / 448), at::Device(at::kCUDA, 0));
    const auto qkv = quantize_fixed({q, k, v}, {s.q, s.k, s.v});
    const at::Tensor o = fp8_attention(qkv[0], qkv[1], qkv[2], sh.heads, s);
    ASSERT_EQ(o.scalar_type(), at::kFloat8_e4m3fn);
    const at::Tensor got = o.to(at::kFloat) * s.v;
    const at::Tensor ref =
        fp8_attention_reference(qkv[0].cpu(), qkv[1].cpu(), qkv[2].cpu(), sh.heads, s).to(at::kFloat) * s.v;
    const double err_ref = relative_error(got.cpu(), ref);
    auto heads_of = [&](const at::Tensor& t, float scale) {
      return (t.to(at::kHalf) * scale).view({sh.b, sh.n, sh.heads, d}).transpose(1, 2);
    };
    const at::Tensor fp16 =
        at::scaled_dot_product_attention(heads_of(qkv[0], s.q), heads_of(qkv[1], s.k), heads_of(qkv[2], s.v))
            .transpose(1, 2)
            .reshape({sh.b, sh.n, sh.heads * d});
    const double err_fp16 = relative_error(got, fp16);
    std::printf(
        "fp8 attention %lld tokens: relative error %.4g against the reference, %.4g against fp16 SDPA\n",
        static_cast<long long>(sh.n), err_ref, err_fp16);
    EXPECT_LT(err_ref, 0.05);
    EXPECT_LT(err_fp16, 0.08);

    // The thirds of a fused projection's output (rows 3·heads·d apart) as the operands: the same attention.
    const at::Tensor packed = at::cat({qkv[0], qkv[1], qkv[2]}, -1);
    const int64_t w = sh.heads * d;
    const at::Tensor o_packed = fp8_attention(packed.narrow(-1, 0, w), packed.narrow(-1, w, w),
                                              packed.narrow(-1, 2 * w, w), sh.heads, s);
    const double err_packed = relative_error(o_packed.to(at::kFloat), o.to(at::kFloat));
    std::printf("fp8 attention %lld tokens, fused operands: relative difference %.3g, bit-identical %d\n",
                static_cast<long long>(sh.n), err_packed,
                static_cast<int>(at::equal(o_packed.view(at::kByte), o.view(at::kByte))));
    EXPECT_LT(err_packed, 0.02);

    // Image 1 alone gives the bits it had beside image 0.
    const at::Tensor one =
        fp8_attention(qkv[0].narrow(0, 1, 1).contiguous(), qkv[1].narrow(0, 1, 1).contiguous(),
                      qkv[2].narrow(0, 1, 1).contiguous(), sh.heads, s);
    EXPECT_TRUE(at::equal(one.view(at::kByte), o.narrow(0, 1, 1).view(at::kByte)));

    // Captured in a CUDA graph and replayed: the same bits.
    auto stream = c10::cuda::getStreamFromPool();
    at::Tensor replayed;
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      fp8_attention(qkv[0], qkv[1], qkv[2], sh.heads, s);  // warm-up on the capture stream
      stream.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      replayed = fp8_attention(qkv[0], qkv[1], qkv[2], sh.heads, s);
      graph.capture_end();
      graph.replay();
      stream.synchronize();
      EXPECT_TRUE(at::equal(replayed.view(at::kByte), o.view(at::kByte)));
    }
  }
}
#endif

}  // namespace
}  // namespace sdxlb
