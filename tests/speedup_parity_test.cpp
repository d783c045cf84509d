// The opt-in approximations of issue 14 end to end against their reference libraries (fixtures from
// tests/oracle/ref_speedups.py): ToMe against diffusers + tomesd 0.1.3 (use_rand false), DeepCache against
// diffusers + DeepCacheSDHelper, ToDo against the paper's method written in Python in the fixture script.
// tiny-a (and tiny-a-attn0, which has attention at level 0), 40x56, 8 steps, per-image CPU generators. uint8
// images may differ by at most 1, at no more than 0.5% of the values (or the reference's own sensitivity to
// one float32 rounding of its input); every case's reference differs from the exact render, so a technique
// that did nothing fails. Also: ToMe's random destinations give the same image alone or in a batch, and a
// DeepCache branch beyond the UNet is refused at load.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "per_image_embeddings.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/io/weights.h"
#include "pipeline/nn/token_merging.h"
#include "pipeline/sdxl_pipeline.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using nlohmann::json;
using testing::fixtures_dir;

json cases() {
  static const json all = [] {
    auto j = read_json_file(fixtures_dir() + "/speedups/cases.json");
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    return j.is_ok() ? *j : json::array();
  }();
  return all;
}

json find_case(const std::string& name) {
  for (const auto& c : cases())
    if (c.at("name") == name) return c;
  ADD_FAILURE() << "no fixture case " << name;
  return json::object();
}

// The case's technique as the job file's keys give it (values outside the job file's ranges included: the
// pipeline is under test here, the job file's checks in job_spec_test).
Approximations approximations_of(const json& c) {
  Approximations a;
  if (c.contains("token_merging")) {
    const json& j = c.at("token_merging");
    TokenMerging m;
    m.ratio = j.at("ratio");
    m.max_downsample = j.at("max_downsample");
    m.sx = j.at("sx");
    m.sy = j.at("sy");
    m.use_rand = j.at("use_rand");
    m.merge_attn = j.at("merge_attn");
    m.merge_crossattn = j.at("merge_crossattn");
    m.merge_mlp = j.at("merge_mlp");
    a.token_merging = m;
  }
  if (c.contains("token_downsampling")) {
    const json& j = c.at("token_downsampling");
    TokenDownsampling d;
    d.factor = j.at("factor");
    d.max_downsample = j.at("max_downsample");
    d.method = j.at("method") == "average" ? TokenDownsampling::Method::kAverage
                                           : TokenDownsampling::Method::kNearest;
    a.token_downsampling = d;
  }
  if (c.contains("deep_cache")) {
    const json& j = c.at("deep_cache");
    DeepCache d;
    d.cache_interval = j.at("cache_interval");
    d.cache_branch_id = j.at("cache_branch_id");
    a.deep_cache = d;
  }
  return a;
}

RenderSettings settings_of(const json& c) {
  RenderSettings rs;
  rs.steps = c.at("steps");
  rs.guidance = c.at("guidance");
  rs.height = c.at("height");
  rs.width = c.at("width");
  return rs;
}

StatusOr<std::unique_ptr<SdxlPipeline>> load(const json& c, const Approximations& a) {
  PipelineOptions opts;
  opts.approximations = a;
  return SdxlPipeline::load(testing::fixture_model_dir(c.at("model").get<std::string>()), opts);
}

std::vector<std::string> case_names() {
  // Fixed by ref_speedups.py's _cases() (the fixtures are written by the ctest fixture setup before this
  // runs).
  return {"tome_r30",
          "tome_r50",
          "tome_r70",
          "tome_r50_md4",
          "tome_r50_all",
          "tome_r50_crossattn_mlp",
          "tome_r50_sx3_sy1",
          "tome_attn0_md1",
          "todo_f2_nearest",
          "todo_f2_average",
          "todo_f4_nearest",
          "todo_f4_average",
          "todo_f2_nearest_md4",
          "todo_f2_average_md4",
          "todo_f8_nearest_md4",
          "todo_attn0_md1",
          "deepcache_i2_b0",
          "deepcache_i3_b0",
          "deepcache_i5_b0",
          "deepcache_i3_b1",
          "deepcache_i3_b2",
          "deepcache_i3_b3",
          "deepcache_i3_b5",
          "deepcache_i3_b0_10_steps"};
}

