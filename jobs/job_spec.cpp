// Job file parsing: a table of keys, each with a handler that checks its value's type and range and
// records a problem (with the YAML node's line and column) instead of stopping, so that one run reports
// every problem in the file.
#include "jobs/job_spec.h"

#include "jobs/approximation_fields.h"
#include "jobs/sha256.h"
#include "jobs/yaml_fields.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

// The 1-based line of a "---" document marker that follows content and is itself followed by content (0:
// none): a second document. Blank lines, comments and a leading marker do not count.
int second_document_line(std::string_view text) {
  bool content = false;
  int marker = 0;
  int number = 0;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    ++number;
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool is_marker =
        line.substr(0, 3) == "---" && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
    const size_t first = line.find_first_not_of(" \t");
    const bool blank = first == std::string_view::npos || line[first] == '#';
    if (is_marker) {
      if (content && marker == 0) marker = number;
      const std::string_view rest = line.substr(3);
      const size_t r = rest.find_first_not_of(" \t");
      if (marker > 0 && r != std::string_view::npos && rest[r] != '#') return marker;
      continue;
    }
    if (line.substr(0, 3) == "..." && (line.size() == 3 || line[3] == ' ')) continue;
    if (blank || (!content && !line.empty() && line[0] == '%')) continue;
    if (marker > 0) return marker;
    content = true;
  }
  return 0;
}

namespace fs = std::filesystem;
using Field = YamlField;

// ---------------------------------------------------------------------------------------------------------
// Enum names: one table per enum, used both to parse and to print.

constexpr NamedValue<JobSpec::DType> kDTypes[] = {
    {"fp16", JobSpec::DType::kFp16}, {"bf16", JobSpec::DType::kBf16}, {"fp32", JobSpec::DType::kFp32}};
constexpr NamedValue<JobSpec::Device> kDevices[] = {
    {"auto", JobSpec::Device::kAuto}, {"cuda", JobSpec::Device::kCuda}, {"cpu", JobSpec::Device::kCpu}};
constexpr NamedValue<JobSpec::ImageFormat> kImageFormats[] = {{"raw", JobSpec::ImageFormat::kRaw},
                                                              {"png", JobSpec::ImageFormat::kPng}};
constexpr NamedValue<JobSpec::Decoder> kDecoders[] = {
    {"auto", JobSpec::Decoder::kAuto}, {"full", JobSpec::Decoder::kFull}, {"tiny", JobSpec::Decoder::kTiny}};
constexpr NamedValue<JobSpec::Placement> kPlacements[] = {
    {"auto", JobSpec::Placement::kAuto},
    {"resident", JobSpec::Placement::kResident},
    {"model_offload", JobSpec::Placement::kModelOffload},
    {"streamed", JobSpec::Placement::kStreamed},
    {"sequential", JobSpec::Placement::kSequential}};
constexpr NamedValue<JobSpec::Decode> kDecodes[] = {{"auto", JobSpec::Decode::kAuto},
                                                    {"full", JobSpec::Decode::kFull},
                                                    {"sliced", JobSpec::Decode::kSliced},
                                                    {"tiled", JobSpec::Decode::kTiled}};
constexpr NamedValue<JobSpec::WeightsBroadcast> kWeightsBroadcast[] = {
    {"auto", JobSpec::WeightsBroadcast::kAuto},
    {"on", JobSpec::WeightsBroadcast::kOn},
    {"off", JobSpec::WeightsBroadcast::kOff}};
constexpr NamedValue<JobSpec::OverlapDecode> kOverlapDecodes[] = {{"auto", JobSpec::OverlapDecode::kAuto},
                                                                  {"on", JobSpec::OverlapDecode::kOn},
                                                                  {"off", JobSpec::OverlapDecode::kOff}};
constexpr NamedValue<PromptFormat> kPromptFormats[] = {
    {"txt", PromptFormat::kTxt}, {"jsonl", PromptFormat::kJsonl}, {"csv", PromptFormat::kCsv}};
// The sampler options' values, spelled by jobs/sampler_choice.h.
const NamedValue<SigmaSchedule> kSigmaSchedules[] = {
    {to_string(SigmaSchedule::kDefault), SigmaSchedule::kDefault},
    {to_string(SigmaSchedule::kKarras), SigmaSchedule::kKarras},
    {to_string(SigmaSchedule::kExponential), SigmaSchedule::kExponential},
    {to_string(SigmaSchedule::kBeta), SigmaSchedule::kBeta}};
const NamedValue<TimestepSpacing> kTimestepSpacings[] = {
    {to_string(TimestepSpacing::kLinspace), TimestepSpacing::kLinspace},
    {to_string(TimestepSpacing::kLeading), TimestepSpacing::kLeading},
    {to_string(TimestepSpacing::kTrailing), TimestepSpacing::kTrailing}};
const NamedValue<FinalSigmas> kFinalSigmas[] = {{to_string(FinalSigmas::kZero), FinalSigmas::kZero},
                                                {to_string(FinalSigmas::kSigmaMin), FinalSigmas::kSigmaMin}};

// ---------------------------------------------------------------------------------------------------------
// The parser: one handler per key, typed readers that record problems.

// A model or VAE given as one .safetensors file (a single-file checkpoint) rather than a diffusers folder.
bool is_safetensors_path(const std::string& path) {
  const std::string ext = ".safetensors";
  return path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
}

class SpecParser : public YamlFieldReader {
 public:
  SpecParser(JobSpec* spec, ProblemList* problems, const JobLoadOptions& options)
      : YamlFieldReader(problems), spec_(spec), options_(options) {}

  void run(const YAML::Node& root);

 private:
  bool read_path(const Field& f, std::string* out);
  void read_size(const Field& f, int64_t* out);

  void on_prompts(const Field& f);
  void on_memory(const Field& f);
  void on_scheduler(const Field& f);
  void on_loras(const Field& f);
  void check_lora_files();
  bool read_sampler_name(const Field& f, SamplerChoice* choice);
  YAML::Mark empty_entry_mark(const YAML::Mark& mark, const YAML::Mark& fallback) const;
  void check_folder(const Field& f, const std::string& path, const char* marker, const std::string& what);
  void check_file(const Field& f, const std::string& path, const std::string& what);
  void load_prompts();
  void finish_digest();

