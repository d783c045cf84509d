// ClipTextModel against transformers: both SDXL text encoders of the tiny fixture pipelines, fp32 on CPU,
// compared with tests/oracle/ref_text_encoders.py's outputs; plus config and weight-file error paths.
#include "pipeline/text/clip_text_model.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/io/config_reader.h"
#include "pipeline/io/model_folder.h"
#include "test_files.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using sdxlb::testing::fixtures_dir;
using sdxlb::testing::ScratchDir;

constexpr double kTol = 1e-5;
constexpr const char* kEncoders[] = {"text_encoder", "text_encoder_2"};
constexpr const char* kInputs[] = {"prompts", "crafted"};
constexpr const char* kOutputs[] = {"penultimate", "last", "pooled"};

std::string models_dir() {
  return fixtures_dir() + "/models";
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor a = got.to(at::kCPU, at::kDouble);
  const at::Tensor b = want.to(at::kDouble);
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

const at::Tensor& pick(const ClipTextOutput& out, const std::string& name) {
  return name == "penultimate" ? out.penultimate : name == "last" ? out.last_hidden_state : out.pooled;
}

WeightSet open_reference(const std::string& name) {
  auto ref = WeightSet::open_file(fixtures_dir() + "/text_encoders/" + name + ".safetensors");
  EXPECT_TRUE(ref.is_ok()) << ref.status().to_string();
  return ref.is_ok() ? *ref : WeightSet();
}

at::Tensor ref_tensor(const WeightSet& ref, const std::string& key) {
  auto t = ref.get(key);
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return t.is_ok() ? *t : at::Tensor();
}

ClipTextModel load_or_die(const std::string& root, const std::string& component, const std::string& variant) {
  auto folder = ModelFolder::open(root);
  EXPECT_TRUE(folder.is_ok()) << folder.status().to_string();
  if (!folder.is_ok()) return nullptr;
  auto model = load_clip_text_model(*folder, component, variant, at::kFloat, at::kCPU);
  EXPECT_TRUE(model.is_ok()) << model.status().to_string();
  return model.is_ok() ? *model : nullptr;
}

// Runs `component` on every reference input and returns the worst relative error per output.
std::map<std::string, double> compare(ClipTextModel& model, const WeightSet& ref,
                                      const std::string& component, const std::string& label) {
  std::map<std::string, double> worst;
  for (const char* input : kInputs) {
    const std::string prefix = component + "." + input + ".";
    const at::Tensor ids = ref_tensor(ref, prefix + "ids");
    auto out = model->encode(ids);
    EXPECT_TRUE(out.is_ok()) << out.status().to_string();
    if (!out.is_ok()) continue;
    for (const char* output : kOutputs) {
      const double e = rel_err(pick(*out, output), ref_tensor(ref, prefix + output));
      worst[output] = std::max(worst[output], e);
      std::cout << "  " << label << " " << prefix << output << ": rel err " << e << "\n";
    }
  }
  return worst;
}

TEST(ClipTextModelTest, MatchesTransformersFp32) {
  for (const std::string name : {"tiny-a", "tiny-b"}) {
    const WeightSet ref = open_reference(name);
    for (const char* component : kEncoders) {
      SCOPED_TRACE(name + "/" + component);
      ClipTextModel model = load_or_die(models_dir() + "/" + name, component, "");
      ASSERT_TRUE(model);
      for (const auto& [output, e] : compare(model, ref, component, name)) EXPECT_LE(e, kTol) << output;
    }
  }
}

TEST(ClipTextModelTest, ConfigsExerciseBothPoolingRules) {
  auto a = ModelFolder::open(models_dir() + "/tiny-a");
  auto b = ModelFolder::open(models_dir() + "/tiny-b");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  auto ca = load_clip_text_model(*a, "text_encoder_2", "", at::kFloat, at::kCPU);
  auto cb = load_clip_text_model(*b, "text_encoder_2", "", at::kFloat, at::kCPU);
  ASSERT_TRUE(ca.is_ok() && cb.is_ok());
  EXPECT_EQ((*ca)->config().eos_token_id, 2);
  EXPECT_EQ((*cb)->config().eos_token_id, 49407);
  EXPECT_TRUE((*ca)->config().with_projection);
  EXPECT_EQ((*ca)->config().hidden_act, ClipTextConfig::Activation::kGelu);
  auto t1 = load_clip_text_model(*a, "text_encoder", "", at::kFloat, at::kCPU);
  ASSERT_TRUE(t1.is_ok());
  EXPECT_FALSE((*t1)->config().with_projection);
  EXPECT_FALSE((*t1)->text_projection);
  EXPECT_EQ((*t1)->config().hidden_act, ClipTextConfig::Activation::kQuickGelu);
}

TEST(ClipTextModelTest, SkippingTheLastLayerKeepsThePenultimateState) {
  const WeightSet ref = open_reference("tiny-b");
  ClipTextModel model = load_or_die(models_dir() + "/tiny-b", "text_encoder", "");
  ASSERT_TRUE(model);
  auto out = model->encode(ref_tensor(ref, "text_encoder.prompts.ids"), /*run_last_layer=*/false);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_FALSE(out->last_hidden_state.defined());
  EXPECT_FALSE(out->pooled.defined());
  EXPECT_LE(rel_err(out->penultimate, ref_tensor(ref, "text_encoder.prompts.penultimate")), kTol);
}

TEST(ClipTextModelTest, Fp16VariantUpcast) {
  // Same fp16 weights upcast on both sides: fp32 precision.
  const WeightSet ref16 = open_reference("tiny-a-fp16");
  // The fp32 weights the fp16 file was rounded from: the error of fp16 weight rounding.
  const WeightSet ref32 = open_reference("tiny-a");
  for (const char* component : kEncoders) {
    SCOPED_TRACE(component);
    ClipTextModel model = load_or_die(models_dir() + "/tiny-a-fp16", component, "fp16");
    ASSERT_TRUE(model);
    EXPECT_EQ(model->text_model->final_layer_norm->weight.scalar_type(), at::kFloat);
    for (const auto& [output, e] : compare(model, ref16, component, "tiny-a-fp16 vs fp16 ref"))
      EXPECT_LE(e, kTol) << output;
    for (const auto& [output, e] : compare(model, ref32, component, "tiny-a-fp16 vs fp32 ref"))
      EXPECT_LE(e, 1e-2) << output;
  }
}

TEST(ClipTextModelTest, RunsOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  // fp32 on CUDA takes other kernels (cuBLAS, SDPA's CUDA backends); fp16/bf16 round every activation.
  const std::pair<at::ScalarType, double> cases[] = {
      {at::kFloat, 1e-4}, {at::kHalf, 1e-2}, {at::kBFloat16, 5e-2}};
  for (const std::string name : {"tiny-a", "tiny-b"}) {
    const WeightSet ref = open_reference(name);
    auto folder = ModelFolder::open(models_dir() + "/" + name);
    ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
    for (const char* component : kEncoders) {
      for (const auto& [dtype, tol] : cases) {
        SCOPED_TRACE(name + "/" + component + "/" + c10::toString(dtype));
        auto model = load_clip_text_model(*folder, component, "", dtype, at::Device(at::kCUDA, 0));
        ASSERT_TRUE(model.is_ok()) << model.status().to_string();
        for (const auto& [output, e] :
             compare(*model, ref, component, name + " cuda " + c10::toString(dtype)))
          EXPECT_LE(e, tol) << output;
      }
    }
  }
}

// ---- Rewritten weight files (as older transformers versions and broken downloads have them) ----

struct StoredTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::map<std::string, StoredTensor> read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  const nlohmann::json header = nlohmann::json::parse(raw.substr(8, n));
  std::map<std::string, StoredTensor> out;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    const auto range = e.at("data_offsets").get<std::vector<uint64_t>>();
    out[name] = {e.at("dtype").get<std::string>(), e.at("shape").get<std::vector<int64_t>>(),
                 raw.substr(8 + n + range[0], range[1] - range[0])};
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, StoredTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype},
                    {"shape", t.shape},
                    {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  sdxlb::testing::write_bytes(path, sdxlb::testing::safetensors_bytes(header.dump(), data));
}

