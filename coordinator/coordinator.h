// The coordinator (rank 0) of the render phase: hands out batches on request, tracks progress and ETA,
// watches the workers, and collects each worker's totals. Workers are ranks 1..N-1 of `comm`.
//
// Stopping early. On a stop signal (StopSignal: SIGTERM, SIGINT, SIGUSR1) the coordinator hands out no more
// work and tells every worker to stop (kStop); each finishes the images it is denoising, publishes its
// segment and says goodbye. A worker that sends nothing for job.worker_timeout_s while it is running (from
// the start of the render phase, then after every image group) is declared lost: the coordinator logs its
// rank and host, stops the others the same way, and returns; the caller writes index.h5 and ends the job
// with kExitWorkerLost (the lost rank's items are not given to another worker, since a hung process that
// wakes up could still publish them). Either way a resubmitted run renders what is missing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/comm.h"
#include "common/status.h"
#include "jobs/item_ranges.h"
#include "run/protocol.h"
#include "run/run_context.h"

namespace sdxlb {

struct RenderSummary {
  int64_t items = 0;     ///< items handed out this run
  int64_t rendered = 0;  ///< stored OK this run
  int64_t failed = 0;    ///< stored as failed this run
  double seconds = 0;
  std::map<int, WorkerReport> workers;  ///< by rank
  std::map<int, Status> fatal;          ///< workers that stopped with an error, by rank
  std::map<int, std::string> lost;      ///< workers declared lost (hung or gone), by rank, with the reason
  /// The stop signal that ended the render early (0: none); see StopSignal.
  int stop_signal = 0;
  bool stopped = false;  ///< stopped early (a signal, or a lost worker)
  /// Seconds from the stop decision to the last worker's goodbye.
  double stop_seconds = 0;
};

/// Where each rank runs, for messages about it.
struct RankInfo {
  std::string host;
  int pid = 0;
};

/// "rank 2 on host node7 (pid 4242)"; "rank 2" when `ranks` does not hold it.
std::string describe_rank(int rank, const std::vector<RankInfo>& ranks);

/// Serves work requests until every worker has stopped. `pending` are the items to render;
/// `ranks` are indexed by rank (may be empty). Errors only for communication failures; worker failures are
/// in the summary (when every worker died with items left, the caller reports the first fatal error).
StatusOr<RenderSummary> run_coordinator(Comm& comm, const RunContext& ctx, const ItemRanges& pending,
                                        const std::vector<RankInfo>& ranks = {});

}  // namespace sdxlb