  std::string resolve(const std::string& p) const {
    fs::path path(p);
    if (path.is_relative()) path = fs::path(spec_->base_dir) / path;
    return path.lexically_normal().string();
  }

  JobSpec* spec_;
  JobLoadOptions options_;
  YAML::Mark root_mark_;
  std::map<std::string, Field> fields_;  // top-level fields seen
  std::vector<YAML::Mark> lora_marks_;   // where each entry of spec_->loras is
  PromptList inline_prompts_;
  bool inline_ok_ = false;
  bool prompts_file_ok_ = false;
  bool decoder_set_ = false;
  YAML::Mark concurrent_images_mark_;  // where memory.concurrent_images is (for the cross-key rule)
  bool format_ok_ = false;             // prompts_format, or the prompts_file extension, named a format
};

bool SpecParser::read_path(const Field& f, std::string* out) {
  std::string raw;
  if (!read_string(f, &raw, /*allow_empty=*/false)) return false;
  *out = resolve(raw);
  return true;
}

void SpecParser::read_size(const Field& f, int64_t* out) {
  constexpr int64_t kMax = 16384;
  int64_t v = 0;
  if (!read_int(f, INT64_MIN, INT64_MAX, "use a multiple of 8 from 8 to 16384, e.g. 1024", &v)) return;
  if (v <= 0) {
    p_->add(f.mark(), f.key,
            std::to_string(v) + " is not a positive size; use a multiple of 8 from 8 to 16384, e.g. 1024");
  } else if (v > kMax) {
    p_->add(f.mark(), f.key, std::to_string(v) + " is larger than 16384; use a multiple of 8 up to 16384");
  } else if (v % 8 != 0) {
    const int64_t down = v / 8 * 8, up = down + 8;
    p_->add(f.mark(), f.key,
            std::to_string(v) + " is not a multiple of 8 (the VAE downsamples by 8); use " +
                (down > 0 ? std::to_string(down) + " or " : "") + std::to_string(up));
  } else {
    *out = v;
  }
}

void SpecParser::on_prompts(const Field& f) {
  if (f.value.IsNull()) {
    p_->add(f.mark(), f.key,
            "the list is empty; add at least one prompt, e.g. prompts: [\"a red fox in snow\"]");
    return;
  }
  if (!f.value.IsSequence()) {
    p_->add(f.mark(), f.key,
            "expected a list of prompts, got " + describe_node(f.value) +
                "; write one prompt per line as \"- a red fox in snow\" (or use prompts_file for a file)");
    return;
  }
  if (f.value.size() == 0) {
    p_->add(f.mark(), f.key,
            "the list is empty; add at least one prompt, e.g. prompts: [\"a red fox in snow\"]");
    return;
  }
  bool ok = true;
  size_t index = 0;
  // Adds a prompt; records a problem (at `mark`, for `key`) when a text is longer than the limit.
  auto add = [&](const YAML::Mark& mark, const std::string& key, std::string_view prompt,
                 std::optional<std::string_view> negative, std::optional<uint64_t> seed) {
    Status st = inline_prompts_.add(prompt, negative, seed);
    if (!st.is_ok()) {
      p_->add(mark, key, st.message());
      ok = false;
    }
  };
  for (const YAML::Node& item : f.value) {
    const std::string key = "prompts[" + std::to_string(index++) + "]";
    if (item.IsScalar()) {
      std::string text;  // read_string checks the encoding
      if (!read_string(Field{key, item, item}, &text)) {
        ok = false;
      } else if (ok) {
        add(item.Mark(), key, text, std::nullopt, std::nullopt);
      }
      continue;
    }
    if (item.IsNull()) {
      p_->add(empty_entry_mark(item.Mark(), f.mark()), key,
              "empty entry; write the prompt text after the dash, or remove the dash");
      ok = false;
      continue;
    }
    if (!item.IsMap()) {
      p_->add(item.Mark(), key,
              "expected a prompt (text) or a map {prompt, negative_prompt, seed}, got " +
                  describe_node(item) + "; write the prompt as text or as {prompt: \"...\"}");
      ok = false;
      continue;
    }
    std::string prompt, negative;
    bool has_prompt = false, has_negative = false, has_seed = false;
    uint64_t seed = 0;
    auto seen =
        walk_map(item, key,
                 {{"prompt", [&](const Field& g) { has_prompt = read_string(g, &prompt); }},
                  {"negative_prompt", [&](const Field& g) { has_negative = read_string(g, &negative); }},
                  {"seed", [&](const Field& g) { has_seed = read_u64(g, &seed); }}});
    if (!seen.count("prompt")) {
      p_->add(item.Mark(), key,
              "missing key \"prompt\"; write {prompt: \"a red fox\", negative_prompt: \"blurry\", seed: 7}");
      ok = false;
    } else if (!has_prompt) {
      if (seen.at("prompt").value.IsNull()) {
        p_->add(seen.at("prompt").mark(), key + ".prompt", "is empty; write the prompt text");
      }
      ok = false;
    }
    if ((seen.count("negative_prompt") && !has_negative && !seen.at("negative_prompt").value.IsNull()) ||
        (seen.count("seed") && !has_seed && !seen.at("seed").value.IsNull())) {
      ok = false;
    }
    if (ok) {
      add(item.Mark(), key, prompt, has_negative ? std::optional<std::string_view>(negative) : std::nullopt,
          has_seed ? std::optional<uint64_t>(seed) : std::nullopt);
    }
  }
  inline_ok_ = ok;
}

YAML::Mark SpecParser::empty_entry_mark(const YAML::Mark& mark, const YAML::Mark& fallback) const {
  // yaml-cpp marks an empty "-" entry at the token after it (often the next entry); walk back over
  // whitespace to the entry's own dash when the text allows.
  const std::string& text = spec_->yaml_text;
  if (mark.is_null() || mark.pos <= 0 || static_cast<size_t>(mark.pos) > text.size()) return fallback;
  if (static_cast<size_t>(mark.pos) < text.size() && text[mark.pos] == '~') return mark;
  int pos = mark.pos - 1;
  while (pos >= 0 && std::isspace(static_cast<unsigned char>(text[pos]))) --pos;
  if (pos < 0 || text[pos] != '-') return mark;
  YAML::Mark dash;
  dash.pos = pos;
  dash.line = static_cast<int>(std::count(text.begin(), text.begin() + pos, '\n'));
  const size_t line_start = text.rfind('\n', pos);
  dash.column = static_cast<int>(line_start == std::string::npos ? pos : pos - line_start - 1);
  return dash;
}

