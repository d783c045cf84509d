#include "jobs/text_encoding.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>

namespace sdxlb {
namespace {

constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighBits = 0x8080808080808080ull;

// Whether all eight bytes of v are ASCII and none is zero (the classic has-zero-byte test, plus high bits).
bool plain_ascii8(uint64_t v) {
  return ((v | ((v - kOnes) & ~v)) & kHighBits) == 0;
}

}  // namespace

TextFault find_text_fault(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (n - i >= 8) {
      uint64_t v;
      std::memcpy(&v, p + i, 8);
      if (plain_ascii8(v)) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c == 0) return {TextFault::Kind::kNul, i, c};
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07u;
    } else {  // a continuation byte without a lead, 0xC0/0xC1 (overlong) or 0xF5.. (past U+10FFFF)
      return {TextFault::Kind::kInvalidUtf8, i, c};
    }
    if (n - i < len) return {TextFault::Kind::kInvalidUtf8, i, c};
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = p[i + k];
      if ((d & 0xC0) != 0x80) return {TextFault::Kind::kInvalidUtf8, i, c};
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return {TextFault::Kind::kInvalidUtf8, i, c};
    i += len;
  }
  return {};
}

const char* wide_encoding(std::string_view head) {
  auto starts = [&](std::string_view bom) { return head.substr(0, bom.size()) == bom; };
  using namespace std::string_view_literals;
  // UTF-32LE's mark begins with UTF-16LE's: test it first.
  if (starts("\xFF\xFE\0\0"sv) || starts("\0\0\xFE\xFF"sv)) return "UTF-32";
  if (starts("\xFF\xFE"sv) || starts("\xFE\xFF"sv)) return "UTF-16";
  // Without a mark: ASCII text in UTF-16LE has a NUL in every odd byte, in UTF-32LE in bytes 1..3 of each
  // four (and the other way round for BE). UTF-8 text has no NUL bytes at all, so "at least half" is safe.
  const size_t n = std::min(head.size(), kWideSniffBytes);
  // A whole file (shorter than the sample) of odd length is not UTF-16, nor UTF-32 unless a multiple of 4.
  const bool whole = head.size() < kWideSniffBytes;
  size_t zeros[4] = {0, 0, 0, 0}, count[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < n; ++i) {
    ++count[i % 4];
    zeros[i % 4] += head[i] == '\0';
  }
  auto mostly_nul = [&](std::initializer_list<int> residues) {
    size_t z = 0, c = 0;
    for (int r : residues) z += zeros[r], c += count[r];
    return c > 0 && z * 2 >= c;
  };
  if (n >= 4 && !(whole && n % 4 != 0)) {
    if (mostly_nul({2}) && mostly_nul({3}) && !mostly_nul({0})) return "UTF-32LE";
    if (mostly_nul({0}) && mostly_nul({1}) && !mostly_nul({3})) return "UTF-32BE";
  }
  if (n >= 2 && !(whole && n % 2 != 0)) {
    if (mostly_nul({1, 3}) && !mostly_nul({0, 2})) return "UTF-16LE";
    if (mostly_nul({0, 2}) && !mostly_nul({1, 3})) return "UTF-16BE";
  }
  return nullptr;
}

std::string hex_byte(unsigned char byte) {
  const char* digits = "0123456789ABCDEF";
  return std::string("0x") + digits[byte >> 4] + digits[byte & 15];
}

}  // namespace sdxlb
