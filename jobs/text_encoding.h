// Text encoding checks for job files and prompt files. The only text accepted is well-formed UTF-8 without
// NUL bytes: a NUL cuts a prompt short in the tokenizer, and invalid UTF-8 cannot be written to the output's
// JSON and HDF5 strings, so either would fail every item of a job long after validation. UTF-16 and UTF-32
// files are recognised so that the error can say how to convert them.
//
// The checks run on every prompt of files with millions of lines: they are linear, allocate nothing, and
// test eight ASCII bytes at a time.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sdxlb {

/// The first problem in a text.
struct TextFault {
  enum class Kind {
    kNone,         ///< well-formed UTF-8 without NUL bytes
    kNul,          ///< a NUL byte (U+0000)
    kInvalidUtf8,  ///< a byte that does not start or continue a well-formed UTF-8 sequence
  };
  Kind kind = Kind::kNone;
  size_t offset = 0;       ///< byte offset of the NUL, or of the first byte of the bad sequence
  unsigned char byte = 0;  ///< kInvalidUtf8: the byte at `offset`

  explicit operator bool() const { return kind != Kind::kNone; }
};

/// The first NUL byte or invalid UTF-8 sequence in `s` (overlong forms, surrogates U+D800..U+DFFF and code
/// points past U+10FFFF are invalid), or kNone.
TextFault find_text_fault(std::string_view s);

/// How many bytes from the start of a file wide_encoding looks at.
constexpr size_t kWideSniffBytes = 4096;

/// The iconv name of the encoding when `head` (the first kWideSniffBytes bytes of a file, or all of a
/// shorter file) is UTF-16 or UTF-32 text: "UTF-16" or "UTF-32" after a byte-order mark; "UTF-16LE",
/// "UTF-16BE", "UTF-32LE" or "UTF-32BE" from the pattern of NUL bytes that mostly-ASCII text has in those
/// encodings. nullptr otherwise (a UTF-8 byte-order mark is UTF-8).
const char* wide_encoding(std::string_view head);

/// "0xE9".
std::string hex_byte(unsigned char byte);

}  // namespace sdxlb
