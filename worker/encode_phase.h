// The encode phase (phase 1) on a worker: its share of the job's texts that the embedding cache lacks goes
// through both text encoders and into the shared cache as fp16 shards.
//
// Rank 0 decides once, before any worker writes, which texts are missing (coordinator/encode_monitor.h:
// texts_missing_from_cache) and broadcasts the list, so that every worker splits the same list: a worker
// that scanned the cache after another had stored a shard would split a shorter one, and some texts would go
// to no worker. Each worker takes its contiguous share (worker w of W), writes shards as it goes, and
// reports to rank 0 (run/protocol.h: kEncodeProgress, then kEncodeDone), which prints one progress line with
// an ETA and watches for silent workers.
#pragma once

#include <cstdint>
#include <vector>

#include "cluster/comm.h"
#include "common/status.h"
#include "run/run_context.h"
#include "worker/render_setup.h"

namespace sdxlb {

/// Encodes this worker's share of `missing` (indices into texts_to_encode(ctx), run/run_context.h, from
/// rank 0), reporting its progress to rank 0, and ends by sending kEncodeDone with its result, which it
/// also returns.
Status run_encode_phase(Comm& comm, const RunContext& ctx, const RenderSetup& setup,
                        const std::vector<uint32_t>& missing);

}  // namespace sdxlb
