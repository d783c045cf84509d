// ClipTokenizer: the CLIP byte-level BPE tokenizer of SDXL's `tokenizer/` and `tokenizer_2/` folders, giving
// the same ids as transformers' CLIPTokenizer (the `tokenizers`-backed one of transformers 5) called with
// padding="max_length", max_length=model_max_length, truncation=True.
//
// The pipeline it reproduces, quirks included:
//   1. Added tokens (the special tokens from tokenizer_config.json / special_tokens_map.json) that are not
//      "normalized" are cut out of the raw text first (leftmost-longest). SDXL's tokenizer_2 pads with "!",
//      which makes "!" such a token: a "!" in the prompt becomes id 0 there, while tokenizer 1 merges "!!".
//   2. Each remaining piece is normalized: NFC, every run of \s becomes one " ", then lowercase. There is no
//      HTML unescaping ("&amp;" stays three tokens) and no ftfy.
//   3. "Normalized" added tokens are cut out of the normalized text.
//   4. Pre-tokenization: the CLIP regex
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      keeps its matches and drops the rest (whitespace); then the byte-level GPT-2 regex splits each match
//      again (it only changes "<|startoftext|>" typed in another case, which reaches this step).
//   5. BPE over the bytes (mapped to the GPT-2 byte alphabet) with "</w>" on the last symbol, merging the
//      lowest-rank pair first and, among equal ranks, the leftmost.
//   6. Truncation to max_length - 2 tokens, then BOS ... EOS, then padding with the pad token.
//
// Thread-safety: a loaded ClipTokenizer is immutable except for its per-word BPE cache, which a mutex
// guards; encode() and tokenize() may be called from many threads at once. The object is movable, not
// copyable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// A token matched in the text before the BPE model runs (a special token), as the tokenizer resolved it.
struct ClipAddedToken {
  std::string content;      ///< the literal text
  int32_t id = 0;           ///< the id it encodes to
  bool normalized = false;  ///< matched in the normalized (lowercased...) text rather than the raw text
  bool special = false;     ///< a special token (bos/eos/unk/pad/... or marked special)
};

class ClipTokenizer {
 public:
  /// Loads vocab.json, merges.txt and (when present) tokenizer_config.json and special_tokens_map.json from
  /// `folder`. Errors name the file (and the line, for merges.txt): NotFound for a missing vocab.json or
  /// merges.txt, DataLoss for a corrupt one, InvalidArgument for a config that transformers would reject or
  /// that this implementation does not cover (e.g. lstrip/rstrip/single_word added tokens).
  static StatusOr<ClipTokenizer> load(const std::string& folder);

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

  /// Exactly max_length() ids: BOS, the text's tokens (truncated to max_length() - 2), EOS, then pad ids.
  std::vector<int32_t> encode(const std::string& text) const;

  /// The text's token ids alone: no BOS/EOS, no truncation, no padding. Invalid UTF-8 bytes are read as
  /// U+FFFD each.
  std::vector<int32_t> tokenize(const std::string& text) const;

  int32_t bos_id() const { return bos_id_; }             ///< <|startoftext|> (49406 in SDXL)
  int32_t eos_id() const { return eos_id_; }             ///< <|endoftext|> (49407 in SDXL)
  int32_t pad_id() const { return pad_id_; }             ///< 49407 for `tokenizer`, 0 ("!") for `tokenizer_2`
  int max_length() const { return max_length_; }         ///< model_max_length (77 in SDXL)
  size_t vocab_size() const { return vocab_.size(); }    ///< entries of vocab.json
  const std::string& folder() const { return folder_; }  ///< where it was loaded from
  /// The added tokens matched in the text, in no particular order.
  const std::vector<ClipAddedToken>& added_tokens() const { return added_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  struct Cache;

  ClipTokenizer();
  void encode_piece(const std::u32string& normalized, std::vector<int32_t>* ids) const;
  void encode_word(const std::string& bytes, std::vector<int32_t>* ids) const;
  std::vector<int32_t> bpe(const std::string& bytes) const;

  std::string folder_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  int32_t byte_ids_[256] = {};                  // id of each byte's symbol
  int32_t byte_end_ids_[256] = {};              // id of each byte's symbol + "</w>"
  std::vector<ClipAddedToken> added_;
  std::vector<std::u32string> raw_matchers_;  // contents of non-normalized added tokens
  std::vector<int32_t> raw_ids_;
  std::vector<std::u32string> norm_matchers_;  // normalized contents of normalized added tokens
  std::vector<int32_t> norm_ids_;
  int32_t bos_id_ = 0, eos_id_ = 0, pad_id_ = 0;
  int max_length_ = 77;
  std::unique_ptr<Cache> cache_;
};

}  // namespace sdxlb