void SpecParser::on_memory(const Field& f) {
  if (f.value.IsNull()) return;
  if (!f.value.IsMap()) {
    p_->add(f.mark(), f.key,
            "expected a map, got " + describe_node(f.value) +
                "; write e.g. memory: {placement: auto, decode: auto}");
    return;
  }
  JobSpec::Memory& m = spec_->memory;
  walk_map(
      f.value, "memory",
      {{"placement", [&](const Field& g) { read_enum(g, kPlacements, &m.placement); }},
       {"decode", [&](const Field& g) { read_enum(g, kDecodes, &m.decode); }},
       {"max_gpu_gib",
        [&](const Field& g) {
          double v = 0;
          if (read_number(g, 0, false, "use a number of GiB > 0 (e.g. 24), or null for no cap", &v)) {
            m.max_gpu_gib = v;
          }
        }},
       {"concurrent_images",
        [&](const Field& g) {
          concurrent_images_mark_ = g.mark();
          if (g.value.IsScalar() && g.value.Scalar() == "auto") {
            m.concurrent_images.reset();
            return;
          }
          int64_t v = 0;
          if (read_int(g, 1, 512, "use \"auto\" or images_per_unet_call times 1 to 8 (whole UNet calls)", &v))
            m.concurrent_images = v;
        }},
       {"overlap_decode", [&](const Field& g) { read_enum(g, kOverlapDecodes, &m.overlap_decode); }}});
}

// "scheduler: NAME" or "scheduler: {name?, sigmas?, timestep_spacing?, final_sigmas_type?,
// lower_order_final?, euler_at_final?}". A named sampler's options are checked here; without a name they are
// checked against the model folder's class when the model loads (pipeline/samplers/scheduler_config.h).
void SpecParser::on_scheduler(const Field& f) {
  if (f.value.IsNull()) return;
  SamplerChoice& c = spec_->scheduler;
  if (f.value.IsScalar()) {
    read_sampler_name(f, &c);
    return;
  }
  if (!f.value.IsMap()) {
    p_->add(f.mark(), f.key,
            "expected a sampler name or a map, got " + describe_node(f.value) +
                "; write e.g. scheduler: dpmpp_2m or scheduler: {name: dpmpp_2m, sigmas: karras}");
    return;
  }
  const auto fields = walk_map(f.value, "scheduler",
                               {{"name", [&](const Field& g) { read_sampler_name(g, &c); }},
                                {"sigmas",
                                 [&](const Field& g) {
                                   SigmaSchedule v{};
                                   if (read_enum(g, kSigmaSchedules, &v)) c.sigmas = v;
                                 }},
                                {"timestep_spacing",
                                 [&](const Field& g) {
                                   TimestepSpacing v{};
                                   if (read_enum(g, kTimestepSpacings, &v)) c.timestep_spacing = v;
                                 }},
                                {"final_sigmas_type",
                                 [&](const Field& g) {
                                   FinalSigmas v{};
                                   if (read_enum(g, kFinalSigmas, &v)) c.final_sigmas_type = v;
                                 }},
                                {"lower_order_final",
                                 [&](const Field& g) {
                                   bool v = false;
                                   if (read_bool(g, &v)) c.lower_order_final = v;
                                 }},
                                {"euler_at_final", [&](const Field& g) {
                                   bool v = false;
                                   if (read_bool(g, &v)) c.euler_at_final = v;
                                 }}});
  if (!c.name) return;
  const SamplerInfo& info = sampler_info(*c.name);
  for (SamplerOption o : c.options_set()) {
    if (sampler_accepts(*c.name, o)) continue;
    std::string others;
    for (const auto& s : sampler_table())
      if (sampler_accepts(s.name, o)) others += (others.empty() ? "" : ", ") + std::string(s.id);
    const Field& g = fields.at(to_string(o));
    p_->add(g.key_node.Mark(), g.key,
            std::string(info.id) + " does not accept " + to_string(o) + " (diffusers' " +
                info.diffusers_class + " has no such option); " + info.id +
                " accepts: " + option_list(accepted_options(*c.name)) +
                ". Remove it, or choose a sampler that accepts it: " + others);
  }
}

bool SpecParser::read_sampler_name(const Field& f, SamplerChoice* choice) {
  std::string text;
  if (!read_string(f, &text)) return false;
  if (auto name = sampler_from_id(text)) {
    choice->name = *name;
    return true;
  }
  std::string msg = "unknown sampler " + quote(text);
  if (auto other = sampler_from_other_tool(text)) {
    msg += ", another tool's name for scheduler: " + to_job_yaml(*other);
  } else {
    for (const auto& s : sampler_table()) {
      if (edit_distance(text, s.id) <= 2) {
        msg += " (did you mean " + quote(s.id) + "?)";
        break;
      }
    }
  }
  p_->add(f.mark(), f.key,
          msg + "; use one of: " + supported_samplers_text() +
              ". A1111's \"Karras\" schedule is the option sigmas: karras, e.g. scheduler: {name: dpmpp_2m, "
              "sigmas: karras}");
  return false;
}

void SpecParser::check_file(const Field& f, const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    p_->add(f.mark(), f.key,
            "file " + quote(path) + " does not exist; fix the path (relative paths resolve against " +
                quote(spec_->base_dir) + ", the job file's folder)");
  } else if (S_ISDIR(st.st_mode)) {
    p_->add(f.mark(), f.key, quote(path) + " is a folder, not a file; point " + f.key + " at " + what);
  }
}

void SpecParser::check_folder(const Field& f, const std::string& path, const char* marker,
                              const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    p_->add(f.mark(), f.key,
            "folder " + quote(path) + " does not exist; fix the path (relative paths resolve against " +
                quote(spec_->base_dir) + ", the job file's folder)");
  } else if (!S_ISDIR(st.st_mode)) {
    p_->add(f.mark(), f.key, quote(path) + " is a file, not a folder; point " + f.key + " at " + what);
  } else if (::stat((path + "/" + marker).c_str(), &st) != 0) {
    p_->add(f.mark(), f.key,
            "folder " + quote(path) + " has no " + marker + "; point " + f.key + " at " + what);
  }
}