class SpeedupParity : public ::testing::TestWithParam<std::string> {};

TEST_P(SpeedupParity, MatchesReference) {
  const json c = find_case(GetParam());
  ASSERT_FALSE(c.empty());
  auto pipe = load(c, approximations_of(c));
  ASSERT_TRUE(pipe.is_ok()) << pipe.status().to_string();
  auto ws = WeightSet::open_file(fixtures_dir() + "/speedups/" + GetParam() + ".safetensors");
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  const at::Tensor expected = ws->get("images")->clone();
  auto images = (*pipe)->generate(c.at("prompts"), c.at("negatives"), c.at("seeds"), settings_of(c));
  ASSERT_TRUE(images.is_ok()) << images.status().to_string();
  ASSERT_EQ(images->sizes(), expected.sizes());
  const at::Tensor diff = (images->to(at::kShort) - expected.to(at::kShort)).abs();
  const int64_t max_diff = diff.max().item<int64_t>();
  const double differing = diff.gt(0).to(at::kDouble).mean().item<double>();
  const double allowed = std::max(0.005, c.at("reference_sensitivity").get<double>());
  const double changed = c.at("differs_from_exact").get<double>();
  std::printf(
      "[ parity ] %s: max |diff| %lld, %.3f%% of values differ (allowed %.3f%%); the technique changes "
      "%.1f%% of the exact image's values\n",
      GetParam().c_str(), static_cast<long long>(max_diff), 100 * differing, 100 * allowed, 100 * changed);
  EXPECT_LE(max_diff, 1);
  EXPECT_LE(differing, allowed);
  // The reference did something (else this comparison could not tell a no-op from the technique), unless the
  // case is one where the technique must leave the image exact.
  if (!c.value("no_op", false)) {
    EXPECT_GT(changed, 10 * allowed);
  }
}

INSTANTIATE_TEST_SUITE_P(References, SpeedupParity, ::testing::ValuesIn(case_names()));

// ToMe with random destinations: a function of the image's seed and the step, so an image's latents are the
// same bits alone or in a batch (given the same embeddings, as the render phase reads them from the encode
// phase's shards), and differ from the fixed destinations'.
TEST(TokenMergingRandom, SameImageAloneOrInABatch) {
  json c = find_case("tome_r50");
  Approximations a = approximations_of(c);
  a.token_merging->use_rand = true;
  auto pipe = load(c, a);
  ASSERT_TRUE(pipe.is_ok()) << pipe.status().to_string();
  const RenderSettings rs = settings_of(c);
  const auto prompts = c.at("prompts").get<std::vector<std::string>>();
  const auto negatives = c.at("negatives").get<std::vector<std::string>>();
  const auto seeds = c.at("seeds").get<std::vector<uint64_t>>();
  ASSERT_GE(seeds.size(), 2u);
  const auto each = testing::encode_each(**pipe, prompts, negatives);
  ASSERT_EQ(each.positive.size(), prompts.size());
  auto both = (*pipe)->denoise(testing::concat(each.positive), testing::concat(each.negative), seeds, rs);
  ASSERT_TRUE(both.is_ok()) << both.status().to_string();
  for (size_t i = 0; i < seeds.size(); ++i) {
    auto one = (*pipe)->denoise(each.positive[i], each.negative[i], {seeds[i]}, rs);
    ASSERT_TRUE(one.is_ok()) << one.status().to_string();
    EXPECT_TRUE(at::equal(*one, both->narrow(0, static_cast<int64_t>(i), 1))) << i;
  }
  auto images = (*pipe)->generate(prompts, negatives, seeds, rs);
  ASSERT_TRUE(images.is_ok()) << images.status().to_string();
  auto ws = WeightSet::open_file(fixtures_dir() + "/speedups/tome_r50.safetensors");
  ASSERT_TRUE(ws.is_ok());
  const at::Tensor fixed = ws->get("images")->clone();
  const double moved = images->ne(fixed).to(at::kDouble).mean().item<double>();
  std::printf("[ random ] use_rand moves %.2f%% of the values of the fixed-destination image\n", 100 * moved);
  EXPECT_GT(moved, 0.02);
}

