// Sha256: an incremental SHA-256 over OpenSSL's EVP interface, buffered because callers feed many small
// pieces (millions of prompts). Used for job identities and prompt digests.
//
// Thread-safety: one instance per thread; instances are independent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace sdxlb {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  /// Feeds raw bytes.
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  /// Feeds v as 8 little-endian bytes.
  void update_u64(uint64_t v);
  /// Feeds the length (u64) then the bytes, so that a sequence of fields hashes unambiguously.
  void update_field(std::string_view s);
  /// Finishes and returns the 64 lowercase hex digits. Call once.
  std::string hex();

  /// SHA-256 of `data` as hex.
  static std::string of(std::string_view data);

 private:
  static constexpr size_t kBufBytes = 64 * 1024;
  void flush();
  evp_md_ctx_st* ctx_;
  std::string buf_;
};

}  // namespace sdxlb