// "loras: [{path: a.safetensors, scale: 0.8}, b.safetensors]": a list whose entries are maps (path required,
// scale optional: 1.0) or a bare path (scale 1.0).
void SpecParser::on_loras(const Field& f) {
  if (f.value.IsNull()) return;
  const char* example = "loras: [{path: loras/style.safetensors, scale: 0.8}]";
  if (!f.value.IsSequence()) {
    p_->add(f.mark(), f.key,
            "expected a list of LoRA files, got " + describe_node(f.value) + "; write e.g. " + example);
    return;
  }
  size_t index = 0;
  for (const YAML::Node& item : f.value) {
    const std::string key = "loras[" + std::to_string(index++) + "]";
    LoraEntry entry;
    entry.where = p_->location(item.Mark());
    if (item.IsScalar()) {
      if (!read_path(Field{key, item, item}, &entry.path)) continue;
      lora_marks_.push_back(item.Mark());
      spec_->loras.push_back(entry);
      continue;
    }
    if (!item.IsMap()) {
      p_->add(item.IsNull() ? empty_entry_mark(item.Mark(), f.mark()) : item.Mark(), key,
              "expected a LoRA file or a map {path, scale}, got " + describe_node(item) + "; write e.g. " +
                  example);
      continue;
    }
    bool path_ok = false, scale_ok = true;
    const auto seen = walk_map(
        item, key,
        {{"path", [&](const Field& g) { path_ok = read_path(g, &entry.path); }},
         {"scale", [&](const Field& g) {
            // Any finite number: 1 is the LoRA as trained, 0 adds nothing, a negative one subtracts it.
            const char* hint = "use a finite number, e.g. 1.0 (the LoRA as trained) or 0.5 (half its effect)";
            if (g.value.IsNull()) {
              p_->add(g.mark(), g.key, std::string("is empty; ") + hint + ", or remove it for 1.0");
              scale_ok = false;
              return;
            }
            scale_ok = read_number(g, -std::numeric_limits<double>::infinity(), false, hint, &entry.scale);
          }}});
    if (!seen.count("path")) {
      p_->add(item.Mark(), key,
              "missing key \"path\"; write e.g. {path: loras/style.safetensors, scale: 0.8}");
      continue;
    }
    if (!path_ok) {
      if (seen.at("path").value.IsNull())
        p_->add(seen.at("path").mark(), key + ".path", "is empty; set it to a LoRA .safetensors file");
      continue;
    }
    if (!scale_ok) continue;
    lora_marks_.push_back(seen.at("path").mark());
    spec_->loras.push_back(entry);
  }
}

// Each LoRA file exists and is a regular .safetensors file (what is inside is checked when the model loads).
void SpecParser::check_lora_files() {
  for (size_t i = 0; i < spec_->loras.size(); ++i) {
    const std::string& path = spec_->loras[i].path;
    const std::string key = "loras[" + std::to_string(i) + "]";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      p_->add(lora_marks_[i], key,
              "LoRA file " + quote(path) + " does not exist; fix the path (relative paths resolve against " +
                  quote(spec_->base_dir) + ", the job file's folder)");
    } else if (!S_ISREG(st.st_mode)) {
      p_->add(lora_marks_[i], key,
              quote(path) + " is not a regular file; point it at a LoRA .safetensors file");
    } else if (fs::path(path).extension() != ".safetensors") {
      p_->add(lora_marks_[i], key,
              quote(path) +
                  " is not a .safetensors file; only safetensors LoRAs are read (convert a .ckpt/.pt one "
                  "with safetensors' save_file)");
    }
  }
}

