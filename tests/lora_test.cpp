// LoRA (issue 15) end to end against diffusers (fixtures from tests/oracle/ref_lora.py): tiny-a with random
// LoRAs in the kohya (sgm names, alphas, 1x1 and 3x3 convs) and diffusers/PEFT (adapter metadata with alpha
// patterns) formats, fused at scales 0.5 and 1, two at once, one without alphas; diffusers' load_lora_weights
// + fuse_lora renders the references. uint8 images may differ by at most 1 at no more than 0.5% of the
// values, and every case's reference differs from the render without LoRA (so a LoRA that did nothing fails).
// Also: the text encoders' identity (the embedding cache's key) changes with a text-encoder LoRA and only
// then, and each kind of bad LoRA is refused with an error that names it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/io/lora.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/io/safetensors_writer.h"
#include "pipeline/sdxl_pipeline.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using nlohmann::json;
using testing::fixtures_dir;

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "missing [" << (part) << "] in:\n" << (msg)

json find_case(const std::string& name) {
  static const json all = [] {
    auto j = read_json_file(fixtures_dir() + "/lora/cases.json");
    EXPECT_TRUE(j.is_ok()) << j.status().to_string();
    return j.is_ok() ? *j : json::array();
  }();
  for (const auto& c : all)
    if (c.at("name") == name) return c;
  ADD_FAILURE() << "no fixture case " << name;
  return json::object();
}

std::string lora_file(const std::string& name) {
  return fixtures_dir() + "/lora/" + name;
}

std::vector<LoraEntry> loras_of(const json& c) {
  std::vector<LoraEntry> out;
  for (const auto& l : c.at("loras"))
    out.push_back({lora_file(l.at("file")), l.at("scale").get<double>(), ""});
  return out;
}

StatusOr<std::unique_ptr<SdxlPipeline>> load(const std::vector<LoraEntry>& loras, bool probe = false) {
  PipelineOptions opts;
  opts.loras = loras;
  if (probe) opts.load_text_encoders = opts.load_denoiser = false;
  return SdxlPipeline::load(testing::fixture_model_dir("tiny-a"), opts);
}

class LoraParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraParity, MatchesDiffusersFuseLora) {
  const json c = find_case(GetParam());
  ASSERT_FALSE(c.empty());
  auto pipe = load(loras_of(c));
  ASSERT_TRUE(pipe.is_ok()) << pipe.status().to_string();
  auto ws = WeightSet::open_file(lora_file("case_" + GetParam() + ".safetensors"));
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  const at::Tensor expected = ws->get("images")->clone();
  RenderSettings rs;
  rs.steps = c.at("steps");
  rs.guidance = c.at("guidance");
  rs.height = c.at("height");
  rs.width = c.at("width");
  auto images = (*pipe)->generate(c.at("prompts"), c.at("negatives"), c.at("seeds"), rs);
  ASSERT_TRUE(images.is_ok()) << images.status().to_string();
  ASSERT_EQ(images->sizes(), expected.sizes());
  const at::Tensor diff = (images->to(at::kShort) - expected.to(at::kShort)).abs();
  const int64_t max_diff = diff.max().item<int64_t>();
  const double differing = diff.gt(0).to(at::kDouble).mean().item<double>();
  const double changed = c.at("differs_from_base").get<double>();
  std::printf(
      "[ parity ] %s: max |diff| %lld, %.3f%% of values differ; the LoRA changes %.1f%% of the values\n",
      GetParam().c_str(), static_cast<long long>(max_diff), 100 * differing, 100 * changed);
  EXPECT_LE(max_diff, 1);
  EXPECT_LE(differing, 0.005);
  EXPECT_GT(changed, 0.05);
  if (c.at("embeds").get<bool>()) {
    // The text encoders' part alone: encode_prompt's embeddings with the LoRA fused.
    auto e = (*pipe)->encode(c.at("prompts"));
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    const at::Tensor pe = ws->get("prompt_embeds")->clone(), pooled = ws->get("pooled")->clone();
    EXPECT_TRUE(at::allclose(e->prompt_embeds, pe, 1e-4, 1e-5))
        << (e->prompt_embeds - pe).abs().max().item<float>();
    EXPECT_TRUE(at::allclose(e->pooled, pooled, 1e-4, 1e-5))
        << (e->pooled - pooled).abs().max().item<float>();
  }
}

