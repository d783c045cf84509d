// libFuzzer target: the job file parser and validator.
//
// The input is the YAML text of a job file. JobSpec::parse runs with check_paths off, so the only files it
// reads are the prompt files the input names; relative names resolve against a scratch folder that holds
// prompts.txt, prompts.jsonl, prompts.csv, prompts.data (txt content, for prompts_format) and a folder
// `sub/` (the corpus uses these names). Only regular files are read (FIFOs and devices are refused), so an
// absolute path to elsewhere cannot hang the target.
//
// On a valid job it also checks what callers rely on and runs JobPlan::build, the canonical JSON and the
// identity. An invalid one must come back as InvalidArgument (or IoError for an unreadable prompt file) with
// a message.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "jobs/job_plan.h"
#include "jobs/job_spec.h"

namespace {

using sdxlb::JobLoadOptions;
using sdxlb::JobPlan;
using sdxlb::JobSpec;
using sdxlb::StatusCode;
namespace fz = sdxlb::fuzz;

const std::string& base_dir() {
  static const std::string dir = [] {
    const std::string d = fz::scratch_dir();
    fz::write_file(d + "/prompts.txt",
                   "a red fox in snow\n\nan isometric lighthouse\r\n  \n\xEF\xBB\xBFthird\n");
    fz::write_file(d + "/prompts.jsonl",
                   "{\"prompt\": \"a red fox\", \"seed\": 42}\n"
                   "{\"prompt\": \"a lighthouse\", \"negative_prompt\": \"photo\"}\n"
                   "{\"prompt\": \"ramen\", \"negative_prompt\": null, \"seed\": 18446744073709551615}\n");
    fz::write_file(
        d + "/prompts.csv",
        "prompt,negative_prompt,text\n\"a red fox, in snow\",,x\nlighthouse,\"photo, \"\"real\"\"\",y\n");
    fz::write_file(d + "/prompts.data", "one\ntwo\n");
    std::filesystem::create_directories(d + "/sub");
    return d;
  }();
  return dir;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

void check_valid(const JobSpec& spec, const std::string& text) {
  FUZZ_CHECK(spec.prompts != nullptr, "a valid job has a prompt list");
  FUZZ_CHECK(spec.num_prompts() >= 1, "a valid job has at least one prompt");
  FUZZ_CHECK(spec.yaml_text == text, "yaml_text is the input");
  FUZZ_CHECK(is_hex64(spec.prompts_sha256), spec.prompts_sha256);
  FUZZ_CHECK(spec.images_per_prompt >= 1, std::to_string(spec.images_per_prompt));
  FUZZ_CHECK(spec.steps >= 1, std::to_string(spec.steps));
  FUZZ_CHECK(spec.width > 0 && spec.width % 8 == 0 && spec.height > 0 && spec.height % 8 == 0, "size");
  FUZZ_CHECK(!spec.model.empty() && !spec.output.empty(), "model and output are required");
  const auto decoder = spec.resolved_decoder();
  FUZZ_CHECK(decoder == JobSpec::Decoder::kFull || decoder == JobSpec::Decoder::kTiny, "resolved decoder");
  for (size_t i = 0; i < spec.num_prompts(); ++i) {
    (void)spec.prompts->prompt(i).size();
    (void)spec.negative_for(i).size();
  }

  const std::string canonical = spec.to_canonical_json();
  const auto json = nlohmann::json::parse(canonical, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(json.is_object() && json.contains("image") && json.contains("run"), canonical);
  const std::string id = spec.identity("model-identity");
  FUZZ_CHECK(is_hex64(id), id);
  FUZZ_CHECK(id == spec.identity("model-identity"), "identity is deterministic");

  auto plan = JobPlan::build(spec);
  if (!plan.is_ok()) {
    FUZZ_CHECK(plan.status().code() == StatusCode::kInvalidArgument, fz::describe(plan.status()));
    return;
  }
  FUZZ_CHECK(plan->num_prompts() == spec.num_prompts(), "plan prompts");
  FUZZ_CHECK(plan->num_items() == spec.num_items(), "plan items");
  const auto& texts = plan->texts();
  for (uint64_t p = 0; p < plan->num_prompts(); ++p) {
    FUZZ_CHECK(texts.positive_id(p) < texts.size(), "positive id");
    FUZZ_CHECK(texts.text(texts.positive_id(p)) == plan->prompt_text(p), "positive text");
    const uint32_t neg = texts.negative_id(p);
    if (neg == sdxlb::UniqueTexts::kNone) {
      FUZZ_CHECK(plan->negative_text(p).empty(), "kNone means an empty negative");
    } else {
      FUZZ_CHECK(neg < texts.size() && texts.text(neg) == plan->negative_text(p), "negative text");
    }
  }
  const uint64_t n = plan->num_items();
  for (uint64_t i : {uint64_t{0}, n / 2, n - 1}) {
    const auto item = plan->item(i);
    FUZZ_CHECK(item.prompt < plan->num_prompts() && item.image < plan->images_per_prompt(), "item");
    const auto own = plan->prompts().seed(item.prompt);
    FUZZ_CHECK(item.seed == (own ? *own + item.image : spec.seed + i), "item seed");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  JobLoadOptions options;
  options.check_paths = false;
  auto spec = JobSpec::parse(text, "job.yaml", base_dir(), options);
  if (spec.is_ok()) {
    check_valid(*spec, text);
  } else {
    const auto code = spec.status().code();
    FUZZ_CHECK(code == StatusCode::kInvalidArgument || code == StatusCode::kIoError,
               fz::describe(spec.status()));
    FUZZ_CHECK(!spec.status().message().empty(), "an error has a message");
  }
  return 0;
}