// A copy of `pipeline`'s model_index.json and `component`, whose model.safetensors is passed through `edit`.
std::string copy_with_edited_weights(const ScratchDir& dir, const std::string& pipeline,
                                     const std::string& component,
                                     const std::function<void(std::map<std::string, StoredTensor>&)>& edit) {
  const std::string src = models_dir() + "/" + pipeline;
  fs::copy_file(src + "/model_index.json", dir.file("model_index.json"));
  fs::create_directories(dir.file(component));
  fs::copy_file(src + "/" + component + "/config.json", dir.file(component + "/config.json"));
  auto tensors = read_safetensors(src + "/" + component + "/model.safetensors");
  edit(tensors);
  write_safetensors(dir.file(component + "/model.safetensors"), tensors);
  return dir.path();
}

TEST(ClipTextModelTest, LoadsPrefixedCheckpointWithStoredPositionIds) {
  // The published SDXL text_encoder keeps the "text_model." prefix (transformers 4.x), and checkpoints from
  // before transformers 4.31 also store position_ids: both must load and give the same outputs.
  ScratchDir dir;
  const std::string root = copy_with_edited_weights(dir, "tiny-a", "text_encoder", [](auto& tensors) {
    std::map<std::string, StoredTensor> prefixed;
    for (auto& [name, t] : tensors) prefixed["text_model." + name] = t;
    StoredTensor pos{"I64", {1, 77}, std::string(77 * 8, '\0')};
    for (int64_t i = 0; i < 77; ++i) std::memcpy(&pos.bytes[i * 8], &i, 8);
    prefixed["text_model.embeddings.position_ids"] = pos;
    tensors = prefixed;
  });
  ClipTextModel model = load_or_die(root, "text_encoder", "");
  ASSERT_TRUE(model);
  for (const auto& [output, e] : compare(model, open_reference("tiny-a"), "text_encoder", "tiny-a prefixed"))
    EXPECT_LE(e, kTol) << output;
}

