// libFuzzer target: what a model download hands us before any weight is used: safetensors headers and the
// components' config.json files.
//
// An input that starts (after whitespace) with '{' or '[' is JSON:
//   - it goes to every config reader: UNetConfig, VaeConfig, TinyVaeConfig, ClipTextConfig,
//     SchedulerConfig::from_json (and, for a valid scheduler config of at most 1024 training steps,
//     make_schedule of the config and of each sampler merged with it);
//   - it is also used as a safetensors header: the target writes the 8-byte length, the text and as many
//     data bytes as the largest data_offsets end asks for (at most 1 MiB), so that mutations of a header
//     reach the layout checks instead of stopping at the length.
// Any other input is a whole .safetensors file, written as is.
// SafetensorsFile::open must fail with DataLoss, or give entries that tile the data area in name order, each
// of which tensor() turns into a CPU tensor of exactly its byte range (Unimplemented for U16/U32/U64).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "pipeline/io/safetensors.h"
#include "pipeline/models/tiny_vae.h"
#include "pipeline/models/unet.h"
#include "pipeline/models/vae.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"
#include "pipeline/text/clip_text_model.h"

namespace {

using sdxlb::StatusCode;
namespace fz = sdxlb::fuzz;
using json = nlohmann::json;

constexpr uint64_t kMaxDataBytes = uint64_t{1} << 20;

bool config_error(const sdxlb::Status& st) {
  const auto c = st.code();
  return !st.message().empty() &&
         (c == StatusCode::kDataLoss || c == StatusCode::kInvalidArgument || c == StatusCode::kUnimplemented);
}

// SchedulerConfig: the file as its class, and merged with each of our samplers (the classes' defaults and
// the carried keys meet there); the schedules have one sigma per step and a final one, none negative.
void check_sampler_configs(const json& j) {
  auto check_schedule = [](const sdxlb::SchedulerConfig& c) {
    if (c.num_train_timesteps > 1024) return;  // Karras timesteps cost O(N) each: keep an input fast
    for (int64_t steps : {int64_t{1}, std::min<int64_t>(30, c.num_train_timesteps), c.num_train_timesteps}) {
      auto s = sdxlb::make_schedule(c, steps);
      if (!s.is_ok()) {  // DPM's lambda_min_clipped may leave no step
        FUZZ_CHECK(s.status().code() == StatusCode::kInvalidArgument, fz::describe(s.status()));
        continue;
      }
      FUZZ_CHECK(
          s->num_steps() >= 1 && s->alphas_cumprod.size() == static_cast<size_t>(c.num_train_timesteps),
          "a step at least and the training table");
      FUZZ_CHECK(s->sigmas.empty() || s->sigmas.size() == static_cast<size_t>(s->num_steps()) + 1,
                 "one sigma per step and a final one (none for DDIM)");
      for (float sigma : s->sigmas) FUZZ_CHECK(!(sigma < 0), "no sigma is negative");
    }
  };
  const std::string source = "scheduler/scheduler_config.json";
  if (auto c = sdxlb::SchedulerConfig::from_json(j, source); c.is_ok()) {
    check_schedule(*c);
  } else {
    FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
  }
  for (const auto& info : sdxlb::sampler_table()) {
    sdxlb::SamplerChoice choice;
    choice.name = info.name;
    if (auto c = sdxlb::resolve_scheduler(j, source, choice); c.is_ok()) {
      FUZZ_CHECK(c->sampler() == info.name, "the merged config is the named sampler");
      check_schedule(*c);
    } else {
      FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
    }
  }
}

void check_configs(const json& j) {
  if (auto c = sdxlb::UNetConfig::from_json(j, "unet/config.json"); c.is_ok()) {
    const size_t n = c->num_levels();
    FUZZ_CHECK(n > 0 && c->down_blocks.size() == n && c->up_blocks.size() == n &&
                   c->layers_per_block.size() == n && c->transformer_layers_per_block.size() == n &&
                   c->num_attention_heads.size() == n && c->cross_attention_dim.size() == n,
               "UNet config: one entry per level");
  } else {
    FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
  }
  if (auto c = sdxlb::VaeConfig::from_json(j, "vae/config.json"); c.is_ok()) {
    FUZZ_CHECK(!c->block_out_channels.empty() && c->latent_channels > 0 && c->norm_num_groups > 0,
               "VAE config");
  } else {
    FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
  }
  if (auto c = sdxlb::TinyVaeConfig::from_json(j, "tiny_vae/config.json"); c.is_ok()) {
    FUZZ_CHECK(!c->decoder_block_out_channels.empty() &&
                   c->decoder_block_out_channels.size() == c->num_decoder_blocks.size(),
               "tiny VAE config");
  } else {
    FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
  }
  if (auto c = sdxlb::ClipTextConfig::from_json(j, "text_encoder/config.json"); c.is_ok()) {
    FUZZ_CHECK(c->num_attention_heads > 0 && c->head_dim() * c->num_attention_heads == c->hidden_size,
               "CLIP config: heads divide hidden_size");
  } else {
    FUZZ_CHECK(config_error(c.status()), fz::describe(c.status()));
  }
  check_sampler_configs(j);
}

// The data bytes a header asks for: the largest data_offsets end (capped), so that a header alone makes a
// file whose size matches.
uint64_t data_bytes_for(const json& header) {
  uint64_t end = 0;
  if (!header.is_object()) return 0;
  for (const auto& [name, entry] : header.items()) {
    if (!entry.is_object() || !entry.contains("data_offsets")) continue;
    const auto& off = entry["data_offsets"];
    if (off.is_array() && off.size() == 2 && off[1].is_number_unsigned())
      end = std::max(end, std::min(off[1].get<uint64_t>(), kMaxDataBytes));
  }
  return end;
}

void check_safetensors(const std::string& path, std::string_view bytes) {
  fz::write_file(path, bytes);
  auto file = sdxlb::SafetensorsFile::open(path);
  if (!file.is_ok()) {
    FUZZ_CHECK(file.status().code() == StatusCode::kDataLoss && !file.status().message().empty(),
               fz::describe(file.status()));
    return;
  }
  const auto& f = **file;
  const uint64_t data_size = bytes.size() - 8 - f.header_json().size();
  uint64_t covered = 0;
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const sdxlb::TensorInfo& t = f.tensors()[i];
    FUZZ_CHECK(i == 0 || f.tensors()[i - 1].name < t.name, "entries sorted by name, no duplicates");
    FUZZ_CHECK(f.find(t.name) == &t, "find() finds every entry");
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_size, "ranges inside the data area");
    covered += t.end - t.begin;
    auto tensor = f.tensor(t);
    if (t.dtype == "U16" || t.dtype == "U32" || t.dtype == "U64") {
      FUZZ_CHECK(!tensor.is_ok() && tensor.status().code() == StatusCode::kUnimplemented, t.dtype);
      continue;
    }
    FUZZ_CHECK(tensor.is_ok(), fz::describe(tensor.status()));
    FUZZ_CHECK(tensor->nbytes() == t.end - t.begin, "tensor bytes == its range");
    FUZZ_CHECK(tensor->numel() == t.numel(), "tensor numel == the shape's");
    if (tensor->nbytes() > 0) {
      // Reads the first and last byte of the mapping behind the tensor.
      const auto* p = static_cast<const uint8_t*>(tensor->data_ptr());
      volatile uint8_t sink = p[0] ^ p[tensor->nbytes() - 1];
      (void)sink;
    }
  }
  FUZZ_CHECK(covered == data_size, "the entries tile the data area");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fz::scratch_dir() + "/model.safetensors";
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t first = input.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (input[first] == '{' || input[first] == '[')) {
    const json j = json::parse(input.begin(), input.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return 0;
    check_configs(j);
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((uint64_t{size} >> (8 * i)) & 0xff);
    file.append(input);
    file.append(data_bytes_for(j), '\x5a');
    check_safetensors(path, file);
  } else {
    check_safetensors(path, input);
  }
  return 0;
}
