// fused_ops: the unfused ops they stand for (CPU, everywhere), and the CUDA kernels against those ops on the
// GPU (skipped where there is none): SDXL's channel widths and resolutions, determinism, and that one
// sample's GroupNorm does not depend on the other samples of its batch.
#include "pipeline/nn/fused_ops.h"

#include <cmath>

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>

#include "pipeline/nn/attention.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/token_merging.h"
#include "pipeline/nn/transformer_2d.h"

#ifdef SDXLB_WITH_CUDA
#include <cuda_runtime_api.h>

#include "pipeline/nn/kernels/concat_kernel.h"
#include "pipeline/nn/kernels/geglu_gemm_kernel.h"
#include "pipeline/nn/kernels/geglu_kernel.h"
#include "pipeline/nn/kernels/programmatic_launch.h"
#include "pipeline/nn/kernels/short_attention_kernel.h"
#endif

namespace sdxlb {
namespace {

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kCPU, at::kFloat), w = want.to(at::kCPU, at::kFloat);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-12)).item<double>();
}

bool bit_identical(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::equal(a.contiguous(), b.contiguous());
}

// The relative errors of `got` and of the kernel PyTorch picks for the same attention against softmax(q kᵀ /
// sqrt(d)) v in float64 ([B, heads, N, d] queries, [B, heads, M, d] keys and values), printed under `label`.
std::pair<double, double> attention_errors(const char* label, const std::vector<int64_t>& shape,
                                           const at::Tensor& got, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v) {
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  const at::Tensor scores = at::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  const at::Tensor want = at::matmul(at::_softmax(scores, -1, false), vd);
  const double ours = rel_err(got, want), fused = rel_err(at::scaled_dot_product_attention(q, k, v), want);
  std::printf("%s %s: relative error %.3g (PyTorch's kernel %.3g)\n", label,
              c10::str(at::IntArrayRef(shape)).c_str(), ours, fused);
  return {ours, fused};
}

// ---- CPU: the ops each function stands for ----

#ifdef SDXLB_WITH_CUDA
// Our kernels start while the kernel before them ends (kernels/programmatic_launch.cuh) on sm_90 and later,
// unless SDXLB_DISABLE_FUSION lists "pdl" or "all"; never without a GPU. (That they compute the same bits
// that way is what the GPU tests below check, each kernel against the ops.)
TEST(ProgrammaticLaunchTest, OnFromHopperUnlessSwitchedOff) {
  // The kernels read the switch themselves; they must agree with fused_ops' reading of it.
  const bool switched_off = !fusion_enabled(Fusion::kProgrammaticLaunch);
  if (!at::hasCUDA()) {
    EXPECT_FALSE(kernels::programmatic_launch_enabled());
    return;
  }
  int device = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  EXPECT_EQ(kernels::programmatic_launch_enabled(), major >= 9 && !switched_off);
}
#endif

TEST(FusedOpsTest, GroupNormActOnCpuIsTheOps) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 64, 5, 7}), w = at::randn({64}), b = at::randn({64});
  const at::Tensor add_c = at::randn({64}), add_nc = at::randn({2, 64});
  EXPECT_TRUE(bit_identical(group_norm_act(x, 32, w, b, 1e-5, false), at::group_norm(x, 32, w, b, 1e-5)));
  const at::Tensor v = x + add_c.view({1, 64, 1, 1}) + add_nc.view({2, 64, 1, 1});
  EXPECT_TRUE(bit_identical(group_norm_act(x, 32, w, b, 1e-5, true, add_c, add_nc),
                            at::silu(at::group_norm(v, 32, w, b, 1e-5))));
}

TEST(FusedOpsTest, ResidualFunctionsOnCpuAreTheOps) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 16, 3, 3}), bias = at::randn({16}), r = at::randn({2, 16, 3, 3});
  EXPECT_TRUE(bit_identical(add_bias_residual(x, bias, r), r + (x + bias.view({1, 16, 1, 1}))));
  EXPECT_TRUE(bit_identical(add_bias_residual(x, at::Tensor(), r), r + x));
  const at::Tensor rb = at::randn({16});
  EXPECT_TRUE(bit_identical(add_bias_residual(x, bias, r, rb),
                            (r + rb.view({1, 16, 1, 1})) + (x + bias.view({1, 16, 1, 1}))));
  const at::Tensor rows = at::randn({3, 5, 24}), lw = at::randn({24}), lnb = at::randn({24});
  EXPECT_TRUE(bit_identical(layer_norm(rows, lw, lnb, 1e-5), at::layer_norm(rows, {24}, lw, lnb, 1e-5)));
  const at::Tensor more = at::randn({3, 5, 24});
  const auto [sum, normed] = add_layer_norm(rows, more, lw, lnb, 1e-5);
  EXPECT_TRUE(bit_identical(sum, rows + more));
  EXPECT_TRUE(bit_identical(normed, at::layer_norm(rows + more, {24}, lw, lnb, 1e-5)));
}

TEST(FusedOpsTest, UpsampleOnCpuIsTheOp) {
  const at::Tensor x = at::randn({2, 16, 3, 5});
  const std::vector<double> scale{2.0, 2.0};
  EXPECT_TRUE(bit_identical(upsample_nearest2x(x), at::upsample_nearest2d(x, at::OptionalIntArrayRef(),
                                                                          at::ArrayRef<double>(scale))));
}

// diffusers' Upsample2D is F.interpolate(nearest, ×2) and then the 3×3 convolution: the phase convolution
// and its gather compute the same thing (float64, so that only the order of the sums differs), at odd sizes,
// with and without a bias.
TEST(FusedOpsTest, UpsamplePhaseConvolutionIsUpsampleThenConvolution) {
  at::manual_seed(31);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const std::vector<double> scale{2.0, 2.0};
  for (const auto& size :
       {std::vector<int64_t>{1, 1}, std::vector<int64_t>{5, 7}, std::vector<int64_t>{8, 3}}) {
    SCOPED_TRACE(c10::str(at::IntArrayRef(size)));
    const at::Tensor x = at::randn({2, 8, size[0], size[1]}, f64), w = at::randn({6, 8, 3, 3}, f64);
    const at::Tensor b = at::randn({6}, f64);
    const at::Tensor up = at::upsample_nearest2d(x, at::OptionalIntArrayRef(), at::ArrayRef<double>(scale));
    const at::Tensor phases = at::conv2d(x, upsample_conv_phase_weight(w), {}, {1, 1}, {1, 1});
    ASSERT_EQ(phases.sizes(), (std::vector<int64_t>{2, 24, size[0] + 1, size[1] + 1}));
    EXPECT_LT(rel_err(upsample_phases(phases, b), at::conv2d(up, w, b, {1, 1}, {1, 1})), 1e-14);
    EXPECT_LT(rel_err(upsample_phases(phases, {}), at::conv2d(up, w, {}, {1, 1}, {1, 1})), 1e-14);
  }
  EXPECT_THROW(upsample_conv_phase_weight(at::randn({6, 8, 1, 1})), c10::Error);
  EXPECT_THROW(upsample_phases(at::randn({1, 6, 3, 3}), {}), c10::Error);  // channels not 4·C
}