void SpecParser::run(const YAML::Node& root) {
  if (!root || root.IsNull()) {
    p_->add(YAML::Mark::null_mark(), "",
            "the job file is empty; it needs at least model, output and prompts (or prompts_file); see "
            "docs/job-file.md");
    return;
  }
  if (!root.IsMap()) {
    p_->add(root.Mark(), "",
            "expected a map of settings (key: value lines) at the top level, got " + describe_node(root) +
                "; see examples/demo.yaml");
    return;
  }
  root_mark_ = root.Mark();
  JobSpec& s = *spec_;
  std::string variant;
  ApproximationFieldReader approximations(p_, &s.approximations);
  const std::vector<std::pair<std::string, Handler>> handlers = {
      {"model", [&](const Field& f) { read_path(f, &s.model); }},
      {"model_variant",
       [&](const Field& f) {
         if (f.value.IsNull() || !read_string(f, &variant)) return;
         if (variant == "" || variant == "fp16") {
           s.model_variant = variant;
         } else {
           p_->add(f.mark(), f.key,
                   "unknown variant " + quote(variant) +
                       "; use \"\" (the default weights) or \"fp16\" (the *.fp16.safetensors files)");
         }
       }},
      {"model_config", [&](const Field& f) { read_path(f, &s.model_config); }},
      {"vae", [&](const Field& f) { read_path(f, &s.vae); }},
      {"tiny_vae", [&](const Field& f) { read_path(f, &s.tiny_vae); }},
      {"vae_fp16_safe", [&](const Field& f) { read_bool(f, &s.vae_fp16_safe); }},
      {"vae_dtype",
       [&](const Field& f) {
         JobSpec::DType v = JobSpec::DType::kFp32;
         if (read_enum(f, kDTypes, &v)) s.vae_dtype = v;
       }},
      {"prompts", [&](const Field& f) { on_prompts(f); }},
      {"prompts_file", [&](const Field& f) { prompts_file_ok_ = read_path(f, &s.prompt_source.file); }},
      {"prompts_format",
       [&](const Field& f) { format_ok_ = read_enum(f, kPromptFormats, &s.prompt_source.format); }},
      {"csv_prompt_column",
       [&](const Field& f) { read_string(f, &s.prompt_source.csv_prompt_column, false); }},
      {"csv_negative_column", [&](const Field& f) { read_string(f, &s.prompt_source.csv_negative_column); }},
      {"negative_prompt",
       [&](const Field& f) {
         if (read_string(f, &s.negative_prompt) && s.negative_prompt.size() > PromptList::kMaxTextBytes)
           p_->add(f.mark(), f.key,
                   "is " + std::to_string(s.negative_prompt.size()) + " bytes long, over the limit of " +
                       std::to_string(PromptList::kMaxTextBytes) +
                       "; the text encoders read only the first 77 tokens: shorten it");
       }},
      {"images_per_prompt",
       [&](const Field& f) {
         read_int(f, 1, 1000000, "use an integer from 1 to 1000000", &s.images_per_prompt);
       }},
      {"seed", [&](const Field& f) { read_u64(f, &s.seed); }},
      {"steps",
       [&](const Field& f) { read_int(f, 1, 1000, "use an integer from 1 to 1000 (e.g. 30)", &s.steps); }},
      {"guidance",
       [&](const Field& f) {
         // No useful scale is near 100; a huge one (1e39 is finite as a double) overflows to NaN latents.
         double v = 0;
         const char* hint =
             "use a number from 0 to 100 (e.g. 5.0; 1 or less turns classifier-free guidance off)";
         if (read_number(f, 0, true, hint, &v)) {
           if (v > 100)
             p_->add(f.mark(), f.key, f.value.Scalar() + " is out of range; " + hint);
           else
             s.guidance = v;
         }
       }},
      {"width", [&](const Field& f) { read_size(f, &s.width); }},
      {"height", [&](const Field& f) { read_size(f, &s.height); }},
      {"scheduler", [&](const Field& f) { on_scheduler(f); }},
      {"token_merging", [&](const Field& f) { approximations.read_token_merging(f); }},
      {"token_downsampling", [&](const Field& f) { approximations.read_token_downsampling(f); }},
      {"deep_cache", [&](const Field& f) { approximations.read_deep_cache(f); }},
      {"unet_precision", [&](const Field& f) { approximations.read_unet_precision(f); }},
      {"attention_precision", [&](const Field& f) { approximations.read_attention_precision(f); }},
      {"convolution_precision", [&](const Field& f) { approximations.read_convolution_precision(f); }},
      {"loras", [&](const Field& f) { on_loras(f); }},
      {"batch_size",
       [&](const Field& f) {
         if (f.value.IsScalar() && f.value.Scalar() == "auto") {
           s.batch_size.reset();
           return;
         }
         int64_t v = 0;
         if (read_int(f, 1, 4096, "use \"auto\" or an integer from 1 to 4096", &v)) s.batch_size = v;
       }},
      {"images_per_unet_call",
       [&](const Field& f) {
         read_int(f, 1, 64, "use an integer from 1 to 64 (e.g. 4; 1, the default, is one image per call)",
                  &s.images_per_unet_call);
       }},
      {"dtype", [&](const Field& f) { read_enum(f, kDTypes, &s.dtype); }},
      {"device", [&](const Field& f) { read_enum(f, kDevices, &s.device); }},
      {"output", [&](const Field& f) { read_path(f, &s.output); }},
      {"image_format", [&](const Field& f) { read_enum(f, kImageFormats, &s.image_format); }},
      {"decoder", [&](const Field& f) { decoder_set_ = read_enum(f, kDecoders, &s.decoder); }},
      {"memory", [&](const Field& f) { on_memory(f); }},
      {"weights_broadcast", [&](const Field& f) { read_enum(f, kWeightsBroadcast, &s.weights_broadcast); }},
      {"embedding_cache", [&](const Field& f) { read_path(f, &s.embedding_cache); }},
      {"segment_items",
       [&](const Field& f) {
         read_int(f, 1, int64_t{1} << 31, "use an integer from 1 to 2147483648 (e.g. 256)", &s.segment_items);
       }},
      {"segment_seconds",
       [&](const Field& f) {
         double v = 0;
         const char* hint =
             "use a number of seconds from 1 to 86400 (e.g. 60): a crash loses at most this much work per "
             "worker";
         if (read_number(f, 1, true, hint, &v)) {
           if (v > 86400)
             p_->add(f.mark(), f.key, f.value.Scalar() + " is out of range; " + hint);
           else
             s.segment_seconds = v;
         }
       }},
      {"progress_interval_s",
       [&](const Field& f) {
         read_number(f, 0, false, "use a number of seconds > 0 (e.g. 10)", &s.progress_interval_s);
       }},
      {"worker_timeout_s",
       [&](const Field& f) {
         double v = 0;
         const char* hint =
             "use a number of seconds from 1 to 604800 (e.g. 600), longer than a worker's start-up and "
             "its slowest image group; there is no 'off'";
         if (read_number(f, 1, true, hint, &v)) {
           if (v > 604800)
             p_->add(f.mark(), f.key, f.value.Scalar() + " is out of range; " + hint);
           else
             s.worker_timeout_s = v;
         }
       }},
  };
  fields_ = walk_map(root, "", handlers);
  auto has = [&](const char* k) { return fields_.count(k) != 0; };
  auto mark_of = [&](const char* k) { return fields_.at(k).mark(); };

  // Required keys.
  if (!has("model")) {
    p_->add(
        root_mark_, "model",
        "missing; set model: <folder of a diffusers SDXL pipeline, the one with model_index.json, or an SDXL "
        ".safetensors single file>");
  } else if (fields_.at("model").value.IsNull()) {
    p_->add(mark_of("model"), "model",
            "is empty; set it to the folder of a diffusers SDXL pipeline or an SDXL .safetensors file");
  }
  if (!has("output")) {
    p_->add(root_mark_, "output", "missing; set output: <folder for the images, e.g. out/run1>");
  } else if (fields_.at("output").value.IsNull()) {
    p_->add(mark_of("output"), "output", "is empty; set it to the folder for the images");
  }

  // Exactly one prompt source, and file-only keys only with a file.
  if (has("prompts") && has("prompts_file")) {
    p_->add(mark_of("prompts_file"), "prompts_file",
            "both prompts and prompts_file are set; keep only one (prompts for an inline list, prompts_file "
            "for a .txt, .jsonl or .csv file)");
  } else if (!has("prompts") && !has("prompts_file")) {
    p_->add(root_mark_, "prompts",
            "no prompts; set prompts: (an inline list) or prompts_file: (a .txt, .jsonl or .csv file)");
  } else if (has("prompts_file") && fields_.at("prompts_file").value.IsNull()) {
    p_->add(mark_of("prompts_file"), "prompts_file", "is empty; set it to a .txt, .jsonl or .csv file");
  }
  s.prompt_source.from_file = has("prompts_file") && !has("prompts");
  if (s.prompt_source.from_file) {
    // prompts_format: with no value means the default: the extension decides, as when it is absent.
    const bool format_given = has("prompts_format") && !fields_.at("prompts_format").value.IsNull();
    if (!format_given && prompts_file_ok_) {
      auto fmt = prompt_format_from_extension(s.prompt_source.file);
      if (fmt) {
        s.prompt_source.format = *fmt;
        format_ok_ = true;
      } else {
        p_->add(mark_of("prompts_file"), "prompts_file",
                "cannot tell the format of " + quote(s.prompt_source.file) +
                    " from its extension; name it .txt, .jsonl or .csv, or set prompts_format: txt | jsonl | "
                    "csv");
      }
    }
    const bool csv = format_ok_ && s.prompt_source.format == PromptFormat::kCsv;
    for (const char* k : {"csv_prompt_column", "csv_negative_column"}) {
      if (has(k) && format_ok_ && !csv) {
        p_->add(fields_.at(k).key_node.Mark(), k,
                std::string("applies only to CSV prompt files, but the format is ") +
                    prompt_format_name(s.prompt_source.format) + "; remove it or use a .csv file");
      }
    }
  } else {
    for (const char* k : {"prompts_format", "csv_prompt_column", "csv_negative_column"}) {
      if (has(k) && has("prompts")) {
        p_->add(fields_.at(k).key_node.Mark(), k,
                "applies only with prompts_file, but the prompts are inline; remove it");
      }
    }
  }

  // Cross-key rules.
  approximations.check_combination(fields_);
  if (s.vae_dtype && s.vae_fp16_safe && *s.vae_dtype != JobSpec::DType::kFp16) {
    p_->add(mark_of("vae_dtype"), "vae_dtype",
            std::string("is ") + dtype_name(*s.vae_dtype) +
                ", but vae_fp16_safe: true asks for an fp16 VAE; keep one of the two (vae_dtype: fp16 is "
                "vae_fp16_safe: true)");
  }
  if (s.vae_dtype && s.resolved_decoder() == JobSpec::Decoder::kTiny) {
    p_->add(mark_of("vae_dtype"), "vae_dtype",
            "sets the full VAE's dtype, but this job decodes with the tiny VAE (which runs in the job's "
            "dtype); remove vae_dtype or set decoder: full");
  }
  if (s.images_per_unet_call > 1 && s.approximations.token_merging) {
    p_->add(
        mark_of("images_per_unet_call"), "images_per_unet_call",
        "is " + std::to_string(s.images_per_unet_call) +
            ", but token_merging draws its random destinations per UNet call from one image's seed, so it "
            "runs with one image per call; remove one of the two (token_downsampling works with both)");
  }
  if (const auto& c = s.memory.concurrent_images;
      c && (*c % s.images_per_unet_call != 0 || *c / s.images_per_unet_call > 8)) {
    const int64_t k = s.images_per_unet_call;
    const std::string use =
        k == 1 ? "1 to 8"
               : std::to_string(k) + ", " + std::to_string(2 * k) + ", ... up to " + std::to_string(8 * k);
    p_->add(concurrent_images_mark_, "memory.concurrent_images",
            "is " + std::to_string(*c) +
                ", but the images denoised at once are whole UNet calls of images_per_unet_call (" +
                std::to_string(k) + ") images, at most 8 calls; use " + use + " (or auto)");
  }
  if (decoder_set_ && s.decoder == JobSpec::Decoder::kTiny && s.tiny_vae.empty()) {
    p_->add(mark_of("decoder"), "decoder",
            "is \"tiny\" but tiny_vae is not set; set tiny_vae: <folder of an AutoencoderTiny such as "
            "taesdxl> or use decoder: full");
  }
  if (s.embedding_cache.empty() && !s.output.empty())
    s.embedding_cache = (fs::path(s.output) / "embeddings").string();
  // An output folder inside (or equal to) the model folder mixes the job's segments, index and job files
  // with the weights, and --overwrite would delete files there.
  if (has("output") && !s.output.empty() && !s.model.empty()) {
    fs::path out = fs::path(s.output).lexically_normal(), model = fs::path(s.model).lexically_normal();
    if (options_.check_paths) {
      std::error_code ec1, ec2;
      const fs::path co = fs::weakly_canonical(out, ec1), cm = fs::weakly_canonical(model, ec2);
      if (!ec1 && !ec2) out = co, model = cm;
    }
    const fs::path rel = out.lexically_relative(model);
    if (!rel.empty() && *rel.begin() != "..") {
      p_->add(mark_of("output"), "output",
              quote(s.output) +
                  (rel == "." ? " is the model folder" : " is inside the model folder " + quote(s.model)) +
                  "; the job would write its segments, index and job files among the weights. Choose an "
                  "output folder outside the model folder");
    }
  }

  if (options_.check_paths) {
    const bool single_file = is_safetensors_path(s.model);
    if (!s.model.empty() && single_file)
      check_file(fields_.at("model"), s.model, "an SDXL .safetensors single file or a diffusers SDXL folder");
    else if (!s.model.empty())
      check_folder(fields_.at("model"), s.model, "model_index.json",
                   "a diffusers SDXL folder or an SDXL .safetensors single file");
    if (!s.model_config.empty()) {
      if (!s.model.empty() && !single_file)
        p_->add(
            mark_of("model_config"), "model_config",
            "is set, but model is a diffusers folder with its own configs; remove model_config (it gives a "
            ".safetensors single file its configs and tokenizers)");
      else
        check_folder(fields_.at("model_config"), s.model_config, "model_index.json",
                     "a diffusers SDXL folder (its configs and tokenizers; weights are not needed)");
    }
    if (!s.vae.empty()) {
      if (!is_safetensors_path(s.vae))
        p_->add(mark_of("vae"), "vae",
                quote(s.vae) +
                    " is not a .safetensors file; point vae at a VAE file such as "
                    "sdxl-vae-fp16-fix's diffusion_pytorch_model.safetensors");
      else
        check_file(fields_.at("vae"), s.vae, "a VAE .safetensors file");
    }
    if (!s.tiny_vae.empty()) {
      check_folder(fields_.at("tiny_vae"), s.tiny_vae, "config.json", "a diffusers AutoencoderTiny folder");
    }
    check_lora_files();
    struct stat st {};
    for (const char* k : {"output", "embedding_cache"}) {
      const std::string& path = std::string(k) == "output" ? s.output : s.embedding_cache;
      if (has(k) && !path.empty() && ::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
        p_->add(mark_of(k), k, quote(path) + " is an existing file, not a folder; choose a folder path");
      }
    }
  }
  load_prompts();
}