INSTANTIATE_TEST_SUITE_P(References, LoraParity,
                         ::testing::Values("kohya_s1", "kohya_s05", "peft_s1", "peft_s05", "kohya_no_alpha",
                                           "two_loras", "peft_unet_only"));

// The embedding cache is keyed by text_encoder_id(): a LoRA that changes a text encoder changes it (and its
// scale does), so embeddings cached without it are never reused; a UNet-only LoRA keeps it (the cache stays
// valid) but changes model_id. Rank 0's probe, which loads no weights, computes the same identities.
TEST(LoraIdentity, TextEncoderIdentityChangesWithATextEncoderLora) {
  auto base = load({});
  ASSERT_TRUE(base.is_ok()) << base.status().to_string();
  auto te = load({{lora_file("kohya.safetensors"), 1.0, ""}});
  ASSERT_TRUE(te.is_ok()) << te.status().to_string();
  auto te_half = load({{lora_file("kohya.safetensors"), 0.5, ""}});
  ASSERT_TRUE(te_half.is_ok()) << te_half.status().to_string();
  auto unet_only = load({{lora_file("peft_unet.safetensors"), 1.0, ""}});
  ASSERT_TRUE(unet_only.is_ok()) << unet_only.status().to_string();
  EXPECT_NE((*te)->text_encoder_id(), (*base)->text_encoder_id());
  EXPECT_NE((*te)->text_encoder_id(), (*te_half)->text_encoder_id());
  EXPECT_NE((*te)->model_id(), (*base)->model_id());
  EXPECT_NE((*te)->model_id(), (*te_half)->model_id());
  EXPECT_EQ((*unet_only)->text_encoder_id(), (*base)->text_encoder_id());
  EXPECT_NE((*unet_only)->model_id(), (*base)->model_id());
  auto probe = load({{lora_file("kohya.safetensors"), 1.0, ""}}, /*probe=*/true);
  ASSERT_TRUE(probe.is_ok()) << probe.status().to_string();
  EXPECT_EQ((*probe)->text_encoder_id(), (*te)->text_encoder_id());
  EXPECT_EQ((*probe)->model_id(), (*te)->model_id());
  // And the embeddings themselves differ.
  auto a = (*base)->encode({"a red fox"});
  auto b = (*te)->encode({"a red fox"});
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_GT((a->prompt_embeds - b->prompt_embeds).abs().max().item<float>(), 1e-3);
}

// ---- bad input

class LoraErrors : public ::testing::Test {
 protected:
  // Writes a LoRA file and returns the error of loading tiny-a with it.
  std::string error_of(const std::map<std::string, at::Tensor>& tensors, double scale = 1.0,
                       const std::map<std::string, std::string>& metadata = {}) {
    const std::string path = dir_.file("lora.safetensors");
    EXPECT_TRUE(write_safetensors(path, tensors, metadata).is_ok());
    auto pipe = load({{path, scale, "job.yaml:7:5"}}, /*probe=*/true);
    EXPECT_FALSE(pipe.is_ok());
    if (pipe.is_ok()) return "";
    EXPECT_HAS(pipe.status().message(), "job.yaml:7:5: LoRA " + path);
    return pipe.status().message();
  }
  static at::Tensor r(std::vector<int64_t> shape) { return at::randn(shape); }
  testing::ScratchDir dir_;
};