// Each phase weight is its taps' sum in float64 rounded once: fp16 weights whose sums need more bits than
// fp16 has come out as those sums rounded to nearest, whatever the order the taps are listed in.
TEST(FusedOpsTest, UpsamplePhaseWeightRoundsEachSumOnce) {
  at::Tensor w = at::zeros({1, 1, 3, 3}, at::TensorOptions().dtype(at::kHalf));
  w[0][0][1][1] = 1.0;
  w[0][0][1][2] = 0.000244140625;  // 2^-12, a quarter of fp16's step at 1
  w[0][0][2][1] = 0.000244140625;
  w[0][0][2][2] = 0.000244140625;
  // Phase (0, 0) sums all four: 1 + 3·2^-12 rounds to 1 + 2^-10, where adding them one by one in fp16
  // would stay at 1.
  const at::Tensor p = upsample_conv_phase_weight(w).to(at::kDouble);
  EXPECT_EQ(p[0][0][1][1].item<double>(), 1.0 + 0.0009765625);
  EXPECT_EQ(p[1][0][1][0].item<double>(), 1.0);  // phase (0, 1), tap (1, 0): 1 + 2^-12 rounds to 1
}

// The module: after use_phase_convolution a float32 Upsample2D gives its plain output up to rounding, and an
// explicit output size other than 2× still runs the plain path with the 3×3 weight.
TEST(FusedOpsTest, Upsample2DSwitchesToThePhaseConvolution) {
  at::manual_seed(32);
  Upsample2D up(Upsample2DOptions(8).use_conv(true).out_channels(16));
  for (auto& p : up->named_parameters()) p.value().normal_();
  const at::Tensor x = at::randn({2, 8, 5, 6});
  const at::Tensor plain = up->forward(x), odd = up->forward(x, {9, 11});
  EXPECT_FALSE(up->runs_phase_convolution());
  EXPECT_TRUE(up->use_phase_convolution());
  EXPECT_TRUE(up->runs_phase_convolution());
  EXPECT_FALSE(up->use_phase_convolution());  // once
  EXPECT_EQ(up->named_parameters()["phase_conv.weight"].sizes(), (std::vector<int64_t>{64, 8, 2, 2}));
  EXPECT_LT(rel_err(up->forward(x), plain), 1e-5);
  EXPECT_TRUE(bit_identical(up->forward(x, {9, 11}), odd));
  // Without a convolution there is nothing to switch.
  Upsample2D bare(Upsample2DOptions(8));
  EXPECT_FALSE(bare->use_phase_convolution());
  EXPECT_EQ(use_phase_upsamplers(*bare), 0);
}

TEST(FusedOpsTest, ChannelBiasOnCpuIsTheOp) {
  at::Tensor x = at::randn({2, 16, 3, 5});
  const at::Tensor b = at::randn({16}), want = x + b.view({1, 16, 1, 1});
  EXPECT_TRUE(bit_identical(add_channel_bias_(x, b), want));
  EXPECT_TRUE(bit_identical(x, want));  // in place
}

TEST(FusedOpsTest, ScaledSoftmaxOnCpuIsTheOps) {
  const at::Tensor s = at::randn({3, 5, 36}) * 9;
  EXPECT_TRUE(
      bit_identical(scaled_softmax(s, 0.125, at::kHalf), at::_softmax(s * 0.125, -1, false).to(at::kHalf)));
  EXPECT_THROW(scaled_softmax(s.to(at::kHalf), 0.125, at::kHalf), c10::Error);
}

TEST(FusedOpsTest, ShortAttentionOnCpuIsTheOp) {
  const at::Tensor q = at::randn({2, 3, 40, 64}), k = at::randn({2, 3, 7, 64}), v = at::randn({2, 3, 7, 64});
  EXPECT_TRUE(bit_identical(short_attention(q, k, v), at::scaled_dot_product_attention(q, k, v)));
  EXPECT_TRUE(bit_identical(short_attention(q, k, v, 0.3),
                            at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, 0.3)));
}

