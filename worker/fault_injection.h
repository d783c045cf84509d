// Fault injection for tests: the seam through which tests make a real process fail at a chosen moment.
// Read once from the environment variable SDXLB_FAULT, a comma-separated list of:
//   kill_rank=R        the rank that kills itself with SIGKILL ...
//   kill_after=N       ... once it has rendered (worker) or received reports of (coordinator) N items
//   nan_items=I:J:K    items whose latents are replaced by NaN before decoding (to test failed items)
//   oom_batches=N      the first N batches a worker renders fail as out of memory (to test the fallback)
// Unset in production: every query then answers "no fault".
#pragma once

#include <cstdint>
#include <set>

namespace sdxlb {

struct FaultPlan {
  int kill_rank = -1;
  int64_t kill_after = -1;
  std::set<int64_t> nan_items;
  int64_t oom_batches = 0;

  /// The plan from $SDXLB_FAULT (parsed once per process).
  static const FaultPlan& get();
  /// SIGKILLs this process when `rank` and `count` match the plan.
  void maybe_kill(int rank, int64_t count) const;
};

}  // namespace sdxlb