// tiny-a's down_blocks.1.attentions.0.proj_in is Linear(64, 64); SD 1.5's is a 1x1 conv of 320 channels
// with cross-attention from 768.
TEST_F(LoraErrors, LoraForAnotherArchitecture) {
  std::string m =
      error_of({{"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight", r({4, 320, 1, 1})},
                {"lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight", r({320, 4, 1, 1})},
                {"lora_unet_down_blocks_1_attentions_0_proj_in.alpha", at::scalar_tensor(4.0)}});
  EXPECT_HAS(m, "does not fit this model: 1 modules have other shapes");
  EXPECT_HAS(m, "unet.down_blocks.1.attentions.0.proj_in: weight [64, 64], LoRA down [4, 320, 1, 1]");
  EXPECT_HAS(m, "another architecture (e.g. SD 1.5");
  // SD 1.5 has attention in its first down block; SDXL does not.
  m = error_of(
      {{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", r({4, 768})},
       {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight", r({320, 4})},
       {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha",
        at::scalar_tensor(1.0)}});
  EXPECT_HAS(m, "matches nothing in this model (1 of 1)");
  EXPECT_HAS(m, "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k");
}

TEST_F(LoraErrors, LoraMatchingNothingOrOnlyPartOfTheModel) {
  std::string m = error_of({{"unet.no_such_block.to_q.lora_A.weight", r({2, 64})},
                            {"unet.no_such_block.to_q.lora_B.weight", r({64, 2})}});
  EXPECT_HAS(m, "matches nothing in this model (1 of 1):\n    unet.no_such_block.to_q");
  m = error_of({{"unet.mid_block.attentions.0.proj_out.lora_A.weight", r({2, 64})},
                {"unet.mid_block.attentions.0.proj_out.lora_B.weight", r({64, 2})},
                {"unet.mid_block.attentions.0.proj_outt.lora_A.weight", r({2, 64})},
                {"unet.mid_block.attentions.0.proj_outt.lora_B.weight", r({64, 2})}});
  EXPECT_HAS(
      m, "has modules that match nothing in this model (1 of 2):\n    unet.mid_block.attentions.0.proj_outt");
  // Keys of no LoRA form at all.
  m = error_of({{"model.diffusion_model.weight", r({2, 2})}});
  EXPECT_HAS(m, "holds no LoRA weights this port reads");
  // DoRA magnitudes are not plain LoRA.
  m = error_of({{"lora_unet_mid_block_attentions_0_proj_out.lora_down.weight", r({2, 64})},
                {"lora_unet_mid_block_attentions_0_proj_out.lora_up.weight", r({64, 2})},
                {"lora_unet_mid_block_attentions_0_proj_out.dora_scale", r({1, 64})}});
  EXPECT_HAS(m, "keys of no LoRA form this port fuses");
  EXPECT_HAS(m, "lora_unet_mid_block_attentions_0_proj_out.dora_scale [1, 64]");
}

// All alphas missing: alpha = rank (kohya and diffusers agree; the kohya_no_alpha parity case). Some missing:
// kohya and diffusers disagree, so it is refused, listing the modules without one.
TEST_F(LoraErrors, LoraWithSomeAlphasMissing) {
  std::string m = error_of({{"lora_unet_middle_block_1_proj_out.lora_down.weight", r({2, 64})},
                            {"lora_unet_middle_block_1_proj_out.lora_up.weight", r({64, 2})},
                            {"lora_unet_middle_block_1_proj_out.alpha", at::scalar_tensor(1.0)},
                            {"lora_unet_middle_block_1_proj_in.lora_down.weight", r({2, 64})},
                            {"lora_unet_middle_block_1_proj_in.lora_up.weight", r({64, 2})}});
  EXPECT_HAS(m, "has alphas for 1 modules but none for 1:\n    middle_block_1_proj_in");
  EXPECT_HAS(m, "add the missing .alpha keys");
  m = error_of({{"lora_unet_middle_block_1_proj_out.lora_down.weight", r({2, 64})}});
  EXPECT_HAS(m, "modules without their pair of weights:\n    middle_block_1_proj_out (no up weight)");
}

TEST_F(LoraErrors, NonFiniteScaleOrMissingFile) {
  std::string m = error_of({{"unet.mid_block.attentions.0.proj_out.lora_A.weight", r({2, 64})},
                            {"unet.mid_block.attentions.0.proj_out.lora_B.weight", r({64, 2})}},
                           std::numeric_limits<double>::quiet_NaN());
  EXPECT_HAS(m, "is not a finite number");
  const std::string missing = dir_.file("missing.safetensors");
  auto pipe = load({{missing, 1.0, "job.yaml:7:5"}}, /*probe=*/true);
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_EQ(pipe.status().code(), StatusCode::kNotFound);
  EXPECT_HAS(pipe.status().message(), "job.yaml:7:5: LoRA " + missing);
}

}  // namespace
}  // namespace sdxlb