// interleave_geglu's row order: value rows 8j … 8j+7, then gate rows F+8j … F+8j+7, for each j; a projection
// whose rows do not come in whole blocks is refused.
// The e4m3 scale of a cross-attention's values per batch item: max |v[b]| / 448, floored at 2^-24; on the CPU
// there is no e4m3 attention kernel, and short_attention_e4m3 says so by returning nothing.
TEST(FusedOpsTest, ContextValueScaleBoundsEachItemAndTheE4m3KernelIsGpuOnly) {
  at::Tensor v = at::zeros({3, 5, 8}, at::kHalf);
  v[0][2][3] = -896.f;
  v[1][4][7] = 4.5f;
  const at::Tensor s = context_value_scale(v);
  ASSERT_EQ(s.scalar_type(), at::kFloat);
  ASSERT_EQ(s.sizes(), at::IntArrayRef({3}));
  EXPECT_EQ(s[0].item<float>(), 2.f);
  EXPECT_EQ(s[1].item<float>(), 4.5f / 448.f);
  EXPECT_EQ(s[2].item<float>(), 5.9604644775390625e-08f);  // an all-zero item keeps a finite scale
  const at::Tensor q = at::randn({3, 2, 4, 64}).to(at::kHalf), kv = at::randn({3, 2, 5, 64}).to(at::kHalf);
  EXPECT_FALSE(short_attention_e4m3(q, kv, kv, s).has_value());
  // Values that are not [B, M, C] are refused, naming the shape.
  try {
    context_value_scale(at::zeros({5, 8}, at::kHalf));
    ADD_FAILURE() << "values [5, 8] were taken";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("expected values [B, M, C], got [5, 8]"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

TEST(FusedOpsTest, InterleaveGegluOrdersValueAndGateBlocks) {
  const at::Tensor rows = at::arange(32, at::kFloat);
  std::vector<float> want;
  for (int j = 0; j < 2; ++j) {
    for (int c = 0; c < 8; ++c) want.push_back(static_cast<float>(8 * j + c));
    for (int c = 0; c < 8; ++c) want.push_back(static_cast<float>(16 + 8 * j + c));
  }
  EXPECT_TRUE(at::equal(interleave_geglu(rows), at::tensor(want)));
  const at::Tensor w = at::randn({32, 3});
  EXPECT_TRUE(at::equal(interleave_geglu(w).select(1, 2), interleave_geglu(w.select(1, 2).contiguous())));
  EXPECT_THROW(interleave_geglu(at::randn({24, 3})), c10::Error);
}

// concat_channels on the CPU is at::cat along channels, in either memory format.
TEST(FusedOpsTest, ConcatChannelsOnCpuIsTheOp) {
  const at::Tensor a = at::randn({2, 16, 3, 5}), b = at::randn({2, 8, 3, 5});
  EXPECT_TRUE(at::equal(concat_channels(a, b), at::cat({a, b}, 1)));
  const auto cl = at::MemoryFormat::ChannelsLast;
  EXPECT_TRUE(at::equal(concat_channels(a.contiguous(cl), b.contiguous(cl)), at::cat({a, b}, 1)));
}

// linear_geglu on the CPU (the ops on the interleaved rows, put back in order) gives geglu(linear(...)), and
// a FeedForward gives the same output once its projection is reordered (bit for bit on the CPU tried; the
// bound, relative to the largest output, leaves room for another CPU's float32 summation order); one whose
// projection the fused GEMM would not take (2F = 64) is left as it is.
TEST(FusedOpsTest, LinearGegluOnCpuIsTheOps) {
  at::manual_seed(21);
  const at::Tensor x = at::randn({2, 5, 32}), w = at::randn({64, 32}), b = at::randn({64});
  const at::Tensor want = geglu(at::linear(x, w, b));
  EXPECT_LT(rel_err(linear_geglu(x, interleave_geglu(w), interleave_geglu(b)), want), 1e-5);
  EXPECT_LT(rel_err(linear_geglu(x, interleave_geglu(w), at::Tensor()), geglu(at::linear(x, w))), 1e-5);
  FeedForward ff(32);  // 2F = 256
  for (auto& p : ff->parameters()) p.set_data(at::randn(p.sizes()));
  const at::Tensor before = ff(x);
  EXPECT_TRUE(ff->interleave_geglu());
  EXPECT_FALSE(ff->interleave_geglu()) << "a second call reorders nothing";
  EXPECT_LT(rel_err(ff(x), before), 1e-5);
  FeedForward narrow(8);  // 2F = 64
  EXPECT_FALSE(narrow->interleave_geglu());
  EXPECT_TRUE(geglu_gemm_takes(10240, 1280) && geglu_gemm_takes(5120, 640));
  EXPECT_FALSE(geglu_gemm_takes(272, 64) || geglu_gemm_takes(256, 12));
}

// A self-attention's projections fused into one GEMM (Attention::fuse_projections) give its outputs (within
// a float32 summation order's difference relative to the largest output), with and without biases, and for
// token downsampling's (ToDo's) downsampled keys and values (the fused weight's rows); the three layers'
// weights become one buffer; cross-attention and FP8 projections stay as they are, and a second call fuses
// nothing.
TEST(FusedOpsTest, FusedProjectionsGiveTheSameAttention) {
  c10::InferenceMode guard;
  at::manual_seed(31);
  const at::Tensor x = at::randn({2, 16, 64});
  BlockTokens downsampled;
  downsampled.downsample = true;
  downsampled.grid_h = downsampled.grid_w = 4;
  downsampled.new_h = downsampled.new_w = 2;
  downsampled.factor = 2;
  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "with biases" : "without biases");
    Attention attn(AttentionOptions(64, 2, 32).bias(bias));
    for (auto& p : attn->parameters()) p.copy_(at::randn(p.sizes()) * 0.1);
    const at::Tensor separate = attn->forward(x), separate_downsampled = attn->forward(x, {}, &downsampled);
    ASSERT_TRUE(attn->fuse_projections());
    EXPECT_FALSE(attn->fuse_projections());
    EXPECT_EQ(attn->named_modules()["to_q"]->as<LinearImpl>()->weight.numel(), 0);
    EXPECT_EQ(attn->named_buffers()["qkv_weight"].sizes(), (at::IntArrayRef{3 * 64, 64}));
    EXPECT_EQ(attn->named_buffers().contains("qkv_bias"), bias);
    EXPECT_LT(rel_err(attn->forward(x), separate), 1e-5);
    EXPECT_LT(rel_err(attn->forward(x, {}, &downsampled), separate_downsampled), 1e-5);
  }
  Attention cross(AttentionOptions(64, 2, 32).cross_attention_dim(48));
  EXPECT_FALSE(cross->fuse_projections());
  Attention fp8(AttentionOptions(64, 2, 32));
  for (auto& p : fp8->parameters()) p.copy_(at::randn(p.sizes()) * 0.1);
  for (const char* name : {"to_q", "to_k", "to_v"}) {
    auto* linear = fp8->named_modules()[name]->as<LinearImpl>();
    linear->use_fp8(quantize_weight(linear->weight));
  }
  EXPECT_FALSE(fp8->fuse_projections());
}

// ---- CUDA kernels ----

class FusedOpsCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    if (!fused_kernels_available()) GTEST_SKIP() << "built without CUDA kernels";
  }
  static at::Tensor cl(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }
};

TEST_F(FusedOpsCudaTest, GroupNormMatchesFloat32ReferenceAtSdxlShapes) {
  at::manual_seed(3);
  const at::Device dev(at::kCUDA, 0);
  // (channels, side): the UNet's resnet and transformer inputs, and the VAE's widths.
  const std::pair<int64_t, int64_t> shapes[] = {{320, 128}, {640, 64},  {960, 64}, {1280, 32}, {1920, 32},
                                                {2560, 32}, {960, 128}, {128, 64}, {512, 16},  {640, 5}};
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    for (const auto& [c, side] : shapes) {
      for (const bool silu : {false, true}) {
        SCOPED_TRACE(std::to_string(c) + "x" + std::to_string(side) + (silu ? " silu " : " ") +
                     c10::toString(dtype));
        const auto opts = at::TensorOptions().device(dev).dtype(dtype);
        // A mean far from zero in some channels: the statistics must not cancel.
        const at::Tensor x = cl(at::randn({2, c, side, side}, opts) * 3 + at::randn({1, c, 1, 1}, opts) * 20);
        const at::Tensor w = at::randn({c}, opts), b = at::randn({c}, opts);
        const at::Tensor add_c = at::randn({c}, opts), add_nc = at::randn({2, c}, opts);
        ASSERT_TRUE(fused_group_norm_applies(x));
        const at::Tensor got = group_norm_act(x, 32, w, b, 1e-5, silu, add_c, add_nc);
        EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
        // Reference: the same roundings of the inputs, then float32 ops.
        const at::Tensor v = ((x + add_c.view({1, c, 1, 1})) + add_nc.view({2, c, 1, 1})).to(at::kFloat);
        at::Tensor want = at::group_norm(v.contiguous(), 32, w.to(at::kFloat), b.to(at::kFloat), 1e-5);
        if (silu) want = at::silu(want.to(dtype).to(at::kFloat));
        EXPECT_LE(rel_err(got, want), dtype == at::kHalf ? 2e-3 : 1.6e-2);
      }
    }
  }
}

