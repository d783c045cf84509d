// Oracle test of the UNet against diffusers 0.42.1 (references from tests/oracle/ref_unet.py): one denoiser
// call for two configs at non-square sizes, sizes that are not multiples of the downsampling, a config
// override, sharded and fp16-variant weights, and the error paths (unsupported configs, wrong tensor shapes,
// bad inputs).
#include "pipeline/models/unet.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "oracle_reference.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/transformer_2d.h"
#include "test_files.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using testing::fixture_model_dir;
using testing::fixtures_dir;
using testing::ScratchDir;

constexpr double kTol = 1e-5;

using Reference = testing::ReferenceFile;
using testing::rel_err;

Reference reference(const std::string& name) {
  return testing::open_reference("unet", name);
}

/// The unet config of a fixture model with `overrides` merged in.
StatusOr<UNetConfig> config_of(const std::string& model,
                               const nlohmann::json& overrides = nlohmann::json::object()) {
  SDXLB_ASSIGN_OR_RETURN(ModelFolder folder, ModelFolder::open(fixture_model_dir(model)));
  SDXLB_ASSIGN_OR_RETURN(nlohmann::json json, folder.component_config("unet"));
  json.merge_patch(overrides);
  return UNetConfig::from_json(json, model + "/unet/config.json (test)");
}

StatusOr<UNet2DConditionModel> load(const std::string& model, const std::string& variant = "",
                                    at::ScalarType dtype = at::kFloat) {
  SDXLB_ASSIGN_OR_RETURN(ModelFolder folder, ModelFolder::open(fixture_model_dir(model)));
  return load_unet(folder, variant, dtype, at::kCPU);
}

at::Tensor run(UNet2DConditionModel& unet, const Reference& ref, at::ScalarType dtype = at::kFloat,
               const at::Tensor& timestep = {}) {
  c10::InferenceMode guard;
  auto out =
      unet->checked_forward(ref.get("sample").to(dtype), timestep.defined() ? timestep : ref.get("timestep"),
                            ref.get("encoder_hidden_states").to(dtype), ref.get("text_embeds").to(dtype),
                            ref.get("time_ids").to(dtype));
  EXPECT_TRUE(out.is_ok()) << out.status().to_string();
  return out.is_ok() ? out->to(at::kFloat) : at::zeros({1});
}

// ---------------------------------------------------------------------------------------------------------
// Parity with diffusers

class UNetOracle : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetOracle, MatchesDiffusers) {
  const Reference ref = reference(GetParam());
  const std::string model = ref.meta("model");
  auto config = config_of(model, nlohmann::json::parse(ref.meta("config_overrides")));
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  auto folder = ModelFolder::open(fixture_model_dir(model));
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  auto weights = folder->component_weights("unet", "");
  ASSERT_TRUE(weights.is_ok()) << weights.status().to_string();
  auto unet = load_unet(*config, *weights, "unet weights", at::kFloat, at::kCPU);
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();

  const at::Tensor expected = ref.get("out");
  const double e = rel_err(run(*unet, ref), expected);
  std::printf("[%s] UNet fp32 CPU vs diffusers: max rel err %.3g\n", GetParam().c_str(), e);
  EXPECT_LE(e, kTol);

  // A 0-dim timestep is broadcast over the batch, as diffusers does.
  const at::Tensor t0 = ref.get("timestep")[0].clone();
  ASSERT_EQ(t0.dim(), 0);
  const double e0 = rel_err(run(*unet, ref, at::kFloat, t0), ref.get("out_scalar_t"));
  std::printf("[%s] UNet scalar timestep vs diffusers: max rel err %.3g\n", GetParam().c_str(), e0);
  EXPECT_LE(e0, kTol);

  // The unchecked forward is the same computation.
  c10::InferenceMode guard;
  const at::Tensor raw =
      (*unet)->forward(ref.get("sample"), ref.get("timestep"), ref.get("encoder_hidden_states"),
                       ref.get("text_embeds"), ref.get("time_ids"));
  EXPECT_LE(rel_err(raw, expected), kTol);
}