TEST(ClipTextModelTest, RenamedAndRemovedTensorsAreListed) {
  for (const std::string component : {"text_encoder", "text_encoder_2"}) {
    SCOPED_TRACE(component);
    const std::string p = component == "text_encoder" ? "" : "text_model.";
    ScratchDir dir;
    const std::string root = copy_with_edited_weights(dir, "tiny-a", component, [&](auto& tensors) {
      tensors[p + "final_layer_norm.beta"] = tensors.at(p + "final_layer_norm.bias");
      tensors.erase(p + "final_layer_norm.bias");
      tensors.erase(p + "encoder.layers.1.mlp.fc2.weight");
    });
    auto folder = ModelFolder::open(root);
    ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
    auto model = load_clip_text_model(*folder, component, "", at::kFloat, at::kCPU);
    ASSERT_FALSE(model.is_ok());
    const std::string msg = model.status().message();
    EXPECT_EQ(model.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p + "final_layer_norm.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p + "encoder.layers.1.mlp.fc2.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p + "final_layer_norm.beta"), std::string::npos) << msg;
    EXPECT_NE(msg.find(component), std::string::npos) << msg;
  }
}

TEST(ClipTextModelTest, ConfigThatDoesNotMatchTheWeightsIsReported) {
  ScratchDir dir;
  const std::string root = copy_with_edited_weights(dir, "tiny-b", "text_encoder_2", [](auto&) {});
  auto json = read_json_file(dir.file("text_encoder_2/config.json"));
  ASSERT_TRUE(json.is_ok());
  (*json)["intermediate_size"] = 30;
  std::ofstream(dir.file("text_encoder_2/config.json")) << json->dump(2);
  auto folder = ModelFolder::open(root);
  ASSERT_TRUE(folder.is_ok());
  auto model = load_clip_text_model(*folder, "text_encoder_2", "", at::kFloat, at::kCPU);
  ASSERT_FALSE(model.is_ok());
  EXPECT_NE(
      model.status().message().find("text_model.encoder.layers.0.mlp.fc1.weight: model expects [30, 24], "
                                    "file has [31, 24]"),
      std::string::npos)
      << model.status().message();
}

