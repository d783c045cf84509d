#include "pipeline/demo_model.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include "pipeline/io/safetensors_writer.h"
#include "pipeline/models/tiny_vae.h"
#include "pipeline/models/unet.h"
#include "pipeline/models/vae.h"
#include "pipeline/text/clip_text_model.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) return io_error("cannot write " + path.string());
  return Status::ok();
}

// 512 byte symbols, 2 x 26 x 26 letter-pair merges, BOS and EOS.
constexpr int64_t kDemoVocab = 512 + 2 * 26 * 26 + 2;

Status write_json(const fs::path& path, const json& j) {
  return write_text(path, j.dump(2) + "\n");
}

// PyTorch's default initialisation, so that activations stay in range like a freshly built diffusers model:
// weights of fan-in n uniform in +-1/sqrt(n) (kaiming_uniform with a=sqrt(5)), biases likewise, norm scales 1
// and shifts 0, embedding tables N(0, 0.02) as transformers initialises CLIP.
void randomize(torch::nn::Module& module, at::Generator& gen) {
  c10::InferenceMode guard;
  std::map<std::string, at::Tensor> params;
  for (const auto& kv : module.named_parameters(true)) params[kv.key()] = kv.value();
  for (auto& [name, p] : params) {
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_embedding = name.find("embedding.weight") != std::string::npos &&
                              (name.find("token_embedding") != std::string::npos ||
                               name.find("position_embedding") != std::string::npos);
    if (is_embedding) {
      p.normal_(0.0, 0.02, gen);
    } else if (is_norm && p.dim() == 1) {
      name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0 ? p.zero_() : p.fill_(1.0);
    } else if (p.dim() >= 2) {
      const double fan_in = static_cast<double>(p.numel() / p.size(0));
      const double bound = 1.0 / std::sqrt(fan_in);
      p.uniform_(-bound, bound, gen);
    } else {
      // A bias: the fan-in of its weight is not at hand; this bound keeps it small like PyTorch's.
      const std::string weight_name = name.substr(0, name.size() - 4) + "weight";
      auto w = params.find(weight_name);
      const double fan_in = w != params.end() && w->second.dim() >= 2
                                ? static_cast<double>(w->second.numel() / w->second.size(0))
                                : 1.0;
      const double bound = 1.0 / std::sqrt(fan_in);
      p.uniform_(-bound, bound, gen);
    }
  }
}

Status save_module(torch::nn::Module& module, const fs::path& file, at::ScalarType dtype,
                   const std::vector<std::string>& skip_prefixes = {}) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& kv : module.named_parameters(true)) {
    bool skip = false;
    for (const auto& s : skip_prefixes) skip = skip || kv.key().rfind(s, 0) == 0;
    if (!skip) tensors[kv.key()] = kv.value().to(dtype);
  }
  return write_safetensors(file.string(), tensors, {{"format", "pt"}});
}

// A byte-level CLIP vocabulary plus merges of letter pairs: tokenizes any text, ids < kDemoVocab.
Status write_tokenizer(const fs::path& dir, const std::string& pad) {
  fs::create_directories(dir);
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80)
      s += static_cast<char>(cp);
    else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  json vocab = json::object();
  int id = 0;
  for (int c : cs) vocab[utf8(c)] = id++;
  for (int c : cs) vocab[utf8(c) + "</w>"] = id++;
  // Merges of every pair of lowercase letters (and pairs ending a word), so that BPE has work to do.
  std::string merges = "#version: 0.2\n";
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) {
      const std::string x(1, a), y(1, b);
      merges += x + " " + y + "\n" + x + " " + y + "</w>\n";
      vocab[x + y] = id++;
      vocab[x + y + "</w>"] = id++;
    }
  }
  // The special tokens come last: their ids are the largest, as in CLIP (eos_token_id 2 pools at the argmax).
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  SDXLB_RETURN_IF_ERROR(write_text(dir / "vocab.json", vocab.dump()));
  SDXLB_RETURN_IF_ERROR(write_text(dir / "merges.txt", merges));
  json special = {{"bos_token", "<|startoftext|>"},
                  {"eos_token", "<|endoftext|>"},
                  {"pad_token", pad},
                  {"unk_token", "<|endoftext|>"}};
  SDXLB_RETURN_IF_ERROR(write_json(dir / "special_tokens_map.json", special));
  json config = special;
  config["add_prefix_space"] = false;
  config["do_lower_case"] = true;
  config["errors"] = "replace";
  config["model_max_length"] = 77;
  config["tokenizer_class"] = "CLIPTokenizer";
  return write_json(dir / "tokenizer_config.json", config);
}

