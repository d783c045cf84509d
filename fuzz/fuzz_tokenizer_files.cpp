// libFuzzer target: the CLIP tokenizer's file loaders (vocab.json, merges.txt, tokenizer_config.json,
// special_tokens_map.json).
//
// The input is cut at each "\n@@@@\n" into up to four parts, written in that order as the four files of a
// tokenizer folder (a file whose part is missing is absent; the corpus files are real folders joined this
// way). ClipTokenizer::load must either fail with NotFound / DataLoss / InvalidArgument and a message, or
// give a tokenizer that encodes a few texts into BOS + tokens + EOS + padding, with ids that are values of
// vocab.json or ids of added tokens.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz/fuzz_util.h"
#include "pipeline/text/clip_tokenizer.h"

namespace {

using sdxlb::ClipTokenizer;
using sdxlb::StatusCode;
namespace fz = sdxlb::fuzz;

constexpr std::string_view kSeparator = "\n@@@@\n";
const char* const kFiles[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"};
const char* const kTexts[] = {
    "a photo of a cat!!",
    "<|startoftext|>Hello<|endoftext|>  WORLD <|ENDOFTEXT|>",
    "it's 're 've 'll 123 4.5 \xC3\xBCn\xC3\xAF\xE2\x80\x8B \xE6\x97\xA5 \xF0\x9F\x99\x82 \xFF\xC0!",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = fz::scratch_dir();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t start = 0;
  for (size_t k = 0; k < 4; ++k) {
    const std::string path = dir + "/" + kFiles[k];
    if (start > input.size()) {
      fz::remove_file(path);
      continue;
    }
    size_t end = k == 3 ? std::string_view::npos : input.find(kSeparator, start);
    if (end == std::string_view::npos) end = input.size();
    fz::write_file(path, input.substr(start, end - start));
    start = end + kSeparator.size();
  }

  auto tok = ClipTokenizer::load(dir);
  if (!tok.is_ok()) {
    const auto code = tok.status().code();
    FUZZ_CHECK(code == StatusCode::kNotFound || code == StatusCode::kDataLoss ||
                   code == StatusCode::kInvalidArgument,
               fz::describe(tok.status()));
    FUZZ_CHECK(!tok.status().message().empty(), "an error has a message");
    return 0;
  }
  // The ids a text may encode to: vocab.json's values (it loaded, so it is an object of integers; a repeated
  // key keeps its last value, as nlohmann's parser does too) and the added tokens' ids.
  std::unordered_set<int64_t> known;
  const auto vocab = nlohmann::json::parse(input.substr(0, input.find(kSeparator)), nullptr, false);
  FUZZ_CHECK(vocab.is_object(), "a loaded vocab.json is an object");
  for (const auto& [token, id] : vocab.items()) known.insert(id.get<int64_t>());
  for (const auto& a : tok->added_tokens()) known.insert(a.id);
  const size_t n = static_cast<size_t>(tok->max_length());
  FUZZ_CHECK(n >= 2, "max_length " + std::to_string(n));
  for (const char* text : kTexts) {
    const std::vector<int32_t> ids = tok->tokenize(text);
    for (int32_t id : ids)
      FUZZ_CHECK(known.count(id) == 1, "id " + std::to_string(id) + " is not a known id");
    const std::vector<int32_t> enc = tok->encode(text);
    FUZZ_CHECK(enc.size() == n && enc[0] == tok->bos_id(), "encode gives BOS + max_length - 1 ids");
    const size_t kept = std::min(ids.size(), n - 2);
    FUZZ_CHECK(std::equal(ids.begin(), ids.begin() + kept, enc.begin() + 1), "encode = BOS + tokenize ...");
    FUZZ_CHECK(enc[1 + kept] == tok->eos_id(), "... + EOS ...");
    for (size_t i = 2 + kept; i < n; ++i) FUZZ_CHECK(enc[i] == tok->pad_id(), "... + padding");
  }
  return 0;
}