void SpecParser::load_prompts() {
  JobSpec& s = *spec_;
  if (!s.prompt_source.from_file) {
    if (inline_ok_) s.prompts = std::make_shared<const PromptList>(std::move(inline_prompts_));
  } else if (prompts_file_ok_ && !s.prompt_source.file.empty()) {
    const Field& f = fields_.at("prompts_file");
    struct stat st {};
    if (::stat(s.prompt_source.file.c_str(), &st) != 0) {
      p_->add(f.mark(), f.key,
              "file " + quote(s.prompt_source.file) +
                  " does not exist; fix the path (relative paths resolve against " + quote(s.base_dir) +
                  ", the job file's folder)");
      return;
    }
    if (S_ISDIR(st.st_mode)) {
      p_->add(
          f.mark(), f.key,
          quote(s.prompt_source.file) + " is a folder; point prompts_file at a .txt, .jsonl or .csv file");
      return;
    }
    PromptFileOptions o;
    o.format = s.prompt_source.format;
    o.csv_prompt_column = s.prompt_source.csv_prompt_column;
    o.csv_negative_column = s.prompt_source.csv_negative_column;
    // With an unknown format (a problem was recorded) reading would only add noise.
    if (!format_ok_) return;
    StatusOr<PromptList> list = load_prompt_file(s.prompt_source.file, o);
    if (!list.is_ok()) {
      p_->add_located(list.status().message());
      return;
    }
    s.prompts = std::make_shared<const PromptList>(std::move(list).value());
  }
  if (!s.prompts) return;
  const uint64_t n = s.prompts->size();
  if (s.images_per_prompt > 0 && n > (uint64_t{1} << 62) / static_cast<uint64_t>(s.images_per_prompt)) {
    p_->add(fields_.count("images_per_prompt") ? fields_.at("images_per_prompt").mark() : root_mark_,
            "images_per_prompt", "prompts x images_per_prompt exceeds 2^62 items; split the job");
  }
  finish_digest();
}

