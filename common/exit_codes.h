// Process exit codes of sdxl-batch, stable for scripts (documented in the README).
#pragma once

#include <cstdio>
#include <cstdlib>

#include "common/status.h"

namespace sdxlb {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,     ///< a bug, or an unexpected library failure
  kExitBadInput = 2,     ///< command line or job file (nothing was written)
  kExitRefused = 3,      ///< the output folder holds another job (use a new folder or --overwrite)
  kExitModelOrIo = 4,    ///< model files missing/corrupt, or a folder not writable
  kExitItemsFailed = 5,  ///< the job finished, but some items failed (listed in the summary and index)
  kExitOutOfMemory = 6,  ///< even the safest plan did not fit
  /// Stopped early by a signal (SIGTERM from a SLURM preemption or time limit, SIGINT, SIGUSR1): finished
  /// work is saved and index.h5 written; resubmit the same command to resume.
  kExitStopped = 7,
  /// A worker stopped answering (hung, or its node is gone) for worker_timeout_s: the rest is saved and
  /// index.h5 written; resubmit the same command to resume.
  kExitWorkerLost = 8,
};

inline int exit_code_for(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnimplemented:
      return kExitBadInput;
    case StatusCode::kFailedPrecondition:
      return kExitRefused;
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
    case StatusCode::kIoError:
      return kExitModelOrIo;
    case StatusCode::kResourceExhausted:
      return kExitOutOfMemory;
    case StatusCode::kInternal:
      return kExitInternal;
    case StatusCode::kCancelled:
      return kExitStopped;
  }
  return kExitInternal;
}

/// The CLI's one error line on stderr: "sdxl-batch: error: <status>".
inline void print_error(const Status& s) {
  std::fprintf(stderr, "sdxl-batch: error: %s\n", s.to_string().c_str());
}

/// print_error(s), then the exit code for it.
inline int report_error(const Status& s) {
  print_error(s);
  return exit_code_for(s);
}

/// Writes `code` to the file named by $SDXLB_EXIT_CODE_FILE, when set: for launchers that report another
/// rank's code than the coordinator's (srun reports the highest of all tasks; a rank killed after MPI_Abort
/// reports 137). Rank 0 calls it just before it exits or aborts.
inline void record_exit_code(int code) {
  const char* path = std::getenv("SDXLB_EXIT_CODE_FILE");
  if (!path || !*path) return;
  if (std::FILE* f = std::fopen(path, "w")) {
    std::fprintf(f, "%d\n", code);
    std::fclose(f);
  }
}

}  // namespace sdxlb
