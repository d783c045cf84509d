// The worker side of a job: the encode phase (text embeddings into the shared cache) and the render loop
// (ask the coordinator for batches, render them, write segment files).
//
// Workers are ranks 1..N-1 of `comm`; rank 0 is the coordinator. A worker owns one GPU (or the CPU).
#pragma once

#include "cluster/comm.h"
#include "common/status.h"
#include "worker/run_context.h"

namespace sdxlb {

/// Encodes the job's texts that the embedding cache lacks. Every worker computes the same missing list and
/// takes its contiguous share (worker w of W), writing shards as it goes. Returns after its share is stored.
Status run_encode_phase(Comm& comm, const RunContext& ctx);

/// Serves the coordinator until told to stop: render batches (padded to the job's batch size so that every
/// image is computed with the same shapes), write them to segment files of ctx.job.segment_items items,
/// and report. An item that fails (NaN, a LibTorch error) is stored as failed with the reason and the loop
/// goes on; a failure that stops the worker (model does not load) is sent to the coordinator as fatal.
Status run_render_worker(Comm& comm, const RunContext& ctx);

}  // namespace sdxlb