struct Configs {
  json unet, vae, te1, te2, taesd;
};

Configs configs(DemoModelSize size) {
  Configs c;
  const bool full = size == DemoModelSize::kFull;
  const int64_t te1_w = full ? 768 : 64, te2_w = full ? 1280 : 64;
  const int64_t time_dim = full ? 256 : 16;
  c.unet = {{"_class_name", "UNet2DConditionModel"},
            {"act_fn", "silu"},
            {"addition_embed_type", "text_time"},
            {"addition_embed_type_num_heads", 64},
            {"addition_time_embed_dim", time_dim},
            {"attention_head_dim", full ? json{5, 10, 20} : json{1, 2, 4}},
            {"block_out_channels", full ? json{320, 640, 1280} : json{32, 64, 128}},
            {"center_input_sample", false},
            {"cross_attention_dim", te1_w + te2_w},
            {"down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}},
            {"downsample_padding", 1},
            {"flip_sin_to_cos", true},
            {"freq_shift", 0},
            {"in_channels", 4},
            {"layers_per_block", 2},
            {"mid_block_scale_factor", 1},
            {"mid_block_type", "UNetMidBlock2DCrossAttn"},
            {"norm_eps", 1e-5},
            {"norm_num_groups", 32},
            {"num_attention_heads", nullptr},
            {"out_channels", 4},
            {"projection_class_embeddings_input_dim", te2_w + 6 * time_dim},
            {"sample_size", full ? 128 : 16},
            {"transformer_layers_per_block", full ? json{1, 2, 10} : json{1, 1, 2}},
            {"up_block_types", {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}},
            {"upcast_attention", false},
            {"use_linear_projection", true}};
  c.vae = {{"_class_name", "AutoencoderKL"},
           {"act_fn", "silu"},
           {"block_out_channels", full ? json{128, 256, 512, 512} : json{32, 32, 64, 64}},
           {"down_block_types", json::array({"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                                             "DownEncoderBlock2D"})},
           {"up_block_types",
            json::array({"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"})},
           {"force_upcast", full},
           {"in_channels", 3},
           {"latent_channels", 4},
           {"layers_per_block", full ? 2 : 1},
           {"norm_num_groups", 32},
           {"out_channels", 3},
           {"sample_size", full ? 1024 : 128},
           {"scaling_factor", 0.13025},
           {"mid_block_add_attention", true},
           {"use_quant_conv", true},
           {"use_post_quant_conv", true}};
  auto te = [&](int64_t width, int64_t layers, int64_t heads, const char* act, bool proj) {
    return json{{"architectures", {proj ? "CLIPTextModelWithProjection" : "CLIPTextModel"}},
                {"bos_token_id", 0},
                {"eos_token_id", 2},
                {"pad_token_id", 1},
                {"hidden_act", act},
                {"hidden_size", width},
                {"intermediate_size", width * 4},
                {"layer_norm_eps", 1e-5},
                {"max_position_embeddings", 77},
                {"model_type", "clip_text_model"},
                {"num_attention_heads", heads},
                {"num_hidden_layers", layers},
                {"projection_dim", width},
                {"vocab_size", full ? 49408 : kDemoVocab}};
  };
  c.te1 = te(te1_w, full ? 12 : 2, full ? 12 : 2, "quick_gelu", false);
  c.te2 = te(te2_w, full ? 32 : 2, full ? 20 : 2, "gelu", true);
  const int64_t tw = full ? 64 : 32;
  c.taesd = {{"_class_name", "AutoencoderTiny"},
             {"act_fn", "relu"},
             {"block_out_channels", {tw, tw, tw, tw}},
             {"decoder_block_out_channels", {tw, tw, tw, tw}},
             {"encoder_block_out_channels", {tw, tw, tw, tw}},
             {"num_decoder_blocks", full ? json{3, 3, 3, 1} : json{1, 1, 1, 1}},
             {"num_encoder_blocks", full ? json{1, 3, 3, 3} : json{1, 1, 1, 1}},
             {"in_channels", 3},
             {"out_channels", 3},
             {"latent_channels", 4},
             {"latent_magnitude", 3},
             {"latent_shift", 0.5},
             {"scaling_factor", 1.0},
             {"upsampling_scaling_factor", 2},
             {"force_upcast", false}};
  return c;
}

}  // namespace

Status write_demo_model(const std::string& dir_str, const DemoModelOptions& options) {
  const fs::path dir(dir_str);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec))
    return failed_precondition(dir_str + " already exists and is not empty; choose a new folder");
  const fs::path tmp = dir_str + ".partial";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return io_error("cannot create " + tmp.string() + ": " + ec.message());

  const Configs c = configs(options.size);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const std::string source = "demo model";
  try {
    for (const char* sub : {"unet", "vae", "text_encoder", "text_encoder_2", "scheduler"})
      fs::create_directories(tmp / sub);
    {
      SDXLB_ASSIGN_OR_RETURN(auto cfg, UNetConfig::from_json(c.unet, source + " unet"));
      UNet2DConditionModel unet(cfg);
      randomize(*unet, gen);
      SDXLB_RETURN_IF_ERROR(write_json(tmp / "unet" / "config.json", c.unet));
      SDXLB_RETURN_IF_ERROR(
          save_module(*unet, tmp / "unet" / "diffusion_pytorch_model.safetensors", options.dtype));
    }
    {
      SDXLB_ASSIGN_OR_RETURN(auto cfg, VaeConfig::from_json(c.vae, source + " vae"));
      Vae vae(cfg, /*with_encoder=*/true);
      randomize(*vae, gen);
      SDXLB_RETURN_IF_ERROR(write_json(tmp / "vae" / "config.json", c.vae));
      SDXLB_RETURN_IF_ERROR(
          save_module(*vae, tmp / "vae" / "diffusion_pytorch_model.safetensors", options.dtype));
    }
    for (int i = 0; i < 2; ++i) {
      const json& j = i == 0 ? c.te1 : c.te2;
      const char* sub = i == 0 ? "text_encoder" : "text_encoder_2";
      SDXLB_ASSIGN_OR_RETURN(auto cfg, ClipTextConfig::from_json(j, source + " " + sub));
      ClipTextModel te(cfg);
      randomize(*te, gen);
      SDXLB_RETURN_IF_ERROR(write_json(tmp / sub / "config.json", j));
      SDXLB_RETURN_IF_ERROR(save_module(*te, tmp / sub / "model.safetensors", options.dtype));
    }
    SDXLB_RETURN_IF_ERROR(write_tokenizer(tmp / "tokenizer", "<|endoftext|>"));
    SDXLB_RETURN_IF_ERROR(write_tokenizer(tmp / "tokenizer_2", "!"));
    SDXLB_RETURN_IF_ERROR(
        write_json(tmp / "scheduler" / "scheduler_config.json", {{"_class_name", "EulerDiscreteScheduler"},
                                                                 {"beta_end", 0.012},
                                                                 {"beta_schedule", "scaled_linear"},
                                                                 {"beta_start", 0.00085},
                                                                 {"interpolation_type", "linear"},
                                                                 {"num_train_timesteps", 1000},
                                                                 {"prediction_type", "epsilon"},
                                                                 {"steps_offset", 1},
                                                                 {"timestep_spacing", "leading"},
                                                                 {"use_karras_sigmas", false}}));
    SDXLB_RETURN_IF_ERROR(write_json(tmp / "model_index.json",
                                     {{"_class_name", "StableDiffusionXLPipeline"},
                                      {"force_zeros_for_empty_prompt", true},
                                      {"feature_extractor", {nullptr, nullptr}},
                                      {"image_encoder", {nullptr, nullptr}},
                                      {"scheduler", {"diffusers", "EulerDiscreteScheduler"}},
                                      {"text_encoder", {"transformers", "CLIPTextModel"}},
                                      {"text_encoder_2", {"transformers", "CLIPTextModelWithProjection"}},
                                      {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                      {"tokenizer_2", {"transformers", "CLIPTokenizer"}},
                                      {"unet", {"diffusers", "UNet2DConditionModel"}},
                                      {"vae", {"diffusers", "AutoencoderKL"}}}));
    if (options.with_tiny_vae) {
      fs::create_directories(tmp / "tiny_vae");
      SDXLB_ASSIGN_OR_RETURN(auto cfg, TinyVaeConfig::from_json(c.taesd, source + " tiny_vae"));
      TinyVae tiny(cfg);
      randomize(*tiny, gen);
      SDXLB_RETURN_IF_ERROR(write_json(tmp / "tiny_vae" / "config.json", c.taesd));
      SDXLB_RETURN_IF_ERROR(
          save_module(*tiny, tmp / "tiny_vae" / "diffusion_pytorch_model.safetensors", options.dtype));
    }
  } catch (const c10::Error& e) {
    fs::remove_all(tmp, ec);
    return internal_error("writing the demo model: " + std::string(e.what_without_backtrace()));
  }
  fs::remove(dir, ec);  // an empty folder the user made
  fs::rename(tmp, dir, ec);
  if (ec) return io_error("cannot rename " + tmp.string() + " to " + dir_str + ": " + ec.message());
  return Status::ok();
}

}  // namespace sdxlb