// The float32 kernels (the SDXL VAE under force_upcast) at the VAE decoder's widths and sizes:
// GroupNorm(+SiLU) within float32 rounding of a float64 reference, as close as PyTorch's own float32
// GroupNorm; the bias and residual add and the upsampling bit-identical to the ops.
TEST_F(FusedOpsCudaTest, Float32KernelsForTheVae) {
  at::manual_seed(8);
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kFloat);
  for (const auto& [c, side] : {std::pair<int64_t, int64_t>{512, 128}, {256, 512}, {128, 256}}) {
    for (const bool silu : {false, true}) {
      SCOPED_TRACE(std::to_string(c) + "x" + std::to_string(side) + (silu ? " silu" : ""));
      const at::Tensor x = cl(at::randn({1, c, side, side}, opts) * 3 + at::randn({1, c, 1, 1}, opts) * 20);
      const at::Tensor w = at::randn({c}, opts), b = at::randn({c}, opts), add_c = at::randn({c}, opts);
      ASSERT_TRUE(fused_group_norm_applies(x));
      const at::Tensor got = group_norm_act(x, 32, w, b, 1e-6, silu, add_c);
      EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
      const at::Tensor v = x + add_c.view({1, c, 1, 1});
      at::Tensor exact =
          at::group_norm(v.to(at::kDouble).contiguous(), 32, w.to(at::kDouble), b.to(at::kDouble), 1e-6);
      at::Tensor torch32 = at::group_norm(v.contiguous(), 32, w, b, 1e-6);
      if (silu) {
        exact = at::silu(exact);
        torch32 = at::silu(torch32);
      }
      const double err = rel_err(got, exact), err_torch = rel_err(torch32, exact);
      std::printf("GroupNorm float32 %lldx%lld%s: relative error %.3g (PyTorch's float32: %.3g)\n",
                  static_cast<long long>(c), static_cast<long long>(side), silu ? " +SiLU" : "", err,
                  err_torch);
      EXPECT_LE(err, std::max(4 * err_torch, 3e-6));
    }
    const at::Tensor x = cl(at::randn({1, c, side, side}, opts)), r = cl(at::randn({1, c, side, side}, opts));
    const at::Tensor bias = at::randn({c}, opts), rb = at::randn({c}, opts);
    EXPECT_TRUE(bit_identical(add_bias_residual(x, bias, r, rb),
                              (r + rb.view({1, c, 1, 1})) + (x + bias.view({1, c, 1, 1}))));
    const std::vector<double> scale{2.0, 2.0};
    EXPECT_TRUE(bit_identical(upsample_nearest2x(x), at::upsample_nearest2d(x, at::OptionalIntArrayRef(),
                                                                            at::ArrayRef<double>(scale))));
  }
}

TEST_F(FusedOpsCudaTest, GroupNormIsDeterministicAndPerSample) {
  at::manual_seed(4);
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  const at::Tensor x = cl(at::randn({2, 640, 64, 64}, opts));
  const at::Tensor w = at::randn({640}, opts), b = at::randn({640}, opts), add = at::randn({2, 640}, opts);
  const at::Tensor a = group_norm_act(x, 32, w, b, 1e-5, true, {}, add);
  EXPECT_TRUE(bit_identical(a, group_norm_act(x, 32, w, b, 1e-5, true, {}, add)));
  // The second sample alone gives the same bits as in the batch of two.
  const at::Tensor one = group_norm_act(cl(x.narrow(0, 1, 1)), 32, w, b, 1e-5, true, {}, add.narrow(0, 1, 1));
  EXPECT_TRUE(bit_identical(one, a.narrow(0, 1, 1)));
}

TEST_F(FusedOpsCudaTest, BiasResidualIsBitIdenticalToTheOps) {
  at::manual_seed(5);
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  const at::Tensor x = cl(at::randn({2, 320, 128, 128}, opts)), r = cl(at::randn({2, 320, 128, 128}, opts));
  const at::Tensor bias = at::randn({320}, opts);
  const at::Tensor got = add_bias_residual(x, bias, r);
  EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(bit_identical(got, r + (x + bias.view({1, 320, 1, 1}))));
  const at::Tensor rb = at::randn({320}, opts);
  EXPECT_TRUE(bit_identical(add_bias_residual(x, bias, r, rb),
                            (r + rb.view({1, 320, 1, 1})) + (x + bias.view({1, 320, 1, 1}))));
}

// The copy kernel gives PyTorch's nearest-neighbour upsampling bit for bit, at the UNet's and the VAE's
// shapes and an odd size, in both 16-bit types; a layout it does not take goes to the op.
TEST_F(FusedOpsCudaTest, UpsampleIsBitIdenticalToTheOp) {
  at::manual_seed(6);
  const std::vector<double> scale{2.0, 2.0};
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    for (const auto& shape : {std::vector<int64_t>{2, 1280, 32, 32}, std::vector<int64_t>{2, 640, 64, 64},
                              std::vector<int64_t>{1, 512, 128, 128}, std::vector<int64_t>{3, 8, 5, 7}}) {
      SCOPED_TRACE(c10::str(dtype, " ", at::IntArrayRef(shape)));
      const at::Tensor x = cl(at::randn(shape, at::TensorOptions().device(at::kCUDA, 0).dtype(dtype)));
      const at::Tensor got = upsample_nearest2x(x);
      EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
      EXPECT_TRUE(bit_identical(
          got, at::upsample_nearest2d(x, at::OptionalIntArrayRef(), at::ArrayRef<double>(scale))));
    }
  }
  const at::Tensor nchw = at::randn({1, 12, 4, 4}, at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf));
  EXPECT_TRUE(bit_identical(upsample_nearest2x(nchw), at::upsample_nearest2d(nchw, at::OptionalIntArrayRef(),
                                                                             at::ArrayRef<double>(scale))));
}

// The gather kernel gives the ops' bits (the bias added in float32 and rounded once), at the UNet's and the
// VAE's upsampler shapes and a small odd one, with and without a bias, in fp16, bf16 and float32.
TEST_F(FusedOpsCudaTest, UpsamplePhasesIsBitIdenticalToTheOps) {
  at::manual_seed(33);
  for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    for (const auto& shape :
         {std::vector<int64_t>{2, 4 * 1280, 33, 33}, std::vector<int64_t>{2, 4 * 640, 65, 65},
          std::vector<int64_t>{1, 4 * 256, 129, 129}, std::vector<int64_t>{3, 32, 6, 8}}) {
      SCOPED_TRACE(c10::str(dtype, " ", at::IntArrayRef(shape)));
      const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(dtype);
      const at::Tensor y = cl(at::randn(shape, opts)), b = at::randn({shape[1] / 4}, opts);
      for (const at::Tensor& bias : {b, at::Tensor()}) {
        const at::Tensor got = upsample_phases(y, bias);
        EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
        // An NCHW y goes to the ops.
        EXPECT_TRUE(bit_identical(got, upsample_phases(y.contiguous(), bias)));
      }
    }
  }
}