// The random destinations: in [0, sx*sy), not all the same cell position, different for another seed or step.
TEST(TokenMergingRandom, DestinationsDependOnSeedStepAndBlock) {
  TokenMerging m;
  m.ratio = 0.5;
  m.max_downsample = 1;
  TokenReduction r;
  r.merging = &m;
  r.height = 16;
  r.width = 16;
  auto merged = [&](int64_t seed, int64_t step) {
    r.seed = at::scalar_tensor(seed, at::kLong);
    r.step = at::scalar_tensor(step, at::kLong);
    r.next_block = 0;
    at::Tensor x = at::arange(256 * 4, at::kFloat).reshape({1, 256, 4}).sin();
    BlockTokens t = block_tokens(r, x);
    EXPECT_TRUE(t.merge.active());
    // Which tokens survive as destinations shows the random choice.
    at::Tensor unmerged = t.merge.unmerge(t.merge.merge(x));
    return unmerged.ne(x).any(-1).squeeze(0);
  };
  const at::Tensor a = merged(1, 0), b = merged(2, 0), c = merged(1, 1), a2 = merged(1, 0);
  EXPECT_TRUE(at::equal(a, a2));
  EXPECT_FALSE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
}

// Merging then unmerging leaves an unmerged token as it was and gives every merged token its destination's
// mean; merging with r = 0 is the identity.
TEST(TokenMerge, MergeAndUnmergeKeepTokensInPlace) {
  at::Tensor x = at::randn({2, 6 * 8, 5}, at::TensorOptions().dtype(at::kFloat));
  TokenMerge none = TokenMerge::plan(x, 8, 6, 2, 2, 0, {});
  EXPECT_FALSE(none.active());
  EXPECT_TRUE(at::equal(none.unmerge(none.merge(x)), x));
  TokenMerge m = TokenMerge::plan(x, 8, 6, 2, 2, 20, {});
  ASSERT_TRUE(m.active());
  const at::Tensor merged = m.merge(x);
  EXPECT_EQ(merged.size(1), 48 - 20);
  const at::Tensor back = m.unmerge(merged);
  // 48 - 12 destinations - 20 merged = 16 tokens untouched.
  const int64_t same = x.eq(back).all(-1).sum().item<int64_t>();
  EXPECT_GE(same, 16 * 2);
  EXPECT_LT(same, 48 * 2);
}

float max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat).cpu() - b.to(at::kFloat).cpu()).abs().max().item<float>();
}

