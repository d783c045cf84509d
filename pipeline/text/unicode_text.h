// Unicode text primitives for the CLIP tokenizer: UTF-8 decoding, NFC, per-code-point lowercase and the
// character classes (\p{L}, \p{N}, \s) that transformers' CLIPTokenizer uses.
//
// The answers follow the `tokenizers` library that transformers runs on, not one Unicode version: its regex
// engine, lowercase and NFC each carry their own tables. pipeline/text/unicode_data.inc holds those tables;
// it is generated (and checked against the library) by scripts/gen_unicode_data.py. No ICU is needed.
//
// Thread-safety: every function is pure and reads only constant tables; call from any thread.
#pragma once

#include <string>
#include <string_view>

namespace sdxlb::unicode {

/// Decodes UTF-8. Each byte that does not start a well-formed sequence (bad lead byte, truncated or
/// overlong sequence, surrogate, or a value above U+10FFFF) becomes one U+FFFD, and decoding goes on.
std::u32string decode_utf8(std::string_view text);

/// Appends the UTF-8 encoding of `cp` (which must be a Unicode scalar value) to `out`.
void append_utf8(char32_t cp, std::string* out);

/// True for letters (general category L*).
bool is_letter(char32_t cp);
/// True for numbers (general category N*: Nd, Nl and No).
bool is_number(char32_t cp);
/// True for White_Space characters (what the regex \s matches).
bool is_space(char32_t cp);

/// Appends the full lowercase mapping of one code point (one or two code points; no context such as the
/// Greek final sigma is applied, as in Rust's char::to_lowercase).
void append_lowercase(char32_t cp, std::u32string* out);

/// Canonical combining class (0 for starters and for marks the reference NFC does not know).
int combining_class(char32_t cp);

/// Normalization Form C: canonical decomposition, canonical ordering, canonical composition.
std::u32string nfc(const std::u32string& text);

}  // namespace sdxlb::unicode