INSTANTIATE_TEST_SUITE_P(Cases, UNetOracle,
                         ::testing::Values("tiny-a", "tiny-b", "tiny-b-odd", "tiny-a-center"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(UNetLoad, ShardedWeightsGiveTheSameOutput) {
  auto sharded = load("tiny-a-sharded");
  ASSERT_TRUE(sharded.is_ok()) << sharded.status().to_string();
  const Reference ref = reference("tiny-a");
  const double e = rel_err(run(*sharded, ref), ref.get("out"));
  std::printf("[tiny-a-sharded] UNet fp32 CPU vs diffusers: max rel err %.3g\n", e);
  EXPECT_LE(e, kTol);
}

// The cross-attention keys and values projected ahead of the call (once per batch in the denoise loop) give
// the same bits as projecting them in the call; projections of another prompt change the output (so they are
// used), and a map without this model's modules is ignored.
// A reference's UNet inputs, and the UNet's call on them (with another context where given).
struct Inputs {
  explicit Inputs(const Reference& ref)
      : sample(ref.get("sample")),
        timestep(ref.get("timestep")),
        context(ref.get("encoder_hidden_states")),
        text(ref.get("text_embeds")),
        time_ids(ref.get("time_ids")) {}
  at::Tensor forward(UNet2DConditionModel& unet, const UNetCall& call = {},
                     const at::Tensor& other_context = {}) const {
    return unet->forward(sample, timestep, other_context.defined() ? other_context : context, text, time_ids,
                         call);
  }
  at::Tensor sample, timestep, context, text, time_ids;
};

TEST(UNetContextProjections, SameBitsAsProjectingInTheCall) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  c10::InferenceMode guard;
  const Inputs in(reference("tiny-a"));
  const at::Tensor plain = in.forward(*unet);
  ContextProjections projected;
  (*unet)->project_context(in.context, projected);
  // tiny-a: 1 + 2 transformer layers down, 2 in the mid block, 3 + 3 up, each with cross-attention.
  EXPECT_EQ(projected.kv.size(), 1u * 2 + 2 * 2 + 2 + 2 * 3 + 1 * 3);
  UNetCall call;
  call.projected = &projected;
  EXPECT_TRUE(at::equal(in.forward(*unet, call), plain));
  ContextProjections other;
  (*unet)->project_context(in.context + 1, other);
  call.projected = &other;
  EXPECT_FALSE(at::equal(in.forward(*unet, call), plain));
  ContextProjections none;
  call.projected = &none;
  EXPECT_TRUE(at::equal(in.forward(*unet, call), plain));
}

// UNetCall::zero_context_samples: with the first sample's context zero (an empty negative prompt under
// force_zeros_for_empty_prompt), filling in its cross-attention outputs instead of computing them gives
// diffusers' output, with the context projected in the call or ahead; every sample zero works too, and a
// count beyond the batch is refused. A non-zero context filled in this way would change the output (the test
// would notice a fill that does nothing).
TEST(UNetZeroContext, FillingInTheZeroSamplesCrossAttentionMatchesDiffusers) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-a-zero-negative");
  c10::InferenceMode guard;
  const Inputs in(ref);
  ASSERT_EQ(in.context[0].count_nonzero().item<int64_t>(), 0);
  const at::Tensor expected = ref.get("out");
  const at::Tensor plain = in.forward(*unet);
  EXPECT_LE(rel_err(plain, expected), kTol);
  UNetCall call;
  call.zero_context_samples = 1;
  const at::Tensor filled = in.forward(*unet, call);
  const double e = rel_err(filled, expected);
  std::printf("[tiny-a-zero-negative] UNet, negative's cross-attention filled in, vs diffusers: %.3g\n", e);
  EXPECT_LE(e, kTol);
  EXPECT_LE(rel_err(filled, plain), 1e-6);
  ContextProjections projected;
  (*unet)->project_context(in.context, projected);
  call.projected = &projected;
  EXPECT_LE(rel_err(in.forward(*unet, call), expected), kTol);

  // Both samples zero.
  const at::Tensor zeros = at::zeros_like(in.context);
  UNetCall all;
  all.zero_context_samples = 2;
  EXPECT_LE(rel_err(in.forward(*unet, all, zeros), in.forward(*unet, {}, zeros)), 1e-6);
  // The fill is used: claimed for a sample whose context is not zero, the output moves.
  UNetCall wrong;
  wrong.zero_context_samples = 1;
  const at::Tensor shifted = in.context + 1;
  EXPECT_GT(rel_err(in.forward(*unet, wrong, shifted), in.forward(*unet, {}, shifted)), 1e-3);
  UNetCall beyond;
  beyond.zero_context_samples = 3;
  EXPECT_THROW(in.forward(*unet, beyond), c10::Error);
}

