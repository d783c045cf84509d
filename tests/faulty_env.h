// A fault-injecting Env for the store's tests (store/env.h): fails the calls a test plans on the files whose
// path contains a given string (ENOSPC and EIO on writes and reads, a failed fsync or rename, a process that
// dies between a write and its rename) and counts the matching calls. Test code only.
#pragma once

#include <errno.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "store/env.h"

namespace sdxlb::testing {

// An Env that fails the calls a test plans, on files whose path contains `match`, and counts them.
class FaultyEnv : public Env {
 public:
  explicit FaultyEnv(std::string match) : match_(std::move(match)) {}

  // Plans (-1: never). "from" plans fail that call and every later one (a disk that stays full); "once"
  // plans fail only that call.
  int64_t fail_writes_from = -1;
  int64_t fail_write_once = -1;
  int write_errno = ENOSPC;
  int64_t fail_reads_from = -1;
  int64_t fail_read_once = -1;
  int read_errno = EIO;
  bool fail_rename = false;
  bool fail_fsync = false;
  bool crash_in_rename = false;  // _exit(86) instead of renaming: a process killed between write and rename

  // Counts of the matching calls made so far.
  int64_t writes = 0, reads = 0, renames = 0;

  int open(const std::string& path, int flags, mode_t mode) override {
    const int fd = Env::open(path, flags, mode);
    if (fd >= 0) paths_[fd] = path;
    return fd;
  }
  int close(int fd) override {
    paths_.erase(fd);
    return Env::close(fd);
  }
  ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) override {
    if (matches(fd)) {
      const int64_t k = writes++;
      if ((fail_writes_from >= 0 && k >= fail_writes_from) || k == fail_write_once) {
        errno = write_errno;
        return -1;
      }
    }
    return Env::pwrite(fd, buf, count, offset);
  }
  ssize_t pread(int fd, void* buf, size_t count, off_t offset) override {
    if (matches(fd)) {
      const int64_t k = reads++;
      if ((fail_reads_from >= 0 && k >= fail_reads_from) || k == fail_read_once) {
        errno = read_errno;
        return -1;
      }
    }
    return Env::pread(fd, buf, count, offset);
  }
  int fsync(int fd) override {
    if (fail_fsync && matches(fd)) {
      errno = EIO;
      return -1;
    }
    return Env::fsync(fd);
  }
  int rename(const std::string& from, const std::string& to) override {
    if (from.find(match_) != std::string::npos) {
      ++renames;
      if (crash_in_rename) _exit(86);
      if (fail_rename) {
        errno = EXDEV;
        return -1;
      }
    }
    return Env::rename(from, to);
  }

 private:
  bool matches(int fd) const {
    auto it = paths_.find(fd);
    return it != paths_.end() && it->second.find(match_) != std::string::npos;
  }
  std::string match_;
  std::map<int, std::string> paths_;
};

}  // namespace sdxlb::testing
