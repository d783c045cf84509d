// Fingerprint: a stable 64-bit FNV-1a hash of byte strings, printed as 16 hex digits.
// Used for identities that must be equal across runs and machines (model weights, job settings, prompt
// texts). Not cryptographic: it detects changes, it does not resist forgery.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace sdxlb {

class Fingerprint {
 public:
  /// Mixes in `bytes` followed by its length, so that ("ab","c") and ("a","bc") differ.
  Fingerprint& add(std::string_view bytes) {
    for (unsigned char c : bytes) mix(c);
    uint64_t n = bytes.size();
    for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(n >> (8 * i)));
    return *this;
  }
  uint64_t value() const { return h_; }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h_));
    return buf;
  }

 private:
  void mix(unsigned char c) {
    h_ ^= c;
    h_ *= 0x100000001b3ull;
  }
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace sdxlb