// fuse_time_projections: every resnet's time_emb_proj as one linear of the UNet. The output stays diffusers'
// (the same computation, rounded as one GEMM rounds it), the resnets' own layers are emptied, and a second
// call joins nothing.
TEST(UNetTimeProjections, OneLinearForEveryResnetMatchesDiffusers) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-a");
  const at::Tensor plain = run(*unet, ref);
  int64_t resnets = 0, channels = 0;
  for (const auto& item : (*unet)->modules(/*include_self=*/false))
    if (auto* r = item->as<ResnetBlock2DImpl>(); r != nullptr && r->options().temb_channels()) {
      ++resnets;
      channels += r->options().out_channels();
    }
  ASSERT_GT(resnets, 1);
  EXPECT_EQ((*unet)->fuse_time_projections(), resnets);
  EXPECT_EQ((*unet)->fuse_time_projections(), 0);
  const auto buffers = (*unet)->named_buffers(/*recurse=*/false);
  ASSERT_TRUE(buffers.contains("time_proj_weight"));
  EXPECT_EQ(buffers["time_proj_weight"].size(0), channels);
  for (const auto& p : (*unet)->named_parameters()) {
    if (p.key().find("time_emb_proj") != std::string::npos) {
      EXPECT_EQ(p.value().numel(), 0) << p.key();
    }
  }
  const at::Tensor joined = run(*unet, ref);
  const double e = rel_err(joined, ref.get("out"));
  std::printf("UNet with one time projection vs diffusers: max rel err %.3g (vs per resnet %.3g)\n", e,
              rel_err(joined, plain));
  EXPECT_LE(e, kTol);
  EXPECT_LE(rel_err(joined, plain), kTol);
}

// unet_precision: fp8 (issue 17) switches exactly the transformer linears (not attn2's to_k/to_v, not the
// time embeddings), releases their weights, and stays near the exact output (e4m3 keeps about 2 significant
// digits; on the CPU LibTorch emulates the e4m3 product).
TEST(UNetFp8, SwitchesTheTransformerLinears) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-a");
  const at::Tensor exact = run(*unet, ref);
  // tiny-a: 17 transformer blocks of 8 FP8 linears (attn1 q, k, v, out; attn2 q, out; ff in, out) and 11
  // Transformer2DModels with a linear proj_in and proj_out.
  EXPECT_EQ(use_fp8_linears(**unet), 17 * 8 + 11 * 2);
  const auto params = (*unet)->named_parameters();
  const std::string block = "down_blocks.1.attentions.0.transformer_blocks.0.";
  EXPECT_EQ(params[block + "attn1.to_q.weight"].numel(), 0);
  EXPECT_EQ(params[block + "ff.net.2.weight"].numel(), 0);
  EXPECT_GT(params[block + "attn2.to_k.weight"].numel(), 0);
  EXPECT_GT(params["time_embedding.linear_1.weight"].numel(), 0);
  // attn1's three projections are one fused e4m3 weight (one GEMM), held by attn1; attn2's to_q is on its
  // own. Every e4m3 weight and scale is a buffer, so that to(device) and the weight streamer move it.
  const auto buffers = (*unet)->named_buffers();
  const int64_t inner = params[block + "attn2.to_k.weight"].size(0);
  EXPECT_EQ(buffers[block + "attn1.fp8_qkv_weight"].sizes(), (at::IntArrayRef{3 * inner, inner}));
  EXPECT_EQ(buffers[block + "attn1.fp8_qkv_weight"].scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(buffers[block + "attn1.fp8_qkv_scale"].sizes(), (at::IntArrayRef{1, 3 * inner}));
  EXPECT_EQ(buffers[block + "attn1.to_q.fp8_weight"].numel(), 0);  // handed over to the fused weight
  EXPECT_EQ(buffers[block + "attn2.to_q.fp8_weight"].sizes(), (at::IntArrayRef{inner, inner}));
  EXPECT_EQ(buffers[block + "ff.net.2.fp8_scale"].sizes(), (at::IntArrayRef{1, inner}));
  c10::InferenceMode guard;
  const at::Tensor fp8 = run(*unet, ref);
  const double e = rel_err(fp8, exact);
  std::printf("[tiny-a] FP8 linears vs exact: max rel err %.3g\n", e);
  EXPECT_GT(e, 0.0);
  EXPECT_LT(e, 0.1);

  // A selection: the feed-forwards and the projections only (the benchmark's --fp8-layers).
  auto partial = load("tiny-a");
  ASSERT_TRUE(partial.is_ok()) << partial.status().to_string();
  Fp8Layers ff_only;
  ff_only.attention = false;
  EXPECT_EQ(use_fp8_linears(**partial, ff_only), 17 * 2 + 11 * 2);
  const auto partial_params = (*partial)->named_parameters();
  EXPECT_GT(partial_params[block + "attn1.to_q.weight"].numel(), 0);
  EXPECT_EQ(partial_params[block + "ff.net.0.proj.weight"].numel(), 0);
  const double e_partial = rel_err(run(*partial, ref), exact);
  EXPECT_GT(e_partial, 0.0);
  EXPECT_LT(e_partial, 0.1);
}