TEST(ClipTextModelTest, MissingVariantIsNotFound) {
  auto folder = ModelFolder::open(models_dir() + "/tiny-b");
  ASSERT_TRUE(folder.is_ok());
  auto model = load_clip_text_model(*folder, "text_encoder", "fp16", at::kFloat, at::kCPU);
  ASSERT_FALSE(model.is_ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound) << model.status().to_string();
}

// ---- Config parsing ----

nlohmann::json tiny_config() {
  return {{"architectures", {"CLIPTextModelWithProjection"}},
          {"hidden_size", 32},
          {"intermediate_size", 37},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 4},
          {"max_position_embeddings", 77},
          {"vocab_size", 49408},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-5},
          {"projection_dim", 16},
          {"eos_token_id", 49407}};
}

TEST(ClipTextConfigTest, ParsesEveryField) {
  auto c = ClipTextConfig::from_json(tiny_config(), "te/config.json");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->hidden_size, 32);
  EXPECT_EQ(c->intermediate_size, 37);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->head_dim(), 8);
  EXPECT_EQ(c->hidden_act, ClipTextConfig::Activation::kGelu);
  EXPECT_EQ(c->projection_dim, 16);
  EXPECT_EQ(c->eos_token_id, 49407);
  EXPECT_TRUE(c->with_projection);
  EXPECT_TRUE(c->architecture_known);

  nlohmann::json plain = tiny_config();
  plain.erase("architectures");
  auto p = ClipTextConfig::from_json(plain, "te/config.json");
  ASSERT_TRUE(p.is_ok());
  EXPECT_FALSE(p->architecture_known);
}

TEST(ClipTextConfigTest, RejectsBadConfigsNamingFileAndKey) {
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](auto& j) { j["hidden_act"] = "relu"; }, "\"hidden_act\" is \"relu\""},
      {[](auto& j) { j["num_attention_heads"] = 5; }, "not a multiple of num_attention_heads"},
      {[](auto& j) {
         j["eos_token_id"] = {49407, 2};
       },
       "\"eos_token_id\" is a list"},
      {[](auto& j) { j["architectures"] = {"CLIPVisionModel"}; }, "\"architectures\" is [CLIPVisionModel]"},
      {[](auto& j) { j["hidden_size"] = "wide"; }, "\"hidden_size\" has the wrong type"},
      {[](auto& j) { j["num_hidden_layers"] = 0; }, "\"num_hidden_layers\" is 0"},
  };
  for (const auto& [edit, expected] : cases) {
    nlohmann::json j = tiny_config();
    edit(j);
    auto c = ClipTextConfig::from_json(j, "te/config.json");
    ASSERT_FALSE(c.is_ok()) << expected;
    EXPECT_NE(c.status().message().find("te/config.json"), std::string::npos) << c.status().message();
    EXPECT_NE(c.status().message().find(expected), std::string::npos) << c.status().message();
  }
}

// ---- Input checks ----

TEST(ClipTextModelTest, BadIdsAreInvalidArgument) {
  auto c = ClipTextConfig::from_json(tiny_config(), "te/config.json");
  ASSERT_TRUE(c.is_ok());
  ClipTextModel model(*c);
  for (auto& p : model->parameters()) p.detach().zero_();  // built uninitialised; no weights are needed here
  const auto ok = at::zeros({2, 77}, at::kLong);
  EXPECT_TRUE(model->encode(ok).is_ok());
  EXPECT_TRUE(model->encode(ok.to(at::kInt)).is_ok());
  for (const at::Tensor& bad : {ok.to(at::kFloat), at::zeros({2, 78}, at::kLong), at::zeros({77}, at::kLong),
                                ok + 49408, ok - 1, at::Tensor()}) {
    auto out = model->encode(bad);
    ASSERT_FALSE(out.is_ok());
    EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument) << out.status().to_string();
  }
}

}  // namespace
}  // namespace sdxlb
