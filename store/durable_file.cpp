#include "store/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "store/env.h"

namespace sdxlb {
namespace {

std::string os_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

Status sync_fd_of(const std::string& path, int flags, const char* what) {
  Env& e = env();
  int fd = e.open(path, flags, 0);
  if (fd < 0) return io_error(os_error(std::string("cannot open ") + what, path));
  int rc = e.fsync(fd);
  // Some file systems refuse fsync on folders (EINVAL); the rename is then as durable as they allow.
  if (rc != 0 && !(errno == EINVAL && (flags & O_DIRECTORY))) {
    Status st = io_error(os_error("fsync failed for", path));
    e.close(fd);
    return st;
  }
  e.close(fd);
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
  if (env().rename(from, to) != 0) {
    return io_error("cannot rename " + from + " to " + to + ": " + std::strerror(errno));
  }
  return sync_dir(parent_dir(to));
}

Status write_file_atomically(const std::string& path, const std::string& bytes) {
  // The rename would replace whatever is at `path`: a device (as root, /dev/full became a regular file), a
  // FIFO or a folder is not ours to replace.
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0 && !S_ISREG(existing.st_mode)) {
    return io_error("cannot write " + path + ": it exists and is not a regular file (" +
                    (S_ISDIR(existing.st_mode) ? "a folder" : "a device, FIFO or socket") +
                    "); choose a file path");
  }
  const std::string tmp = path + ".tmp";
  Env& e = env();
  int fd = e.open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return io_error(os_error("cannot create", tmp));
  if (!write_fully(e, fd, bytes.data(), bytes.size(), 0)) {
    Status st = io_error(os_error("cannot write", tmp));
    e.close(fd);
    e.unlink(tmp);
    return st;
  }
  bool synced = e.fsync(fd) == 0;
  Status st = synced ? Status::ok() : io_error(os_error("cannot flush", tmp));
  if (e.close(fd) != 0 && st.is_ok()) st = io_error(os_error("cannot close", tmp));
  if (!st.is_ok()) {
    e.unlink(tmp);
    return st;
  }
  if (e.rename(tmp, path) != 0) {
    Status st = io_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
    e.unlink(tmp);
    return st;
  }
  return sync_dir(parent_dir(path));
}

}  // namespace sdxlb
