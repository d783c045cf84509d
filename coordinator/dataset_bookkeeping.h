// The coordinator's bookkeeping of the dataset: at start, open (or create) the output folder and find what
// earlier runs finished; at the end, write index.h5 over every complete segment and print the summary.
// Rank 0 only; no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/coordinator.h"
#include "jobs/item_ranges.h"
#include "run/run_context.h"
#include "store/output_lock.h"

namespace sdxlb {

struct ResumeState {
  ItemRanges pending;  ///< items still to render
  int64_t already_done = 0;
  /// The output folder's lock, held until this state is destroyed (or the lock released).
  std::unique_ptr<OutputLock> lock;
  /// This run wrote the folder's job files (a new folder, or one started over with --overwrite).
  bool started_here = false;
  /// This run created the folder itself.
  bool created_folder = false;
};

/// After a failed start (a model file the workers refused, an encode error): when this run started the
/// folder and no segment was published, removes what it wrote (job.json, job.yaml, the empty segments/,
/// the lock; and when this run created the folder, an embedding cache inside it and the folder), so that a
/// later run with the problem fixed is not refused as "another job". A cache elsewhere is kept (it is keyed
/// by the text encoders).
void discard_unused_output(const RunContext& ctx, ResumeState* state);

/// Locks the job's output folder (OutputLock: a second run on it is refused, naming the first), opens it (a
/// different job there is refused unless --overwrite), removes stale in-flight segments and moves corrupt
/// ones aside, and lists the items still to render. Errors: those of OutputLock::acquire,
/// OutputFolder::create_or_open and scan.
StatusOr<ResumeState> open_output(const RunContext& ctx);

/// What open_output(ctx) (without --overwrite) would find, writing nothing (`sdxl-batch check`).
struct OutputPreview {
  bool exists = false;   ///< the folder exists (else the run creates it)
  bool resumes = false;  ///< it holds this job: the run resumes it
  int64_t done = 0;      ///< the job's items stored OK: the run skips them
  int64_t failed = 0;    ///< items whose record failed: the run renders them again
};
/// The same refusals as open_output's: the folder in use by a live run, another job's folder, a folder (or,
/// for a missing one, the folder above it) that is not writable (OutputFolder::open_read_only).
StatusOr<OutputPreview> preview_output(const RunContext& ctx);

/// Writes index.h5 with `attributes` (plus the job's own), prints the summary and the failed items, and
/// returns the process exit code (common/exit_codes.h).
int finish_output(const RunContext& ctx, const RenderSummary& summary,
                  const std::map<std::string, std::string>& attributes);

}  // namespace sdxlb
