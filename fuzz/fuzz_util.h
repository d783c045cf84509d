// Helpers shared by the libFuzzer targets: a per-process scratch folder, file writing, and FUZZ_CHECK, which
// turns a broken invariant into a crash that libFuzzer records (with the input that caused it).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/status.h"

#define FUZZ_CHECK(cond, what)                                                                \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                                \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace sdxlb::fuzz {

/// A folder of this process's own (in $TMPDIR, else /dev/shm, else /tmp), removed at exit. Created on first
/// use; the same folder for the life of the process, so that the targets reuse their file paths.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) {
      base = t;
    } else if (std::filesystem::is_directory("/dev/shm")) {
      base = "/dev/shm";
    }
    std::string tmpl = base + "/sdxlb-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string removed_at_exit;
    removed_at_exit = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return tmpl;
  }();
  return dir;
}

/// Writes `bytes` to `path` (replacing it); aborts when the write fails (a broken harness, not a finding).
inline void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

/// Removes `path` when it exists.
inline void remove_file(const std::string& path) {
  std::remove(path.c_str());
}

/// The status's code and message, for FUZZ_CHECK messages.
inline std::string describe(const Status& st) {
  return st.to_string();
}

}  // namespace sdxlb::fuzz