// On the GPU in fp16 at the UNet's two upsamplers and the VAE's widest: the phase convolution is as accurate
// as upsampling and then convolving, against float64, and its weight has the same bits as on the CPU.
TEST_F(FusedOpsCudaTest, UpsamplePhaseConvolutionIsAsAccurateAsThePlainPath) {
  at::manual_seed(34);
  const std::vector<double> scale{2.0, 2.0};
  for (const auto& shape : {std::vector<int64_t>{2, 1280, 32, 32}, std::vector<int64_t>{2, 640, 64, 64},
                            std::vector<int64_t>{1, 256, 128, 128}}) {
    SCOPED_TRACE(c10::str(at::IntArrayRef(shape)));
    const int64_t c = shape[1];
    const auto half = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
    const at::Tensor x = cl(at::randn(shape, half));
    const at::Tensor w = cl((at::randn({c, c, 3, 3}, half) / std::sqrt(9.0 * c)).to(at::kHalf));
    const at::Tensor b = at::randn({c}, half) * 0.1;
    const at::Tensor pw = upsample_conv_phase_weight(w);
    EXPECT_TRUE(bit_identical(pw.cpu(), upsample_conv_phase_weight(w.cpu())));
    const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
    const at::Tensor want =
        at::conv2d(at::upsample_nearest2d(xd, at::OptionalIntArrayRef(), at::ArrayRef<double>(scale)), wd,
                   b.to(at::kDouble), {1, 1}, {1, 1});
    const at::Tensor phase = upsample_phases(at::conv2d(x, pw, {}, {1, 1}, {1, 1}), b);
    const at::Tensor plain = at::conv2d(upsample_nearest2x(x), w, b, {1, 1}, {1, 1});
    const double ours = rel_err(phase, want), theirs = rel_err(plain, want);
    std::printf("phase convolution %s: relative error %.3g (upsample, then convolution: %.3g)\n",
                c10::str(at::IntArrayRef(shape)).c_str(), ours, theirs);
    EXPECT_LT(ours, 2.0 * theirs + 1e-4);
    EXPECT_TRUE(phase.is_contiguous(at::MemoryFormat::ChannelsLast));
  }
}

TEST_F(FusedOpsCudaTest, LayerNormMatchesFloat32Reference) {
  at::manual_seed(7);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(dtype);
    // The UNet's token widths at both attention levels, the text encoders' widths, and the kernel's limit.
    for (const auto& [rows, d] :
         {std::pair<int64_t, int64_t>{8192, 640}, {2048, 1280}, {77, 768}, {154, 1280}, {3, 2048}, {5, 8}}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(d) + " " + c10::toString(dtype));
      const at::Tensor x = at::randn({rows, d}, opts) * 4 + 7, w = at::randn({d}, opts),
                       b = at::randn({d}, opts);
      const at::Tensor got = layer_norm(x, w, b, 1e-5);
      const at::Tensor want = at::layer_norm(x.to(at::kFloat), {d}, w.to(at::kFloat), b.to(at::kFloat), 1e-5);
      EXPECT_LE(rel_err(got, want), dtype == at::kHalf ? 2e-3 : 1.6e-2);
      EXPECT_TRUE(bit_identical(got, layer_norm(x, w, b, 1e-5)));
      // One row alone gives the bits it has among many.
      EXPECT_TRUE(
          bit_identical(layer_norm(x.narrow(0, rows - 1, 1), w, b, 1e-5), got.narrow(0, rows - 1, 1)));
      // With the residual add before it: the sum is the add's bits, the norm is the norm of the sum.
      const at::Tensor r = at::randn({rows, d}, opts);
      const auto [sum, normed] = add_layer_norm(x, r, w, b, 1e-5);
      EXPECT_TRUE(bit_identical(sum, x + r));
      EXPECT_TRUE(bit_identical(normed, layer_norm(x + r, w, b, 1e-5)));
    }
  }
}

TEST_F(FusedOpsCudaTest, ConvolutionBiasIsBitIdenticalToTheOp) {
  at::manual_seed(10);
  for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(dtype);
    // 3 output channels (the VAE's conv_out) take the op; 64 the kernel.
    for (const int64_t out : {64, 3}) {
      SCOPED_TRACE(std::to_string(out) + " " + c10::toString(dtype));
      Conv2d conv(32, out, 3, 1, 1);
      conv->weight = at::randn({out, 32, 3, 3}, opts) * 0.1;
      conv->bias = at::randn({out}, opts);
      for (const bool channels_last : {true, false}) {
        const at::Tensor x = at::randn({2, 32, 9, 7}, opts);
        const at::Tensor in = channels_last ? cl(x) : x;
        EXPECT_TRUE(bit_identical(conv(in), at::conv2d(in, conv->weight, conv->bias, {1, 1}, {1, 1})));
      }
    }
  }
}

TEST_F(FusedOpsCudaTest, ScaledSoftmaxMatchesFloat64Reference) {
  at::manual_seed(8);
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kFloat);
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    // The VAE's 16384 keys, a row narrower than the block, and a width that is not a multiple of 4 (the ops).
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{64, 16384}, {7, 100}, {3, 30}}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " " + c10::toString(dtype));
      const at::Tensor s = at::randn({rows, cols}, opts) * 40;
      const at::Tensor got = scaled_softmax(s, 0.0441941738, dtype);
      ASSERT_EQ(got.scalar_type(), dtype);
      const at::Tensor want = at::_softmax(s.to(at::kDouble) * 0.0441941738, -1, false);
      // Within one rounding to the output type of each probability (relative 2^-11 fp16, 2^-8 bf16).
      const double ulp = dtype == at::kHalf ? 1.0 / 2048 : 1.0 / 256;
      const at::Tensor err = (got.to(at::kDouble) - want).abs() - want * ulp * 1.01 - 1e-7;
      EXPECT_LE(err.max().item<double>(), 0.0);
      EXPECT_TRUE(bit_identical(got, scaled_softmax(s, 0.0441941738, dtype)));
    }
  }
}

TEST_F(FusedOpsCudaTest, WideHeadAttentionIsAsAccurateAsTheFusedKernel) {
  at::manual_seed(9);
  // The VAE's mid-block attention (one 512-wide head over 128 x 128 tokens, several chunks of queries), and a
  // batch of two heads with keys fewer than queries; fp16, and float32 (the VAE under force_upcast: TF32).
  for (const auto& shape : {std::vector<int64_t>{1, 1, 16384, 512, 16384, 0},
                            {2, 2, 3001, 320, 1500, 0},
                            {1, 1, 16384, 512, 16384, 1}}) {
    const int64_t b = shape[0], h = shape[1], n = shape[2], d = shape[3], m = shape[4];
    const bool fp32 = shape[5] == 1;
    const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(fp32 ? at::kFloat : at::kHalf);
    SCOPED_TRACE(c10::str(at::IntArrayRef(shape)));
    const bool tf32_was = at::globalContext().allowTF32CuBLAS();
    const at::Tensor q = at::randn({b, h, n, d}, opts), k = at::randn({b, h, m, d}, opts),
                     v = at::randn({b, h, m, d}, opts);
    const at::Tensor got = attend(q, k, v);
    ASSERT_EQ(got.sizes(), q.sizes());
    const auto [ours, fused] = attention_errors("wide head", shape, got, q, k, v);
    // TF32 products (10-bit mantissas) for float32: about fp16's rounding.
    EXPECT_LE(ours, fp32 ? 2e-3 : std::max(2 * fused, 2e-3));
    EXPECT_TRUE(bit_identical(got, attend(q, k, v)));
    EXPECT_EQ(at::globalContext().allowTF32CuBLAS(), tf32_was);  // the flag is back as it was
  }
}

