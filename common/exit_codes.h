// Process exit codes of sdxl-batch, stable for scripts (documented in the README).
#pragma once

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
  }
  return kExitInternal;
}

}  // namespace sdxlb