// The FP8 convolutions switch exactly the resnets' and upsamplers' 3x3 convolutions (not conv_in, conv_out,
// the stride-2 downsamplers or the 1x1 shortcuts), release their weights, and stay near the exact output,
// alone and with the FP8 linears (on the CPU the dequantised operands' product stands in for the CUTLASS
// kernel).
TEST(UNetFp8, SwitchesTheResnetAndUpsamplerConvolutions) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-a");
  const at::Tensor exact = run(*unet, ref);
  // tiny-a: 6 + 2 + 9 resnets of two 3x3 convolutions each, and two upsamplers.
  EXPECT_EQ(use_fp8_convolutions(**unet), 17 * 2 + 2);
  const auto params = (*unet)->named_parameters();
  EXPECT_EQ(params["down_blocks.0.resnets.0.conv1.weight"].numel(), 0);
  EXPECT_EQ(params["up_blocks.0.upsamplers.0.conv.weight"].numel(), 0);
  EXPECT_GT(params["conv_in.weight"].numel(), 0);
  EXPECT_GT(params["conv_out.weight"].numel(), 0);
  EXPECT_GT(params["down_blocks.0.downsamplers.0.conv.weight"].numel(), 0);
  EXPECT_GT(params["up_blocks.0.resnets.0.conv_shortcut.weight"].numel(), 0);
  c10::InferenceMode guard;
  const double e = rel_err(run(*unet, ref), exact);
  use_fp8_linears(**unet);
  const double e_both = rel_err(run(*unet, ref), exact);
  std::printf("[tiny-a] FP8 convolutions vs exact: max rel err %.3g (with FP8 linears %.3g)\n", e, e_both);
  EXPECT_GT(e, 0.0);
  EXPECT_LT(e, 0.1);
  EXPECT_LT(e_both, 0.15);
}

// attention_precision: fp8 (issue 17) switches attn1 of every transformer block whose projections are FP8,
// and stays near the FP8-linears output (on the CPU the reference math stands in for cuDNN's kernel).
TEST(UNetFp8, AttentionSwitchesEverySelfAttention) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-a");
  const at::Tensor exact = run(*unet, ref);
  use_fp8_linears(**unet);
  c10::InferenceMode guard;
  const at::Tensor linears = run(*unet, ref);
  EXPECT_EQ(use_fp8_attention(**unet), 17);
  const at::Tensor both = run(*unet, ref);
  const double e = rel_err(both, linears), e_exact = rel_err(both, exact);
  std::printf("[tiny-a] FP8 attention vs FP8 linears: max rel err %.3g (vs exact %.3g)\n", e, e_exact);
  EXPECT_GT(e, 0.0);
  EXPECT_LT(e, 0.1);
  EXPECT_LT(e_exact, 0.15);
}

