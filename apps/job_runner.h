// JobRunner: `sdxl-batch run` and `sdxl-batch encode` on every rank; it starts both roles.
//
// Every rank reads and validates the same job file (nothing is written before it validates). Rank 0 then
// reads the model's identity, checks the output folder (a different job there is refused), scans what
// earlier runs finished, and coordinates; the other ranks encode the missing prompt embeddings, then render.
// Rank 0 ends by writing index.h5 and printing the summary. With one process (no mpirun), a worker thread
// runs beside the coordinator, so the same code path serves a laptop and a cluster.
#pragma once

#include "cluster/comm.h"
#include "run/run_context.h"

namespace sdxlb {

/// Runs the job on this rank of `comm` (>= 2 ranks). Returns the process exit code (common/exit_codes.h);
/// errors are printed by rank 0 only.
int run_job_on_rank(Comm& comm, const RunOptions& options);

/// Entry point for the CLI: uses `world` when it has several ranks, otherwise an in-process coordinator and
/// one worker thread.
int run_job(Comm& world, const RunOptions& options);

}  // namespace sdxlb
