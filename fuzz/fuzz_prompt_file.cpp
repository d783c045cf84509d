// libFuzzer target: the prompt file readers (txt, jsonl, csv).
//
// The first byte of the input picks the format (its value & 3): '0' txt, '1' jsonl, '2' csv with the
// negative column "negative_prompt", '3' csv without a negative column; the rest is the file. (One format
// per execution: each load allocates its 1 MiB read buffers, which ASan maps fresh every time, so loading
// all four formats per input made the target four times slower.) load_prompt_file reads a path (it streams
// files of millions of prompts), so the file goes to one path in a scratch folder of this process.
//
// A success must hold at least one prompt that the format can produce; a failure must be InvalidArgument
// with a message that starts with the file's path.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "jobs/prompt_source.h"

namespace {

using sdxlb::PromptFileOptions;
using sdxlb::PromptFormat;
using sdxlb::PromptList;
using sdxlb::StatusCode;
namespace fz = sdxlb::fuzz;

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; });
}

void check(const std::string& path, const PromptFileOptions& options) {
  auto list = sdxlb::load_prompt_file(path, options);
  const char* format = sdxlb::prompt_format_name(options.format);
  if (!list.is_ok()) {
    FUZZ_CHECK(list.status().code() == StatusCode::kInvalidArgument,
               std::string(format) + ": " + fz::describe(list.status()));
    FUZZ_CHECK(list.status().message().rfind(path, 0) == 0,
               std::string(format) + ": the message starts with the path: " + list.status().message());
    return;
  }
  const PromptList& l = *list;
  FUZZ_CHECK(!l.empty(), format);
  size_t bytes = 0;
  for (size_t i = 0; i < l.size(); ++i) {
    const std::string_view p = l.prompt(i);
    bytes += p.size();
    if (l.has_negative(i)) bytes += l.negative_or(i, {}).size();
    switch (options.format) {
      case PromptFormat::kTxt:
        FUZZ_CHECK(p.find('\n') == std::string_view::npos && !is_blank(p), "txt: one non-blank line");
        FUZZ_CHECK(!l.has_negative(i) && !l.seed(i), "txt: no negatives or seeds");
        break;
      case PromptFormat::kCsv:
        FUZZ_CHECK(!l.seed(i), "csv: no seeds");
        if (options.csv_negative_column.empty()) FUZZ_CHECK(!l.has_negative(i), "csv: no negative column");
        if (l.has_negative(i))
          FUZZ_CHECK(!l.negative_or(i, "x").empty(), "csv: an empty cell is no negative");
        break;
      case PromptFormat::kJsonl:
        break;
    }
  }
  FUZZ_CHECK(bytes == l.text_bytes(), "text_bytes counts every text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fz::scratch_dir() + "/prompts";
  if (size == 0) return 0;
  fz::write_file(path, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  PromptFileOptions o;
  o.max_errors = 5;
  switch (data[0] & 3) {
    case 0:
      o.format = PromptFormat::kTxt;
      break;
    case 1:
      o.format = PromptFormat::kJsonl;
      break;
    case 2:
      o.format = PromptFormat::kCsv;
      o.csv_negative_column = "negative_prompt";
      break;
    default:
      o.format = PromptFormat::kCsv;
      break;
  }
  check(path, o);
  return 0;
}
