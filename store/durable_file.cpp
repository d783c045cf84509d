#include "store/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sdxlb {
namespace {

std::string os_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

Status sync_fd_of(const std::string& path, int flags, const char* what) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return io_error(os_error(std::string("cannot open ") + what, path));
  int rc = ::fsync(fd);
  // Some file systems refuse fsync on folders (EINVAL); the rename is then as durable as they allow.
  if (rc != 0 && !(errno == EINVAL && (flags & O_DIRECTORY))) {
    Status st = io_error(os_error("fsync failed for", path));
    ::close(fd);
    return st;
  }
  ::close(fd);
  return Status::ok();
}

}  // namespace

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status sync_file(const std::string& path) {
  return sync_fd_of(path, O_RDONLY, "file");
}

Status sync_dir(const std::string& path) {
  return sync_fd_of(path, O_RDONLY | O_DIRECTORY, "folder");
}

Status publish_file(const std::string& from, const std::string& to) {
  SDXLB_RETURN_IF_ERROR(sync_file(from));
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    return io_error("cannot rename " + from + " to " + to + ": " + std::strerror(errno));
  }
  return sync_dir(parent_dir(to));
}

Status write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(os_error("cannot create", tmp));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = io_error(os_error("cannot write", tmp));
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  bool synced = ::fsync(fd) == 0;
  Status st = synced ? Status::ok() : io_error(os_error("cannot flush", tmp));
  if (::close(fd) != 0 && st.is_ok()) st = io_error(os_error("cannot close", tmp));
  if (!st.is_ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = io_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
    ::unlink(tmp.c_str());
    return st;
  }
  return sync_dir(parent_dir(path));
}

}  // namespace sdxlb