// On CUDA the plan's index work runs as two kernels (the split, and the rows of the fused kernels), the merge
// and unmerge as fused kernels (the mean without atomics) and the random destinations as one hash kernel. A
// CUDA plan merges what the CPU's tomesd ops merge, in the same row order; the fused kernels give what the
// ATen ops give on the same plan (float32 sums to rounding: CUDA's scatter_reduce adds with atomics in any
// order); fp16 merges are the same bits on every run.
// The CUDA kernels against the CPU and against the ATen ops on the same plan. The split into sources and
// destinations (the split kernel, and the random-destination hash kernel) must equal the CPU's exactly. The
// merge plan itself (similarity matmul, max, argsort) is ATen on both devices, and another matmul rounds
// scores differently: near-equal scores may then sort in another order, so the plan's merged output is
// compared with the ATen merge of the same GPU plan, not with the CPU's plan.
TEST(TokenMerge, CudaKernelsMatchCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(20261203);
  // 64×64 divides into 2×2 cells; 63×65 leaves a row and a column of sources outside every cell.
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{64, 64}, {63, 65}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    at::Tensor x = at::randn({2, h * w, 40}, at::TensorOptions().dtype(at::kFloat));
    at::Tensor y = at::randn({2, h * w, 40}, at::TensorOptions().dtype(at::kFloat));
    const int64_t r = h * w / 2;
    TokenMerge cpu = TokenMerge::plan(x, w, h, 2, 2, r, {});
    const at::Tensor gx = x.cuda(), gy = y.cuda();
    TokenMerge gpu = TokenMerge::plan(gx, w, h, 2, 2, r, {});
    ASSERT_TRUE(gpu.active());
    EXPECT_TRUE(at::equal(cpu.sources(), gpu.sources().cpu()));
    EXPECT_TRUE(at::equal(cpu.destinations(), gpu.destinations().cpu()));
    // The plan's kernels (gather + normalise, the sorts, the rows) against ATen's ops on the same device:
    // the same merged tokens, in the same places. In fp16 too (the product's dtype: 16-bit sort keys). The
    // metric's rows have four entries of ±0.5 (norm 1), so every normalisation and score is exact in any
    // order and many scores tie: the sorts must keep ties in order as ATen's stable sort does.
    const at::Tensor picks = at::rand({2, h * w, 40}).argsort(/*stable=*/false, /*dim=*/-1).slice(-1, 0, 4);
    const at::Tensor signs = (at::randint(0, 2, {2, h * w, 4}).to(at::kFloat) * 2 - 1) * 0.5;
    const at::Tensor exact = at::zeros({2, h * w, 40}).scatter_(-1, picks, signs).cuda();
    for (const at::ScalarType dt : {at::kFloat, at::kHalf}) {
      SCOPED_TRACE(c10::toString(dt));
      const TokenMerge fused = TokenMerge::plan(exact.to(dt), w, h, 2, 2, r, {});
      const TokenMerge ref = TokenMerge::plan_reference(exact.to(dt), w, h, 2, 2, r, {});
      const at::Tensor fy = gy.to(dt);
      EXPECT_LT(max_abs_diff(fused.merge(fy), ref.merge(fy)), dt == at::kFloat ? 1e-5f : 1e-2f);
      EXPECT_TRUE(at::equal(fused.unmerge(fused.merge(fy)), ref.unmerge(fused.merge(fy))));
    }
    const at::Tensor merged = gpu.merge(gy);
    EXPECT_LT(max_abs_diff(gpu.merge_reference(gy), merged), 1e-5f);
    EXPECT_TRUE(at::equal(gpu.unmerge(merged), gpu.unmerge_reference(merged)));
    // The same groups as the CPU's plan (the kernels' normalised metric ranks the pairs as ATen's does; with
    // these fixed inputs no two scores at the merge boundary are within rounding of each other).
    EXPECT_LT(max_abs_diff(cpu.unmerge(cpu.merge(y)), gpu.unmerge(merged)), 1e-5f);
    const at::Tensor hy = gy.to(at::kHalf);
    const at::Tensor first = gpu.merge(hy);
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(first, gpu.merge(hy)));
    EXPECT_LT(max_abs_diff(first.to(at::kFloat), gpu.merge_reference(hy).to(at::kFloat)), 1e-2f);
    EXPECT_TRUE(at::equal(gpu.unmerge(first), gpu.unmerge_reference(first)));
  }
  // Random destinations: the CUDA hash kernel draws what the ATen version draws, so the split is the same.
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{64, 64}, {63, 65}}) {
    SCOPED_TRACE("random destinations " + std::to_string(h) + "x" + std::to_string(w));
    at::Tensor x = at::randn({2, h * w, 40}, at::TensorOptions().dtype(at::kFloat));
    at::Tensor y = at::randn({2, h * w, 40}, at::TensorOptions().dtype(at::kFloat));
    TokenMerging m;
    m.max_downsample = 1;
    auto planned = [&](bool on_gpu) {
      TokenReduction r;
      r.merging = &m;
      r.height = h;
      r.width = w;
      const auto dev = on_gpu ? at::Device(at::kCUDA) : at::Device(at::kCPU);
      r.seed = at::scalar_tensor(int64_t{1234567}, at::kLong).to(dev);
      r.step = at::scalar_tensor(int64_t{7}, at::kLong).to(dev);
      r.next_block = 3;
      return block_tokens(r, x.to(dev)).merge;
    };
    const TokenMerge cpu = planned(false), gpu = planned(true);
    ASSERT_TRUE(gpu.active());
    EXPECT_TRUE(at::equal(cpu.sources(), gpu.sources().cpu()));
    EXPECT_TRUE(at::equal(cpu.destinations(), gpu.destinations().cpu()));
    // Not the fixed first position of every cell: the hash chose.
    TokenMerge fixed = TokenMerge::plan(x, w, h, 2, 2, 1, {});
    EXPECT_FALSE(at::equal(cpu.destinations(), fixed.destinations()));
    const at::Tensor gy = y.cuda();
    const at::Tensor merged = gpu.merge(gy);
    EXPECT_LT(max_abs_diff(gpu.merge_reference(gy), merged), 1e-5f);
    EXPECT_TRUE(at::equal(gpu.unmerge(merged), gpu.unmerge_reference(merged)));
  }
}

