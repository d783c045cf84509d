// The coordinator (rank 0) of the render phase: hands out batches on request, tracks progress and ETA,
// and collects each worker's totals. Workers are ranks 1..N-1 of `comm`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/comm.h"
#include "common/status.h"
#include "run/protocol.h"
#include "run/run_context.h"

namespace sdxlb {

struct RenderSummary {
  int64_t items = 0;     ///< items handed out this run
  int64_t rendered = 0;  ///< stored OK this run
  int64_t failed = 0;    ///< stored as failed this run
  double seconds = 0;
  std::map<int, WorkerReport> workers;  ///< by rank
  std::map<int, std::string> fatal;     ///< workers that stopped with an error, by rank
};

/// Serves work requests until every worker has stopped. `pending` are the items to render (any order).
/// Errors only for communication failures; worker failures are in the summary (when every worker died
/// with items left, the caller reports the first fatal error).
StatusOr<RenderSummary> run_coordinator(Comm& comm, const RunContext& ctx,
                                        const std::vector<int64_t>& pending);

}  // namespace sdxlb
