// The encode phase (phase 1): the job's texts that the embedding cache lacks go through both text encoders
// and into the shared cache as fp16 shards.
//
// Rank 0 decides once, before any worker writes, which texts are missing (texts_missing_from_cache) and
// broadcasts the list, so that every worker splits the same list: a worker that scans the cache after
// another has stored a shard would otherwise split a shorter one, and some texts would go to no worker.
// Each worker takes its contiguous share (worker w of W), writing shards as it goes, and reports to rank 0
// (run/protocol.h: kEncodeProgress, then kEncodeDone), which prints one progress line with an ETA and
// watches for silent workers (coordinator/encode_monitor.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cluster/comm.h"
#include "common/status.h"
#include "run/run_context.h"
#include "worker/render_setup.h"

namespace sdxlb {

/// The texts whose embeddings the job's renders need: every distinct prompt and non-empty negative, plus ""
/// when the model encodes empty negatives instead of zeroing them. The same list, in the same order, on
/// every rank.
std::vector<std::string> texts_to_encode(const RunContext& ctx);

/// The indices into texts_to_encode(ctx) of the texts the embedding cache lacks, ascending, each text once.
/// Errors: the cache's (kIoError when its folder cannot be created or read).
StatusOr<std::vector<uint32_t>> texts_missing_from_cache(const RunContext& ctx);

/// Encodes this worker's share of `missing` (texts_missing_from_cache's list, from rank 0), reporting its
/// progress to rank 0, and ends by sending kEncodeDone with its result, which it also returns.
Status run_encode_phase(Comm& comm, const RunContext& ctx, const RenderSetup& setup,
                        const std::vector<uint32_t>& missing);

}  // namespace sdxlb