// The UNet's cross-attention (queries and keys as the [B, N, heads · 64] projections see them per head, 77
// keys), the 4096-token level with a ragged last block, bf16 with a few keys, the most keys the kernel takes.
TEST_F(FusedOpsCudaTest, ShortAttentionIsAsAccurateAsPyTorchsKernelAndPerRow) {
  at::manual_seed(11);
  for (const auto& shape : {std::vector<int64_t>{2, 20, 1024, 77, 0},
                            {1, 10, 4133, 77, 0},
                            {3, 2, 130, 5, 1},
                            {2, 4, 300, 96, 0},
                            {1, 1, 1, 1, 0}}) {
    const int64_t b = shape[0], h = shape[1], n = shape[2], m = shape[3], d = 64;
    const auto opts =
        at::TensorOptions().device(at::kCUDA, 0).dtype(shape[4] == 1 ? at::kBFloat16 : at::kHalf);
    SCOPED_TRACE(c10::str(at::IntArrayRef(shape)));
    const auto heads_of = [&](const at::Tensor& x) { return x.view({b, -1, h, d}).transpose(1, 2); };
    const at::Tensor q = heads_of(at::randn({b, n, h * d}, opts)),
                     k = heads_of(at::randn({b, m, h * d}, opts)),
                     v = heads_of(at::randn({b, m, h * d}, opts));
    const at::Tensor got = short_attention(q, k, v);
    ASSERT_EQ(got.sizes(), q.sizes());
    const auto [ours, fused] = attention_errors("short attention", shape, got, q, k, v);
    EXPECT_LE(ours, std::max(1.5 * fused, shape[4] == 1 ? 1e-2 : 1.5e-3));
    // Each query row on its own: the same bits for one sample alone and for the queries from row 37 on.
    EXPECT_TRUE(bit_identical(got, short_attention(q, k, v)));
    EXPECT_TRUE(
        bit_identical(got.narrow(0, b - 1, 1),
                      short_attention(q.narrow(0, b - 1, 1), k.narrow(0, b - 1, 1), v.narrow(0, b - 1, 1))));
    if (n > 37) {
      EXPECT_TRUE(bit_identical(got.narrow(2, 37, n - 37), short_attention(q.narrow(2, 37, n - 37), k, v)));
    }
  }
}

// The FP8 cross-attention's output straight in e4m3 at each item's context_value_scale: the fp16 kernel's
// output within one e4m3 rounding (half a step of 3 mantissa bits, or of the subnormal step), every row's
// scale its item's, the same bits for an item alone and twice; an output scale of the wrong size is refused.
TEST_F(FusedOpsCudaTest, ShortAttentionE4m3IsTheOutputRoundedOnceAtTheItemsScale) {
  at::manual_seed(12);
  for (const auto& shape : {std::vector<int64_t>{2, 20, 1024, 77}, {3, 10, 4133, 77}, {1, 1, 1, 1}}) {
    const int64_t b = shape[0], h = shape[1], n = shape[2], m = shape[3], d = 64;
    const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
    SCOPED_TRACE(c10::str(at::IntArrayRef(shape)));
    const auto heads_of = [&](const at::Tensor& x) { return x.view({b, -1, h, d}).transpose(1, 2); };
    // Items of different magnitudes, one with a large outlier value as a prompt's first token has.
    at::Tensor values = at::randn({b, m, h * d}, opts) * at::arange(1, b + 1, opts).view({b, 1, 1});
    values[0][0][5] = 300.f;
    const at::Tensor q = heads_of(at::randn({b, n, h * d}, opts)),
                     k = heads_of(at::randn({b, m, h * d}, opts)), v = heads_of(values);
    const at::Tensor scale = context_value_scale(values);
    const auto got = short_attention_e4m3(q, k, v, scale);
    ASSERT_TRUE(got.has_value());
    const auto& [o8, row_scale] = *got;
    ASSERT_EQ(o8.scalar_type(), at::kFloat8_e4m3fn);
    ASSERT_EQ(o8.sizes(), at::IntArrayRef({b, n, h * d}));
    ASSERT_EQ(row_scale.sizes(), at::IntArrayRef({b * n, 1}));
    EXPECT_TRUE(at::equal(row_scale.view({b, n}), scale.view({b, 1}).expand({b, n})));
    // The fp16 kernel's output [B, N, heads, 64] against the e4m3 values times their scale.
    const at::Tensor o16 = short_attention(q, k, v).transpose(1, 2).reshape({b, n, h * d}).to(at::kFloat);
    const at::Tensor deq = o8.to(at::kFloat) * scale.view({b, 1, 1});
    const at::Tensor bound = o16.abs() * (1.0 / 16 + 1.0 / 1024) + scale.view({b, 1, 1}) * (1.0 / 1024);
    EXPECT_TRUE(((deq - o16).abs() <= bound).all().item<bool>())
        << "largest excess " << ((deq - o16).abs() - bound).max().item<float>();
    EXPECT_TRUE(at::equal(o8.view(at::kByte), short_attention_e4m3(q, k, v, scale)->first.view(at::kByte)));
    const auto last = short_attention_e4m3(q.narrow(0, b - 1, 1), k.narrow(0, b - 1, 1),
                                           v.narrow(0, b - 1, 1), scale.narrow(0, b - 1, 1).contiguous());
    EXPECT_TRUE(at::equal(last->first.view(at::kByte), o8.narrow(0, b - 1, 1).view(at::kByte)));
  }
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  const at::Tensor q = at::randn({2, 2, 16, 64}, opts), kv = at::randn({2, 2, 7, 64}, opts);
  EXPECT_FALSE(short_attention_e4m3(q, kv, kv, at::ones({3}, opts.dtype(at::kFloat))).has_value());
}

// What the kernel refuses, it refuses before launching anything, so that short_attention runs the op instead.
TEST_F(FusedOpsCudaTest, ShortAttentionKernelRefusesWhatItDoesNotTake) {
  const auto opts = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  const at::Tensor q = at::randn({1, 2, 16, 64}, opts), kv = at::randn({1, 2, 97, 64}, opts),
                   o = at::empty({1, 16, 2, 64}, opts);
  const kernels::HeadStrides qs{q.stride(0), q.stride(1), q.stride(2)},
      ks{kv.stride(0), kv.stride(1), kv.stride(2)};
  const auto run = [&](int64_t keys, float scale, const void* qp) {
    return kernels::launch_short_attention(1, qp, qs, kv.const_data_ptr(), ks, kv.const_data_ptr(), ks,
                                           o.data_ptr(), 1, 2, 16, keys, scale, nullptr);
  };
  EXPECT_EQ(run(96, 0.125f, q.const_data_ptr()), cudaSuccess);
  EXPECT_EQ(run(97, 0.125f, q.const_data_ptr()),
            cudaErrorInvalidValue);  // more keys than shared memory holds
  EXPECT_EQ(run(0, 0.125f, q.const_data_ptr()), cudaErrorInvalidValue);
  EXPECT_EQ(run(77, 0.f, q.const_data_ptr()), cudaErrorInvalidValue);
  EXPECT_EQ(run(77, 0.125f, static_cast<const char*>(q.const_data_ptr()) + 2), cudaErrorInvalidValue);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // More keys than the kernel takes: PyTorch's kernel, the same bits as the op.
  EXPECT_TRUE(bit_identical(short_attention(q, kv, kv), at::scaled_dot_product_attention(q, kv, kv)));
}

