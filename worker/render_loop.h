// The render loop (phase 2) on a worker: ask the coordinator for batches, render them with a BatchRenderer,
// store them through an ItemSink, report what was done, and say goodbye with the worker's totals.
// Workers are ranks 1..N-1 of `comm`; rank 0 is the coordinator (see run/protocol.h).
#pragma once

#include "cluster/comm.h"
#include "common/status.h"
#include "run/run_context.h"
#include "worker/render_setup.h"

namespace sdxlb {

/// Serves the coordinator until told to stop. An item that fails (NaN, a LibTorch error) is stored as failed
/// with the reason and the loop goes on; a failure that stops the worker (the model does not load, a
/// segment cannot be written) is sent to the coordinator as fatal and returned. `node_workers` (null: none):
/// the workers of this node (node_workers()), whose first worker reads the weight files for all of them
/// (weights_broadcast); every one of them must call this.
Status run_render_worker(Comm& comm, const RunContext& ctx, const RenderSetup& setup,
                         Comm* node_workers = nullptr);

}  // namespace sdxlb
