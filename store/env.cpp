#include "store/env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

namespace sdxlb {
namespace {

std::atomic<Env*> g_env{nullptr};

}  // namespace

int Env::open(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

int Env::close(int fd) {
  return ::close(fd);
}

ssize_t Env::pread(int fd, void* buf, size_t count, off_t offset) {
  return ::pread(fd, buf, count, offset);
}

ssize_t Env::pwrite(int fd, const void* buf, size_t count, off_t offset) {
  return ::pwrite(fd, buf, count, offset);
}

int Env::fsync(int fd) {
  return ::fsync(fd);
}

int Env::ftruncate(int fd, off_t length) {
  return ::ftruncate(fd, length);
}

int Env::rename(const std::string& from, const std::string& to) {
  return std::rename(from.c_str(), to.c_str());
}

int Env::unlink(const std::string& path) {
  return ::unlink(path.c_str());
}

int Env::rmdir(const std::string& path) {
  return ::rmdir(path.c_str());
}

Env& Env::posix() {
  static Env posix_env;
  return posix_env;
}

Env& env() {
  Env* e = g_env.load(std::memory_order_acquire);
  return e ? *e : Env::posix();
}

Env* set_env(Env* e) {
  return g_env.exchange(e, std::memory_order_acq_rel);
}

bool write_fully(Env& e, int fd, const void* buf, size_t count, off_t offset) {
  const auto* p = static_cast<const char*>(buf);
  while (count > 0) {
    const ssize_t n = e.pwrite(fd, p, count, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {  // no progress and no error: treat as a full device rather than spin
      errno = ENOSPC;
      return false;
    }
    p += n;
    count -= static_cast<size_t>(n);
    offset += n;
  }
  return true;
}

std::string remove_tree(const std::string& path) {
  namespace fs = std::filesystem;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return "";
    return path + ": " + std::strerror(errno);
  }
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    std::vector<std::string> children;
    for (auto it = fs::directory_iterator(path, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      children.push_back(it->path().string());
    }
    if (ec) return path + ": " + ec.message();
    for (const auto& child : children) {
      std::string err = remove_tree(child);
      if (!err.empty()) return err;
    }
    if (env().rmdir(path) != 0 && errno != ENOENT) return path + ": " + std::strerror(errno);
    return "";
  }
  if (env().unlink(path) != 0 && errno != ENOENT) return path + ": " + std::strerror(errno);
  return "";
}

}  // namespace sdxlb