void SpecParser::finish_digest() {
  const JobSpec& s = *spec_;
  const PromptList& list = *s.prompts;
  Sha256 h;
  h.update_field("sdxlb-prompts/1");
  h.update_u64(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    h.update_field(list.prompt(i));
    h.update_field(list.negative_or(i, s.negative_prompt));
    auto seed = list.seed(i);
    h.update(seed ? "S" : "-", 1);
    if (seed) h.update_u64(*seed);
  }
  spec_->prompts_sha256 = h.hex();
}

}  // namespace

const char* dtype_name(JobSpec::DType v) {
  return name_of(kDTypes, v);
}
const char* device_name(JobSpec::Device v) {
  return name_of(kDevices, v);
}
const char* image_format_name(JobSpec::ImageFormat v) {
  return name_of(kImageFormats, v);
}
const char* decoder_name(JobSpec::Decoder v) {
  return name_of(kDecoders, v);
}
const char* placement_name(JobSpec::Placement v) {
  return name_of(kPlacements, v);
}
const char* overlap_decode_name(JobSpec::OverlapDecode v) {
  return name_of(kOverlapDecodes, v);
}
const char* decode_name(JobSpec::Decode v) {
  return name_of(kDecodes, v);
}
const char* weights_broadcast_name(JobSpec::WeightsBroadcast v) {
  return name_of(kWeightsBroadcast, v);
}

StatusOr<JobSpec> JobSpec::load_file(const std::string& path, const JobLoadOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return not_found("job file " + quote(path) + " does not exist; check the path (e.g. examples/demo.yaml)");
  }
  if (fs::is_directory(path, ec))
    return invalid_argument(quote(path) + " is a folder; give the job file (.yaml)");
  // Opening a FIFO blocks and /dev/zero never ends: only regular files are read, and only up to a size
  // that yaml-cpp parses in reasonable time and memory.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return invalid_argument(quote(path) +
                            " is not a regular file (a device, FIFO or socket); give the job file (.yaml)");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxJobFileBytes) {
    return invalid_argument(quote(path) + " is " + std::to_string(st.st_size / (1 << 20)) +
                            " MiB; job files are limited to " + std::to_string(kMaxJobFileBytes >> 20) +
                            " MiB: put long prompt lists in a prompts_file (.txt, .jsonl or .csv)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot open job file " + quote(path) + " for reading; check its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return io_error("error while reading job file " + quote(path));
  const std::string base = fs::absolute(path, ec).parent_path().lexically_normal().string();
  return parse(text.str(), path, base, options);
}

StatusOr<JobSpec> JobSpec::parse(const std::string& yaml_text, const std::string& file_name,
                                 const std::string& base_dir, const JobLoadOptions& options) {
  ProblemList problems(file_name.empty() ? "<job>" : file_name);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
    // A second document is an error, not silently ignored (a job file holds one job; "---" then more keys
    // looked like an override and did nothing). Found in the text: a "---" line at column 0 is always a
    // document marker, and yaml-cpp 0.7's LoadAll loops forever on some malformed input (the job-file fuzzer
    // found ", output: o" growing past 2 GB).
    if (const int line = second_document_line(yaml_text); line > 0) {
      YAML::Mark at = YAML::Mark::null_mark();
      at.pos = 0;
      at.line = line - 1;
      at.column = 0;
      problems.add(
          at, "",
          "a second YAML document starts here (after '---'); a job file holds one job: merge its keys "
          "into the first document, or put the second job in a file of its own");
      return problems.status();
    }
  } catch (const YAML::ParserException& e) {
    add_syntax_problem(&problems, e, yaml_text);
    return problems.status();
  } catch (const YAML::Exception& e) {
    problems.add(e.mark, "", std::string("invalid YAML: ") + e.msg + "; fix the syntax");
    return problems.status();
  }
  JobSpec spec;
  spec.job_file = file_name;
  spec.base_dir = base_dir;
  spec.yaml_text = yaml_text;
  try {
    SpecParser parser(&spec, &problems, options);
    parser.run(root);
  } catch (const YAML::Exception& e) {  // defensive: a yaml-cpp accessor threw on an odd document
    problems.add(e.mark, "", std::string("cannot read this part of the job file: ") + e.msg);
  }
  if (problems.any()) return problems.status();
  return spec;
}