TEST(UNetLoad, Fp16VariantLoads) {
  const Reference ref = reference("tiny-a");
  const at::Tensor expected = ref.get("out");

  // The plain files of the fp16 folder are the fp32 weights.
  auto plain = load("tiny-a-fp16", "");
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  EXPECT_LE(rel_err(run(*plain, ref), expected), kTol);

  // variant "fp16": weights rounded to half, computed in fp32.
  auto fp16_weights = load("tiny-a-fp16", "fp16", at::kFloat);
  ASSERT_TRUE(fp16_weights.is_ok()) << fp16_weights.status().to_string();
  const double e_weights = rel_err(run(*fp16_weights, ref), expected);
  std::printf("[tiny-a-fp16] fp16 weights, fp32 compute vs fp32 diffusers: max rel err %.3g\n", e_weights);
  EXPECT_GT(e_weights, 0.0);  // really the rounded weights
  EXPECT_LE(e_weights, 1e-2);

  // variant "fp16" computed in half on the CPU.
  auto half = load("tiny-a-fp16", "fp16", at::kHalf);
  ASSERT_TRUE(half.is_ok()) << half.status().to_string();
  EXPECT_EQ((*half)->dtype(), at::kHalf);
  const double e_half = rel_err(run(*half, ref, at::kHalf), expected);
  std::printf("[tiny-a-fp16] fp16 weights, fp16 compute vs fp32 diffusers: max rel err %.3g\n", e_half);
  EXPECT_LE(e_half, 3e-2);
}

TEST(UNetLoad, ParametersNeedNoGradAndTheNamesAreDiffusers) {
  auto unet = load("tiny-a");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  auto folder = ModelFolder::open(fixture_model_dir("tiny-a"));
  ASSERT_TRUE(folder.is_ok());
  auto weights = folder->component_weights("unet", "");
  ASSERT_TRUE(weights.is_ok());
  std::vector<std::string> names;
  for (const auto& p : (*unet)->named_parameters()) {
    names.push_back(p.key());
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, weights->names());
  EXPECT_TRUE((*unet)->named_buffers().is_empty());  // constants are not checkpoint keys
}

TEST(UNetArchitecture, SdxlBaseMatchesDiffusers) {
  // SDXL base's config and the parameter shapes diffusers builds from it (ref_unet.py, meta device).
  std::ifstream f(fixtures_dir() + "/unet/sdxl-architecture.json");
  ASSERT_TRUE(f.good()) << "run tests/oracle/make_fixtures.py";
  const nlohmann::json doc = nlohmann::json::parse(f);
  auto config = UNetConfig::from_json(doc.at("config"), "sdxl-architecture.json");
  ASSERT_TRUE(config.is_ok()) << config.status().to_string();
  EXPECT_EQ(config->num_attention_heads, (std::vector<int64_t>{5, 10, 20}));  // attention_head_dim = heads
  EXPECT_EQ(config->transformer_layers_per_block, (std::vector<int64_t>{1, 2, 10}));
  EXPECT_EQ(config->time_embed_dim, 1280);

  // Parameters are uninitialised (layers.h): this reserves about 10 GB of address space but touches none.
  UNet2DConditionModel unet(*config);
  std::map<std::string, std::vector<int64_t>> shapes;
  int64_t total = 0;
  for (const auto& p : unet->named_parameters()) {
    shapes[p.key()] = p.value().sizes().vec();
    total += p.value().numel();
  }
  const auto expected = doc.at("shapes").get<std::map<std::string, std::vector<int64_t>>>();
  EXPECT_EQ(shapes.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    auto it = shapes.find(name);
    if (it == shapes.end()) {
      ADD_FAILURE() << "missing " << name;
    } else {
      EXPECT_EQ(it->second, shape) << name;
    }
  }
  EXPECT_EQ(total, doc.at("num_parameters").get<int64_t>());
  std::printf("SDXL base UNet: %zu tensors, %lld parameters\n", shapes.size(), static_cast<long long>(total));
}

// ---------------------------------------------------------------------------------------------------------
// Errors

TEST(UNetConfigErrors, UnsupportedBlockTypeIsNamed) {
  auto c =
      config_of("tiny-a", {{"down_block_types", {"DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D"}}});
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
  const std::string m = c.status().message();
  EXPECT_NE(m.find("down_block_types"), std::string::npos) << m;
  EXPECT_NE(m.find("AttnDownBlock2D"), std::string::npos) << m;
  EXPECT_NE(m.find("CrossAttnDownBlock2D"), std::string::npos) << m;  // what is supported
  EXPECT_NE(m.find("config.json"), std::string::npos) << m;

  auto up = config_of("tiny-b", {{"up_block_types", {"CrossAttnUpBlock2D", "UpDecoderBlock2D"}}});
  ASSERT_FALSE(up.is_ok());
  EXPECT_NE(up.status().message().find("UpDecoderBlock2D"), std::string::npos) << up.status().message();
}

