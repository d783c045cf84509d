#include "coordinator/dataset_bookkeeping.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "cluster/stop_signal.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "store/dataset_reader.h"
#include "store/output_folder.h"

namespace sdxlb {
namespace {

// A stored row belongs to this job when its item exists and carries the item's seed (a segment whose
// item_index was altered serves another item's image under this index: issue 12).
ItemCheck item_check(const RunContext& ctx) {
  std::shared_ptr<const JobPlan> plan = ctx.plan;
  return [plan](int64_t item, uint64_t seed) -> std::string {
    if (item < 0 || static_cast<uint64_t>(item) >= plan->num_items())
      return "item " + std::to_string(item) + " is not in this job of " + std::to_string(plan->num_items()) +
             " items";
    if (plan->seed(static_cast<uint64_t>(item)) != seed)
      return "item " + std::to_string(item) + " carries seed " + std::to_string(seed) +
             ", but this job gives it " + std::to_string(plan->seed(static_cast<uint64_t>(item)));
    return "";
  };
}

}  // namespace

StatusOr<ResumeState> open_output(const RunContext& ctx) {
  ResumeState p;
  // The lock comes first, before --overwrite deletes or the scan removes anything another run may be
  // writing. It lives in the folder, so a missing folder is created for it (and removed again on failure).
  std::error_code ec;
  const bool created = !std::filesystem::exists(ctx.job.output, ec) &&
                       std::filesystem::create_directories(ctx.job.output, ec) && !ec;
  if (std::filesystem::is_directory(ctx.job.output, ec)) {
    std::string warning;
    auto lock = OutputLock::acquire(ctx.job.output, ctx.run_id, {}, &warning);
    if (!lock.is_ok()) {
      if (created) std::filesystem::remove(ctx.job.output, ec);
      if (lock.status().code() == StatusCode::kIoError) {
        // Most likely the folder is not writable: the folder's own check says so with its fix.
        auto check =
            OutputFolder::create_or_open(ctx.job.output, ctx.job.identity(ctx.model.render_identity()),
                                         ctx.job.yaml_text, ctx.job.to_canonical_json(), false);
        if (!check.is_ok()) return check.status();
      }
      return lock.status();
    }
    if (!warning.empty()) log_warn(warning);
    p.lock = std::move(*lock);
  }
  const std::string identity = ctx.job.identity(ctx.model.render_identity());
  auto opened = OutputFolder::create_or_open(ctx.job.output, identity, ctx.job.yaml_text,
                                             ctx.job.to_canonical_json(), ctx.options.overwrite);
  if (!opened.is_ok()) {
    if (p.lock) p.lock->release();
    if (created) std::filesystem::remove(ctx.job.output, ec);  // only when still empty
    return opened.status();
  }
  OutputFolder& folder = *opened;
  p.started_here = !folder.resumed();
  p.created_folder = created;
  folder.set_item_check(item_check(ctx));
  SDXLB_ASSIGN_OR_RETURN(auto scan, folder.scan());
  for (const auto& r : scan.removed_temp) log_info("removed in-flight segment of an earlier run: " + r);
  for (const auto& r : scan.moved_corrupt) log_warn("moved a corrupt segment aside: " + r);
  const int64_t n = static_cast<int64_t>(ctx.plan->num_items());
  p.pending = ItemRanges::all_but(n, scan.done_items());
  p.already_done = n - p.pending.count();
  if (folder.resumed() && !ctx.options.quiet)
    std::fprintf(stderr, "resuming %s: %lld of %lld items already done\n", ctx.job.output.c_str(),
                 static_cast<long long>(p.already_done), static_cast<long long>(n));
  return p;
}

StatusOr<OutputPreview> preview_output(const RunContext& ctx) {
  OutputPreview p;
  std::error_code ec;
  p.exists = std::filesystem::is_directory(ctx.job.output, ec);
  if (p.exists) SDXLB_RETURN_IF_ERROR(OutputLock::check_free(ctx.job.output));
  SDXLB_ASSIGN_OR_RETURN(
      auto folder, OutputFolder::open_read_only(ctx.job.output, ctx.job.identity(ctx.model.render_identity()),
                                                ctx.job.to_canonical_json()));
  p.resumes = folder.resumed();
  if (!p.resumes) return p;
  folder.set_item_check(item_check(ctx));
  SDXLB_ASSIGN_OR_RETURN(auto scan, folder.peek());
  p.done = scan.ok_count();
  p.failed = static_cast<int64_t>(scan.failed.size());
  return p;
}

void discard_unused_output(const RunContext& ctx, ResumeState* state) {
  if (!state->started_here) return;
  namespace fs = std::filesystem;
  const std::string out = ctx.job.output;
  std::error_code ec;
  for (auto it = fs::directory_iterator(out + "/segments", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (it->path().extension() == ".h5") return;  // something was rendered: keep it all
  }
  for (const char* name : {"job.json", "job.yaml", "index.h5"}) fs::remove(out + "/" + name, ec);
  fs::remove(out + "/segments", ec);  // only when empty
  if (state->lock) state->lock->release();
  state->started_here = false;
  if (state->created_folder) {
    // The folder is this run's: so is an embedding cache inside it (the default, <output>/embeddings).
    const fs::path cache = fs::path(ctx.job.embedding_cache).lexically_normal();
    const fs::path rel = cache.lexically_relative(fs::path(out).lexically_normal());
    if (!rel.empty() && *rel.begin() != ".." && rel != ".") fs::remove_all(cache, ec);
    fs::remove(out, ec);  // only when empty
  }
  log_info("the run failed before rendering anything: removed the job files it had written to " + out);
}

int finish_output(const RunContext& ctx, const RenderSummary& summary,
                  const std::map<std::string, std::string>& attributes) {
  auto folder = OutputFolder::create_or_open(ctx.job.output, ctx.job.identity(ctx.model.render_identity()),
                                             ctx.job.yaml_text, ctx.job.to_canonical_json(), false);
  if (!folder.is_ok()) {
    print_error(folder.status());
    return exit_code_for(folder.status());
  }
  std::map<std::string, std::string> attrs = attributes;
  attrs["job_yaml"] = ctx.job.yaml_text;
  attrs["job_canonical"] = ctx.job.to_canonical_json();
  attrs["model_id"] = ctx.model.model_id;
  attrs["scheduler"] = ctx.model.scheduler;
  attrs["approximations"] = ctx.job.approximations.to_json();
  attrs["loras"] = loras_to_json(ctx.job.loras);
  attrs["run_id"] = ctx.run_id;
  folder->set_item_check(item_check(ctx));
  auto index = folder->write_index(static_cast<int64_t>(ctx.plan->num_items()), attrs);
  if (!index.is_ok()) {
    print_error(index.status());
    return exit_code_for(index.status());
  }
  const double rate = summary.seconds > 0 ? static_cast<double>(summary.rendered) / summary.seconds : 0;
  std::printf("sdxl-batch: %lld items this run (%lld rendered, %lld failed) in %.1f s, %.2f images/s\n",
              static_cast<long long>(summary.items), static_cast<long long>(summary.rendered),
              static_cast<long long>(summary.failed), summary.seconds, rate);
  for (const auto& [rank, w] : summary.workers) {
    const double share =
        summary.items ? 100.0 * static_cast<double>(w.rendered + w.failed) / summary.items : 0;
    std::printf("  rank %d: %lld images (%.0f%%), %lld failed, busy %.1f s\n", rank,
                static_cast<long long>(w.rendered), share, static_cast<long long>(w.failed), w.busy_s);
  }
  for (const auto& [rank, err] : summary.fatal)
    std::printf("  rank %d stopped: %s\n", rank, err.to_string().c_str());
  for (const auto& [rank, why] : summary.lost) std::printf("  lost: %s\n", why.c_str());
  std::printf("dataset: %s (%lld ok, %lld failed, %lld missing of %lld)\n", index->path.c_str(),
              static_cast<long long>(index->ok), static_cast<long long>(index->failed),
              static_cast<long long>(index->missing), static_cast<long long>(index->total_items));
  if (index->failed > 0) {
    // The failures with their reasons (the index keeps all of them; `sdxl-batch inspect` lists them too).
    auto reader = DatasetReader::open(ctx.job.output);
    if (reader.is_ok()) {
      const auto& failed = reader->summary().failed_items;
      const size_t show = std::min<size_t>(failed.size(), 20);
      for (size_t k = 0; k < show; ++k)
        std::printf("  failed item %lld: %s\n", static_cast<long long>(failed[k].first),
                    failed[k].second.c_str());
      if (failed.size() > show)
        std::printf("  ... and %zu more (sdxl-batch inspect %s)\n", failed.size() - show,
                    ctx.job.output.c_str());
    }
  }
  if (index->missing > 0) {
    const long long done = static_cast<long long>(index->ok + index->failed);
    const long long total = static_cast<long long>(index->total_items);
    if (!summary.lost.empty()) {
      std::fprintf(
          stderr,
          "sdxl-batch: stopped: a worker was lost (see above); %lld of %lld items are saved. Resubmit "
          "the same command to render the %lld missing ones (exit code %d)\n",
          done, total, static_cast<long long>(index->missing), kExitWorkerLost);
      return kExitWorkerLost;
    }
    if (summary.stopped) {
      std::fprintf(stderr,
                   "sdxl-batch: stopped early by %s, %.1f s after it arrived; %lld of %lld items are saved. "
                   "Resubmit the same command to render the %lld missing ones (exit code %d)\n",
                   StopSignal::name(summary.stop_signal), summary.stop_seconds, done, total,
                   static_cast<long long>(index->missing), kExitStopped);
      return kExitStopped;
    }
    if (!summary.fatal.empty()) {
      const Status& first = summary.fatal.begin()->second;
      print_error(first.with_context("rank " + std::to_string(summary.fatal.begin()->first)));
      return exit_code_for(first) == kExitOk ? kExitInternal : exit_code_for(first);
    }
    return kExitInternal;
  }
  return index->failed > 0 ? kExitItemsFailed : kExitOk;
}

}  // namespace sdxlb
