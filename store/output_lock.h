// OutputLock: one run at a time per output folder, on local disks and on shared cluster filesystems (NFS,
// Lustre), where flock() is not reliable: `<out>/lock` is created with O_CREAT|O_EXCL and holds who owns it
// (host, pid, SLURM job id and restart count, run id, start time). While it is held, a thread touches the
// file every heartbeat_s seconds.
//
// A lock is stale, and is taken over with a warning, when its holder is on this host and its pid is gone,
// when it is a previous incarnation of this SLURM job (same job id, lower restart count: SLURM ends a job's
// processes before it starts the job again), or when it has not been touched for stale_after_s seconds (a
// dead node). Otherwise acquire() refuses with kFailedPrecondition naming the holder and what to do.
// The destructor stops the heartbeat and removes the lock file if it is still ours. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace sdxlb {

struct OutputLockOptions {
  double heartbeat_s = 15;
  double stale_after_s = 120;
};

class OutputLock {
 public:
  /// Takes `<output_dir>/lock` (the folder must exist). `run_id` is recorded. Errors: kFailedPrecondition
  /// (held by a live run: the message names it), kIoError. `*warning` (if given) receives a line when a
  /// stale lock was taken over.
  static StatusOr<std::unique_ptr<OutputLock>> acquire(const std::string& output_dir,
                                                       const std::string& run_id,
                                                       const OutputLockOptions& options = {},
                                                       std::string* warning = nullptr);
  /// Whether acquire() would get the lock, taking nothing (for `sdxl-batch check`): OK when there is no
  /// lock file or its holder is gone (acquire() would take it over); else acquire()'s kFailedPrecondition.
  static Status check_free(const std::string& output_dir, const OutputLockOptions& options = {});
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  const std::string& path() const;
  /// Removes the lock file now (if still ours); the destructor then does nothing.
  void release();

  struct State;

 private:
  explicit OutputLock(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace sdxlb
