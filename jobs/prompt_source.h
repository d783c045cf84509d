// Prompt sources: the prompts of a job, written inline in the job file or read from a .txt, .jsonl or
// .csv file.
//
// A job may hold 10 million prompts, so PromptList keeps every text in one contiguous buffer with a
// 16-byte record per prompt (no std::string per prompt), and the file readers stream the file in chunks
// after one cheap pass that counts lines to reserve memory.
//
// Thread-safety: a PromptList is a value type; its const methods may run concurrently, mutation may not.
// The load functions hold no global state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// The format of a prompt file.
enum class PromptFormat { kTxt, kJsonl, kCsv };

/// "txt", "jsonl" or "csv".
const char* prompt_format_name(PromptFormat format);
/// Parses "txt" | "jsonl" | "csv" (exact, lower case); nullopt for anything else.
std::optional<PromptFormat> parse_prompt_format(std::string_view name);
/// The format implied by a file name's extension (case-insensitive): .txt, .jsonl/.ndjson, .csv;
/// nullopt for any other extension.
std::optional<PromptFormat> prompt_format_from_extension(std::string_view path);

/// The prompts of a job, in job order: each has a positive text, an optional negative text (absent means
/// "use the job's negative_prompt") and an optional seed of its own.
class PromptList {
 public:
  /// The longest text accepted, in bytes (1 GiB - 1); a longer one is surely not a prompt.
  /// The longest prompt or negative prompt, in bytes. CLIP reads 77 tokens (a few hundred characters); a
  /// longer text only costs tokenizer time (super-linear in the length of one word), so 64 KiB is refused.
  static constexpr size_t kMaxTextBytes = size_t{1} << 16;

  /// Reserves room for `prompts` prompts with `text_bytes` bytes of text in all.
  void reserve(size_t prompts, size_t text_bytes);
  /// Appends a prompt. Fails (kInvalidArgument) only when a text is longer than kMaxTextBytes.
  Status add(std::string_view prompt, std::optional<std::string_view> negative = std::nullopt,
             std::optional<uint64_t> seed = std::nullopt);
  /// Frees spare capacity left by reserve().
  void shrink_to_fit();

  /// Number of prompts.
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  /// The positive text of prompt i (i < size()); valid while the list is alive and not appended to.
  std::string_view prompt(size_t i) const {
    const Entry& e = entries_[i];
    return std::string_view(text_.data() + e.offset, e.prompt_len);
  }
  /// Whether prompt i has a negative text of its own (it may be the empty string).
  bool has_negative(size_t i) const { return (entries_[i].neg_len_flags & kHasNegative) != 0; }
  /// Prompt i's own negative text, or `fallback` when it has none.
  std::string_view negative_or(size_t i, std::string_view fallback) const {
    const Entry& e = entries_[i];
    if (!(e.neg_len_flags & kHasNegative)) return fallback;
    return std::string_view(text_.data() + e.offset + e.prompt_len, e.neg_len_flags & kLenMask);
  }
  /// Prompt i's own seed, if it has one.
  std::optional<uint64_t> seed(size_t i) const {
    if (!(entries_[i].neg_len_flags & kHasSeed)) return std::nullopt;
    return seeds_[i];
  }
  /// Whether any prompt has a seed of its own.
  bool any_seed() const { return !seeds_.empty(); }
  /// Bytes of text held (positives and negatives).
  size_t text_bytes() const { return text_.size(); }

 private:
  static constexpr uint32_t kHasNegative = 1u << 31;
  static constexpr uint32_t kHasSeed = 1u << 30;
  static constexpr uint32_t kLenMask = kHasSeed - 1;
  // The negative text (if any) follows the positive one in text_.
  struct Entry {
    uint64_t offset;
    uint32_t prompt_len;
    uint32_t neg_len_flags;
  };
  std::string text_;
  std::vector<Entry> entries_;
  std::vector<uint64_t> seeds_;  // empty until a prompt has its own seed; then one per prompt
};

/// How to read a prompt file.
struct PromptFileOptions {
  PromptFormat format = PromptFormat::kTxt;
  /// CSV only: the header name of the column holding the prompt.
  std::string csv_prompt_column = "prompt";
  /// CSV only: the header name of the column holding the negative prompt; empty: no such column.
  std::string csv_negative_column;
  /// Stop after this many bad records (the message says how many more were skipped).
  size_t max_errors = 20;
};

/// Reads a prompt file.
///  - txt: one prompt per line; blank (whitespace-only) lines are skipped; CRLF and a UTF-8 BOM are handled.
///  - jsonl: one JSON object per line with "prompt" (string), optional "negative_prompt" (string or null)
///    and optional "seed" (integer 0..2^64-1 or null); other fields are ignored; blank lines are skipped.
///  - csv: RFC 4180 with a header row; fields may be quoted ("" for a quote; commas and newlines inside
///    quotes); an empty negative cell means "use the job's negative_prompt"; blank lines are skipped.
/// On success the list holds at least one prompt. On failure: kNotFound naming the path when the file does
/// not exist; kIoError when it cannot be read; kInvalidArgument listing every bad record (up to
/// max_errors), one per line as "<path>:<line>[:<column>]: <what is wrong>; <fix>", or saying the file has
/// no prompts.
StatusOr<PromptList> load_prompt_file(const std::string& path, const PromptFileOptions& options);

}  // namespace sdxlb
