// libFuzzer target: the CLIP tokenizer on arbitrary text (any bytes: invalid UTF-8 included).
//
// The tokenizers are loaded once, from fuzz/data/tokenizer and fuzz/data/tokenizer_2 (the demo model's, as
// `sdxl-batch make-demo-model` writes them: a byte-level vocabulary with letter-pair merges and SDXL's
// special tokens; tokenizer_2 pads with "!", which makes "!" an added token). SDXLB_FUZZ_TOKENIZERS
// (folders separated by ':') replaces them, e.g. with a full CLIP tokenizer folder.
//
// Each input goes to one of the tokenizers (its length modulo their number): tokenize() twice (the second
// call reads the per-word cache the first one filled) must agree, and encode() must be BOS + the first
// max_length - 2 ids of tokenize() + EOS + padding, with every id known to the tokenizer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "pipeline/text/clip_tokenizer.h"

namespace {

using sdxlb::ClipTokenizer;

std::vector<ClipTokenizer> load_tokenizers() {
  std::vector<std::string> folders;
  if (const char* env = std::getenv("SDXLB_FUZZ_TOKENIZERS"); env && *env) {
    std::string list = env;
    for (size_t start = 0; start <= list.size();) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      if (end > start) folders.push_back(list.substr(start, end - start));
      start = end + 1;
    }
  } else {
    folders = {SDXLB_FUZZ_DATA_DIR "/tokenizer", SDXLB_FUZZ_DATA_DIR "/tokenizer_2"};
  }
  std::vector<ClipTokenizer> out;
  for (const auto& f : folders) {
    auto tok = ClipTokenizer::load(f);
    if (!tok.is_ok()) {
      std::fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", f.c_str(),
                   tok.status().to_string().c_str());
      std::abort();
    }
    out.push_back(std::move(tok).value());
  }
  return out;
}

int32_t max_known_id(const ClipTokenizer& tok) {
  int32_t m = static_cast<int32_t>(tok.vocab_size()) - 1;
  for (const auto& a : tok.added_tokens()) m = std::max(m, a.id);
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ClipTokenizer> tokenizers = load_tokenizers();
  static const std::vector<int32_t> max_ids = [] {
    std::vector<int32_t> m;
    for (const auto& t : tokenizers) m.push_back(max_known_id(t));
    return m;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  // One tokenizer per input, by the input's length (mutations change it, so every tokenizer gets inputs):
  // running all of them on each input made the target that many times slower for the same code.
  {
    const size_t k = size % tokenizers.size();
    const ClipTokenizer& tok = tokenizers[k];
    const std::vector<int32_t> ids = tok.tokenize(text);
    FUZZ_CHECK(tok.tokenize(text) == ids, "tokenize is deterministic (cached words)");
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id <= max_ids[k], "id " + std::to_string(id));

    const std::vector<int32_t> enc = tok.encode(text);
    const size_t n = static_cast<size_t>(tok.max_length());
    FUZZ_CHECK(enc.size() == n, "encode gives max_length ids");
    FUZZ_CHECK(n >= 2 && enc[0] == tok.bos_id(), "BOS first");
    const size_t kept = std::min(ids.size(), n - 2);
    FUZZ_CHECK(std::equal(ids.begin(), ids.begin() + kept, enc.begin() + 1), "encode = BOS + tokenize ...");
    FUZZ_CHECK(enc[1 + kept] == tok.eos_id(), "... + EOS ...");
    for (size_t i = 2 + kept; i < n; ++i) FUZZ_CHECK(enc[i] == tok.pad_id(), "... + padding");
  }
  return 0;
}
