// Test helpers: scratch folders and raw safetensors files built byte by byte (for corruption tests).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace sdxlb::testing {

/// A fresh empty folder under $TMPDIR, removed (recursively) on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl =
        (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + std::string("/sdxlb-test-XXXXXX");
    path_ = mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~ScratchDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

/// A safetensors file: 8-byte little-endian header length, header JSON, data bytes.
inline std::string safetensors_bytes(const std::string& header, const std::string& data,
                                     uint64_t header_len_override = UINT64_MAX) {
  uint64_t n = header_len_override == UINT64_MAX ? header.size() : header_len_override;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

/// Path to the oracle fixtures (env SDXLB_FIXTURES_DIR overrides the build's folder).
inline std::string fixtures_dir() {
  const char* env = std::getenv("SDXLB_FIXTURES_DIR");
  return env ? env : SDXLB_FIXTURES_DIR;
}

/// A fixture model folder (diffusers layout) by name, e.g. "tiny-a".
inline std::string fixture_model_dir(const std::string& name) {
  return fixtures_dir() + "/models/" + name;
}

}  // namespace sdxlb::testing