JobSpec::Decoder JobSpec::resolved_decoder() const {
  if (decoder != Decoder::kAuto) return decoder;
  return tiny_vae.empty() ? Decoder::kFull : Decoder::kTiny;
}

namespace {

// The `scheduler:` key in the canonical JSON: null when unset (the model folder's scheduler, which the model
// identity covers), the name alone as a string (so `scheduler: euler` keeps the identity it had when Euler
// was the only sampler), else a map of the fields that are set.
nlohmann::json scheduler_json(const SamplerChoice& c) {
  if (c.empty()) return nullptr;
  if (c.options_set().empty()) return to_string(*c.name);
  nlohmann::json j = nlohmann::json::object();
  if (c.name) j["name"] = to_string(*c.name);
  if (c.sigmas) j["sigmas"] = to_string(*c.sigmas);
  if (c.timestep_spacing) j["timestep_spacing"] = to_string(*c.timestep_spacing);
  if (c.final_sigmas_type) j["final_sigmas_type"] = to_string(*c.final_sigmas_type);
  if (c.lower_order_final) j["lower_order_final"] = *c.lower_order_final;
  if (c.euler_at_final) j["euler_at_final"] = *c.euler_at_final;
  return j;
}

// The part of the canonical JSON that changes the pixels (hashed into the identity).
nlohmann::json image_json(const JobSpec& s) {
  nlohmann::json j = {
      {"model_variant", s.model_variant},
      {"vae_fp16_safe", s.vae_fp16_safe},
      {"decoder", decoder_name(s.resolved_decoder())},
      {"dtype", dtype_name(s.dtype)},
      {"scheduler", scheduler_json(s.scheduler)},
      {"steps", s.steps},
      {"guidance", s.guidance},
      {"width", s.width},
      {"height", s.height},
      {"seed", s.seed},
      {"images_per_prompt", s.images_per_prompt},
      {"negative_prompt", s.negative_prompt},
      {"prompts", {{"count", s.num_prompts()}, {"sha256", s.prompts_sha256}}},
  };
  // Only when set: a job without it keeps the identity it had before the key existed.
  if (s.vae_dtype) j["vae_dtype"] = dtype_name(*s.vae_dtype);
  // Only when not 1 (one image per call, as before the key existed).
  if (s.images_per_unet_call != 1) j["images_per_unet_call"] = s.images_per_unet_call;
  // Only when set: a job without approximations keeps the identity it had before they existed.
  if (!s.approximations.empty()) j["approximations"] = nlohmann::json::parse(s.approximations.to_json());
  // Likewise loras: their scales here, their content through the model identity (paths are in "run").
  if (!s.loras.empty()) {
    nlohmann::json l = nlohmann::json::array();
    for (const auto& e : s.loras) l.push_back({{"scale", e.scale}});
    j["loras"] = l;
  }
  return j;
}

}  // namespace

std::string JobSpec::to_canonical_json() const {
  using nlohmann::json;
  json source = {{"kind", prompt_source.from_file ? "file" : "inline"}};
  if (prompt_source.from_file) {
    source["file"] = prompt_source.file;
    source["format"] = prompt_format_name(prompt_source.format);
    if (prompt_source.format == PromptFormat::kCsv) {
      source["csv_prompt_column"] = prompt_source.csv_prompt_column;
      source["csv_negative_column"] = prompt_source.csv_negative_column;
    }
  }
  json run = {
      {"model", model},
      {"tiny_vae", tiny_vae.empty() ? json(nullptr) : json(tiny_vae)},
      {"output", output},
      {"embedding_cache", embedding_cache},
      {"batch_size", batch_size ? json(*batch_size) : json("auto")},
      {"device", device_name(device)},
      {"image_format", image_format_name(image_format)},
      {"memory",
       {{"placement", placement_name(memory.placement)},
        {"decode", decode_name(memory.decode)},
        {"max_gpu_gib", memory.max_gpu_gib ? json(*memory.max_gpu_gib) : json(nullptr)},
        {"concurrent_images", memory.concurrent_images ? json(*memory.concurrent_images) : json("auto")}}},
      {"segment_items", segment_items},
      {"segment_seconds", segment_seconds},
      {"progress_interval_s", progress_interval_s},
      {"worker_timeout_s", worker_timeout_s},
      {"prompt_source", source},
  };
  // Only when set, so that the canonical JSON of every earlier job is unchanged.
  if (!model_config.empty()) run["model_config"] = model_config;
  if (!vae.empty()) run["vae"] = vae;
  if (memory.overlap_decode != OverlapDecode::kAuto)
    run["memory"]["overlap_decode"] = overlap_decode_name(memory.overlap_decode);
  if (weights_broadcast != WeightsBroadcast::kAuto)
    run["weights_broadcast"] = weights_broadcast_name(weights_broadcast);
  if (!loras.empty()) run["loras"] = nlohmann::json::parse(loras_to_json(loras));
  json all = {{"format", "sdxlb-job/1"}, {"image", image_json(*this)}, {"run", run}};
  return all.dump();
}

std::string JobSpec::identity(const std::string& model_identity, const std::string& tiny_vae_identity) const {
  Sha256 h;
  h.update_field("sdxlb-job-identity/1");
  h.update_field(model_identity);
  // The tiny VAE changes the pixels only when it decodes.
  const bool tiny = resolved_decoder() == Decoder::kTiny;
  h.update_field(!tiny ? "" : tiny_vae_identity.empty() ? tiny_vae : tiny_vae_identity);
  h.update_field(image_json(*this).dump());
  return h.hex();
}

}  // namespace sdxlb
