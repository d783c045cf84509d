#include "jobs/sha256.h"

#include <openssl/evp.h>

namespace sdxlb {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  buf_.reserve(kBufBytes);
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(ctx_);
}

void Sha256::update(const void* data, size_t n) {
  if (buf_.size() + n > kBufBytes) flush();
  if (n >= kBufBytes) {
    EVP_DigestUpdate(ctx_, data, n);
  } else {
    buf_.append(static_cast<const char*>(data), n);
  }
}

void Sha256::update_u64(uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  update(b, 8);
}

void Sha256::update_field(std::string_view s) {
  update_u64(s.size());
  update(s);
}

void Sha256::flush() {
  if (!buf_.empty()) EVP_DigestUpdate(ctx_, buf_.data(), buf_.size());
  buf_.clear();
}

std::string Sha256::hex() {
  flush();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::string Sha256::of(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.hex();
}

}  // namespace sdxlb