TEST(UNetConfigErrors, UnsupportedBlockTypeThroughTheLoader) {
  ScratchDir dir;
  fs::create_directories(dir.file("unet"));
  fs::copy_file(fixture_model_dir("tiny-a") + "/model_index.json", dir.file("model_index.json"));
  auto json = read_json_file(fixture_model_dir("tiny-a") + "/unet/config.json");
  ASSERT_TRUE(json.is_ok());
  (*json)["mid_block_type"] = "UNetMidBlock2DSimpleCrossAttn";
  std::ofstream(dir.file("unet/config.json")) << json->dump(2);
  auto folder = ModelFolder::open(dir.path());
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  auto unet = load_unet(*folder, "", at::kFloat, at::kCPU);
  ASSERT_FALSE(unet.is_ok());
  EXPECT_EQ(unet.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(unet.status().message().find("mid_block_type"), std::string::npos) << unet.status().message();
  EXPECT_NE(unet.status().message().find(dir.file("unet/config.json")), std::string::npos)
      << unet.status().message();
}

TEST(UNetConfigErrors, OtherUnsupportedSettings) {
  struct Case {
    nlohmann::json patch;
    StatusCode code;
    std::string key;
  };
  const std::vector<Case> cases = {
      {{{"num_attention_heads", 4}}, StatusCode::kUnimplemented, "num_attention_heads"},
      {{{"addition_embed_type", nullptr}}, StatusCode::kUnimplemented, "addition_embed_type"},
      {{{"addition_embed_type", "text"}}, StatusCode::kUnimplemented, "addition_embed_type"},
      {{{"class_embed_type", "timestep"}}, StatusCode::kUnimplemented, "class_embed_type"},
      {{{"resnet_time_scale_shift", "scale_shift"}}, StatusCode::kUnimplemented, "resnet_time_scale_shift"},
      {{{"upcast_attention", true}}, StatusCode::kUnimplemented, "upcast_attention"},
      {{{"only_cross_attention", {false, true, false}}}, StatusCode::kUnimplemented, "only_cross_attention"},
      {{{"transformer_layers_per_block", {{1}, {1, 1}, {2, 2}}}},
       StatusCode::kUnimplemented,
       "transformer_layers_per_block"},
      {{{"act_fn", "gelu"}}, StatusCode::kUnimplemented, "act_fn"},
      {{{"block_out_channels", nullptr}}, StatusCode::kDataLoss, "block_out_channels"},
      {{{"block_out_channels", {32, 64}}}, StatusCode::kDataLoss, "block_out_channels"},
      {{{"attention_head_dim", {2, 2}}}, StatusCode::kDataLoss, "attention_head_dim"},
      {{{"norm_num_groups", 24}}, StatusCode::kDataLoss, "norm_num_groups"},
      {{{"layers_per_block", "two"}}, StatusCode::kDataLoss, "layers_per_block"},
  };
  for (const auto& c : cases) {
    auto config = config_of("tiny-a", c.patch);
    ASSERT_FALSE(config.is_ok()) << c.patch.dump();
    EXPECT_EQ(config.status().code(), c.code) << config.status().to_string();
    EXPECT_NE(config.status().message().find(c.key), std::string::npos) << config.status().to_string();
  }
  // attention_head_dim as a single integer is valid (every level gets that many heads).
  auto single = config_of("tiny-a", {{"attention_head_dim", 2}});
  ASSERT_TRUE(single.is_ok()) << single.status().to_string();
  EXPECT_EQ(single->num_attention_heads, (std::vector<int64_t>{2, 2, 2}));
}

// A 0 in transformer_layers_per_block, attention_head_dim or cross_attention_dim on a level without attention
// is ignored, as diffusers ignores it (the SDXL paper writes the depths as [0, 2, 10]); on a level with
// attention (its down block, the up block that mirrors it, or the mid block's last level) it is refused,
// naming the file, the key and the level. The [0, 1, 2] model renders like diffusers (sdxl_pipeline_test).
TEST(UNetConfigErrors, ZeroDepthOnlyWhereThereIsNoAttention) {
  auto zero =
      config_of("tiny-a", {{"transformer_layers_per_block", {0, 1, 2}}, {"attention_head_dim", {0, 2, 4}}});
  ASSERT_TRUE(zero.is_ok()) << zero.status().to_string();
  for (const auto& [patch, level] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"transformer_layers_per_block", {1, 0, 2}}}, "level 1"},
           {{{"transformer_layers_per_block", {1, 1, 0}}}, "level 2"},
           {{{"attention_head_dim", {2, 0, 4}}}, "level 1"},
           // Level 0 has no attention on the way down but does on the way up.
           {{{"transformer_layers_per_block", {0, 1, 2}},
             {"up_block_types", {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}}},
            "level 0"}}) {
    auto config = config_of("tiny-a", patch);
    ASSERT_FALSE(config.is_ok()) << patch.dump();
    EXPECT_EQ(config.status().code(), StatusCode::kDataLoss);
    const std::string m = config.status().message();
    EXPECT_NE(m.find("config.json"), std::string::npos) << m;
    EXPECT_NE(m.find(patch.begin().key()), std::string::npos) << m;
    EXPECT_NE(m.find(level + ", which has attention, got 0"), std::string::npos) << m;
  }
}