// GEGLU projections [64, 2048] whose gates are all 65536 16-bit patterns of dt (the non-finite ones replaced
// by zero), the values random, on the GPU.
at::Tensor every_gate(at::ScalarType dt) {
  const at::Tensor bits = at::arange(0, 65536, at::TensorOptions().dtype(at::kInt)).to(at::kShort);
  at::Tensor g = bits.view(dt).to(at::kCUDA);
  g = at::where(at::isfinite(g), g, at::zeros_like(g));
  return at::cat({at::randn({64, 1024}, g.options()), g.view({64, 1024})}, -1);
}

// The UNet's skip connections (concat_channels of channels-last tensors) in our copy kernel: PyTorch's cat
// bit for bit at the up blocks' shapes in fp16 and float32, the output channels-last; channel counts that are
// not whole 16-byte vectors and other layouts take the op.
TEST_F(FusedOpsCudaTest, ConcatChannelsIsTheOpBitForBit) {
  at::manual_seed(43);
  const auto cl = at::MemoryFormat::ChannelsLast;
  struct Shape {
    int64_t n, c1, c2, h, w;
  };
  for (const at::ScalarType dt : {at::kHalf, at::kFloat}) {
    const auto cuda = at::TensorOptions().device(at::kCUDA, 0).dtype(dt);
    for (const Shape& s : {Shape{2, 1280, 1280, 32, 32}, Shape{2, 1280, 640, 32, 32},
                           Shape{2, 640, 320, 64, 64}, Shape{2, 320, 320, 128, 128}, Shape{3, 8, 24, 5, 7}}) {
      SCOPED_TRACE(c10::str(c10::toString(dt), " ", s.c1, "+", s.c2, " at ", s.h, "x", s.w));
      const at::Tensor a = at::randn({s.n, s.c1, s.h, s.w}, cuda).contiguous(cl);
      const at::Tensor b = at::randn({s.n, s.c2, s.h, s.w}, cuda).contiguous(cl);
      const at::Tensor ours = concat_channels(a, b);
      EXPECT_TRUE(ours.is_contiguous(cl));
      EXPECT_TRUE(bit_identical(ours, at::cat({a, b}, 1)));
    }
  }
  const auto half = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  const at::Tensor a = at::randn({2, 4, 6, 6}, half).contiguous(cl),
                   b = at::randn({2, 12, 6, 6}, half).contiguous(cl);
  EXPECT_EQ(kernels::launch_concat_rows(a.data_ptr(), b.data_ptr(), nullptr, 72, 8, 24, nullptr),
            cudaErrorInvalidValue);
  EXPECT_TRUE(bit_identical(concat_channels(a, b), at::cat({a, b}, 1)));  // 4 channels: 8 bytes, the op
  const at::Tensor x = at::randn({2, 16, 6, 6}, half), y = at::randn({2, 8, 6, 6}, half);
  EXPECT_TRUE(bit_identical(concat_channels(x, y), at::cat({x, y}, 1)));  // not channels-last: the op
}

// The projection and its GEGLU in one GEMM (linear_geglu on Hopper): the UNet's two feed-forward shapes and
// rows that fill no whole tile, each as accurate as the ops (cuBLASLt, then the GEGLU kernel) against GEGLU
// of the float64 product (within 1.5x their error, floor 1e-3), every row on its own (a slice of the rows
// gives the same bits as the whole), the same bits twice; where the kernel does not take the width, the ops.
TEST_F(FusedOpsCudaTest, LinearGegluIsAsAccurateAsTheOpsAndPerRow) {
  if (!geglu_gemm_supported(at::Device(at::kCUDA, 0), at::kHalf))
    GTEST_SKIP() << "the GEGLU GEMM runs on Hopper, in a build with CUTLASS";
  at::manual_seed(23);
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf);
  struct Shape {
    int64_t m, k, two_f;
  };
  for (const Shape& sh : {Shape{2048, 1280, 10240}, Shape{8192, 640, 5120}, Shape{300, 64, 512}}) {
    SCOPED_TRACE(c10::str(sh.m, "x", sh.k, "x", sh.two_f));
    const at::Tensor x = at::randn({sh.m, sh.k}, cuda);
    const at::Tensor w = at::randn({sh.two_f, sh.k}, cuda) / std::sqrt(static_cast<double>(sh.k));
    const at::Tensor b = at::randn({sh.two_f}, cuda);
    const at::Tensor iw = interleave_geglu(w), ib = interleave_geglu(b);
    const at::Tensor p = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t()) + b.to(at::kDouble);
    const auto halves = p.chunk(2, -1);
    const at::Tensor want = halves[0] * at::gelu(halves[1]);
    const at::Tensor ours = linear_geglu(x, iw, ib), ops = geglu(at::linear(x, w, b));
    at::Tensor direct = at::empty_like(ours);
    ASSERT_EQ(kernels::launch_geglu_gemm(x.data_ptr(), iw.data_ptr(), ib.data_ptr(), direct.data_ptr(), sh.m,
                                         sh.k, sh.two_f, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(bit_identical(direct, ours)) << "linear_geglu did not run the kernel";
    const double e = rel_err(ours, want), eo = rel_err(ops, want);
    const double same = ours.eq(ops).to(at::kDouble).mean().item<double>();
    std::printf("linear_geglu %ldx%ldx%ld: relative error %.3g (the ops %.3g), %.4f of the ops' bits\n",
                static_cast<long>(sh.m), static_cast<long>(sh.k), static_cast<long>(sh.two_f), e, eo, same);
    EXPECT_LE(e, std::max(1.5 * eo, 1e-3));
    const int64_t from = sh.m / 3, count = std::min<int64_t>(sh.m - from, 100);
    EXPECT_TRUE(bit_identical(linear_geglu(x.narrow(0, from, count).contiguous(), iw, ib),
                              ours.narrow(0, from, count)));
    EXPECT_TRUE(bit_identical(linear_geglu(x, iw, ib), ours));
  }
  // A width that fills no whole tile of 128 columns: the ops.
  const at::Tensor x = at::randn({64, 64}, cuda), w = at::randn({272, 64}, cuda), b = at::randn({272}, cuda);
  at::Tensor y = at::empty({64, 136}, cuda);
  EXPECT_EQ(kernels::launch_geglu_gemm(x.data_ptr(), w.data_ptr(), b.data_ptr(), y.data_ptr(), 64, 64, 272,
                                       nullptr),
            cudaErrorNotSupported);
  EXPECT_TRUE(at::allclose(linear_geglu(x, interleave_geglu(w), interleave_geglu(b)),
                           geglu(at::linear(x, w, b)), 1e-3, 1e-3));
}

