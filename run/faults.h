// Faults: the seam through which tests make a real process fail at a chosen moment (an Env in leveldb's
// sense). The job runner builds one from the environment variable SDXLB_FAULT and hands it to both roles
// through the RunContext; nothing reads a global in the hot loop. SDXLB_FAULT is a comma-separated list of:
//   kill_rank=R         the rank that kills itself with SIGKILL ...
//   kill_after=N        ... once it has rendered (worker) or received reports of (coordinator) N items
//   nan_items=I:J:K     items whose latents are replaced by NaN before decoding (to test failed items)
//   oom_batches=N       the first N batches a worker renders fail as out of memory (to test the fallback)
// Unset in production: every query then answers "no fault". Immutable after parsing, so it may be read
// from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "common/status.h"

namespace sdxlb {

class Faults {
 public:
  /// No faults.
  Faults() = default;
  /// Parses a SDXLB_FAULT value. kInvalidArgument names an unknown key or a bad value.
  static StatusOr<Faults> parse(const std::string& spec);
  /// From $SDXLB_FAULT (no faults when unset).
  static StatusOr<std::shared_ptr<const Faults>> from_environment();

  /// SIGKILLs this process when `rank` and `count` match the plan.
  void maybe_kill(int rank, int64_t count) const;
  bool nan_item(int64_t item) const { return nan_items_.count(item) != 0; }
  int64_t oom_batches() const { return oom_batches_; }

 private:
  int kill_rank_ = -1;
  int64_t kill_after_ = -1;
  std::set<int64_t> nan_items_;
  int64_t oom_batches_ = 0;
};

}  // namespace sdxlb
