#include "pipeline/io/model_folder.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>

#include "common/json_depth.h"
#include "pipeline/io/weights.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using testing::fixture_model_dir;
using testing::ScratchDir;

TEST(ModelFolder, ReadsIndexAndConfigs) {
  auto f = ModelFolder::open(fixture_model_dir("tiny-a"));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->pipeline_class(), "StableDiffusionXLPipeline");
  for (const char* c :
       {"unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"})
    EXPECT_TRUE(f->has_component(c)) << c;
  EXPECT_FALSE(f->has_component("image_encoder"));  // null in SDXL's model_index.json
  auto cfg = f->component_config("unet");
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  EXPECT_EQ((*cfg)["block_out_channels"].size(), 3u);
}

TEST(ModelFolder, PlainFp16AndShardedWeightsAgree) {
  auto plain = ModelFolder::open(fixture_model_dir("tiny-a-fp16"));
  ASSERT_TRUE(plain.is_ok());
  auto w32 = plain->component_weights("unet", "");
  auto w16 = plain->component_weights("unet", "fp16");
  ASSERT_TRUE(w32.is_ok()) << w32.status().to_string();
  ASSERT_TRUE(w16.is_ok()) << w16.status().to_string();
  EXPECT_EQ(w32->names(), w16->names());
  const std::string key = "conv_in.weight";
  EXPECT_EQ(w16->find(key)->dtype, "F16");
  EXPECT_EQ(w32->find(key)->dtype, "F32");
  EXPECT_TRUE(at::allclose(w16->get(key)->to(at::kFloat), *w32->get(key), 1e-3, 1e-3));

  auto sharded = ModelFolder::open(fixture_model_dir("tiny-a-sharded"));
  ASSERT_TRUE(sharded.is_ok());
  auto ws = sharded->component_weights("unet", "");
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  EXPECT_GT(ws->files().size(), 1u);
  EXPECT_EQ(ws->names(), w32->names());
  for (const auto& name : ws->names()) EXPECT_TRUE(at::equal(*ws->get(name), *w32->get(name))) << name;
  // Text encoders are transformers models: model.safetensors.
  auto te = plain->component_weights("text_encoder", "fp16");
  ASSERT_TRUE(te.is_ok()) << te.status().to_string();
  EXPECT_NE(te->describe().find("model.fp16.safetensors"), std::string::npos);
}

TEST(ModelFolder, MissingVariantSaysWhatExists) {
  auto f = ModelFolder::open(fixture_model_dir("tiny-a"));
  auto w = f->component_weights("unet", "fp16");
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_NE(w.status().message().find("without the \"fp16\" variant"), std::string::npos)
      << w.status().message();
}

TEST(ModelFolder, MissingShardIsNamed) {
  ScratchDir dir;
  ASSERT_EQ(
      std::system(("cp -r '" + fixture_model_dir("tiny-a-sharded") + "/unet' '" + dir.path() + "/'").c_str()),
      0);
  const std::string shard = dir.path() + "/unet/diffusion_pytorch_model-00002-of-*.safetensors";
  ASSERT_EQ(std::system(("rm " + shard).c_str()), 0);
  auto w = WeightSet::open(dir.path() + "/unet", "diffusion_pytorch_model", "");
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(w.status().message().find("00002-of-"), std::string::npos) << w.status().message();
  EXPECT_NE(w.status().message().find("is missing"), std::string::npos);
}

TEST(ModelFolder, MissingComponentAndNotAFolder) {
  ScratchDir dir;
  auto none = ModelFolder::open(dir.path() + "/nope");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  auto no_index = ModelFolder::open(dir.path());
  EXPECT_EQ(no_index.status().code(), StatusCode::kNotFound);
  EXPECT_NE(no_index.status().message().find("model_index.json"), std::string::npos);

  ASSERT_EQ(std::system(
                ("cp '" + fixture_model_dir("tiny-a") + "/model_index.json' '" + dir.path() + "/'").c_str()),
            0);
  auto f = ModelFolder::open(dir.path());
  ASSERT_TRUE(f.is_ok());
  auto w = f->component_weights("vae", "");
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_NE(w.status().message().find("no vae/ component"), std::string::npos) << w.status().message();
}

TEST(ModelFolder, BadJsonNamesLineAndColumn) {
  ScratchDir dir;
  testing::write_bytes(dir.file("model_index.json"),
                       "{\n  \"_class_name\": \"StableDiffusionXLPipeline\",\n  oops\n}");
  auto f = ModelFolder::open(dir.path());
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("line 3"), std::string::npos) << f.status().message();
}

// Found by bench/hostile_corpus.py: a config.json nested 200,000 levels deep overflowed the stack (exit 139)
// when the model identity dumped it. Deep JSON is refused before parsing.
TEST(ModelFolder, DeeplyNestedJsonIsRefusedNotACrash) {
  ScratchDir dir;
  testing::write_bytes(dir.file("model_index.json"),
                       "{\"x\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
  auto f = ModelFolder::open(dir.path());
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("JSON nested 200001 levels deep (the limit is 64)"), std::string::npos)
      << f.status().message();
  EXPECT_EQ(json_nesting_depth(R"({"a": [1, {"b": "[[[{{"}], "c": "\\\"["})"), 3u);
}

// A module that expects a conv_in of the wrong shape and lacks everything else in the file.
struct WrongUNet : torch::nn::Module {
  WrongUNet() {
    conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 16, 3)));
    extra = register_parameter("not_in_the_file", at::zeros({3}));
  }
  torch::nn::Conv2d conv_in{nullptr};
  at::Tensor extra;
};

TEST(Weights, ReportsEveryProblemAndLoadsNothing) {
  auto f = ModelFolder::open(fixture_model_dir("tiny-a"));
  auto w = f->component_weights("unet", "");
  ASSERT_TRUE(w.is_ok());
  WrongUNet m;
  at::Tensor before = m.conv_in->weight.clone();
  LoadReport report;
  Status s = load_module_weights(m, *w, "unet weights", LoadOptions{}, &report);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(report.missing, std::vector<std::string>{"not_in_the_file"});
  EXPECT_EQ(report.unexpected.size(), w->names().size() - 2);  // all but conv_in.weight/bias
  ASSERT_EQ(report.mismatched.size(), 2u);
  EXPECT_EQ(report.mismatched[1].name, "conv_in.weight");
  EXPECT_NE(s.message().find("conv_in.weight: model expects [16, 4, 3, 3], file has [32, 4, 3, 3]"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(at::equal(before, m.conv_in->weight));
}

struct RightConvIn : torch::nn::Module {
  RightConvIn() {
    conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 32, 3)));
  }
  torch::nn::Conv2d conv_in{nullptr};
};

TEST(Weights, LoadsWithConversion) {
  auto f = ModelFolder::open(fixture_model_dir("tiny-a-fp16"));
  auto w = f->component_weights("unet", "fp16");
  ASSERT_TRUE(w.is_ok());
  RightConvIn m;
  LoadOptions opts;
  opts.dtype = at::kFloat;
  std::vector<std::string> others;
  for (const auto& n : w->names())
    if (n.rfind("conv_in.", 0) != 0) others.push_back(n);
  opts.optional_keys = others;
  ASSERT_TRUE(load_module_weights(m, *w, "unet", opts).is_ok());
  EXPECT_EQ(m.conv_in->weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(m.conv_in->weight, w->get("conv_in.weight")->to(at::kFloat)));
}

}  // namespace
}  // namespace sdxlb
