// Single-file SDXL checkpoints (pipeline/io/single_file.h, model_source.h), against files written by
// tests/oracle/ref_single_file.py from the diffusers fixtures with the conversion facts applied in Python
// (and checked there by diffusers' own from_single_file and converters):
//   - the full SDXL base architecture: every original-layout name converts to diffusers' name and shape;
//   - the tiny pipelines: a single file renders the folder's images bit for bit (and so diffusers' within 1);
//   - a VAE file in either naming replaces the model's VAE;
//   - truncated files, other architectures and a VAE of another architecture are clear errors.
#include "pipeline/io/single_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/io/model_source.h"
#include "pipeline/io/safetensors_writer.h"
#include "pipeline/sdxl_pipeline.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using testing::fixture_model_dir;
using testing::fixtures_dir;
using testing::ScratchDir;

std::string single_file(const std::string& name) {
  return fixtures_dir() + "/single_file/" + name;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Writes the full SDXL base header with a sparse data area (nothing is stored: ~7 GB of holes), so the reader
// validates and maps a file of the real size in milliseconds.
std::string write_sparse_full(const ScratchDir& dir, const nlohmann::json& fixture) {
  std::string header = fixture["header"].dump();
  while (header.size() % 8) header += ' ';
  const std::string path = dir.file("sd_xl_base_random.safetensors");
  testing::write_bytes(path, testing::safetensors_bytes(header, ""));
  const uint64_t total = 8 + header.size() + fixture["data_bytes"].get<uint64_t>();
  EXPECT_EQ(::truncate(path.c_str(), static_cast<off_t>(total)), 0);
  return path;
}

TEST(SingleFile, FullSdxlBaseConvertsEveryName) {
  auto fixture = read_json_file(single_file("full-header.json"));
  ASSERT_TRUE(fixture.is_ok()) << fixture.status().to_string();
  ScratchDir dir;
  const std::string path = write_sparse_full(dir, *fixture);
  auto ckpt = SingleFileCheckpoint::open(path);
  ASSERT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
  std::string why;
  EXPECT_TRUE(ckpt->matches_sdxl_base(&why)) << why;

  // Without a config folder the built-in configs apply; they are diffusers' SDXL base configs.
  auto source = ModelSource::open(path);
  ASSERT_TRUE(source.is_ok()) << source.status().to_string();
  EXPECT_TRUE(source->builtin_configs());
  size_t total = 0;
  for (const char* c : SingleFileCheckpoint::kComponents) {
    SCOPED_TRACE(c);
    auto ours = source->config(c);
    ASSERT_TRUE(ours.is_ok());
    for (const auto& [key, value] : (*fixture)["configs"][c].items()) {
      if (!ours->contains(key)) {
        ADD_FAILURE() << "the built-in " << c << " config lacks " << key;
        continue;
      }
      EXPECT_EQ((*ours)[key], value) << key;
    }
    auto ws = source->weights(c, "");
    ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
    const auto& expected = (*fixture)["expected"][c];
    std::vector<std::string> want;
    for (const auto& [name, shape] : expected.items()) want.push_back(name);
    std::sort(want.begin(), want.end());
    // Every name converts, none is left over.
    const std::vector<std::string> got = ws->names();
    std::vector<std::string> missing, extra;
    std::set_difference(want.begin(), want.end(), got.begin(), got.end(), std::back_inserter(missing));
    std::set_difference(got.begin(), got.end(), want.begin(), want.end(), std::back_inserter(extra));
    EXPECT_TRUE(missing.empty()) << missing.size() << " missing, first " << missing.front();
    EXPECT_TRUE(extra.empty()) << extra.size() << " unexpected, first " << extra.front();
    for (const auto& [name, shape] : expected.items()) {
      const TensorInfo* t = ws->find(name);
      if (!t) continue;
      EXPECT_EQ(t->shape, shape.get<std::vector<int64_t>>()) << name;
    }
    total += want.size();
  }
  EXPECT_GT(total, 2500u);  // UNet 1680, VAE 248, CLIP-L 196, bigG 517 (with q/k/v split)
  // No tokenizers in a single file without a config folder: a clear error naming the key.
  auto tok = source->tokenizer_dir("tokenizer");
  ASSERT_FALSE(tok.is_ok());
  EXPECT_TRUE(contains(tok.status().message(), "model_config")) << tok.status().message();
}

TEST(SingleFile, ViewsAreTheStoredBytes) {
  // OpenCLIP's fused in_proj rows and transposed projection are views of the file, not copies.
  auto ckpt = SingleFileCheckpoint::open(single_file("tiny-a.safetensors"));
  ASSERT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
  auto te2 = ckpt->component("text_encoder_2", {});
  ASSERT_TRUE(te2.is_ok()) << te2.status().to_string();
  const auto& file = *ckpt->file();
  auto stored = [&](const std::string& name) { return *file.tensor(*file.find(name)); };
  at::Tensor in_proj = stored("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight");
  at::Tensor k = *te2->get("text_model.encoder.layers.0.self_attn.k_proj.weight");
  EXPECT_TRUE(at::equal(k, in_proj.narrow(0, 32, 32)));
  EXPECT_EQ(k.data_ptr(), in_proj.narrow(0, 32, 32).data_ptr());
  at::Tensor proj = *te2->get("text_projection.weight");
  at::Tensor stored_proj = stored("conditioner.embedders.1.model.text_projection");
  EXPECT_TRUE(at::equal(proj, stored_proj.t()));
  EXPECT_EQ(proj.data_ptr(), stored_proj.data_ptr());
}

struct RenderCase {
  const char* model;
  const char* reference;  // tests/oracle/ref_pipeline.py's case with the same settings
};

class SingleFileRender : public ::testing::TestWithParam<RenderCase> {};

TEST_P(SingleFileRender, MatchesTheFolderBitForBitAndDiffusersWithinOne) {
  const RenderCase c = GetParam();
  const std::string base = fixtures_dir() + "/pipeline/" + c.reference;
  auto spec = read_json_file(base + ".json");
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  auto ref = WeightSet::open_file(base + ".safetensors");
  ASSERT_TRUE(ref.is_ok());
  const at::Tensor expected = *ref->get("images");
  ASSERT_EQ((*spec)["model"], std::string("tiny-") + c.model);
  RenderSettings rs;
  rs.steps = (*spec)["steps"];
  rs.guidance = (*spec)["guidance"];
  rs.height = (*spec)["height"];
  rs.width = (*spec)["width"];

  PipelineOptions folder_opts;
  auto folder = SdxlPipeline::load(fixture_model_dir(std::string("tiny-") + c.model), folder_opts);
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  PipelineOptions file_opts;
  file_opts.model_config = fixture_model_dir(std::string("tiny-") + c.model);
  auto file = SdxlPipeline::load(single_file(std::string("tiny-") + c.model + ".safetensors"), file_opts);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();

  auto a = (*folder)->generate((*spec)["prompts"], (*spec)["negatives"], (*spec)["seeds"], rs);
  auto b = (*file)->generate((*spec)["prompts"], (*spec)["negatives"], (*spec)["seeds"], rs);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_TRUE(at::equal(*a, *b));
  ASSERT_EQ(b->sizes(), expected.sizes());
  EXPECT_LE((b->to(at::kShort) - expected.to(at::kShort)).abs().max().item<int64_t>(), 1);
  EXPECT_GT(expected.to(at::kFloat).std().item<float>(), 1.0f);
}

INSTANTIATE_TEST_SUITE_P(Tiny, SingleFileRender,
                         ::testing::Values(RenderCase{"a", "a_negative"},
                                           RenderCase{"b", "b_negative_no_cfg"}),
                         [](const auto& info) { return std::string(info.param.model); });

TEST(SingleFile, IdentityIsPerComponent) {
  // Another UNet in the same file: another model, but the same text encoders (the embedding cache stays
  // valid).
  ScratchDir dir;
  const std::string copy = dir.file("edited.safetensors");
  ASSERT_EQ(std::system(("cp '" + single_file("tiny-a.safetensors") + "' '" + copy + "'").c_str()), 0);
  {
    auto f = SafetensorsFile::open(copy);
    ASSERT_TRUE(f.is_ok());
    const TensorInfo* t = (*f)->find("model.diffusion_model.out.2.bias");
    ASSERT_NE(t, nullptr);
    const uint64_t offset = 8 + (*f)->header_json().size() + t->begin;
    const int fd = ::open(copy.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const char junk[4] = {1, 2, 3, 4};
    ASSERT_EQ(::pwrite(fd, junk, 4, static_cast<off_t>(offset)), 4);
    ::close(fd);
  }
  PipelineOptions opts;
  opts.model_config = fixture_model_dir("tiny-a");
  opts.load_text_encoders = false;
  opts.load_denoiser = false;
  auto original = SdxlPipeline::load(single_file("tiny-a.safetensors"), opts);
  auto edited = SdxlPipeline::load(copy, opts);
  auto again = SdxlPipeline::load(single_file("tiny-a.safetensors"), opts);
  ASSERT_TRUE(original.is_ok()) << original.status().to_string();
  ASSERT_TRUE(edited.is_ok()) << edited.status().to_string();
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ((*original)->model_id(), (*again)->model_id());
  EXPECT_NE((*original)->model_id(), (*edited)->model_id());
  EXPECT_EQ((*original)->text_encoder_id(), (*edited)->text_encoder_id());
  auto other = SdxlPipeline::load(single_file("tiny-b.safetensors"), [] {
    PipelineOptions o;
    o.model_config = fixture_model_dir("tiny-b");
    o.load_text_encoders = false;
    o.load_denoiser = false;
    return o;
  }());
  ASSERT_TRUE(other.is_ok()) << other.status().to_string();
  EXPECT_NE((*original)->text_encoder_id(), (*other)->text_encoder_id());
}

TEST(SingleFile, VaeFileReplacesTheModelsVae) {
  PipelineOptions plain;
  auto folder = SdxlPipeline::load(fixture_model_dir("tiny-a"), plain);
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  RenderSettings rs;
  rs.steps = 2;
  rs.width = 32;
  rs.height = 32;
  auto want = (*folder)->generate({"a red fox"}, {""}, {5}, rs);
  ASSERT_TRUE(want.is_ok()) << want.status().to_string();
  for (const std::string& vae : {single_file("tiny-a-vae-ldm.safetensors"),
                                 fixture_model_dir("tiny-a") + "/vae/diffusion_pytorch_model.safetensors"}) {
    SCOPED_TRACE(vae);
    PipelineOptions o;
    o.vae = vae;
    auto p = SdxlPipeline::load(fixture_model_dir("tiny-a"), o);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    auto got = (*p)->generate({"a red fox"}, {""}, {5}, rs);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_TRUE(at::equal(*got, *want));
    EXPECT_NE((*p)->model_id(), (*folder)->model_id());  // the VAE's source is part of the identity
    EXPECT_EQ((*p)->text_encoder_id(), (*folder)->text_encoder_id());
  }
  // tiny-b's VAE has other widths: every mismatch is listed at once.
  PipelineOptions o;
  o.vae = fixture_model_dir("tiny-b") + "/vae/diffusion_pytorch_model.safetensors";
  auto p = SdxlPipeline::load(fixture_model_dir("tiny-a"), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_TRUE(contains(p.status().message(), "shape mismatches")) << p.status().message();
  EXPECT_TRUE(contains(p.status().message(), "unexpected in the file")) << p.status().message();
}

TEST(SingleFile, TruncatedFileIsDataLoss) {
  ScratchDir dir;
  const std::string copy = dir.file("truncated.safetensors");
  ASSERT_EQ(std::system(("cp '" + single_file("tiny-a.safetensors") + "' '" + copy + "'").c_str()), 0);
  struct stat st {};
  ASSERT_EQ(::stat(copy.c_str(), &st), 0);
  ASSERT_EQ(::truncate(copy.c_str(), st.st_size / 2), 0);
  PipelineOptions o;
  o.model_config = fixture_model_dir("tiny-a");
  auto p = SdxlPipeline::load(copy, o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(contains(p.status().message(), copy)) << p.status().message();
}

TEST(SingleFile, OtherArchitecturesAreNamed) {
  ScratchDir dir;
  auto write = [&](const std::string& name, const std::map<std::string, at::Tensor>& tensors) {
    const std::string path = dir.file(name);
    EXPECT_TRUE(write_safetensors(path, tensors).is_ok());
    return path;
  };
  const at::Tensor z = at::zeros({2, 2});
  const std::string sd15 = write("v1-5-pruned.safetensors",
                                 {{"model.diffusion_model.input_blocks.0.0.weight", z},
                                  {"model.diffusion_model.output_blocks.11.0.skip_connection.weight", z},
                                  {"cond_stage_model.transformer.text_model.final_layer_norm.weight", z},
                                  {"first_stage_model.decoder.conv_in.weight", z}});
  const std::string unknown = write("flux.safetensors", {{"double_blocks.0.img_attn.qkv.weight", z}});
  const std::string refiner = write(
      "refiner.safetensors", {{"model.diffusion_model.input_blocks.0.0.weight", z},
                              {"conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight", z}});
  const std::string vae_only = write("vae.safetensors", {{"decoder.conv_in.weight", z}});
  const std::pair<std::string, std::string> cases[] = {
      {sd15, "Stable Diffusion 1.x"},
      {unknown, "unknown layout"},
      {refiner, "SDXL refiner"},
      {vae_only, "vae:"},
  };
  for (const auto& [path, what] : cases) {
    auto p = SdxlPipeline::load(path, PipelineOptions{});
    ASSERT_FALSE(p.is_ok()) << path;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(contains(p.status().message(), what)) << p.status().message();
    EXPECT_TRUE(contains(p.status().message(), path)) << p.status().message();
  }
}

TEST(SingleFile, VaeOfAnotherArchitectureIsNamed) {
  ScratchDir dir;
  const std::string path = dir.file("flux-ae.safetensors");
  ASSERT_TRUE(write_safetensors(path, {{"decoder.conv_in.weight", at::zeros({8, 16, 3, 3})},
                                       {"decoder.up.0.block.0.conv1.weight", at::zeros({8, 8, 3, 3})}})
                  .is_ok());
  PipelineOptions o;
  o.vae = path;
  auto p = SdxlPipeline::load(fixture_model_dir("tiny-a"), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(p.status().message(), "16-channel latents")) << p.status().message();
  const std::string unet = fixture_model_dir("tiny-a") + "/unet/diffusion_pytorch_model.safetensors";
  o.vae = unet;
  p = SdxlPipeline::load(fixture_model_dir("tiny-a"), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_TRUE(contains(p.status().message(), "not an AutoencoderKL VAE")) << p.status().message();
}

TEST(SingleFile, WrongConfigFolderListsEveryMismatch) {
  // tiny-a's file with tiny-b's configs: one error listing the missing, unexpected and mis-shaped tensors.
  PipelineOptions o;
  o.model_config = fixture_model_dir("tiny-b");
  o.load_text_encoders = false;
  auto p = SdxlPipeline::load(single_file("tiny-a.safetensors"), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kDataLoss);
  const std::string m = p.status().message();  // a copy: status() returns a temporary
  EXPECT_TRUE(contains(m, "shape mismatches")) << m;
  EXPECT_TRUE(contains(m, "unexpected in the file")) << m;
  EXPECT_TRUE(contains(m, "tiny-a.safetensors (unet: model.diffusion_model.*)")) << m;
  // And a folder model refuses model_config.
  o.model_config = fixture_model_dir("tiny-a");
  p = SdxlPipeline::load(fixture_model_dir("tiny-a"), o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_TRUE(contains(p.status().message(), "remove model_config")) << p.status().message();
}

}  // namespace
}  // namespace sdxlb