// A self-attention of the UNet's deepest level (1280 wide, 20 heads, 1024 tokens, a guidance pair) with its
// projections fused into one GEMM, on the GPU in fp16: within rounding of the three GEMMs' result (printed:
// the share of identical bits).
TEST_F(FusedOpsCudaTest, FusedProjectionsAtTheDeepestLevel) {
  c10::InferenceMode guard;
  at::manual_seed(37);
  Attention attn(AttentionOptions(1280, 20, 64));
  attn->to(at::Device(at::kCUDA, 0), at::kHalf);
  for (auto& p : attn->parameters()) p.copy_(at::randn(p.sizes(), p.options()) / 36);
  const at::Tensor x = at::randn({2, 1024, 1280}, at::TensorOptions().device(at::kCUDA, 0).dtype(at::kHalf));
  const at::Tensor separate = attn->forward(x);
  ASSERT_TRUE(attn->fuse_projections());
  const at::Tensor fused = attn->forward(x);
  const double same = fused.eq(separate).to(at::kDouble).mean().item<double>();
  std::printf("fused projections 2x1024x1280: relative difference %.3g, %.4f of the bits\n",
              rel_err(fused, separate), same);
  EXPECT_LT(rel_err(fused, separate), 2e-3);
}

// GEGLU in both kernels (GELU by erf, and looked up in the table) against the ops, bit for bit: the UNet's
// two widths, every finite 16-bit gate value, bf16, and a width the vectorised kernels do not take.
// The GEGLU GEMM's epilogue gives PyTorch's GELU for every finite fp16 gate: x is the 64x64 identity, so each
// output is the GELU of one gate weight, and the 64 x 1024 gate weights are the 65536 fp16 bit patterns
// (infinities and NaNs as 0, which would spoil the sums).
TEST_F(FusedOpsCudaTest, GegluGemmGivesEveryFp16GatesGelu) {
  if (!geglu_gemm_supported(at::Device(at::kCUDA, 0), at::kHalf))
    GTEST_SKIP() << "the GEGLU GEMM runs on Hopper, in a build with CUTLASS";
  const int64_t k = 64, f = 1024;
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  at::Tensor bits = at::arange(0, 65536, cuda.dtype(at::kInt));
  const at::Tensor exponent_all_ones = bits.bitwise_and(0x7C00).eq(0x7C00);
  bits = at::where(exponent_all_ones, at::zeros_like(bits), bits);
  bits = at::where(bits.ge(32768), bits - 65536, bits);                       // the same 16 bits as an int16
  const at::Tensor gates = bits.to(at::kShort).view(at::kHalf).view({f, k});  // gate row n, column j: n*64+j
  const at::Tensor w = at::cat({at::ones({f, k}, cuda.dtype(at::kHalf)), gates}).contiguous();
  const at::Tensor iw = interleave_geglu(w);
  const at::Tensor x = at::eye(k, cuda.dtype(at::kHalf));
  const at::Tensor want = at::gelu(gates.t().contiguous());  // [64 rows, 1024]: row m takes column m's gates
  at::Tensor out = at::empty({k, f}, cuda.dtype(at::kHalf));
  ASSERT_EQ(
      kernels::launch_geglu_gemm(x.data_ptr(), iw.data_ptr(), nullptr, out.data_ptr(), k, k, 2 * f, nullptr),
      cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(bit_identical(out, want));
}

TEST_F(FusedOpsCudaTest, GegluIsBitIdenticalToTheOpsInBothKernels) {
  at::manual_seed(13);
  const auto ops = [](const at::Tensor& p) {
    auto parts = p.chunk(2, -1);
    return parts[0] * at::gelu(parts[1]);
  };
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  for (const at::Tensor& p : {at::randn({2, 1024, 10240}, cuda.dtype(at::kHalf)) * 3,
                              at::randn({2, 4096, 5120}, cuda.dtype(at::kHalf)) * 3, every_gate(at::kHalf),
                              every_gate(at::kBFloat16), at::randn({3, 7, 16}, cuda.dtype(at::kBFloat16)) * 3,
                              at::randn({5, 10}, cuda.dtype(at::kHalf))}) {
    SCOPED_TRACE(c10::str(p.sizes(), " ", p.scalar_type()));
    const at::Tensor want = ops(p);
    EXPECT_TRUE(bit_identical(geglu(p), want));
    const int64_t f = p.size(-1) / 2, rows = p.numel() / p.size(-1);
    const int dtype = p.scalar_type() == at::kHalf ? 1 : 2;
    at::Tensor table = at::empty_like(want), erf = at::empty_like(want);
    const cudaError_t e =
        kernels::launch_geglu_table(dtype, p.data_ptr(), table.data_ptr(), rows, f, nullptr);
    if (f % 8 != 0) {
      EXPECT_EQ(e, cudaErrorInvalidValue);
      continue;
    }
    ASSERT_EQ(e, cudaSuccess);
    ASSERT_EQ(dtype == 1 ? kernels::launch_geglu_f16(p.data_ptr(), erf.data_ptr(), rows, f, nullptr)
                         : kernels::launch_geglu_bf16(p.data_ptr(), erf.data_ptr(), rows, f, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(bit_identical(table, want));
    EXPECT_TRUE(bit_identical(erf, want));
  }
}

// The GEGLU kernels that quantise their rows to e4m3 (GELU by erf, and looked up in the table) give the bits
// of quantize_rows on the ops' GEGLU: the UNet's two widths with more rows than the table kernel's groups (so
// each group takes several rows), every finite 16-bit gate value, bf16; the table kernel refuses rows wider
// than it takes.
TEST_F(FusedOpsCudaTest, GegluE4m3IsTheOpsQuantisedInBothKernels) {
  at::manual_seed(17);
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  for (const at::Tensor& p :
       {at::randn({2, 4096, 5120}, cuda.dtype(at::kHalf)) * 3,
        at::randn({2, 1024, 10240}, cuda.dtype(at::kHalf)) * 3,
        at::randn({3, 333, 10240}, cuda.dtype(at::kBFloat16)) * 3, every_gate(at::kHalf),
        every_gate(at::kBFloat16), at::randn({9, 16384}, cuda.dtype(at::kHalf))}) {
    SCOPED_TRACE(c10::str(p.sizes(), " ", p.scalar_type()));
    const int64_t f = p.size(-1) / 2, rows = p.numel() / p.size(-1);
    const auto [want_q, want_scale] = quantize_rows(geglu(p).view({rows, f}));
    const int dtype = p.scalar_type() == at::kHalf ? 1 : 2;
    for (const bool table : {true, false}) {
      SCOPED_TRACE(table ? "table" : "erf");
      at::Tensor q = at::empty_like(want_q), scale = at::empty_like(want_scale);
      const cudaError_t e = (table ? kernels::launch_geglu_table_e4m3 : kernels::launch_geglu_e4m3)(
          dtype, p.data_ptr(), q.data_ptr(), scale.data_ptr<float>(), rows, f, nullptr);
      if (table && f > 5120) {
        EXPECT_EQ(e, cudaErrorInvalidValue);
        continue;
      }
      ASSERT_EQ(e, cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_TRUE(at::equal(q.view(at::kByte), want_q.view(at::kByte)));
      EXPECT_TRUE(at::equal(scale, want_scale));
    }
  }
}

}  // namespace
}  // namespace sdxlb