TEST(UNetLoadErrors, WrongShapeNamesTheTensorAndBothShapes) {
  auto folder = ModelFolder::open(fixtures_dir() + "/unet/bad-shape");
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  auto unet = load_unet(*folder, "", at::kFloat, at::kCPU);
  ASSERT_FALSE(unet.is_ok());
  EXPECT_EQ(unet.status().code(), StatusCode::kDataLoss);
  const std::string m = unet.status().message();
  EXPECT_NE(m.find("conv_in.weight"), std::string::npos) << m;
  EXPECT_NE(m.find("[32, 4, 3, 3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[32, 4, 1, 1]"), std::string::npos) << m;
  EXPECT_NE(m.find("unet"), std::string::npos) << m;
}

TEST(UNetLoadErrors, MissingWeightsAndMissingVariant) {
  auto folder = ModelFolder::open(fixture_model_dir("tiny-a"));
  ASSERT_TRUE(folder.is_ok());
  auto unet = load_unet(*folder, "bf16", at::kFloat, at::kCPU);
  ASSERT_FALSE(unet.is_ok());
  EXPECT_EQ(unet.status().code(), StatusCode::kNotFound) << unet.status().to_string();
  EXPECT_NE(unet.status().message().find("bf16"), std::string::npos) << unet.status().message();
}

TEST(UNetInputErrors, BadInputsGiveInvalidArgument) {
  auto unet = load("tiny-b");
  ASSERT_TRUE(unet.is_ok()) << unet.status().to_string();
  const Reference ref = reference("tiny-b");
  c10::InferenceMode guard;
  const at::Tensor sample = ref.get("sample"), t = ref.get("timestep"),
                   ehs = ref.get("encoder_hidden_states"), text = ref.get("text_embeds"),
                   ids = ref.get("time_ids");
  struct Case {
    std::string what;
    StatusOr<at::Tensor> result;
  };
  std::vector<Case> cases;
  cases.push_back({"sample", (*unet)->checked_forward(sample.narrow(1, 0, 3), t, ehs, text, ids)});
  cases.push_back({"timestep", (*unet)->checked_forward(sample, at::zeros({3}), ehs, text, ids)});
  cases.push_back(
      {"encoder_hidden_states", (*unet)->checked_forward(sample, t, ehs.narrow(2, 0, 8), text, ids)});
  cases.push_back({"time_ids", (*unet)->checked_forward(sample, t, ehs, text, ids.narrow(1, 0, 5))});
  cases.push_back({"dtype", (*unet)->checked_forward(sample.to(at::kDouble), t, ehs, text, ids)});
  cases.push_back({"missing", (*unet)->checked_forward(sample, t, at::Tensor(), text, ids)});
  for (const auto& c : cases) {
    ASSERT_FALSE(c.result.is_ok()) << c.what;
    EXPECT_EQ(c.result.status().code(), StatusCode::kInvalidArgument) << c.result.status().to_string();
    std::printf("  %s: %s\n", c.what.c_str(), c.result.status().message().c_str());
  }
}

}  // namespace
}  // namespace sdxlb
