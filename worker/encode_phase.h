// The encode phase (phase 1) on a worker: the job's texts that the embedding cache lacks go through both
// text encoders and into the shared cache as fp16 shards. Every worker computes the same missing list and
// takes its contiguous share (worker w of W), writing shards as it goes.
#pragma once

#include "cluster/comm.h"
#include "common/status.h"
#include "run/run_context.h"
#include "worker/render_setup.h"

namespace sdxlb {

/// Encodes this worker's share of the missing texts. Returns after its share is stored.
Status run_encode_phase(Comm& comm, const RunContext& ctx, const RenderSetup& setup);

}  // namespace sdxlb