// A DeepCache branch the UNet does not have: refused when the model loads, at the job file's location.
TEST(DeepCacheBranch, BeyondTheUNetIsRefused) {
  json c = find_case("deepcache_i3_b0");
  Approximations a = approximations_of(c);
  a.deep_cache->cache_branch_id = 9;  // tiny-a has 3 levels: 0 to 8
  a.deep_cache->where = "job.yaml:7:20";
  auto pipe = load(c, a);
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_EQ(pipe.status().code(), StatusCode::kInvalidArgument) << pipe.status().to_string();
  for (const char* want : {"job.yaml:7:20", "cache_branch_id", "0 to 8"})
    EXPECT_NE(pipe.status().message().find(want), std::string::npos)
        << want << ": " << pipe.status().message();
  a.deep_cache->cache_branch_id = 8;
  EXPECT_TRUE(load(c, a).is_ok());
}

// unet_precision: fp8 where no FP8 GEMM runs (here: the CPU) is refused when the model loads, with the reason
// and the way out; never silently fp16.
TEST(Fp8Unet, RefusedOnTheCpu) {
  json c = find_case("deepcache_i3_b0");
  Approximations a;
  a.unet_precision = UNetPrecision::kFp8;
  auto pipe = load(c, a);
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_EQ(pipe.status().code(), StatusCode::kInvalidArgument) << pipe.status().to_string();
  for (const char* want :
       {"unet_precision: fp8 cannot run here", "compute capability 8.9", "unet_precision: fp16"})
    EXPECT_NE(pipe.status().message().find(want), std::string::npos)
        << want << ": " << pipe.status().message();
}

// attention_precision: fp8 where cuDNN's FP8 attention does not run (here: the CPU) is refused likewise.
TEST(Fp8Attention, RefusedOnTheCpuWhenTheModelLoads) {
  json c = find_case("deepcache_i3_b0");
  Approximations a;
  a.attention_precision = AttentionPrecision::kFp8;
  auto pipe = load(c, a);
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_EQ(pipe.status().code(), StatusCode::kInvalidArgument) << pipe.status().to_string();
  for (const char* want : {"attention_precision: fp8 cannot run here", "Hopper", "attention_precision: fp16"})
    EXPECT_NE(pipe.status().message().find(want), std::string::npos)
        << want << ": " << pipe.status().message();
}

// convolution_precision: fp8 where the FP8 convolution kernel does not run (here: the CPU) is refused
// likewise.
TEST(Fp8Convolution, RefusedOnTheCpuWhenTheModelLoads) {
  json c = find_case("deepcache_i3_b0");
  Approximations a;
  a.convolution_precision = ConvolutionPrecision::kFp8;
  auto pipe = load(c, a);
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_EQ(pipe.status().code(), StatusCode::kInvalidArgument) << pipe.status().to_string();
  for (const char* want :
       {"convolution_precision: fp8 cannot run here", "cpu", "convolution_precision: fp16"})
    EXPECT_NE(pipe.status().message().find(want), std::string::npos)
        << want << ": " << pipe.status().message();
}

}  // namespace
}  // namespace sdxlb
