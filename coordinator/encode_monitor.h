// Rank 0 during the encode phase (worker/encode_phase.h): lists the texts the embedding cache lacks, once
// for every worker (texts_missing_from_cache), then sums the workers' reports into one progress line
// with an ETA ("encode: 1200/8000 (15.0%), 610.00 texts/s, ETA 11s, 2s elapsed"), and watches them as the
// render coordinator does: a worker that sends nothing for job.worker_timeout_s (from the start of the
// phase, then after each report) is declared lost. The phase's workers report at least once a second while
// they encode; the first report comes before their text encoders load.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cluster/comm.h"
#include "common/status.h"
#include "coordinator/coordinator.h"
#include "run/run_context.h"

namespace sdxlb {

/// The indices into texts_to_encode(ctx) (run/run_context.h) of the texts the embedding cache lacks,
/// ascending. Errors: the cache's (kIoError when its folder cannot be created or read).
StatusOr<std::vector<uint32_t>> texts_missing_from_cache(const RunContext& ctx);

struct EncodeSummary {
  Status status;                    ///< the first worker's error by rank (with "rank r: "), or OK
  std::map<int, std::string> lost;  ///< workers declared lost, by rank, with the reason
  int64_t texts = 0;                ///< texts the workers reported encoded
};

/// Waits until every worker has ended its encode phase (kEncodeDone), or one is lost: it then returns at
/// once, since a lost worker never ends its phase (the caller ends the job). `total` is the number of texts
/// to encode (rank 0's list). Errors only for communication failures and malformed messages.
StatusOr<EncodeSummary> monitor_encode_phase(Comm& comm, const RunContext& ctx, int64_t total,
                                             const std::vector<RankInfo>& ranks = {});

}  // namespace sdxlb
