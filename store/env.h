// Env: the seam through which the store touches files (an Env in leveldb's sense).
//
// Every file operation of the store goes through the current Env: the HDF5 files (segments, index.h5, the
// embedding cache) through an HDF5 file driver that calls it for each read, write, truncate and sync
// (store/h5_env_driver.h), and the publishing steps (durable_file.h: write, fsync, rename) and clean-ups
// (removing temporary files, --overwrite, moving corrupt segments aside) directly. In production it is the
// POSIX one; tests install their own to inject faults (ENOSPC on the Nth write, EIO on reads, a failed
// rename, a crash between a write and its rename) and check that nothing is lost and nothing corrupt is
// served.
//
// The calls mirror POSIX: they return -1 and set errno on failure. The current Env is process-wide; switch it
// (set_env / ScopedEnv) only while no store object is open. A file keeps the Env it was opened with.
#pragma once

#include <sys/types.h>

#include <string>

namespace sdxlb {

class Env {
 public:
  virtual ~Env() = default;

  virtual int open(const std::string& path, int flags, mode_t mode);
  virtual int close(int fd);
  virtual ssize_t pread(int fd, void* buf, size_t count, off_t offset);
  virtual ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset);
  virtual int fsync(int fd);
  virtual int ftruncate(int fd, off_t length);
  virtual int rename(const std::string& from, const std::string& to);
  virtual int unlink(const std::string& path);
  virtual int rmdir(const std::string& path);

  /// The POSIX Env (the default).
  static Env& posix();
};

/// The current Env.
Env& env();

/// Installs `e` (nullptr: the POSIX one) and returns the previous one.
Env* set_env(Env* e);

/// Installs an Env for the life of a scope (tests).
class ScopedEnv {
 public:
  explicit ScopedEnv(Env* e) : previous_(set_env(e)) {}
  ~ScopedEnv() { set_env(previous_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  Env* previous_;
};

/// Writes all of `count` bytes at `offset` through `e`, retrying short writes and EINTR. Returns false with
/// errno set on failure.
bool write_fully(Env& e, int fd, const void* buf, size_t count, off_t offset);

/// Removes `path` and, when it is a folder, everything under it, through the current Env (like
/// std::filesystem::remove_all). Returns an empty string on success (a missing path included), else the
/// path that could not be removed and the OS reason.
std::string remove_tree(const std::string& path);

}  // namespace sdxlb
